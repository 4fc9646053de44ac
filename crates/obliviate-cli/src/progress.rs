//! indicatif progress bars for the library's [`Progress`] events.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use obliviate::train::Progress;

/// Draws a bar on stderr when it is a terminal and output is not `--json`.
pub struct Bars {
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl Bars {
    /// Bars are hidden with `--json` or when stderr is not a terminal.
    pub fn new(json: bool) -> Self {
        Bars {
            enabled: !json && std::io::stderr().is_terminal(),
            bar: None,
        }
    }
}

impl Progress for Bars {
    fn start(&mut self, label: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>14} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        self.bar = Some(bar);
    }
    fn set(&mut self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

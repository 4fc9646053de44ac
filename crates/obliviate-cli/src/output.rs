//! How the binary speaks: one JSON object with `--json`, text and progress bars otherwise, and
//! the benchmark sections it writes into Markdown files.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use obliviate::train::Progress;
use serde::Serialize;

use crate::args::Env;

/// Set once stdout has been closed by its reader (`obliviate info | head -1`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to stdout. A reader that closed the pipe has all it wanted: the rest of the
/// output is dropped and the command ends normally (its work is done, often committed);
/// other write errors are reported on stderr once.
pub fn line(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("warning: cannot write to stdout: {e}");
        }
    }
}

/// `println!` that survives a closed stdout (see [`line`]).
macro_rules! outln {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Prints `value` as one JSON line (with `--json`) or runs `text`.
pub fn emit<T: Serialize>(env: &Env, value: &T, text: impl FnOnce()) -> Result<()> {
    if env.json {
        outln!("{}", serde_json::to_string(value)?);
    } else {
        text();
    }
    Ok(())
}

/// A progress line on stderr, unless the output is JSON.
pub fn say(env: &Env) -> impl FnMut(&str) + '_ {
    move |s: &str| {
        if !env.json {
            eprintln!("{s}");
        }
    }
}

/// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in `path`
/// (appending the section if absent; creating the file if it does not exist), atomically.
/// A file that exists but cannot be read is an error, never replaced.
pub fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot read {} to update its {name} section",
                    path.display()
                )
            });
        }
    };
    let (b, e) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let section = format!("{b}\n{}\n{e}", body.trim_end());
    let new = match (text.find(&b), text.find(&e)) {
        (Some(i), Some(j)) if j > i => format!("{}{}{}", &text[..i], section, &text[j + e.len()..]),
        _ => format!("{text}\n{section}\n"),
    };
    obliviate::store::atomic::write_file(path, new.as_bytes())?;
    Ok(())
}

/// Draws a bar on stderr when it is a terminal and output is not `--json`.
pub struct Bars {
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl Bars {
    /// Bars are hidden with `--json` or when stderr is not a terminal.
    pub fn new(env: &Env) -> Self {
        Bars {
            enabled: !env.json && std::io::stderr().is_terminal(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_replaced_in_place_and_appended_when_absent() {
        let dir = std::env::temp_dir().join(format!("obliviate-section-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("B.md");
        std::fs::write(&p, "head\n<!-- x:begin -->\nold\n<!-- x:end -->\ntail\n").unwrap();
        write_section(&p, "x", "new").unwrap();
        write_section(&p, "y", "other").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "head\n<!-- x:begin -->\nnew\n<!-- x:end -->\ntail\n\n<!-- y:begin -->\nother\n<!-- y:end -->\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file that cannot be read (here: not UTF-8) must not be replaced by the one section.
    #[test]
    fn an_unreadable_file_is_left_alone() {
        let dir =
            std::env::temp_dir().join(format!("obliviate-section-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("B.md");
        let bytes = b"keep \xff\xfe this".to_vec();
        std::fs::write(&p, &bytes).unwrap();
        assert!(write_section(&p, "x", "new").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

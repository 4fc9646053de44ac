//! `obliviate data fetch`: canonical dataset files, checksum-verified.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use obliviate::data::DatasetName;
use obliviate::data::fetch::Fetched;
use serde::Serialize;

use crate::args::{DatasetArg, Env};
use crate::output::{emit, outln};

/// Dataset files.
#[derive(Subcommand, Debug)]
pub enum Data {
    /// Download a dataset's canonical files and verify their checksums.
    Fetch(Fetch),
}

#[derive(Args, Debug)]
pub struct Fetch {
    /// Dataset name.
    name: DatasetArg,
    /// Base URL replacing the canonical hosts (files are fetched as <URL>/<file>).
    #[arg(long)]
    mirror: Option<String>,
}

#[derive(Serialize)]
struct FetchReport<'a> {
    dataset: DatasetName,
    files: &'a [Fetched],
}

pub fn run(d: &Data, env: &Env) -> Result<()> {
    let Data::Fetch(a) = d;
    let name = a.name.0;
    let dir = env
        .data_dir
        .clone()
        .context("data fetch needs --data-dir DIR")?;
    if name == DatasetName::MnistMini {
        bail!("mnist-mini is bundled with obliviate; nothing to fetch");
    }
    let bars = std::cell::RefCell::new(None::<indicatif::ProgressBar>);
    let show = !env.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = |file: &str, done: u64, total: Option<u64>| {
        if !show {
            return;
        }
        let mut b = bars.borrow_mut();
        let bar = b.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        bar.set_message(file.to_string());
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(done);
        if Some(done) == total {
            bar.finish_and_clear();
            *b = None;
        }
    };
    let fetched = obliviate::data::fetch::fetch(name, &dir, a.mirror.as_deref(), &mut progress)?;
    let r = FetchReport {
        dataset: name,
        files: &fetched,
    };
    emit(env, &r, || {
        for f in &fetched {
            outln!(
                "{}  {}  {} bytes{}",
                f.sha256,
                f.path.display(),
                f.bytes,
                if f.downloaded {
                    ""
                } else {
                    " (already present)"
                }
            );
        }
    })
}

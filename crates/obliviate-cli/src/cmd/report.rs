//! `obliviate report`: the Markdown and HTML compliance report of a run.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use obliviate::chain::Chain;
use obliviate::report::page::{ReportOptions, write_report};
use serde::Serialize;

use crate::args::Env;
use crate::backend::on_backend;
use crate::output::{emit, outln};

/// Write a Markdown and a standalone HTML report of a run (requests, audits, figures).
#[derive(Args, Debug)]
pub struct Report {
    /// The run.
    run: PathBuf,
    /// Output folder.
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// A retrained run to compare with (adds membership inference and distances).
    #[arg(long)]
    against: Option<PathBuf>,
    /// A copy of the run from before forgetting.
    #[arg(long)]
    original: Option<PathBuf>,
    /// A retrain with another seed (noise floor).
    #[arg(long)]
    floor: Option<PathBuf>,
}

#[derive(Serialize)]
struct Written {
    html: PathBuf,
    markdown: PathBuf,
}

pub fn run(a: &Report, env: &Env) -> Result<()> {
    let data = Chain::open(&a.run)?.load_data(env.data_dir.as_deref())?;
    let o = ReportOptions {
        out: a.out.clone(),
        against: a.against.clone(),
        original: a.original.clone(),
        floor: a.floor.clone(),
        seed: 0,
    };
    let html = on_backend!(env, B, device => write_report::<B>(&a.run, &data, &o, &device)?);
    let w = Written {
        html,
        markdown: a.out.join("report.md"),
    };
    emit(env, &w, || {
        outln!("wrote {} and {}", w.html.display(), w.markdown.display());
    })
}

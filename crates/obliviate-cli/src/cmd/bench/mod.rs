//! `obliviate bench`: the figures in docs/BENCHMARKS.md. The protocols live in
//! `obliviate::experiments`; this module parses their flags and renders their rows as tables.

mod audit;
mod calibrate;
mod compare;
mod serve;
mod storage;
mod train;
mod unlearn;

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use obliviate::chain::TrainConfig;
use obliviate::experiments::{Setup, mean_std};

use crate::args::{DatasetArg, Env, StopArgs, TrainArgs, default_training};

/// Benchmarks whose figures go into docs/BENCHMARKS.md.
#[derive(Subcommand, Debug)]
pub enum Bench {
    /// Training throughput of every model, obliviate against PyTorch (CPU, same threads and shapes).
    Train(train::Train),
    /// DeepObliviate against retraining from scratch on real data (writes a table).
    Unlearn(unlearn::Unlearn),
    /// DeepObliviate against Retrain, SISA, Amnesiac, Fine-tune and NegGrad+ on the same
    /// requests (writes a table).
    Compare(compare::Compare),
    /// Backdoor verification, membership inference and distances to retrained models, per
    /// dataset over seeds (writes a table).
    Audit(audit::Audit),
    /// The stop rule's default from a grid of thresholds: forgets a backdoored user, a clean
    /// user (both kept together) and a random id, and judges each against retrained models.
    Calibrate(calibrate::Calibrate),
    /// Compact chains: bytes on disk, accuracy and forget cost per storage precision (writes a
    /// table).
    Storage(storage::StorageBench),
    /// The deletion service on loopback: POST rate and latency while a batch trains, coalesced
    /// against one-by-one processing.
    Serve(serve::ServeBench),
}

pub fn run(b: &Bench, env: &Env) -> Result<()> {
    match b {
        Bench::Train(a) => train::run(a, env),
        Bench::Unlearn(a) => unlearn::run(a, env),
        Bench::Compare(a) => compare::run(a, env),
        Bench::Audit(a) => audit::run(a, env),
        Bench::Calibrate(a) => calibrate::run(a, env),
        Bench::Storage(a) => storage::run(a, env),
        Bench::Serve(a) => serve::run(a, env),
    }
}

/// What every data benchmark takes: datasets, seeds, training, scratch and output files.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Datasets.
    #[arg(long, value_delimiter = ',', default_value = "mnist,fashion-mnist")]
    datasets: Vec<DatasetArg>,
    /// Number of seeds (0, 1, …).
    #[arg(long, default_value_t = 3)]
    seeds: usize,
    #[command(flatten)]
    train: TrainArgs,
    /// Scratch folder for the runs.
    #[arg(long, default_value = "bench-runs")]
    work: PathBuf,
    /// Markdown file whose section for this benchmark receives the table.
    #[arg(long)]
    write: Option<PathBuf>,
}

impl BenchArgs {
    /// The experiment's setup: these flags with the stop flags.
    fn setup(&self, stop: &StopArgs, env: &Env) -> Result<Setup> {
        if self.train.data.dataset.is_some() {
            bail!("benchmarks take --datasets (a list), not --dataset");
        }
        Ok(Setup {
            datasets: self.datasets.iter().map(|d| d.0).collect(),
            limit: self.train.data.limit()?,
            kind: self.train.model(),
            cfg: self.train.config(default_training(), env)?,
            seeds: self.seeds,
            opts: stop.options(false)?,
            work: self.work.clone(),
        })
    }

    /// Writes `md` into the `name` section of `--write`, if given.
    fn write(&self, name: &str, md: &str) -> Result<()> {
        match &self.write {
            Some(path) => crate::output::write_section(path, name, md),
            None => Ok(()),
        }
    }
}

/// "mean ± std" of `v` scaled by `scale`, with `p` decimals.
fn pm(v: impl IntoIterator<Item = f64>, scale: f64, p: usize) -> String {
    let v: Vec<f64> = v.into_iter().map(|x| x * scale).collect();
    let (m, s) = mean_std(&v);
    format!("{m:.p$} ± {s:.p$}")
}

/// The training setting in one phrase, for table captions.
fn setting(cfg: &TrainConfig) -> String {
    format!(
        "B = {}, E = {}, batch {}, {} lr {} → ×{} over blocks",
        cfg.blocks,
        cfg.epochs_per_block,
        cfg.batch_size,
        cfg.optim.kind.name(),
        cfg.optim.lr,
        cfg.lr_final
    )
}

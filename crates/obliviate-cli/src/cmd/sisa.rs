//! `obliviate sisa train|forget|eval`: the SISA baseline as a user would run it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use obliviate::baselines::sisa::{self, Sisa, SisaReport};
use obliviate::data::Split;
use serde::Serialize;

use crate::args::{AggregateArg, Env, IdArgs, TrainArgs, default_training};
use crate::backend::on_backend;
use crate::output::{Bars, emit, outln};

/// The SISA baseline (sharded, sliced ensembles; exact unlearning by shard retraining).
#[derive(Subcommand, Debug)]
pub enum SisaCmd {
    /// Train S shard models, each on R slices incrementally, storing every slice checkpoint.
    Train(Train),
    /// Forget ids: retrain the shards holding them from their first affected slice.
    Forget(Forget),
    /// Test accuracy of the aggregate and of each constituent, and prediction latency.
    Eval(Eval),
}

#[derive(Args, Debug)]
pub struct Train {
    #[command(flatten)]
    args: TrainArgs,
    /// Number of shards S.
    #[arg(long, default_value_t = 10)]
    shards: usize,
    /// Slices per shard R.
    #[arg(long, default_value_t = 5)]
    slices: usize,
    /// Folder to create (absent or empty).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct Forget {
    /// The SISA folder.
    dir: PathBuf,
    #[command(flatten)]
    ids: IdArgs,
}

#[derive(Args, Debug)]
pub struct Eval {
    /// The SISA folder.
    dir: PathBuf,
    /// How the constituents' predictions are combined.
    #[arg(long, default_value = "vote")]
    aggregate: AggregateArg,
}

fn print_report(r: &SisaReport, what: &str) {
    outln!(
        "{what}: {} shard(s) trained ({} steps) in {:.1} s; majority-vote test accuracy {:.2} %; {} bytes on disk",
        r.shards_trained.len(),
        r.steps,
        r.seconds,
        100.0 * r.test_accuracy,
        r.bytes_on_disk
    );
}

pub fn run(c: &SisaCmd, env: &Env) -> Result<()> {
    match c {
        SisaCmd::Train(a) => train(a, env),
        SisaCmd::Forget(a) => forget(a, env),
        SisaCmd::Eval(a) => eval(a, env),
    }
}

fn train(a: &Train, env: &Env) -> Result<()> {
    if a.args.blocks.is_some() {
        bail!("SISA has no blocks: give --shards and --slices");
    }
    let mut cfg = a.args.config(default_training(), env)?;
    cfg.blocks = a.slices;
    let kind = a.args.model();
    let data = a.args.data.load(env)?;
    let mut bars = Bars::new(env);
    let r = on_backend!(env, B, device => sisa::train::<B>(&a.out, &data, kind, cfg, a.shards, &device, &mut bars)?);
    emit(env, &r, || print_report(&r, "trained"))
}

fn forget(a: &Forget, env: &Env) -> Result<()> {
    let ids: Vec<u64> = a
        .ids
        .read(None)?
        .into_iter()
        .flat_map(|ask| ask.ids)
        .collect();
    let data = Sisa::open(&a.dir)?.load_data(env.data_dir.as_deref())?;
    let mut bars = Bars::new(env);
    let r =
        on_backend!(env, B, device => sisa::forget::<B>(&a.dir, &data, &ids, &device, &mut bars)?);
    emit(env, &r, || {
        print_report(&r, &format!("forgot {} id(s)", r.ids.len()))
    })
}

#[derive(Serialize)]
struct EvalReport {
    test_accuracy: f64,
    aggregate: &'static str,
    constituents: Vec<f64>,
    seconds_per_1000: f64,
    shards: usize,
    deleted: usize,
}

fn eval(a: &Eval, env: &Env) -> Result<()> {
    let how = a.aggregate.0;
    let s = Sisa::open(&a.dir)?;
    let data = s.load_data(env.data_dir.as_deref())?;
    let kind = s.manifest.model;
    let models = s.models()?;
    let rows: Vec<usize> = (0..data.test.len()).collect();
    let (acc, each, per_1000) = on_backend!(env, B, device => {
        let t = Instant::now();
        let agg = sisa::outputs_of_models::<B>(kind, &models, &data, Split::Test, &rows, how, &device)?;
        let per_1000 = t.elapsed().as_secs_f64() * 1000.0 / rows.len().max(1) as f64;
        let mut each = Vec::new();
        for m in &models {
            each.push(obliviate::audit::outputs_of::<B>(kind, m, &data, Split::Test, &rows, &device)?.accuracy());
        }
        (agg.accuracy(), each, per_1000)
    });
    let r = EvalReport {
        test_accuracy: acc,
        aggregate: how.name(),
        constituents: each,
        seconds_per_1000: per_1000,
        shards: models.len(),
        deleted: s.manifest.deleted.len(),
    };
    emit(env, &r, || {
        outln!(
            "{} shards, {} id(s) forgotten; {} test accuracy {:.2} % ({:.3} s per 1,000 predictions)",
            r.shards,
            r.deleted,
            r.aggregate,
            100.0 * acc,
            per_1000
        );
        let lo = r.constituents.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.constituents.iter().copied().fold(0.0, f64::max);
        outln!(
            "constituent models: {:.2} % … {:.2} %",
            100.0 * lo,
            100.0 * hi
        );
    })
}

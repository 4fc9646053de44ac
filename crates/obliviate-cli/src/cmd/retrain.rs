//! `obliviate retrain`: the gold standard, from scratch without every forgotten id.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use obliviate::chain::Chain;

use crate::args::Env;
use crate::backend::on_backend;
use crate::output::{Bars, emit, outln};

/// Retrain from scratch (same seed, split and order) without every forgotten id: the gold standard.
#[derive(Args, Debug)]
pub struct Retrain {
    /// Run folder whose forgotten ids are left out.
    run: PathBuf,
    /// New run folder (absent or empty).
    #[arg(long)]
    out: PathBuf,
    /// Use another seed (new split, weights and order): a second retrain for noise floors.
    #[arg(long)]
    seed: Option<u64>,
}

pub fn run(a: &Retrain, env: &Env) -> Result<()> {
    let data = Chain::open(&a.run)?.load_data(env.data_dir.as_deref())?;
    let mut bars = Bars::new(env);
    let (run, out) = (&a.run, &a.out);
    let s = on_backend!(env, B, device => obliviate::train::retrain::<B>(run, out, &data, a.seed, &device, &mut bars)?);
    emit(env, &s, || {
        outln!(
            "retrained {} blocks from scratch in {:.1} s",
            s.blocks,
            s.seconds
        );
        outln!("test accuracy  {:.2} %", 100.0 * s.test_accuracy);
        outln!("model sha256   {}", s.model_sha256);
        outln!("run            {}", out.display());
    })
}

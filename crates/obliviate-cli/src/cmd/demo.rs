//! `obliviate demo`: the whole method on the bundled data in about a minute.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use obliviate::experiments::demo;

use crate::args::{Env, micro_batches};
use crate::backend::on_backend;
use crate::output::{Bars, emit, outln, say};

/// Train on the bundled MNIST subset, forget random ids, retrain from scratch, compare.
#[derive(Args, Debug)]
pub struct Demo {
    /// Where to keep the runs (default: a fresh temporary folder, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Number of single-id forget requests.
    #[arg(long, default_value_t = 3)]
    requests: usize,
    /// Seed of the training run and of the ids picked.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// A temporary folder removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(a: &Demo, env: &Env) -> Result<()> {
    let _tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            let p = std::env::temp_dir().join(format!("obliviate-demo-{}", std::process::id()));
            obliviate::experiments::fresh_folder(&p)?;
            _tmp = TempDir(p.clone());
            p
        }
    };
    let mut bars = Bars::new(env);
    let cfg = demo::config(a.seed, micro_batches(env, demo::MODEL));
    let r = on_backend!(env, B, device => demo::run::<B>(&dir, a.requests, cfg, &device, &mut bars, &mut say(env))?);
    emit(env, &r, || {
        outln!();
        outln!("| model | test accuracy | seconds |");
        outln!("|---|---|---|");
        outln!(
            "| original (block-wise) | {:.2} % | {:.1} (training) |",
            100.0 * r.original_accuracy,
            r.train_seconds
        );
        outln!(
            "| unlearned (DeepObliviate, {} request(s)) | {:.2} % | {:.2} per request |",
            r.requests.len(),
            100.0 * r.unlearned_accuracy,
            r.forget_seconds_mean
        );
        outln!(
            "| retrained from scratch | {:.2} % | {:.1} |",
            100.0 * r.retrained_accuracy,
            r.retrain_seconds
        );
        outln!();
        outln!(
            "blocks retrained per request: {:.1} of {}",
            r.blocks_retrained_mean,
            r.blocks
        );
        outln!("speedup (retrain ÷ forget):   {:.1}×", r.speedup);
        outln!("unlearned model sha256:       {}", r.model_sha256);
    })
}

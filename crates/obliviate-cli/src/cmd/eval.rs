//! `obliviate eval`: test accuracy of the served model, recomputed from the chain.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use obliviate::chain::Chain;
use serde::Serialize;

use crate::args::Env;
use crate::backend::on_backend;
use crate::output::{emit, outln};

/// Test accuracy of the served model θ_0 + Σδ_i (recomputed from the chain).
#[derive(Args, Debug)]
pub struct Eval {
    /// Run folder.
    run: PathBuf,
}

#[derive(Serialize)]
struct EvalReport {
    test_accuracy: f64,
    blocks: usize,
    test_samples: usize,
    /// SHA-256 of the served model file (absent while training is unfinished).
    model_sha256: Option<String>,
}

pub fn run(a: &Eval, env: &Env) -> Result<()> {
    let chain = Chain::open(&a.run)?;
    let data = chain.load_data(env.data_dir.as_deref())?;
    let m = chain.manifest();
    let theta = chain.theta(m.completed())?;
    if m.is_complete() && !theta.bit_identical(&chain.served()?) {
        bail!(
            "run {}: θ_B (θ_0 or the latest keyframe + Σδ_i) differs from the served model file",
            a.run.display()
        );
    }
    let acc = on_backend!(env, B, device => obliviate::train::test_accuracy::<B>(&data, m.model, &theta, &device)?);
    let r = EvalReport {
        test_accuracy: acc,
        blocks: m.completed(),
        test_samples: data.test.len(),
        model_sha256: m.model_file.as_ref().map(|f| f.sha256.clone()),
    };
    emit(env, &r, || {
        outln!(
            "test accuracy {:.2} % on {} test samples ({} of {} blocks)",
            100.0 * acc,
            data.test.len(),
            m.completed(),
            m.blocks.len()
        );
        if let Some(h) = &r.model_sha256 {
            outln!("model sha256  {h}");
        }
    })
}

//! `bench train`: renders `experiments::throughput`.

use anyhow::Result;
use clap::Args;
use obliviate::experiments::throughput::{Contender, ThroughputRow, run as run_bench};
use obliviate::model::ModelKind;
use serde::Serialize;

use crate::args::{BackendArg, Env, ModelArg};
use crate::backend::on_backend;
use crate::output::{emit, outln, say};

#[derive(Args, Debug)]
pub struct Train {
    /// Models to measure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mlp,mlp-small,lenet5,cnn,resnet18"
    )]
    models: Vec<ModelArg>,
    /// Interleaved rounds (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Backends to time, interleaved in each round with one PyTorch run [default: --backend].
    #[arg(long, value_enum, value_delimiter = ',')]
    backends: Vec<BackendArg>,
    /// Python with PyTorch installed.
    #[arg(long, default_value = "python3")]
    python: String,
}

#[derive(Serialize)]
struct Out<'a> {
    rounds: usize,
    rows: &'a [ThroughputRow],
}

pub fn run(a: &Train, env: &Env) -> Result<()> {
    let models: Vec<ModelKind> = a.models.iter().map(|m| m.0).collect();
    let backends = match a.backends.is_empty() {
        true => vec![env.backend],
        false => a.backends.clone(),
    };
    let contenders = backends
        .iter()
        .map(|&backend| {
            let env = Env {
                backend,
                ..env.clone()
            };
            let name = format!("{backend:?}").to_lowercase();
            Ok(on_backend!(env, B, device => Contender::new::<B>(&name, device)))
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = run_bench(&models, a.rounds, &a.python, &contenders, &mut say(env))?;
    emit(
        env,
        &Out {
            rounds: a.rounds,
            rows: &rows,
        },
        || {
            outln!(
                "| model | backend | batch | steps | obliviate samples/s | PyTorch samples/s | ratio (median of {} rounds) |",
                a.rounds
            );
            outln!("|---|---|---|---|---|---|---|");
            for r in &rows {
                outln!(
                    "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} |",
                    r.model,
                    r.backend,
                    r.workload.batch,
                    r.workload.steps,
                    r.obliviate_samples_per_s,
                    r.pytorch_samples_per_s,
                    r.ratio
                );
            }
        },
    )
}

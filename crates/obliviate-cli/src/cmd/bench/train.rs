//! `bench train`: renders `experiments::throughput`.

use anyhow::Result;
use clap::Args;
use obliviate::experiments::throughput::{Contender, ThroughputRow, run as run_bench};
use obliviate::model::ModelKind;
use serde::Serialize;

use crate::args::{BackendArg, Env, ModelArg, micro_batches};
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
    /// Slices per minibatch to time, each a contender of its own (models with batch norm
    /// always take 1) [default: what `train` uses on each backend].
    #[arg(long, value_delimiter = ',')]
    micro_batches: Vec<usize>,
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
    let slices: Vec<Option<usize>> = match a.micro_batches.is_empty() {
        true => vec![None],
        false => a.micro_batches.iter().copied().map(Some).collect(),
    };
    let mut contenders = Vec::new();
    for &backend in &backends {
        for &n in &slices {
            let env = Env {
                backend,
                ..env.clone()
            };
            let name = format!("{backend:?}").to_lowercase();
            let auto = env.clone();
            let slices: Box<dyn Fn(ModelKind) -> usize> = Box::new(move |kind| match n {
                Some(n) if !kind.has_batch_norm() => n,
                _ => micro_batches(&auto, kind),
            });
            contenders
                .push(on_backend!(env, B, device => Contender::new::<B>(&name, slices, device)));
        }
    }
    let rows = run_bench(&models, a.rounds, &a.python, &contenders, &mut say(env))?;
    emit(
        env,
        &Out {
            rounds: a.rounds,
            rows: &rows,
        },
        || {
            outln!(
                "| model | backend | micro-batches | batch | steps | obliviate samples/s | PyTorch samples/s | ratio (median of {} rounds) |",
                a.rounds
            );
            outln!("|---|---|---|---|---|---|---|---|");
            for r in &rows {
                outln!(
                    "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} |",
                    r.model,
                    r.backend,
                    r.micro_batches,
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

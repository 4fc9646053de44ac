//! `bench train`: training throughput of obliviate's block trainer against PyTorch on the same
//! architectures, batch sizes and thread count, interleaved over rounds.

use std::process::Command;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::Say;
use crate::chain::TrainConfig;
use crate::data::split::mix;
use crate::data::{Dataset, DatasetName, Samples};
use crate::error::{Error, IoContext, Result};
use crate::model::{InputShape, ModelKind};
use crate::optim::OptimConfig;
use crate::train::BlockTrainer;

/// The PyTorch peer: the same models and step, timed the same way.
pub const TORCH_SCRIPT: &str = include_str!("../../assets/torch_train.py");

/// What each model is timed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// The dataset whose shape the synthetic samples take.
    pub dataset: DatasetName,
    /// Input shape.
    pub shape: InputShape,
    /// Classes.
    pub classes: usize,
    /// Minibatch size.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
}

impl Workload {
    /// The workload of `kind`: its usual dataset's shape, batch size and enough steps for a
    /// stable rate.
    pub fn of(kind: ModelKind) -> Workload {
        let img = |c, s| InputShape {
            channels: c,
            height: s,
            width: s,
        };
        let purchase = InputShape {
            channels: 1,
            height: 1,
            width: 600,
        };
        let (dataset, shape, classes, batch, steps) = match kind {
            ModelKind::Mlp => (DatasetName::Purchase, purchase, 100, 128, 60),
            ModelKind::MlpSmall => (DatasetName::Purchase, purchase, 100, 128, 200),
            ModelKind::Lenet5 => (DatasetName::Mnist, img(1, 28), 10, 64, 100),
            ModelKind::Cnn => (DatasetName::Cifar10, img(3, 32), 10, 128, 10),
            ModelKind::Resnet18 => (DatasetName::Cifar10, img(3, 32), 10, 32, 3),
        };
        Workload {
            dataset,
            shape,
            classes,
            batch,
            steps,
        }
    }

    /// Seeded random samples of this workload's shape (binary features for Purchase).
    pub fn synthetic(&self) -> Result<Dataset> {
        let n = self.batch * self.steps;
        let mut state = 1u64;
        let mut bytes = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    state = mix(state);
                    if self.dataset == DatasetName::Purchase {
                        (state & 1) as u8
                    } else {
                        (state >> 56) as u8
                    }
                })
                .collect()
        };
        let mk = |n: usize, pixels: Vec<u8>| {
            Samples::numbered(pixels, (0..n).map(|i| (i % self.classes) as u16).collect())
        };
        let train = mk(n, bytes(n * self.shape.numel()));
        let test = mk(self.classes, bytes(self.classes * self.shape.numel()));
        Dataset::from_parts(self.dataset, self.shape, self.classes, train, test)
    }
}

/// One model's medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    /// The model.
    pub model: ModelKind,
    /// The obliviate backend timed ([`Contender::name`]).
    pub backend: String,
    /// What it was timed on.
    pub workload: Workload,
    /// Threads both sides may use.
    pub threads: usize,
    /// Slices per minibatch on obliviate's side ([`TrainConfig::micro_batches`]).
    pub micro_batches: usize,
    /// obliviate's training samples per second (median).
    pub obliviate_samples_per_s: f64,
    /// PyTorch's (median).
    pub pytorch_samples_per_s: f64,
    /// Median of the per-round ratios.
    pub ratio: f64,
    /// PyTorch's version.
    pub torch: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// obliviate's training samples per second on `w` (after a three-batch warm-up).
pub fn ours<B: AutodiffBackend>(
    kind: ModelKind,
    w: &Workload,
    data: &Dataset,
    micro_batches: usize,
    device: &B::Device,
) -> Result<f64> {
    let cfg = TrainConfig {
        blocks: 1,
        epochs_per_block: 1,
        batch_size: w.batch,
        optim: OptimConfig::sgd(0.01, 0.9),
        seed: 0,
        lr_final: 1.0,
        storage: Default::default(),
        micro_batches,
    };
    let ids: Vec<u64> = (0..(w.batch * w.steps) as u64).collect();
    let (theta, opt) = BlockTrainer::<B>::initial(data, kind, &cfg, device)?;
    let mut t = BlockTrainer::<B>::new(data, kind, cfg, theta, &opt, 0, device)?;
    t.run_block(1, &ids[..w.batch * 3])?;
    let start = Instant::now();
    t.run_block(1, &ids)?;
    Ok(ids.len() as f64 / start.elapsed().as_secs_f64())
}

/// PyTorch's samples per second and version, by running `script` with `python`.
fn peer(
    python: &str,
    script: &std::path::Path,
    kind: ModelKind,
    w: &Workload,
    threads: usize,
) -> Result<(f64, String)> {
    let fail = |detail: String| Error::Invalid {
        what: "PyTorch peer",
        detail,
    };
    let out = Command::new(python)
        .arg(script)
        .args([
            "--model",
            kind.name(),
            "--steps",
            &w.steps.to_string(),
            "--batch",
            &w.batch.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .output()
        .map_err(|e| {
            fail(format!(
                "cannot run {python} (PyTorch is the benchmark peer: pip install torch): {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("output is not JSON: {e}")))?;
    let sps = v["samples_per_s"]
        .as_f64()
        .ok_or_else(|| fail(format!("no samples_per_s in {v}")))?;
    Ok((sps, v["torch"].as_str().unwrap_or("").to_string()))
}

/// [`ours`] on one backend, its type erased.
type Timer = Box<dyn Fn(ModelKind, &Workload, &Dataset, usize) -> Result<f64>>;

/// One obliviate backend to time: [`ours`] on a backend type, behind a name, so one run can
/// interleave several backends with PyTorch.
pub struct Contender {
    /// Its name in the rows (`flex`, `tch`).
    pub name: String,
    /// Slices per minibatch for each model.
    pub micro_batches: Box<dyn Fn(ModelKind) -> usize>,
    time: Timer,
}

impl Contender {
    /// [`ours`] on backend `B` and `device`.
    pub fn new<B: AutodiffBackend>(
        name: &str,
        micro_batches: Box<dyn Fn(ModelKind) -> usize>,
        device: B::Device,
    ) -> Contender
    where
        B::Device: 'static,
    {
        Contender {
            name: name.to_string(),
            micro_batches,
            time: Box::new(move |kind, w, data, micro| ours::<B>(kind, w, data, micro, &device)),
        }
    }
}

/// Times every model in `models` on every contender and PyTorch, interleaved (each round runs
/// every contender, then PyTorch), `rounds` times. Each contender's ratio is taken against the
/// PyTorch figure of the same round.
pub fn run(
    models: &[ModelKind],
    rounds: usize,
    python: &str,
    contenders: &[Contender],
    say: &mut Say<'_>,
) -> Result<Vec<ThroughputRow>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let script = std::env::temp_dir().join(format!("obliviate-torch-{}.py", std::process::id()));
    std::fs::write(&script, TORCH_SCRIPT).at(&script)?;
    let result = (|| {
        let mut rows = Vec::new();
        for &kind in models {
            let w = Workload::of(kind);
            let data = w.synthetic()?;
            // Per contender: its samples/s and ratios; PyTorch's samples/s.
            let mut mine = vec![(Vec::new(), Vec::new()); contenders.len()];
            let mut theirs = Vec::new();
            let mut torch = String::new();
            for round in 0..rounds {
                let timed: Vec<f64> = contenders
                    .iter()
                    .map(|c| (c.time)(kind, &w, &data, (c.micro_batches)(kind)))
                    .collect::<Result<_>>()?;
                let (other, version) = peer(python, &script, kind, &w, threads)?;
                torch = version;
                for ((c, sps), (s, r)) in contenders.iter().zip(timed).zip(&mut mine) {
                    say(&format!(
                        "round {round}: {kind:<9} obliviate ({}) {sps:>9.1} samples/s   PyTorch {other:>9.1} samples/s   ratio {:.2}",
                        c.name,
                        sps / other
                    ));
                    s.push(sps);
                    r.push(sps / other);
                }
                theirs.push(other);
            }
            let pytorch = median(theirs);
            for (c, (s, r)) in contenders.iter().zip(mine) {
                rows.push(ThroughputRow {
                    model: kind,
                    backend: c.name.clone(),
                    workload: w,
                    threads,
                    micro_batches: (c.micro_batches)(kind),
                    obliviate_samples_per_s: median(s),
                    pytorch_samples_per_s: pytorch,
                    ratio: median(r),
                    torch: torch.clone(),
                });
            }
        }
        Ok(rows)
    })();
    let _ = std::fs::remove_file(&script);
    result
}

//! `obliviate bench`: measured figures for docs/BENCHMARKS.md (never timed unit tests).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use obliviate::chain::{Chain, TrainConfig};
use obliviate::data::split::mix;
use obliviate::data::{Dataset, DatasetName, Samples};
use obliviate::model::{InputShape, ModelKind};
use obliviate::optim::OptimConfig;
use obliviate::train::{BlockTrainer, NoProgress};
use obliviate::unlearn::ForgetOptions;
use serde_json::json;

mod audit;
mod compare;

pub use audit::{AuditBench, bench_audit};
pub use compare::{CompareBench, bench_compare};

use crate::Env;
use crate::commands::{emit, load_data, on_backend};

const TORCH_SCRIPT: &str = include_str!("../../../../bench/torch_train.py");

/// Input shape, classes, batch size and timed steps of each model's training benchmark.
fn workload(kind: ModelKind) -> (DatasetName, InputShape, usize, usize, usize) {
    let img = |c, s| InputShape {
        channels: c,
        height: s,
        width: s,
    };
    match kind {
        ModelKind::Mlp => (
            DatasetName::Purchase,
            InputShape {
                channels: 1,
                height: 1,
                width: 600,
            },
            100,
            128,
            60,
        ),
        ModelKind::MlpSmall => (
            DatasetName::Purchase,
            InputShape {
                channels: 1,
                height: 1,
                width: 600,
            },
            100,
            128,
            200,
        ),
        ModelKind::Lenet5 => (DatasetName::Mnist, img(1, 28), 10, 64, 100),
        ModelKind::Cnn => (DatasetName::Cifar10, img(3, 32), 10, 128, 10),
        ModelKind::Resnet18 => (DatasetName::Cifar10, img(3, 32), 10, 32, 3),
    }
}

fn synthetic(name: DatasetName, shape: InputShape, classes: usize, n: usize) -> Result<Dataset> {
    let mut state = 1u64;
    let mut bytes = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                state = mix(state);
                if name == DatasetName::Purchase {
                    (state & 1) as u8
                } else {
                    (state >> 56) as u8
                }
            })
            .collect()
    };
    let mk = |n: usize, pixels: Vec<u8>| Samples {
        ids: (0..n as u64).collect(),
        pixels,
        labels: (0..n).map(|i| (i % classes) as u16).collect(),
    };
    let train = mk(n, bytes(n * shape.numel()));
    let test = mk(classes, bytes(classes * shape.numel()));
    Ok(Dataset::from_parts(name, shape, classes, train, test)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Training throughput of obliviate and PyTorch on each model, interleaved over rounds.
pub fn bench_train(models: &[String], rounds: usize, python: &str, env: &Env) -> Result<()> {
    let kinds: Vec<ModelKind> = models
        .iter()
        .map(|m| ModelKind::parse(m))
        .collect::<Result<_, _>>()?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let script = std::env::temp_dir().join(format!("obliviate-torch-{}.py", std::process::id()));
    std::fs::write(&script, TORCH_SCRIPT)?;
    let mut rows = Vec::new();
    for kind in kinds {
        let (name, shape, classes, batch, steps) = workload(kind);
        let data = synthetic(name, shape, classes, batch * steps)?;
        let cfg = TrainConfig {
            blocks: 1,
            epochs_per_block: 1,
            batch_size: batch,
            optim: OptimConfig::sgd(0.01, 0.9),
            seed: 0,
            lr_final: 1.0,
        };
        let ids: Vec<u64> = (0..(batch * steps) as u64).collect();
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut torch_version = String::new();
        for round in 0..rounds {
            let sps = on_backend!(env, B, device => {
                let (theta, opt) = BlockTrainer::<B>::initial(&data, kind, &cfg, &device)?;
                let mut t = BlockTrainer::<B>::new(&data, kind, cfg, theta, &opt, 0, &device)?;
                t.run_block(1, &ids[..batch * 3])?; // warm-up
                let start = Instant::now();
                t.run_block(1, &ids)?;
                (batch * steps) as f64 / start.elapsed().as_secs_f64()
            });
            let out = std::process::Command::new(python)
                .arg(&script)
                .args([
                    "--model",
                    kind.name(),
                    "--steps",
                    &steps.to_string(),
                    "--batch",
                    &batch.to_string(),
                    "--threads",
                    &threads.to_string(),
                ])
                .output()
                .with_context(|| {
                    format!(
                        "cannot run {python} (PyTorch is the benchmark peer: pip install torch)"
                    )
                })?;
            if !out.status.success() {
                bail!(
                    "PyTorch peer failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let peer = v["samples_per_s"].as_f64().unwrap_or(0.0);
            torch_version = v["torch"].as_str().unwrap_or("").to_string();
            if !env.json {
                eprintln!(
                    "round {round}: {kind:<9} obliviate {sps:>9.1} samples/s   PyTorch {peer:>9.1} samples/s   ratio {:.2}",
                    sps / peer
                );
            }
            ours.push(sps);
            theirs.push(peer);
            ratios.push(sps / peer);
        }
        rows.push(json!({
            "model": kind.name(), "batch": batch, "steps": steps, "threads": threads,
            "obliviate_samples_per_s": median(ours), "pytorch_samples_per_s": median(theirs),
            "ratio": median(ratios), "torch": torch_version,
        }));
    }
    let _ = std::fs::remove_file(&script);
    emit(env, &json!({"rounds": rounds, "rows": rows}), || {
        println!(
            "| model | batch | steps | obliviate samples/s | PyTorch samples/s | ratio (median of {rounds} rounds) |"
        );
        println!("|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.2} |",
                r["model"].as_str().unwrap_or(""),
                r["batch"],
                r["steps"],
                r["obliviate_samples_per_s"].as_f64().unwrap_or(0.0),
                r["pytorch_samples_per_s"].as_f64().unwrap_or(0.0),
                r["ratio"].as_f64().unwrap_or(0.0)
            );
        }
    });
    Ok(())
}

/// Settings of `bench unlearn`.
pub struct UnlearnBench {
    pub datasets: Vec<String>,
    pub model: String,
    pub cfg: TrainConfig,
    pub requests: Vec<usize>,
    pub seeds: usize,
    pub sequence: usize,
    pub opts: ForgetOptions,
    pub work: PathBuf,
    pub write: Option<PathBuf>,
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        std::fs::remove_dir_all(dst)?;
    }
    std::fs::create_dir_all(dst.join("blocks"))?;
    for sub in ["", "blocks"] {
        for e in std::fs::read_dir(src.join(sub))?.flatten() {
            if e.path().is_file() && e.file_name() != ".lock" {
                std::fs::copy(e.path(), dst.join(sub).join(e.file_name()))?;
            }
        }
    }
    Ok(())
}

fn pick(data: &Dataset, n: usize, seed: u64) -> Vec<u64> {
    let mut state = mix(seed ^ 0x5eed ^ ((n as u64) << 32));
    let mut out = std::collections::BTreeSet::new();
    while out.len() < n.min(data.train.len()) {
        state = mix(state);
        out.insert(data.train.ids[(state % data.train.len() as u64) as usize]);
    }
    out.into_iter().collect()
}

/// DeepObliviate against retraining from scratch: requests of several sizes, several seeds.
pub fn bench_unlearn(b: &UnlearnBench, env: &Env) -> Result<()> {
    let kind = ModelKind::parse(&b.model)?;
    std::fs::create_dir_all(&b.work)?;
    let mut md = String::new();
    let mut all = Vec::new();
    let say = |s: String| progress_line(env, &s);
    for ds in &b.datasets {
        let name = DatasetName::parse(ds)?;
        let data = load_data(name, None, env)?;
        let mut rows: Vec<(usize, Vec<serde_json::Value>)> =
            b.requests.iter().map(|&n| (n, Vec::new())).collect();
        let mut sequence = Vec::new();
        for seed in 0..b.seeds as u64 {
            let cfg = TrainConfig { seed, ..b.cfg };
            let base = b.work.join(format!("{ds}-s{seed}-base"));
            if base.exists() {
                std::fs::remove_dir_all(&base)?;
            }
            let trained = on_backend!(env, B, device => obliviate::train::train::<B>(&base, &data, kind, cfg, None, &device, &mut NoProgress)?);
            say(format!(
                "{ds} seed {seed}: trained in {:.1} s, accuracy {:.2} %",
                trained.seconds - trained.eval_seconds,
                100.0 * trained.test_accuracy
            ));
            for (n, out) in rows.iter_mut() {
                let run = b.work.join(format!("{ds}-s{seed}-n{n}"));
                let gold = b.work.join(format!("{ds}-s{seed}-n{n}-retrain"));
                copy_dir(&base, &run)?;
                if gold.exists() {
                    std::fs::remove_dir_all(&gold)?;
                }
                let ids = pick(&data, *n, seed);
                let r = on_backend!(env, B, device => obliviate::unlearn::forget::<B>(&run, &data, &ids, &b.opts, &device, &mut NoProgress)?);
                let g = on_backend!(env, B, device => obliviate::train::retrain::<B>(&run, &gold, &data, &device, &mut NoProgress)?);
                let retrain_s = g.seconds - g.eval_seconds;
                say(format!(
                    "  {n:>4} id(s): blocks {}..={} ({} retrained), forget {:.2} s, retrain {:.1} s, speedup {:.1}×, acc unlearned {:.2} % retrained {:.2} %",
                    r.first_block,
                    r.stop_block,
                    r.blocks_retrained,
                    r.seconds,
                    retrain_s,
                    retrain_s / r.seconds,
                    100.0 * r.test_accuracy,
                    100.0 * g.test_accuracy
                ));
                out.push(json!({
                    "seed": seed, "ids": n, "original": trained.test_accuracy, "unlearned": r.test_accuracy, "retrained": g.test_accuracy,
                    "blocks_retrained": r.blocks_retrained, "forget_seconds": r.seconds, "retrain_seconds": retrain_s,
                    "speedup": retrain_s / r.seconds, "bytes_on_disk": Chain::open(&run)?.bytes_on_disk(), "stop_rule": r.stop_rule,
                }));
                std::fs::remove_dir_all(&gold)?;
                std::fs::remove_dir_all(&run)?;
            }
            if seed == 0 && b.sequence > 0 {
                let run = b.work.join(format!("{ds}-sequence"));
                copy_dir(&base, &run)?;
                let ids = pick(&data, b.sequence, 99);
                for id in ids {
                    let r = on_backend!(env, B, device => obliviate::unlearn::forget::<B>(&run, &data, &[id], &b.opts, &device, &mut NoProgress)?);
                    sequence.push(json!({"id": id, "seconds": r.seconds, "accuracy": r.test_accuracy, "blocks_retrained": r.blocks_retrained}));
                }
                std::fs::remove_dir_all(&run)?;
            }
            std::fs::remove_dir_all(&base)?;
        }
        md.push_str(&format!(
            "\n**{ds}**, `{}`, B = {}, E = {}, batch {}, {} lr {} → ×{} over blocks, stop: {:?}, min-points {}; {} seed(s)\n\n",
            kind, b.cfg.blocks, b.cfg.epochs_per_block, b.cfg.batch_size, b.cfg.optim.kind.name(), b.cfg.optim.lr, b.cfg.lr_final, b.opts.stop, b.opts.min_points, b.seeds
        ));
        md.push_str("| ids / request | original acc % | retrained acc % | unlearned acc % | \\|unlearned − retrained\\| pt | blocks retrained | forget s | retrain s | speedup × | bytes on disk |\n");
        md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for (n, out) in &rows {
            let col = |k: &str| {
                out.iter()
                    .map(|v| v[k].as_f64().unwrap_or(0.0))
                    .collect::<Vec<f64>>()
            };
            let gap: Vec<f64> = out
                .iter()
                .map(|v| {
                    100.0
                        * (v["unlearned"].as_f64().unwrap_or(0.0)
                            - v["retrained"].as_f64().unwrap_or(0.0))
                        .abs()
                })
                .collect();
            let f = |k: &str, scale: f64, p: usize| {
                let (m, s) = mean_std(&col(k).iter().map(|x| x * scale).collect::<Vec<_>>());
                format!("{m:.p$} ± {s:.p$}")
            };
            md.push_str(&format!(
                "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
                f("original", 100.0, 2),
                f("retrained", 100.0, 2),
                f("unlearned", 100.0, 2),
                {
                    let (m, s) = mean_std(&gap);
                    format!("{m:.2} ± {s:.2}")
                },
                f("blocks_retrained", 1.0, 1),
                f("forget_seconds", 1.0, 2),
                f("retrain_seconds", 1.0, 1),
                f("speedup", 1.0, 1),
                mean_std(&col("bytes_on_disk")).0
            ));
        }
        if !sequence.is_empty() {
            let secs: Vec<f64> = sequence
                .iter()
                .map(|v| v["seconds"].as_f64().unwrap_or(0.0))
                .collect();
            let accs: Vec<f64> = sequence
                .iter()
                .map(|v| 100.0 * v["accuracy"].as_f64().unwrap_or(0.0))
                .collect();
            let half = secs.len() / 2;
            md.push_str(&format!(
                "\n{} successive single-id requests (seed 0): seconds per request first half {:.2} ± {:.2}, second half {:.2} ± {:.2}; accuracy after each request {:.2} % … {:.2} % (first {:.2} %, last {:.2} %).\n",
                secs.len(), mean_std(&secs[..half]).0, mean_std(&secs[..half]).1, mean_std(&secs[half..]).0, mean_std(&secs[half..]).1,
                accs.iter().copied().fold(f64::INFINITY, f64::min), accs.iter().copied().fold(0.0, f64::max), accs[0], accs[accs.len() - 1]
            ));
        }
        all.push(json!({"dataset": ds, "rows": rows.iter().map(|(n, r)| json!({"ids": n, "runs": r})).collect::<Vec<_>>(), "sequence": sequence}));
    }
    if let Some(path) = &b.write {
        write_section(path, "bench-unlearn", &md)?;
    }
    emit(env, &json!({"datasets": all}), || println!("{md}"));
    Ok(())
}

/// A progress line on stderr, unless the output is JSON.
pub fn progress_line(env: &Env, s: &str) {
    if !env.json {
        eprintln!("{s}");
    }
}

/// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in `path`
/// (appending the section if absent).
pub fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (b, e) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let section = format!("{b}\n{}\n{e}", body.trim_end());
    let new = match (text.find(&b), text.find(&e)) {
        (Some(i), Some(j)) if j > i => format!("{}{}{}", &text[..i], section, &text[j + e.len()..]),
        _ => format!("{text}\n{section}\n"),
    };
    std::fs::write(path, new)?;
    Ok(())
}

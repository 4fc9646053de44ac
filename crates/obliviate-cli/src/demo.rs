//! `obliviate demo`: the whole method on the bundled data in about a minute.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use obliviate::chain::{Chain, TrainConfig};
use obliviate::data::DatasetName;
use obliviate::data::split::mix;
use obliviate::model::ModelKind;
use obliviate::optim::OptimConfig;
use obliviate::unlearn::ForgetOptions;
use serde_json::json;

use crate::Env;
use crate::commands::{emit, load_data, on_backend};
use crate::progress::Bars;

/// Demo training setup: LeNet-5 on mnist-mini, 100 blocks of 100 samples, 2 epochs each.
fn demo_config(seed: u64) -> TrainConfig {
    TrainConfig {
        blocks: 100,
        epochs_per_block: 2,
        batch_size: 32,
        optim: OptimConfig::adam(1e-3),
        seed,
        lr_final: 0.1,
    }
}

pub fn demo(dir: Option<&Path>, requests: usize, seed: u64, env: &Env) -> Result<()> {
    let tmp;
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            tmp = TempDir::new()?;
            tmp.0.clone()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let run = dir.join("demo-run");
    let gold = dir.join("demo-retrain");
    for p in [&run, &gold] {
        if p.exists() {
            std::fs::remove_dir_all(p)?;
        }
    }
    let say = |s: &str| {
        if !env.json {
            eprintln!("{s}");
        }
    };
    let data = load_data(DatasetName::MnistMini, None, env)?;
    let cfg = demo_config(seed);
    let mut bars = Bars::new(env.json);
    say(&format!(
        "1/3 training {} block-wise on {} ({} train / {} test): {} blocks × {} epochs",
        ModelKind::Lenet5,
        data.name,
        data.train.len(),
        data.test.len(),
        cfg.blocks,
        cfg.epochs_per_block
    ));
    let trained = on_backend!(env, B, device => obliviate::train::train::<B>(&run, &data, ModelKind::Lenet5, cfg, None, &device, &mut bars)?);
    let opts = ForgetOptions::default();
    let mut reports = Vec::new();
    let mut state = mix(seed ^ 0xdead_beef);
    say(&format!(
        "2/3 forgetting {requests} random training sample(s), one request each"
    ));
    for _ in 0..requests {
        state = mix(state);
        let id = data.train.ids[(state % data.train.len() as u64) as usize];
        let r = on_backend!(env, B, device => obliviate::unlearn::forget::<B>(&run, &data, &[id], &opts, &device, &mut bars)?);
        say(&format!(
            "   id {id:>5}: block {:>3}, retrained blocks {}..={} ({}), {:.2} s, accuracy {:.2} %",
            r.first_block,
            r.first_block,
            r.stop_block,
            r.blocks_retrained,
            r.seconds,
            100.0 * r.test_accuracy
        ));
        reports.push(r);
    }
    say("3/3 retraining from scratch without the forgotten ids (the gold standard)");
    let t = Instant::now();
    let retrained = on_backend!(env, B, device => obliviate::train::retrain::<B>(&run, &gold, &data, &device, &mut bars)?);
    let retrain_seconds = t.elapsed().as_secs_f64();
    let unlearned = Chain::open(&run)?.manifest.test_accuracy.unwrap_or(0.0);
    let forget_seconds: f64 =
        reports.iter().map(|r| r.seconds).sum::<f64>() / reports.len().max(1) as f64;
    let blocks: f64 = reports
        .iter()
        .map(|r| r.blocks_retrained as f64)
        .sum::<f64>()
        / reports.len().max(1) as f64;
    let speedup = retrain_seconds / forget_seconds.max(1e-9);
    let v = json!({
        "original_accuracy": trained.test_accuracy,
        "unlearned_accuracy": unlearned,
        "retrained_accuracy": retrained.test_accuracy,
        "train_seconds": trained.seconds,
        "forget_seconds_mean": forget_seconds,
        "retrain_seconds": retrain_seconds,
        "speedup": speedup,
        "blocks": cfg.blocks,
        "blocks_retrained_mean": blocks,
        "requests": reports,
    });
    emit(env, &v, || {
        println!();
        println!("| model | test accuracy | seconds |");
        println!("|---|---|---|");
        println!(
            "| original (block-wise) | {:.2} % | {:.1} (training) |",
            100.0 * trained.test_accuracy,
            trained.seconds
        );
        println!(
            "| unlearned (DeepObliviate, {} request(s)) | {:.2} % | {:.2} per request |",
            reports.len(),
            100.0 * unlearned,
            forget_seconds
        );
        println!(
            "| retrained from scratch | {:.2} % | {:.1} |",
            100.0 * retrained.test_accuracy,
            retrain_seconds
        );
        println!();
        println!(
            "blocks retrained per request: {blocks:.1} of {}",
            cfg.blocks
        );
        println!("speedup (retrain ÷ forget):   {speedup:.1}×");
    });
    Ok(())
}

/// A temporary folder removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let p = std::env::temp_dir().join(format!("obliviate-demo-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

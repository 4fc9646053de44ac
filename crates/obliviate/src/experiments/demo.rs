//! `obliviate demo`: the whole method on the bundled data in about a minute: train block-wise,
//! forget random ids one request at a time, retrain from scratch, compare.

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::{Say, fresh_folder};
use crate::chain::{Chain, TrainConfig};
use crate::data::split::mix;
use crate::data::{Dataset, DatasetName};
use crate::error::Result;
use crate::model::ModelKind;
use crate::optim::OptimConfig;
use crate::train::{Progress, retrain, train};
use crate::unlearn::{ForgetOptions, ForgetReport, forget};

/// The demo's model.
pub const MODEL: ModelKind = ModelKind::Lenet5;

/// The demo's training: 100 blocks of 100 samples, 2 epochs each, Adam with a decaying rate;
/// each minibatch computed as `micro_batches` slices.
pub fn config(seed: u64, micro_batches: usize) -> TrainConfig {
    TrainConfig {
        blocks: 100,
        epochs_per_block: 2,
        batch_size: 32,
        optim: OptimConfig::adam(1e-3),
        seed,
        lr_final: 0.1,
        storage: Default::default(),
        micro_batches,
    }
}

/// What the demo measured.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Test accuracy of the block-wise trained model.
    pub original_accuracy: f64,
    /// After the last forget request.
    pub unlearned_accuracy: f64,
    /// Of the model retrained without every forgotten id.
    pub retrained_accuracy: f64,
    /// Seconds of block-wise training.
    pub train_seconds: f64,
    /// Mean seconds per forget request.
    pub forget_seconds_mean: f64,
    /// Seconds of the retraining.
    pub retrain_seconds: f64,
    /// `retrain_seconds / forget_seconds_mean`.
    pub speedup: f64,
    /// Blocks B.
    pub blocks: usize,
    /// Mean blocks retrained per request.
    pub blocks_retrained_mean: f64,
    /// SHA-256 of the unlearned model.
    pub model_sha256: String,
    /// Every request.
    pub requests: Vec<ForgetReport>,
}

/// Runs the demo in `dir` (its `demo-run` and `demo-retrain` folders are replaced if they hold
/// earlier demo runs; anything else there is refused).
pub fn run<B: AutodiffBackend>(
    dir: &Path,
    requests: usize,
    cfg: TrainConfig,
    device: &B::Device,
    progress: &mut dyn Progress,
    say: &mut Say<'_>,
) -> Result<DemoReport> {
    let run = dir.join("demo-run");
    let gold = dir.join("demo-retrain");
    let data = Dataset::load(DatasetName::MnistMini, None)?;
    for p in [&run, &gold] {
        fresh_folder(p)?;
    }
    say(&format!(
        "1/3 training {MODEL} block-wise on {} ({} train / {} test): {} blocks × {} epochs",
        data.name,
        data.train.len(),
        data.test.len(),
        cfg.blocks,
        cfg.epochs_per_block
    ));
    let trained = train::<B>(&run, &data, MODEL, cfg, None, device, progress)?;
    let opts = ForgetOptions::default();
    let mut reports = Vec::new();
    let mut state = mix(cfg.seed ^ 0xdead_beef);
    say(&format!(
        "2/3 forgetting {requests} random training sample(s), one request each"
    ));
    let mut chain = Chain::open_mut(&run)?;
    for _ in 0..requests {
        state = mix(state);
        let id = data.train.ids[(state % data.train.len() as u64) as usize];
        let r = forget::<B>(&mut chain, &data, &[id], &opts, device, progress)?;
        say(&format!(
            "   id {id:>5}: block {:>3}, retrained blocks {}..={} ({}), {:.2} s, accuracy {:.2} %",
            r.first_block,
            r.first_block,
            r.stop_block,
            r.blocks_retrained,
            r.seconds,
            100.0 * r.test_accuracy.unwrap_or(f64::NAN)
        ));
        reports.push(r);
    }
    let m = chain.into_manifest();
    say("3/3 retraining from scratch without the forgotten ids (the gold standard)");
    let t = Instant::now();
    let retrained = retrain::<B>(&run, &gold, &data, None, device, progress)?;
    let retrain_seconds = t.elapsed().as_secs_f64();
    let n = reports.len().max(1) as f64;
    let forget_seconds = reports.iter().map(|r| r.seconds).sum::<f64>() / n;
    Ok(DemoReport {
        original_accuracy: trained.test_accuracy,
        unlearned_accuracy: m.test_accuracy.unwrap_or(f64::NAN),
        retrained_accuracy: retrained.test_accuracy,
        train_seconds: trained.seconds,
        forget_seconds_mean: forget_seconds,
        retrain_seconds,
        speedup: retrain_seconds / forget_seconds.max(1e-9),
        blocks: cfg.blocks,
        blocks_retrained_mean: reports
            .iter()
            .map(|r| r.blocks_retrained as f64)
            .sum::<f64>()
            / n,
        model_sha256: m.model_file.map(|f| f.sha256).unwrap_or_default(),
        requests: reports,
    })
}

//! `train`, `train --resume` and `retrain`: building a whole chain in a run folder.

use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::{BlockTrainer, Progress, backend_name, test_accuracy};
use crate::chain::{Chain, Manifest, TrainConfig};
use crate::data::{Dataset, DatasetRecord, Groups, split};
use crate::error::Result;
use crate::model::ModelKind;
use crate::store::atomic;

/// What `train` reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Number of blocks B.
    pub blocks: usize,
    /// Test accuracy of the served model.
    pub test_accuracy: f64,
    /// Wall-clock seconds of this invocation.
    pub seconds: f64,
    /// Bytes of the run folder's chain files, manifest and ledger.
    pub bytes_on_disk: u64,
    /// SHA-256 of the served model file.
    pub model_sha256: String,
    /// Blocks that were already trained when this invocation started (resume).
    pub resumed_from: usize,
    /// Of `seconds`, the time spent measuring test accuracy (not training).
    pub eval_seconds: f64,
}

impl TrainSummary {
    /// Seconds of training proper (without the accuracy evaluation).
    pub fn train_seconds(&self) -> f64 {
        self.seconds - self.eval_seconds
    }
}

/// How often the manifest is rewritten during training: a crash loses at most this much work.
const COMMIT_EVERY: Duration = Duration::from_secs(2);

/// The seeded, class-stratified split of `data`'s training ids into `cfg.blocks` blocks, leaving
/// out `without` (ascending) and keeping each of `groups` in consecutive blocks: the block
/// order every method trained "like the chain" uses.
pub fn block_split(
    data: &Dataset,
    cfg: &TrainConfig,
    without: &[u64],
    groups: Option<&Groups>,
) -> Result<Vec<Vec<u64>>> {
    let (ids, labels): (Vec<u64>, Vec<u16>) = data
        .train
        .ids
        .iter()
        .zip(&data.train.labels)
        .filter(|(id, _)| without.binary_search(id).is_err())
        .map(|(&i, &l)| (i, l))
        .unzip();
    match groups {
        Some(g) => split::grouped(&ids, &labels, cfg.blocks, cfg.seed, g),
        None => split::stratified(&ids, &labels, cfg.blocks, cfg.seed),
    }
}

/// Trains a new chain in `dir` (absent or empty) on `data`, placing each of `groups` in
/// consecutive blocks; the run records how `data` derives from the canonical files (and the
/// groups), so later commands rebuild the same data and resolve group names.
pub fn train<B: AutodiffBackend>(
    dir: &Path,
    data: &Dataset,
    kind: ModelKind,
    cfg: TrainConfig,
    groups: Option<&Groups>,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let blocks = block_split(data, &cfg, &[], groups)?;
    let groups = groups.cloned();
    create_and_train::<B>(
        dir,
        data,
        kind,
        cfg,
        blocks,
        Vec::new(),
        groups,
        device,
        progress,
    )
}

#[allow(clippy::too_many_arguments)]
fn create_and_train<B: AutodiffBackend>(
    dir: &Path,
    data: &Dataset,
    kind: ModelKind,
    cfg: TrainConfig,
    blocks: Vec<Vec<u64>>,
    deleted: Vec<u64>,
    groups: Option<Groups>,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let start = Instant::now();
    cfg.validate_for(kind)?;
    let (theta0, opt0) = BlockTrainer::<B>::initial(data, kind, &cfg, device)?;
    let manifest = Manifest::new(
        DatasetRecord::of(data),
        kind,
        cfg,
        backend_name::<B>(),
        blocks,
        deleted,
        groups,
    );
    let mut chain = Chain::create(dir, manifest, &theta0, &opt0)?;
    continue_training::<B>(&mut chain, data, device, progress, start)
}

/// Continues an interrupted `train` from its last committed block.
pub fn resume<B: AutodiffBackend>(
    dir: &Path,
    data: &Dataset,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let start = Instant::now();
    let mut chain = Chain::open_mut(dir)?;
    chain.check_dataset(data)?;
    if chain.manifest().is_complete() {
        // Nothing to train: say whether what is there is sound rather than that it is done.
        chain.verify()?;
    }
    continue_training::<B>(&mut chain, data, device, progress, start)
}

/// Trains a fresh chain in `out` without any of the ids `run` has forgotten: the gold
/// standard unlearning is compared with. With `seed` `None` it uses `run`'s θ_0 seed, split
/// and order (forgetting with ε = 0 equals it bit for bit); with another seed, a new split,
/// initial weights and order: two such retrains give the noise floor that
/// unlearned-vs-retrained distances are judged against.
pub fn retrain<B: AutodiffBackend>(
    run: &Path,
    out: &Path,
    data: &Dataset,
    seed: Option<u64>,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let src = Chain::open(run)?;
    src.check_dataset(data)?;
    let m = src.manifest();
    let (cfg, blocks) = match seed {
        None => (m.config, m.blocks.iter().map(|b| b.ids.clone()).collect()),
        Some(seed) => {
            let cfg = TrainConfig { seed, ..m.config };
            (cfg, block_split(data, &cfg, &m.deleted, m.groups.as_ref())?)
        }
    };
    create_and_train::<B>(
        out,
        data,
        m.model,
        cfg,
        blocks,
        m.deleted.clone(),
        m.groups.clone(),
        device,
        progress,
    )
}

/// A trainer holding θ_k and o_k of a chain still in its first training: o_k is read where
/// stored, else replayed from the latest stored state, and the replay must reproduce the
/// stored increments (training is deterministic) or the chain is refused.
fn resume_point<'a, B: AutodiffBackend>(
    chain: &Chain,
    data: &'a Dataset,
    k: usize,
    device: &B::Device,
) -> Result<BlockTrainer<'a, B>> {
    let m = chain.manifest();
    let a = m.opt_anchor(k);
    let (opt, step) = chain.opt_state(a)?;
    let mut trainer =
        BlockTrainer::<B>::new(data, m.model, m.config, chain.theta(a)?, &opt, step, device)?;
    for (i, b) in m.blocks.iter().enumerate().take(k).skip(a) {
        let out = trainer.run_block(i + 1, &b.ids)?;
        let stored = b.delta.as_ref().map(|r| chain.read_set(r)).transpose()?;
        if !stored.is_some_and(|(s, _)| s.bit_identical(&out.delta)) {
            return Err(crate::Error::Chain {
                run: chain.dir().to_path_buf(),
                detail: format!(
                    "replaying block {} from the optimizer state of block {a} does not \
                     reproduce its stored increment",
                    i + 1
                ),
            });
        }
    }
    Ok(trainer)
}

fn continue_training<B: AutodiffBackend>(
    chain: &mut Chain,
    data: &Dataset,
    device: &B::Device,
    progress: &mut dyn Progress,
    start: Instant,
) -> Result<TrainSummary> {
    let m = chain.manifest();
    let (done, total, kind) = (m.completed(), m.blocks.len(), m.model);
    let (generation, prior_seconds) = (m.generation, m.train_seconds);
    if done < total {
        let mut trainer = resume_point::<B>(chain, data, done, device)?;
        progress.start("train blocks", total as u64);
        progress.set(done as u64);
        let mut last_commit = Instant::now();
        for block in done + 1..=total {
            let ids = chain.manifest().blocks[block - 1].ids.clone();
            let out = trainer.run_block(block, &ids)?;
            let files = chain.write_block(
                block,
                generation,
                (&out.stored_delta, &out.stored_opt, out.step),
                trainer.theta(),
            )?;
            atomic::hit(&format!("train:block-written:{block}"))?;
            chain.set_block(block, files);
            if last_commit.elapsed() >= COMMIT_EVERY || block == total {
                chain.set_train_seconds(prior_seconds + start.elapsed().as_secs_f64());
                chain.commit()?;
                last_commit = Instant::now();
            }
            progress.set(block as u64);
        }
        progress.finish();
    }
    let mut eval_seconds = 0.0;
    if chain.manifest().model_file.is_none() {
        let theta = chain.theta(total)?;
        let t = Instant::now();
        let acc = test_accuracy::<B>(data, kind, &theta, device)?;
        eval_seconds = t.elapsed().as_secs_f64();
        let model = chain.write_model(generation, &theta)?;
        chain.set_model(model, acc);
        chain.set_train_seconds(prior_seconds + start.elapsed().as_secs_f64());
        chain.commit()?;
    }
    let m = chain.manifest();
    Ok(TrainSummary {
        blocks: total,
        test_accuracy: m.test_accuracy.unwrap_or(0.0),
        seconds: start.elapsed().as_secs_f64(),
        bytes_on_disk: chain.bytes_on_disk(),
        model_sha256: m
            .model_file
            .as_ref()
            .map(|f| f.sha256.clone())
            .unwrap_or_default(),
        resumed_from: done,
        eval_seconds,
    })
}

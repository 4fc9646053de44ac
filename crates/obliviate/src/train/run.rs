//! `train`, `train --resume` and `retrain`: building a whole chain in a run folder.

use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::{BlockTrainer, Progress, backend_name, test_accuracy};
use crate::chain::{
    BlockRecord, Chain, DataOrigin, DatasetRecord, Manifest, TrainConfig, atomic, manifest::FORMAT,
};
use crate::data::{Dataset, split};
use crate::error::Result;
use crate::model::ModelKind;
use crate::params::FileMeta;

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

/// How often the manifest is rewritten during training: a crash loses at most this much work.
const COMMIT_EVERY: Duration = Duration::from_secs(2);

/// The manifest's record of `data` as derived per `origin`.
pub(crate) fn dataset_record(data: &Dataset, origin: &DataOrigin) -> DatasetRecord {
    DatasetRecord {
        name: data.name,
        fingerprint: data.fingerprint.clone(),
        train_samples: data.train.len(),
        test_samples: data.test.len(),
        shape: data.shape,
        classes: data.classes,
        limit: origin.limit,
        backdoor: origin.backdoor.clone(),
    }
}

/// Trains a new chain in `dir` (which must not hold a run). `limit` records that `data` was
/// truncated to its first (train, test) samples, so later commands can reload the same data.
pub fn train<B: AutodiffBackend>(
    dir: &Path,
    data: &Dataset,
    kind: ModelKind,
    cfg: TrainConfig,
    limit: Option<(usize, usize)>,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let origin = DataOrigin {
        limit,
        backdoor: None,
    };
    train_with::<B>(dir, data, kind, cfg, &origin, device, progress)
}

/// [`train`] for data derived from the canonical files as `origin` says (recorded in the
/// manifest so later commands rebuild the same data).
pub fn train_with<B: AutodiffBackend>(
    dir: &Path,
    data: &Dataset,
    kind: ModelKind,
    cfg: TrainConfig,
    origin: &DataOrigin,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let blocks = split::stratified(&data.train.ids, &data.train.labels, cfg.blocks, cfg.seed)?;
    create_and_train::<B>(
        dir,
        data,
        kind,
        cfg,
        origin,
        blocks,
        Vec::new(),
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
    origin: &DataOrigin,
    blocks: Vec<Vec<u64>>,
    deleted: Vec<u64>,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let start = Instant::now();
    let (theta0, opt0) = BlockTrainer::<B>::initial(data, kind, &cfg, device)?;
    let placeholder = crate::chain::FileRef {
        file: String::new(),
        sha256: String::new(),
        bytes: 0,
    };
    let manifest = Manifest {
        format: FORMAT,
        generation: 0,
        dataset: dataset_record(data, origin),
        model: kind,
        config: cfg,
        backend: backend_name::<B>(),
        theta0: placeholder.clone(),
        opt0: placeholder,
        blocks: blocks
            .into_iter()
            .enumerate()
            .map(|(i, ids)| BlockRecord {
                index: i + 1,
                ids,
                delta: None,
                opt: None,
                step: 0,
            })
            .collect(),
        deleted,
        model_file: None,
        test_accuracy: None,
        train_seconds: 0.0,
        checksum: String::new(),
    };
    let mut chain = Chain::create(dir, manifest)?;
    chain.manifest.theta0 = chain.write_set(
        "theta0.safetensors",
        &theta0,
        &FileMeta {
            kind: "theta".into(),
            ..Default::default()
        },
    )?;
    chain.manifest.opt0 = chain.write_set(
        "opt0.safetensors",
        &opt0,
        &FileMeta {
            kind: "opt".into(),
            ..Default::default()
        },
    )?;
    chain.commit()?;
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
    continue_training::<B>(&mut chain, data, device, progress, start)
}

/// Trains a fresh chain in `out` from the same θ_0 seed, split and order as `run`, without any
/// of the ids `run` has forgotten: the gold standard that unlearning is compared with.
pub fn retrain<B: AutodiffBackend>(
    run: &Path,
    out: &Path,
    data: &Dataset,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let src = Chain::open(run)?;
    src.check_dataset(data)?;
    let m = &src.manifest;
    let blocks = m.blocks.iter().map(|b| b.ids.clone()).collect();
    create_and_train::<B>(
        out,
        data,
        m.model,
        m.config,
        &m.dataset.origin(),
        blocks,
        m.deleted.clone(),
        device,
        progress,
    )
}

/// Like [`retrain`], but with another seed (new split, initial weights and order): two such
/// retrains give the noise floor that unlearned-vs-retrained distances are judged against.
pub fn retrain_with_seed<B: AutodiffBackend>(
    run: &Path,
    out: &Path,
    data: &Dataset,
    seed: u64,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let src = Chain::open(run)?;
    src.check_dataset(data)?;
    let m = &src.manifest;
    let cfg = TrainConfig { seed, ..m.config };
    let kept: Vec<(u64, u16)> = data
        .train
        .ids
        .iter()
        .zip(&data.train.labels)
        .filter(|(id, _)| m.deleted.binary_search(id).is_err())
        .map(|(&i, &l)| (i, l))
        .collect();
    let ids: Vec<u64> = kept.iter().map(|k| k.0).collect();
    let labels: Vec<u16> = kept.iter().map(|k| k.1).collect();
    let blocks = split::stratified(&ids, &labels, cfg.blocks, seed)?;
    create_and_train::<B>(
        out,
        data,
        m.model,
        cfg,
        &m.dataset.origin(),
        blocks,
        m.deleted.clone(),
        device,
        progress,
    )
}

fn continue_training<B: AutodiffBackend>(
    chain: &mut Chain,
    data: &Dataset,
    device: &B::Device,
    progress: &mut dyn Progress,
    start: Instant,
) -> Result<TrainSummary> {
    let done = chain.manifest.completed();
    let total = chain.manifest.blocks.len();
    let kind = chain.manifest.model;
    let cfg = chain.manifest.config;
    let generation = chain.manifest.generation;
    let prior_seconds = chain.manifest.train_seconds;
    if done < total {
        let theta = chain.theta(done)?;
        let (opt, step) = chain.opt_state(done)?;
        let mut trainer = BlockTrainer::<B>::new(data, kind, cfg, theta, &opt, step, device)?;
        progress.start("train blocks", total as u64);
        progress.set(done as u64);
        let mut last_commit = Instant::now();
        for i in done..total {
            let ids = chain.manifest.blocks[i].ids.clone();
            let out = trainer.run_block(i + 1, &ids)?;
            let block = i + 1;
            let delta = chain.write_set(
                &format!("blocks/{block:05}.delta.g{generation}.safetensors"),
                &out.delta,
                &FileMeta {
                    kind: "delta".into(),
                    block: block as u64,
                    ..Default::default()
                },
            )?;
            let opt = chain.write_set(
                &format!("blocks/{block:05}.opt.g{generation}.safetensors"),
                &out.opt_state,
                &FileMeta {
                    kind: "opt".into(),
                    block: block as u64,
                    step: out.step,
                    ..Default::default()
                },
            )?;
            atomic::hit(&format!("train:block-written:{block}"))?;
            let rec = &mut chain.manifest.blocks[i];
            rec.delta = Some(delta);
            rec.opt = Some(opt);
            rec.step = out.step;
            if last_commit.elapsed() >= COMMIT_EVERY || block == total {
                chain.manifest.train_seconds = prior_seconds + start.elapsed().as_secs_f64();
                chain.commit()?;
                last_commit = Instant::now();
            }
            progress.set(block as u64);
        }
        progress.finish();
    }
    let mut eval_seconds = 0.0;
    if chain.manifest.model_file.is_none() {
        let theta = chain.theta(total)?;
        let t = Instant::now();
        let acc = test_accuracy::<B>(data, kind, &theta, device)?;
        eval_seconds = t.elapsed().as_secs_f64();
        let model = chain.write_set(
            &format!("model.g{generation}.safetensors"),
            &theta,
            &FileMeta {
                kind: "model".into(),
                block: total as u64,
                ..Default::default()
            },
        )?;
        chain.manifest.model_file = Some(model);
        chain.manifest.test_accuracy = Some(acc);
        chain.manifest.train_seconds = prior_seconds + start.elapsed().as_secs_f64();
        chain.commit()?;
    }
    let m = &chain.manifest;
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

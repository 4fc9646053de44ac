//! `obliviate info`: what a run holds.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use obliviate::chain::ledger::Ledger;
use obliviate::chain::{Chain, Manifest};
use serde::Serialize;

use crate::args::Env;
use crate::output::{emit, outln};

/// Blocks, ids, bytes on disk, hyper-parameters and requests of a run.
#[derive(Args, Debug)]
pub struct Info {
    /// Run folder.
    run: PathBuf,
    /// Also list the ids of every block.
    #[arg(long)]
    ids: bool,
}

#[derive(Serialize)]
struct BlockSizes {
    min: Option<usize>,
    max: Option<usize>,
}

#[derive(Serialize)]
struct InfoReport<'a> {
    run: &'a std::path::Path,
    dataset: &'a obliviate::data::DatasetRecord,
    model: obliviate::model::ModelKind,
    config: &'a obliviate::chain::TrainConfig,
    backend: &'a str,
    blocks: usize,
    blocks_trained: usize,
    ids: usize,
    deleted: usize,
    block_sizes: BlockSizes,
    bytes_on_disk: u64,
    /// Bytes by kind, and against the same chain in f32.
    bytes: obliviate::chain::Bytes,
    test_accuracy: Option<f64>,
    train_seconds: f64,
    generation: u64,
    requests: usize,
    /// User groups the placement kept together (0: placed without groups).
    groups: usize,
    model_sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    block_ids: Option<Vec<&'a [u64]>>,
}

pub fn run(a: &Info, env: &Env) -> Result<()> {
    let chain = Chain::open(&a.run)?;
    let m: &Manifest = chain.manifest();
    let requests = Ledger::committed(&a.run, m.generation)?.len();
    let sizes: Vec<usize> = m.blocks.iter().map(|b| b.ids.len()).collect();
    let bytes = chain.bytes();
    let r = InfoReport {
        run: &a.run,
        dataset: &m.dataset,
        model: m.model,
        config: &m.config,
        backend: &m.backend,
        blocks: m.blocks.len(),
        blocks_trained: m.completed(),
        ids: sizes.iter().sum(),
        deleted: m.deleted.len(),
        block_sizes: BlockSizes {
            min: sizes.iter().min().copied(),
            max: sizes.iter().max().copied(),
        },
        bytes_on_disk: bytes.total,
        bytes,
        test_accuracy: m.test_accuracy,
        train_seconds: m.train_seconds,
        generation: m.generation,
        requests,
        groups: m.groups.as_ref().map_or(0, |g| g.members.len()),
        model_sha256: m.model_file.as_ref().map(|f| f.sha256.as_str()),
        block_ids: a
            .ids
            .then(|| m.blocks.iter().map(|b| b.ids.as_slice()).collect()),
    };
    emit(env, &r, || {
        let c = &m.config;
        outln!("run          {}", a.run.display());
        outln!(
            "dataset      {} ({} train / {} test, {} classes){}",
            m.dataset.name,
            m.dataset.train_samples,
            m.dataset.test_samples,
            m.dataset.classes,
            m.dataset
                .limit
                .map(|(a, b)| format!(", limited to {a}/{b}"))
                .unwrap_or_default()
        );
        outln!("model        {}   backend {}", m.model, m.backend);
        outln!(
            "blocks       {} trained of {}, {} ids (block sizes {}..{}), {} forgotten in {} request(s)",
            r.blocks_trained,
            r.blocks,
            r.ids,
            r.block_sizes.min.unwrap_or(0),
            r.block_sizes.max.unwrap_or(0),
            r.deleted,
            requests
        );
        outln!(
            "training     E={} batch={} (in {} slices) {} lr={} (×{} by the last block) momentum={} wd={} seed={}",
            c.epochs_per_block,
            c.batch_size,
            c.micro_batches,
            c.optim.kind.name(),
            c.optim.lr,
            c.lr_final,
            c.optim.momentum,
            c.optim.weight_decay,
            c.seed
        );
        outln!(
            "storage      increments {}, optimizer state {}, compression {}, keyframes {}",
            c.storage.delta.name(),
            c.storage.opt.name(),
            c.storage.compression.name(),
            match c.storage.keyframe_every {
                0 => "none".to_string(),
                k => format!("every {k} blocks"),
            }
        );
        let mb = |b: u64| b as f64 / 1e6;
        outln!(
            "bytes        {:.1} MB = {:.1} % of f32 ({:.1} MB): increments {:.1}, optimizer {:.1}, \
             keyframes {:.1} (+ {} shift node(s) {:.2}), θ_0/o_0 {:.2}, model {:.2}, manifest {:.2}, \
             ledger {:.2}",
            mb(bytes.total),
            100.0 * bytes.ratio,
            mb(bytes.raw_f32),
            mb(bytes.increments),
            mb(bytes.optimizer),
            mb(bytes.keyframes),
            m.shifts.len(),
            mb(bytes.shifts),
            mb(bytes.initial),
            mb(bytes.model),
            mb(bytes.manifest),
            mb(bytes.ledger)
        );
        if let Some(g) = &m.groups {
            outln!(
                "groups       {} placed together ({} late)",
                g.members.len(),
                g.late.len()
            );
        }
        if let Some(acc) = m.test_accuracy {
            outln!("accuracy     {:.2} %", 100.0 * acc);
        }
        if let Some(h) = r.model_sha256 {
            outln!("model sha256 {h}");
        }
        outln!("train time   {:.1} s", m.train_seconds);
        if a.ids {
            for b in &m.blocks {
                outln!("block {:>5}: {:?}", b.index, b.ids);
            }
        }
    })
}

//! `bench storage`: what compact chains save and cost. Per dataset and seed, one chain per
//! storage setting (same seed, split and order), the same random-id requests forgotten in each,
//! and every unlearned model judged against one reference: the first setting's run retrained
//! without the ids (list f32/f32 first to judge against exact full-precision retraining).

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::{Say, Setup, fresh_folder, load_dataset, pick_ids};
use crate::chain::{Bytes, Chain, Storage, TrainConfig};
use crate::data::DatasetName;
use crate::error::{IoContext, Result};
use crate::train::{NoProgress, retrain, train};
use crate::unlearn::forget;

/// Settings of `bench storage`.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Datasets, model, training (its storage is replaced by each of `storages`), seeds,
    /// forgetting, scratch folder.
    pub setup: Setup,
    /// The settings compared; the first one's retrains are the reference.
    pub storages: Vec<Storage>,
    /// Random ids per request.
    pub requests: Vec<usize>,
    /// Also forget one id of the block at 90 % of the chain: the restore phase's worst case
    /// without keyframes (it folds nine tenths of the increments).
    pub late_id: bool,
}

impl StorageSettings {
    /// The requests' labels, in order: `N ids` per random request, then `late id`.
    pub fn labels(&self) -> Vec<String> {
        let mut v: Vec<String> = self.requests.iter().map(|n| format!("{n} id(s)")).collect();
        if self.late_id {
            v.push("late id".into());
        }
        v
    }
}

/// One request forgotten in one chain.
#[derive(Debug, Clone, Serialize)]
pub struct RequestCost {
    /// What was asked (see [`StorageSettings::labels`]).
    pub request: String,
    /// Ids in the request.
    pub ids: usize,
    /// Blocks retrained.
    pub blocks_retrained: usize,
    /// Blocks replayed from a stored optimizer state (chains that store it every few blocks).
    pub blocks_replayed: usize,
    /// Engine seconds of the request (evaluation excluded).
    pub forget_seconds: f64,
    /// Of which restoring θ_{d−1} and o_{d−1}.
    pub restore_seconds: f64,
    /// Bytes of chain files the request read.
    pub bytes_read: u64,
    /// Test accuracy of the unlearned model.
    pub unlearned: f64,
    /// Test accuracy of the reference retrained without the ids.
    pub retrained: f64,
}

/// One storage setting on one seed.
#[derive(Debug, Clone, Serialize)]
pub struct StorageRow {
    /// Seed.
    pub seed: u64,
    /// The setting (`DELTA/OPT[+zstd]`).
    pub storage: String,
    /// Bytes by kind after training.
    pub bytes: Bytes,
    /// Test accuracy of the trained chain.
    pub test_accuracy: f64,
    /// Seconds of training (evaluation excluded).
    pub train_seconds: f64,
    /// The requests, in `requests` order.
    pub requests: Vec<RequestCost>,
}

/// The results on one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct StorageResult {
    /// The dataset.
    pub dataset: DatasetName,
    /// Every (seed, storage).
    pub rows: Vec<StorageRow>,
}

/// Runs the benchmark.
pub fn run<B: AutodiffBackend>(
    settings: &StorageSettings,
    data_dir: Option<&Path>,
    device: &B::Device,
    say: &mut Say<'_>,
) -> Result<Vec<StorageResult>> {
    let s = &settings.setup;
    std::fs::create_dir_all(&s.work).at(&s.work)?;
    let mut all = Vec::new();
    for &name in &s.datasets {
        let data = load_dataset(name, s.limit, data_dir)?;
        let work = s.work.join(format!("storage-{name}"));
        let (base, fork, gold) = (
            work.join("base"),
            work.join("request"),
            work.join("retrain"),
        );
        let mut rows = Vec::new();
        for seed in 0..s.seeds as u64 {
            // Reference accuracy per request, from the first storage's retrains.
            let labels = settings.labels();
            let mut reference: Vec<Option<f64>> = vec![None; labels.len()];
            for &storage in &settings.storages {
                fresh_folder(&base)?;
                let cfg = TrainConfig {
                    storage,
                    ..s.cfg_for(seed)
                };
                let trained = train::<B>(&base, &data, s.kind, cfg, None, device, &mut NoProgress)?;
                let chain = Chain::open(&base)?;
                let bytes = chain.bytes();
                say(&format!(
                    "seed {seed} {storage}: trained in {:.1} s, accuracy {:.2} %, {:.1} MB ({:.1} % of f32)",
                    trained.train_seconds(),
                    100.0 * trained.test_accuracy,
                    bytes.total as f64 / 1e6,
                    100.0 * bytes.ratio
                ));
                let mut asks: Vec<Vec<u64>> = settings
                    .requests
                    .iter()
                    .map(|&n| pick_ids(&data, n, seed))
                    .collect();
                if settings.late_id {
                    let blocks = &chain.manifest().blocks;
                    let late = (blocks.len() * 9).div_ceil(10).max(1);
                    asks.push(blocks[late - 1].ids.iter().take(1).copied().collect());
                }
                let mut requests = Vec::new();
                for (i, (ids, label)) in asks.iter().zip(&labels).enumerate() {
                    fresh_folder(&fork)?;
                    let mut copy = chain.copy_to(&fork)?;
                    let r = forget::<B>(&mut copy, &data, ids, &s.opts, device, &mut NoProgress)?;
                    drop(copy);
                    let retrained = match reference[i] {
                        Some(acc) => acc,
                        None => {
                            fresh_folder(&gold)?;
                            let g =
                                retrain::<B>(&fork, &gold, &data, None, device, &mut NoProgress)?;
                            fresh_folder(&gold)?;
                            reference[i] = Some(g.test_accuracy);
                            g.test_accuracy
                        }
                    };
                    fresh_folder(&fork)?;
                    let cost = RequestCost {
                        request: label.clone(),
                        ids: ids.len(),
                        blocks_retrained: r.blocks_retrained,
                        blocks_replayed: r.blocks_replayed,
                        forget_seconds: r.seconds,
                        restore_seconds: r.phases.restore,
                        bytes_read: r.bytes_read,
                        unlearned: r.test_accuracy.unwrap_or(f64::NAN),
                        retrained,
                    };
                    say(&format!(
                        "  {label}: {} blocks retrained (+{} replayed) in {:.2} s (restore {:.3} s, {:.1} MB read), accuracy {:.2} % (reference {:.2} %)",
                        cost.blocks_retrained,
                        cost.blocks_replayed,
                        cost.forget_seconds,
                        cost.restore_seconds,
                        cost.bytes_read as f64 / 1e6,
                        100.0 * cost.unlearned,
                        100.0 * cost.retrained
                    ));
                    requests.push(cost);
                }
                drop(chain);
                rows.push(StorageRow {
                    seed,
                    storage: storage.to_string(),
                    bytes,
                    test_accuracy: trained.test_accuracy,
                    train_seconds: trained.train_seconds(),
                    requests,
                });
            }
            fresh_folder(&base)?;
        }
        std::fs::remove_dir(&work).at(&work)?;
        all.push(StorageResult {
            dataset: name,
            rows,
        });
    }
    Ok(all)
}

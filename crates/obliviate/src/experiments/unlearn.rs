//! `bench unlearn`: DeepObliviate against retraining from scratch, for requests of several
//! sizes over several seeds, plus successive single-id requests (drift).

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::{Say, Setup, fresh_folder, load_dataset, pick_ids};
use crate::chain::Chain;
use crate::data::DatasetName;
use crate::error::{IoContext, Result};
use crate::train::{NoProgress, retrain, train};
use crate::unlearn::{StopReason, forget};

/// Settings of `bench unlearn`.
#[derive(Debug, Clone)]
pub struct UnlearnSettings {
    /// Datasets, model, training, seeds, forgetting, scratch folder.
    pub setup: Setup,
    /// Ids per request.
    pub requests: Vec<usize>,
    /// Successive single-id requests on seed 0 (0 = none).
    pub sequence: usize,
}

/// One request against one seed's run.
#[derive(Debug, Clone, Serialize)]
pub struct UnlearnRow {
    /// Seed of the run.
    pub seed: u64,
    /// Ids in the request.
    pub ids: usize,
    /// Test accuracy before forgetting.
    pub original: f64,
    /// After forgetting.
    pub unlearned: f64,
    /// Of the model retrained without the ids.
    pub retrained: f64,
    /// Blocks retrained by the request.
    pub blocks_retrained: usize,
    /// Seconds of the request (engine time, without evaluation).
    pub forget_seconds: f64,
    /// Seconds of the retraining (without evaluation).
    pub retrain_seconds: f64,
    /// `retrain_seconds / forget_seconds`.
    pub speedup: f64,
    /// Bytes of the unlearned run.
    pub bytes_on_disk: u64,
    /// Why retraining stopped.
    pub stop_rule: StopReason,
}

/// One of the successive single-id requests.
#[derive(Debug, Clone, Serialize)]
pub struct SequenceStep {
    /// The id forgotten.
    pub id: u64,
    /// Seconds of the request.
    pub seconds: f64,
    /// Test accuracy afterwards.
    pub accuracy: f64,
    /// Blocks retrained.
    pub blocks_retrained: usize,
}

/// The results on one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct UnlearnResult {
    /// The dataset.
    pub dataset: DatasetName,
    /// Every (seed, request size).
    pub rows: Vec<UnlearnRow>,
    /// The successive requests on seed 0.
    pub sequence: Vec<SequenceStep>,
}

/// Runs the benchmark.
pub fn run<B: AutodiffBackend>(
    settings: &UnlearnSettings,
    data_dir: Option<&Path>,
    device: &B::Device,
    say: &mut Say<'_>,
) -> Result<Vec<UnlearnResult>> {
    let s = &settings.setup;
    std::fs::create_dir_all(&s.work).at(&s.work)?;
    let mut all = Vec::new();
    for &name in &s.datasets {
        let data = load_dataset(name, s.limit, data_dir)?;
        let mut rows = Vec::new();
        let mut sequence = Vec::new();
        for seed in 0..s.seeds as u64 {
            let cfg = s.cfg_for(seed);
            let base = s.work.join(format!("{name}-s{seed}-base"));
            fresh_folder(&base)?;
            let trained = train::<B>(&base, &data, s.kind, cfg, None, device, &mut NoProgress)?;
            say(&format!(
                "{name} seed {seed}: trained in {:.1} s, accuracy {:.2} %",
                trained.train_seconds(),
                100.0 * trained.test_accuracy
            ));
            let base_chain = Chain::open(&base)?;
            for &n in &settings.requests {
                let run = s.work.join(format!("{name}-s{seed}-n{n}"));
                let gold = s.work.join(format!("{name}-s{seed}-n{n}-retrain"));
                fresh_folder(&run)?;
                fresh_folder(&gold)?;
                let mut chain = base_chain.copy_to(&run)?;
                let ids = pick_ids(&data, n, seed);
                let r = forget::<B>(&mut chain, &data, &ids, &s.opts, device, &mut NoProgress)?;
                drop(chain);
                let g = retrain::<B>(&run, &gold, &data, None, device, &mut NoProgress)?;
                let retrain_s = g.train_seconds();
                say(&format!(
                    "  {n:>4} id(s): blocks {}..={} ({} retrained), forget {:.2} s, retrain {:.1} s, speedup {:.1}×, acc unlearned {:.2} % retrained {:.2} %",
                    r.first_block,
                    r.stop_block,
                    r.blocks_retrained,
                    r.seconds,
                    retrain_s,
                    retrain_s / r.seconds,
                    100.0 * r.test_accuracy.unwrap_or(f64::NAN),
                    100.0 * g.test_accuracy
                ));
                rows.push(UnlearnRow {
                    seed,
                    ids: n,
                    original: trained.test_accuracy,
                    unlearned: r.test_accuracy.unwrap_or(f64::NAN),
                    retrained: g.test_accuracy,
                    blocks_retrained: r.blocks_retrained,
                    forget_seconds: r.seconds,
                    retrain_seconds: retrain_s,
                    speedup: retrain_s / r.seconds,
                    bytes_on_disk: Chain::open(&run)?.bytes_on_disk(),
                    stop_rule: r.stop_rule,
                });
                fresh_folder(&gold)?;
                fresh_folder(&run)?;
            }
            if seed == 0 && settings.sequence > 0 {
                let run = s.work.join(format!("{name}-sequence"));
                fresh_folder(&run)?;
                let mut chain = base_chain.copy_to(&run)?;
                for id in pick_ids(&data, settings.sequence, 99) {
                    let r =
                        forget::<B>(&mut chain, &data, &[id], &s.opts, device, &mut NoProgress)?;
                    sequence.push(SequenceStep {
                        id,
                        seconds: r.seconds,
                        accuracy: r.test_accuracy.unwrap_or(f64::NAN),
                        blocks_retrained: r.blocks_retrained,
                    });
                }
                drop(chain);
                fresh_folder(&run)?;
            }
            drop(base_chain);
            fresh_folder(&base)?;
        }
        all.push(UnlearnResult {
            dataset: name,
            rows,
            sequence,
        });
    }
    Ok(all)
}

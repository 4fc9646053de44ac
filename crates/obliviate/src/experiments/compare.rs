//! `bench compare`: DeepObliviate against retraining, SISA, Amnesiac, fine-tuning and NegGrad+
//! on the same data, model, hardware and requests.

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::{Say, Setup, fresh_folder, load_dataset, pick_ids};
use crate::audit::outputs::prediction_seconds;
use crate::audit::stats::auc;
use crate::audit::{Outputs, outputs_of};
use crate::baselines::sisa::{self, Aggregate, Sisa};
use crate::baselines::{amnesiac, steps};
use crate::chain::{Chain, TrainConfig};
use crate::data::{Dataset, DatasetName, Split};
use crate::error::{IoContext, Result};
use crate::model::ModelKind;
use crate::optim::OptimConfig;
use crate::params::{FileMeta, ParamSet, Precision, encode};
use crate::store::sha256;
use crate::train::{NoProgress, retrain, train};
use crate::unlearn::forget;

/// How the rival methods are run: the budgets and rules of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Baselines {
    /// SISA shard counts to compare.
    pub shards: Vec<usize>,
    /// SISA slices per shard R.
    pub slices: usize,
    /// SISA epochs per slice step; `None` = the paper's rule for the same training budget as
    /// E epochs per block, max(1, round(2E / (R + 1))).
    pub sisa_epochs: Option<usize>,
    /// Fine-tune steps.
    pub finetune_steps: usize,
    /// NegGrad+ steps.
    pub neggrad_steps: usize,
    /// NegGrad+ weight β of the retain loss.
    pub neggrad_beta: f64,
    /// Amnesiac repair (fine-tune) steps after subtracting updates.
    pub repair_steps: usize,
}

impl Default for Baselines {
    fn default() -> Self {
        Baselines {
            shards: vec![5, 10, 20],
            slices: 5,
            sisa_epochs: None,
            finetune_steps: 200,
            neggrad_steps: 200,
            neggrad_beta: 0.95,
            repair_steps: 50,
        }
    }
}

impl Baselines {
    /// SISA's training: R slice steps of `sisa_epochs` epochs each at a constant rate (the
    /// chain's decay over B blocks would starve R = 5 slice steps; ARCHITECTURE decision 10).
    pub fn sisa_config(&self, cfg: &TrainConfig) -> TrainConfig {
        let epochs = self.sisa_epochs.unwrap_or_else(|| {
            ((2.0 * cfg.epochs_per_block as f64 / (self.slices as f64 + 1.0)).round() as usize)
                .max(1)
        });
        TrainConfig {
            blocks: self.slices,
            epochs_per_block: epochs,
            lr_final: 1.0,
            ..*cfg
        }
    }

    /// Fine-tune, NegGrad+ and Amnesiac repair: a fresh optimizer of the training's kind at the
    /// training's last learning rate (ARCHITECTURE decision 12).
    pub fn step_config(&self, cfg: &TrainConfig, steps: usize, beta: f64) -> steps::StepConfig {
        steps::StepConfig {
            steps,
            batch_size: cfg.batch_size,
            optim: OptimConfig {
                lr: cfg.lr_at(cfg.blocks),
                ..cfg.optim
            },
            beta,
            seed: cfg.seed,
        }
    }
}

/// Settings of `bench compare`.
#[derive(Debug, Clone)]
pub struct CompareSettings {
    /// Datasets, model, DeepObliviate's (and Retrain's) training, seeds, forgetting, scratch.
    pub setup: Setup,
    /// Ids per request.
    pub requests: Vec<usize>,
    /// How the rivals run.
    pub baselines: Baselines,
}

/// The compared methods (serialised as their display names: `SISA S=5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Retraining from scratch without the ids.
    Retrain,
    /// DeepObliviate.
    DeepObliviate,
    /// SISA with this many shards.
    Sisa(usize),
    /// Amnesiac unlearning.
    Amnesiac,
    /// Fine-tuning on the retained data.
    FineTune,
    /// NegGrad+.
    NegGradPlus,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Retrain => f.write_str("Retrain"),
            Method::DeepObliviate => f.write_str("DeepObliviate"),
            Method::Sisa(s) => write!(f, "SISA S={s}"),
            Method::Amnesiac => f.write_str("Amnesiac"),
            Method::FineTune => f.write_str("Fine-tune"),
            Method::NegGradPlus => f.write_str("NegGrad+"),
        }
    }
}

impl Serialize for Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Method {
    /// One sentence: what the method guarantees.
    pub fn guarantee(self) -> &'static str {
        match self {
            Method::DeepObliviate => {
                "approximate, with a dial: the blocks from the first affected one to the stop block are retrained exactly without the ids, and the stored increments after it are reused once the fitted residual-memory curve has flattened below ε (ε = 0 is retraining, bit for bit)"
            }
            Method::Retrain => {
                "exact by definition: a model trained from scratch without the ids (the reference)"
            }
            Method::Sisa(_) => {
                "exact: every constituent model equals one trained without the ids; the price is S weaker models and S forward passes per prediction"
            }
            Method::Amnesiac => {
                "approximate, no bound: subtracts the recorded updates of the batches that held the ids (plus a short repair), but later updates still carry their influence"
            }
            Method::FineTune => {
                "approximate, no guarantee: relies on catastrophic forgetting while training on the retained data"
            }
            Method::NegGradPlus => {
                "approximate, no guarantee: ascends the loss on the ids while descending on the retained data; can over-forget"
            }
        }
    }
}

/// One method on one request.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    /// The method.
    pub method: Method,
    /// Seed of the runs.
    pub seed: u64,
    /// Ids in the request.
    pub ids: usize,
    /// Test accuracy afterwards.
    pub test_accuracy: f64,
    /// Accuracy on the forgotten samples.
    pub forget_accuracy: f64,
    /// |test accuracy − retrained model's|.
    pub gap: f64,
    /// Loss-attack membership AUC of the forgotten samples against the test set.
    pub mia_auc: f64,
    /// Seconds of unlearning.
    pub seconds: f64,
    /// Retrain seconds ÷ `seconds`.
    pub speedup: f64,
    /// Seconds to predict 1,000 test samples.
    pub latency_per_1000: f64,
    /// Bytes the method keeps on disk.
    pub bytes: u64,
    /// SHA-256 of the resulting model's safetensors encoding (single-model methods).
    pub model_sha256: Option<String>,
}

/// The results on one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct CompareResult {
    /// The dataset.
    pub dataset: DatasetName,
    /// Every (seed, request size, method).
    pub rows: Vec<CompareRow>,
}

/// Accuracies and membership signal of models on one request.
struct Eval<'a, B: AutodiffBackend> {
    data: &'a Dataset,
    kind: ModelKind,
    device: &'a B::Device,
    forget_rows: Vec<usize>,
    test_rows: Vec<usize>,
}

/// (test accuracy, forget-set accuracy, loss-MIA AUC).
type Scores = (f64, f64, f64);

impl<B: AutodiffBackend> Eval<'_, B> {
    fn outs(&self, theta: &ParamSet, split: Split, rows: &[usize]) -> Result<Outputs> {
        outputs_of::<B>(self.kind, theta, self.data, split, rows, self.device)
    }

    fn single(&self, theta: &ParamSet) -> Result<Scores> {
        let f = self.outs(theta, Split::Train, &self.forget_rows)?;
        let t = self.outs(theta, Split::Test, &self.test_rows)?;
        Ok((t.accuracy(), f.accuracy(), loss_auc(&f, &t)))
    }

    /// Majority-vote accuracies; the MIA attacks the averaged softmax (votes have no loss).
    fn ensemble(&self, models: &[ParamSet]) -> Result<Scores> {
        let mut test = Vec::new();
        let mut forget = Vec::new();
        for m in models {
            test.push(self.outs(m, Split::Test, &self.test_rows)?);
            forget.push(self.outs(m, Split::Train, &self.forget_rows)?);
        }
        let acc = sisa::aggregate(&test, Aggregate::Vote)?.accuracy();
        let facc = sisa::aggregate(&forget, Aggregate::Vote)?.accuracy();
        let f = sisa::aggregate(&forget, Aggregate::MeanSoftmax)?;
        let t = sisa::aggregate(&test, Aggregate::MeanSoftmax)?;
        Ok((acc, facc, loss_auc(&f, &t)))
    }

    /// Seconds to predict 1,000 test samples with `models` (S of them for SISA).
    fn latency(&self, models: &[ParamSet]) -> Result<f64> {
        let rows: Vec<usize> = (0..self.data.test.len().min(1000)).collect();
        let s = prediction_seconds::<B>(self.kind, models, self.data, &rows, self.device)?;
        Ok(s * 1000.0 / rows.len().max(1) as f64)
    }
}

/// Loss-threshold membership AUC of the forgotten samples against every test sample (lower
/// loss = member). Unlike the balanced attack of `audit mia`, it is defined for a single
/// forgotten sample: then it is the share of test samples with a higher loss.
fn loss_auc(forget: &Outputs, test: &Outputs) -> f64 {
    let score = |o: &Outputs| (0..o.len()).map(|i| -o.loss(i)).collect::<Vec<f64>>();
    auc(&score(forget), &score(test))
}

/// The safetensors encoding of a model: its size on disk and hash.
fn model_file(theta: &ParamSet) -> Result<(u64, String)> {
    let bytes = encode(&Precision::F32.encode(theta), &FileMeta::default())?;
    Ok((bytes.len() as u64, sha256(&bytes)))
}

/// Runs the comparison.
pub fn run<B: AutodiffBackend>(
    settings: &CompareSettings,
    data_dir: Option<&Path>,
    device: &B::Device,
    say: &mut Say<'_>,
) -> Result<Vec<CompareResult>> {
    let (s, b) = (&settings.setup, &settings.baselines);
    let mut all = Vec::new();
    for &name in &s.datasets {
        let data = load_dataset(name, s.limit, data_dir)?;
        let mut rows = Vec::new();
        for seed in 0..s.seeds as u64 {
            let cfg = s.cfg_for(seed);
            let w = s.work.join(format!("compare-{name}-s{seed}"));
            fresh_folder(&w)?;
            // Training of every method that needs preparation.
            let base = w.join("do-base");
            let trained = train::<B>(&base, &data, s.kind, cfg, None, device, &mut NoProgress)?;
            let base_chain = Chain::open(&base)?;
            let original = base_chain.served()?;
            let t = Instant::now();
            let (amn_theta, log) =
                amnesiac::train::<B>(&data, s.kind, cfg, device, &mut NoProgress)?;
            let amn_train = t.elapsed().as_secs_f64();
            let log_bytes = amnesiac::save(&log, &w.join("amnesiac.log.safetensors"))?;
            let same = amn_theta == original;
            let probe = Eval::<B> {
                data: &data,
                kind: s.kind,
                device,
                forget_rows: Vec::new(),
                test_rows: Vec::new(),
            };
            let mut sisa_runs = Vec::new();
            for &shards in &b.shards {
                let dir = w.join(format!("sisa-{shards}"));
                let r = sisa::train::<B>(
                    &dir,
                    &data,
                    s.kind,
                    b.sisa_config(&cfg),
                    shards,
                    device,
                    &mut NoProgress,
                )?;
                let ensemble = Sisa::open(&dir)?;
                let latency = probe.latency(&ensemble.models()?)?;
                sisa_runs.push((shards, ensemble, r, latency));
            }
            say(&format!(
                "{name} seed {seed}: DeepObliviate trained in {:.1} s ({:.2} %); Amnesiac trained in {:.1} s (same model as the chain: {same}), log {:.1} MB; SISA {}",
                trained.train_seconds(),
                100.0 * trained.test_accuracy,
                amn_train,
                log_bytes as f64 / 1e6,
                sisa_runs
                    .iter()
                    .map(|(shards, _, r, _)| format!(
                        "S={shards} {:.1} s ({:.2} %)",
                        r.seconds,
                        100.0 * r.test_accuracy
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            let single_latency = probe.latency(std::slice::from_ref(&original))?;
            for &n in &settings.requests {
                let ids = pick_ids(&data, n, seed);
                let e = Eval::<B> {
                    forget_rows: ids.iter().filter_map(|&id| data.train.row(id)).collect(),
                    test_rows: (0..data.test.len()).collect(),
                    ..probe
                };
                let mut out = Vec::new();
                let mut push =
                    |method, scores: Scores, seconds: f64, latency, bytes, model_sha256| {
                        out.push(CompareRow {
                            method,
                            seed,
                            ids: n,
                            test_accuracy: scores.0,
                            forget_accuracy: scores.1,
                            gap: 0.0,
                            mia_auc: scores.2,
                            seconds,
                            speedup: 0.0,
                            latency_per_1000: latency,
                            bytes,
                            model_sha256,
                        })
                    };
                // DeepObliviate, then retraining from scratch without the ids.
                let run = w.join(format!("do-n{n}"));
                let mut chain = base_chain.copy_to(&run)?;
                let r = forget::<B>(&mut chain, &data, &ids, &s.opts, device, &mut NoProgress)?;
                let unlearned = chain.served()?;
                let do_bytes = chain.bytes_on_disk();
                drop(chain);
                let gold = w.join(format!("retrain-n{n}"));
                let g = retrain::<B>(&run, &gold, &data, None, device, &mut NoProgress)?;
                let retrained = Chain::open(&gold)?.served()?;
                push(
                    Method::Retrain,
                    e.single(&retrained)?,
                    g.train_seconds(),
                    single_latency,
                    model_file(&retrained)?.0,
                    Some(g.model_sha256.clone()),
                );
                push(
                    Method::DeepObliviate,
                    e.single(&unlearned)?,
                    r.seconds,
                    single_latency,
                    do_bytes,
                    Some(r.model_sha256.clone()),
                );
                fresh_folder(&run)?;
                fresh_folder(&gold)?;
                for (shards, ensemble, _, latency) in &sisa_runs {
                    let dir = w.join(format!("sisa-{shards}-n{n}"));
                    ensemble.copy_to(&dir)?;
                    let fr = sisa::forget::<B>(&dir, &data, &ids, device, &mut NoProgress)?;
                    let forgotten = Sisa::open(&dir)?;
                    push(
                        Method::Sisa(*shards),
                        e.ensemble(&forgotten.models()?)?,
                        fr.seconds,
                        *latency,
                        forgotten.bytes_on_disk(),
                        None,
                    );
                    fresh_folder(&dir)?;
                }
                let retain = steps::retained(&data, &ids, &[]);
                // Amnesiac: subtract the batches' updates, then repair.
                let t = Instant::now();
                let (sub, _) = amnesiac::forget(&original, &log, &ids)?;
                let amn = if b.repair_steps > 0 {
                    let repair = b.step_config(&cfg, b.repair_steps, 1.0);
                    steps::run::<B>(&data, s.kind, &sub, &retain, &[], &repair, device)?
                } else {
                    sub
                };
                let amn_s = t.elapsed().as_secs_f64();
                let (amn_bytes, amn_sha) = model_file(&amn)?;
                push(
                    Method::Amnesiac,
                    e.single(&amn)?,
                    amn_s,
                    single_latency,
                    amn_bytes + log_bytes,
                    Some(amn_sha),
                );
                for (method, nsteps, beta) in [
                    (Method::FineTune, b.finetune_steps, 1.0),
                    (Method::NegGradPlus, b.neggrad_steps, b.neggrad_beta),
                ] {
                    let t = Instant::now();
                    let step_cfg = b.step_config(&cfg, nsteps, beta);
                    let theta = steps::run::<B>(
                        &data, s.kind, &original, &retain, &ids, &step_cfg, device,
                    )?;
                    let secs = t.elapsed().as_secs_f64();
                    let (bytes, sha) = model_file(&theta)?;
                    push(
                        method,
                        e.single(&theta)?,
                        secs,
                        single_latency,
                        bytes,
                        Some(sha),
                    );
                }
                let (retrained_acc, retrain_s) = (out[0].test_accuracy, out[0].seconds);
                for o in &mut out {
                    o.gap = (o.test_accuracy - retrained_acc).abs();
                    o.speedup = retrain_s / o.seconds.max(1e-9);
                    say(&format!(
                        "  {n:>4} id(s) {:<14} test {:6.2} %  forget-set {:6.2} %  gap {:5.2} pt  MIA AUC {:.3}  {:8.2} s  {:7.1}×",
                        o.method.to_string(),
                        100.0 * o.test_accuracy,
                        100.0 * o.forget_accuracy,
                        100.0 * o.gap,
                        o.mia_auc,
                        o.seconds,
                        o.speedup
                    ));
                }
                rows.extend(out);
            }
            drop(sisa_runs);
            drop(base_chain);
            remove_work(&w)?;
        }
        all.push(CompareResult {
            dataset: name,
            rows,
        });
    }
    Ok(all)
}

/// Removes a seed's scratch folder: its runs and ensembles, then the Amnesiac log it wrote.
fn remove_work(w: &Path) -> Result<()> {
    let entries = std::fs::read_dir(w).at(w)?;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            fresh_folder(&p)?;
        }
    }
    let log = w.join("amnesiac.log.safetensors");
    if log.exists() {
        std::fs::remove_file(&log).at(&log)?;
    }
    std::fs::remove_dir(w).at(w)
}

//! `bench compare`: DeepObliviate against retraining, SISA, Amnesiac, fine-tuning and NegGrad+
//! on the same data, model, hardware and requests.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use obliviate::audit::outputs::prediction_seconds;
use obliviate::audit::stats::auc;
use obliviate::audit::{Outputs, outputs_of};
use obliviate::baselines::sisa::{self, Aggregate, Sisa};
use obliviate::baselines::{amnesiac, steps};
use obliviate::chain::{Chain, DataOrigin, TrainConfig};
use obliviate::data::{Dataset, DatasetName, Split};
use obliviate::model::ModelKind;
use obliviate::params::{FileMeta, ParamSet, encode};
use obliviate::train::NoProgress;
use obliviate::unlearn::ForgetOptions;
use serde_json::{Value, json};

use super::{copy_dir, mean_std, pick, progress_line, write_section};
use crate::Env;
use crate::commands::{emit, load_data, on_backend};

/// Settings of `bench compare`.
pub struct CompareBench {
    pub datasets: Vec<String>,
    pub model: String,
    pub cfg: TrainConfig,
    pub limit: Option<(usize, usize)>,
    pub requests: Vec<usize>,
    pub seeds: usize,
    pub opts: ForgetOptions,
    pub shards: Vec<usize>,
    pub slices: usize,
    pub sisa_epochs: usize,
    pub finetune_steps: usize,
    pub neggrad_steps: usize,
    pub neggrad_beta: f64,
    pub repair_steps: usize,
    pub work: PathBuf,
    pub write: Option<PathBuf>,
}

/// One sentence per method: what it guarantees.
const GUARANTEES: &[(&str, &str)] = &[
    (
        "DeepObliviate",
        "approximate, with a dial: the blocks from the first affected one to the stop block are retrained exactly without the ids, and the stored increments after it are reused once the fitted residual-memory curve has flattened below ε (ε = 0 is retraining, bit for bit)",
    ),
    (
        "Retrain",
        "exact by definition: a model trained from scratch without the ids (the reference)",
    ),
    (
        "SISA",
        "exact: every constituent model equals one trained without the ids; the price is S weaker models and S forward passes per prediction",
    ),
    (
        "Amnesiac",
        "approximate, no bound: subtracts the recorded updates of the batches that held the ids (plus a short repair), but later updates still carry their influence",
    ),
    (
        "Fine-tune",
        "approximate, no guarantee: relies on catastrophic forgetting while training on the retained data",
    ),
    (
        "NegGrad+",
        "approximate, no guarantee: ascends the loss on the ids while descending on the retained data; can over-forget",
    ),
];

fn model_bytes(theta: &ParamSet) -> Result<u64> {
    Ok(encode(theta, &FileMeta::default())?.len() as u64)
}

struct Eval<'a> {
    data: &'a Dataset,
    kind: ModelKind,
    env: &'a Env,
    forget_rows: Vec<usize>,
    test_rows: Vec<usize>,
}

impl Eval<'_> {
    fn outs(&self, theta: &ParamSet, split: Split, rows: &[usize]) -> Result<Outputs> {
        let (kind, data) = (self.kind, self.data);
        Ok(
            on_backend!(self.env, B, device => outputs_of::<B>(kind, theta, data, split, rows, &device)?),
        )
    }

    /// Test accuracy, forget-set accuracy and loss-MIA AUC of one model.
    fn single(&self, theta: &ParamSet) -> Result<(f64, f64, f64)> {
        let f = self.outs(theta, Split::Train, &self.forget_rows)?;
        let t = self.outs(theta, Split::Test, &self.test_rows)?;
        Ok((t.accuracy(), f.accuracy(), loss_auc(&f, &t)))
    }

    /// Majority-vote accuracies; the MIA attacks the averaged softmax (votes have no loss).
    fn ensemble(&self, models: &[ParamSet]) -> Result<(f64, f64, f64)> {
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
}

/// Loss-threshold membership AUC of the forgotten samples against every test sample (lower
/// loss = member). Unlike the balanced attack of `audit mia`, it is defined for a single
/// forgotten sample: then it is the share of test samples with a higher loss.
fn loss_auc(forget: &Outputs, test: &Outputs) -> f64 {
    let score = |o: &Outputs| (0..o.len()).map(|i| -o.loss(i)).collect::<Vec<f64>>();
    auc(&score(forget), &score(test))
}

/// Seconds to predict 1,000 test samples with `models` (S of them for SISA).
fn latency_of(data: &Dataset, kind: ModelKind, env: &Env, models: &[ParamSet]) -> Result<f64> {
    let rows: Vec<usize> = (0..data.test.len().min(1000)).collect();
    let s =
        on_backend!(env, B, device => prediction_seconds::<B>(kind, models, data, &rows, &device)?);
    Ok(s * 1000.0 / rows.len().max(1) as f64)
}

#[allow(clippy::too_many_arguments)]
fn row(
    method: String,
    seed: u64,
    n: usize,
    (acc, facc, auc): (f64, f64, f64),
    retrained_acc: f64,
    seconds: f64,
    retrain_seconds: f64,
    latency: f64,
    bytes: u64,
) -> Value {
    json!({
        "method": method, "seed": seed, "ids": n, "test_accuracy": acc, "forget_accuracy": facc,
        "gap": (acc - retrained_acc).abs(), "mia_auc": auc, "seconds": seconds,
        "speedup": retrain_seconds / seconds.max(1e-9), "latency_per_1000": latency, "bytes": bytes,
    })
}

pub fn bench_compare(b: &CompareBench, env: &Env) -> Result<()> {
    let kind = ModelKind::parse(&b.model)?;
    std::fs::create_dir_all(&b.work)?;
    let say = |s: String| progress_line(env, &s);
    let mut md = String::new();
    let mut all = Vec::new();
    for ds in &b.datasets {
        let name = DatasetName::parse(ds)?;
        let data = load_data(name, b.limit, env)?;
        let origin = DataOrigin {
            limit: b.limit.map(|_| (data.train.len(), data.test.len())),
            backdoor: None,
        };
        let mut rows: Vec<Value> = Vec::new();
        for seed in 0..b.seeds as u64 {
            let cfg = TrainConfig { seed, ..b.cfg };
            let w = b.work.join(format!("compare-{ds}-s{seed}"));
            if w.exists() {
                std::fs::remove_dir_all(&w)?;
            }
            std::fs::create_dir_all(&w)?;
            // Training of every method that needs preparation.
            let base = w.join("do-base");
            let trained = on_backend!(env, B, device => obliviate::train::train_with::<B>(&base, &data, kind, cfg, &origin, &device, &mut NoProgress)?);
            let original = Chain::open(&base)?.served()?;
            let t = Instant::now();
            let (amn_theta, log) = on_backend!(env, B, device => amnesiac::train::<B>(&data, kind, cfg, &device, &mut NoProgress)?);
            let amn_train = t.elapsed().as_secs_f64();
            let log_bytes = amnesiac::save(&log, &w.join("amnesiac.log.safetensors"))?;
            let same = amn_theta == original;
            let mut sisa_train = Vec::new();
            for &s in &b.shards {
                // SISA trains each shard with a constant rate: the chain's decay over B blocks
                // would starve R = 5 slice steps.
                let scfg = TrainConfig {
                    blocks: b.slices,
                    epochs_per_block: b.sisa_epochs,
                    lr_final: 1.0,
                    ..cfg
                };
                let dir = w.join(format!("sisa-{s}"));
                let r = on_backend!(env, B, device => sisa::train::<B>(&dir, &data, kind, scfg, s, &origin, &device, &mut NoProgress)?);
                let latency = latency_of(&data, kind, env, &Sisa::open(&dir)?.models()?)?;
                sisa_train.push((s, r, latency));
            }
            say(format!(
                "{ds} seed {seed}: DeepObliviate trained in {:.1} s ({:.2} %); Amnesiac trained in {:.1} s (same model as the chain: {same}), log {:.1} MB; SISA {}",
                trained.seconds - trained.eval_seconds,
                100.0 * trained.test_accuracy,
                amn_train,
                log_bytes as f64 / 1e6,
                sisa_train
                    .iter()
                    .map(|(s, r, _)| format!(
                        "S={s} {:.1} s ({:.2} %)",
                        r.seconds,
                        100.0 * r.test_accuracy
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            let last_lr = cfg.lr_at(cfg.blocks);
            let single_latency = latency_of(&data, kind, env, std::slice::from_ref(&original))?;
            for &n in &b.requests {
                let ids = pick(&data, n, seed);
                let e = Eval {
                    data: &data,
                    kind,
                    env,
                    forget_rows: ids.iter().filter_map(|&id| data.train.row(id)).collect(),
                    test_rows: (0..data.test.len()).collect(),
                };
                // DeepObliviate, then retraining from scratch without the ids.
                let run = w.join(format!("do-n{n}"));
                copy_dir(&base, &run)?;
                let r = on_backend!(env, B, device => obliviate::unlearn::forget::<B>(&run, &data, &ids, &b.opts, &device, &mut NoProgress)?);
                let gold = w.join(format!("retrain-n{n}"));
                let g = on_backend!(env, B, device => obliviate::train::retrain::<B>(&run, &gold, &data, &device, &mut NoProgress)?);
                let retrain_s = g.seconds - g.eval_seconds;
                let retrained = Chain::open(&gold)?.served()?;
                let gold_scores = e.single(&retrained)?;
                let racc = gold_scores.0;
                let mut out = vec![
                    row(
                        "Retrain".into(),
                        seed,
                        n,
                        gold_scores,
                        racc,
                        retrain_s,
                        retrain_s,
                        single_latency,
                        model_bytes(&retrained)?,
                    ),
                    row(
                        "DeepObliviate".into(),
                        seed,
                        n,
                        e.single(&Chain::open(&run)?.served()?)?,
                        racc,
                        r.seconds,
                        retrain_s,
                        single_latency,
                        Chain::open(&run)?.bytes_on_disk(),
                    ),
                ];
                std::fs::remove_dir_all(&run)?;
                std::fs::remove_dir_all(&gold)?;
                for (s, _, latency) in &sisa_train {
                    let dir = w.join(format!("sisa-{s}-n{n}"));
                    copy_tree(&w.join(format!("sisa-{s}")), &dir)?;
                    let fr = on_backend!(env, B, device => sisa::forget::<B>(&dir, &data, &ids, &device, &mut NoProgress)?);
                    let sisa_dir = Sisa::open(&dir)?;
                    let models = sisa_dir.models()?;
                    out.push(row(
                        format!("SISA S={s}"),
                        seed,
                        n,
                        e.ensemble(&models)?,
                        racc,
                        fr.seconds,
                        retrain_s,
                        *latency,
                        sisa_dir.bytes_on_disk(),
                    ));
                    std::fs::remove_dir_all(&dir)?;
                }
                let retain = steps::retained(&data, &ids, &[]);
                let step_cfg = |steps: usize, beta: f64| steps::StepConfig {
                    steps,
                    batch_size: cfg.batch_size,
                    optim: obliviate::optim::OptimConfig {
                        lr: last_lr,
                        ..cfg.optim
                    },
                    beta,
                    seed,
                };
                // Amnesiac: subtract the batches' updates, then repair.
                let t = Instant::now();
                let (sub, _) = amnesiac::forget(&original, &log, &ids)?;
                let amn = if b.repair_steps > 0 {
                    on_backend!(env, B, device => steps::run::<B>(&data, kind, &sub, &retain, &[], &step_cfg(b.repair_steps, 1.0), &device)?)
                } else {
                    sub
                };
                let amn_s = t.elapsed().as_secs_f64();
                out.push(row(
                    "Amnesiac".into(),
                    seed,
                    n,
                    e.single(&amn)?,
                    racc,
                    amn_s,
                    retrain_s,
                    single_latency,
                    model_bytes(&amn)? + log_bytes,
                ));
                for (label, nsteps, beta) in [
                    ("Fine-tune", b.finetune_steps, 1.0),
                    ("NegGrad+", b.neggrad_steps, b.neggrad_beta),
                ] {
                    let t = Instant::now();
                    let theta = on_backend!(env, B, device => steps::run::<B>(&data, kind, &original, &retain, &ids, &step_cfg(nsteps, beta), &device)?);
                    let secs = t.elapsed().as_secs_f64();
                    out.push(row(
                        label.into(),
                        seed,
                        n,
                        e.single(&theta)?,
                        racc,
                        secs,
                        retrain_s,
                        single_latency,
                        model_bytes(&theta)?,
                    ));
                }
                for o in &out {
                    say(format!(
                        "  {n:>4} id(s) {:<14} test {:6.2} %  forget-set {:6.2} %  gap {:5.2} pt  MIA AUC {:.3}  {:8.2} s  {:7.1}×",
                        o["method"].as_str().unwrap_or(""),
                        100.0 * o["test_accuracy"].as_f64().unwrap_or(0.0),
                        100.0 * o["forget_accuracy"].as_f64().unwrap_or(0.0),
                        100.0 * o["gap"].as_f64().unwrap_or(0.0),
                        o["mia_auc"].as_f64().unwrap_or(0.0),
                        o["seconds"].as_f64().unwrap_or(0.0),
                        o["speedup"].as_f64().unwrap_or(0.0)
                    ));
                }
                rows.extend(out);
            }
            std::fs::remove_dir_all(&w)?;
        }
        md.push_str(&table(ds, kind, b, &rows));
        all.push(json!({"dataset": ds, "rows": rows}));
    }
    md.push_str("\nWhat each method guarantees:\n\n");
    for (m, g) in GUARANTEES {
        md.push_str(&format!("- **{m}**: {g}.\n"));
    }
    if let Some(path) = &b.write {
        write_section(path, "bench-compare", &md)?;
    }
    emit(env, &json!({"datasets": all}), || println!("{md}"));
    Ok(())
}

fn copy_tree(src: &std::path::Path, dst: &std::path::Path) -> Result<()> {
    if dst.exists() {
        std::fs::remove_dir_all(dst)?;
    }
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)?.flatten() {
        let (p, name) = (e.path(), e.file_name());
        if p.is_dir() {
            copy_tree(&p, &dst.join(&name))?;
        } else if name != ".lock" {
            std::fs::copy(&p, dst.join(&name))?;
        }
    }
    Ok(())
}

fn table(ds: &str, kind: ModelKind, b: &CompareBench, rows: &[Value]) -> String {
    let mut methods: Vec<String> = Vec::new();
    for r in rows {
        let m = r["method"].as_str().unwrap_or("").to_string();
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    let limit = match b.limit {
        Some((tr, te)) if te == usize::MAX => format!("first {tr} training samples, full test set"),
        Some((tr, te)) => format!("first {tr} training / {te} test samples"),
        None => "full dataset".into(),
    };
    let mut md = format!(
        "\n**{ds}** ({limit}), `{kind}`; DeepObliviate B = {}, E = {}, batch {}, {} lr {} → ×{}, stop {:?} min-points {}; SISA R = {} slices, {} epoch(s) per slice step, constant lr; Amnesiac repair {} steps; Fine-tune {} steps; NegGrad+ {} steps, β = {}; {} seed(s). Mean ± std over seeds.\n",
        b.cfg.blocks,
        b.cfg.epochs_per_block,
        b.cfg.batch_size,
        b.cfg.optim.kind.name(),
        b.cfg.optim.lr,
        b.cfg.lr_final,
        b.opts.stop,
        b.opts.min_points,
        b.slices,
        b.sisa_epochs,
        b.repair_steps,
        b.finetune_steps,
        b.neggrad_steps,
        b.neggrad_beta,
        b.seeds
    );
    for &n in &b.requests {
        md.push_str(&format!("\n{n} id(s) per request:\n\n| method | test acc % | forget-set acc % | \\|gap\\| to retrained pt | MIA AUC | unlearning s | speedup vs retrain × | predict ms / 1,000 | bytes on disk |\n|---|---|---|---|---|---|---|---|---|\n"));
        for m in &methods {
            let sel: Vec<&Value> = rows
                .iter()
                .filter(|r| r["ids"] == json!(n) && r["method"].as_str() == Some(m))
                .collect();
            let f = |k: &str, scale: f64, p: usize| {
                let v: Vec<f64> = sel
                    .iter()
                    .map(|r| scale * r[k].as_f64().unwrap_or(f64::NAN))
                    .collect();
                let (mu, sd) = mean_std(&v);
                format!("{mu:.p$} ± {sd:.p$}")
            };
            let bytes = mean_std(
                &sel.iter()
                    .map(|r| r["bytes"].as_f64().unwrap_or(0.0))
                    .collect::<Vec<_>>(),
            )
            .0;
            md.push_str(&format!(
                "| {m} | {} | {} | {} | {} | {} | {} | {} | {:.2e} |\n",
                f("test_accuracy", 100.0, 2),
                f("forget_accuracy", 100.0, 1),
                f("gap", 100.0, 2),
                f("mia_auc", 1.0, 3),
                f("seconds", 1.0, 2),
                f("speedup", 1.0, 1),
                f("latency_per_1000", 1000.0, 1),
                bytes
            ));
        }
    }
    md
}

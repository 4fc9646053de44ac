//! `bench audit`: backdoor verification, membership inference and distances to the retrained
//! model, over datasets and seeds (issue 4's evidence table).

use std::path::PathBuf;

use anyhow::Result;
use obliviate::audit::backdoor::Trigger;
use obliviate::audit::mia::mia;
use obliviate::audit::outputs_of;
use obliviate::audit::verify::{BackdoorSettings, verify_backdoor_models};
use obliviate::chain::{Chain, TrainConfig};
use obliviate::data::{DatasetName, Split};
use obliviate::model::ModelKind;
use obliviate::params::ParamSet;
use obliviate::train::{NoProgress, retrain_with_seed};
use obliviate::unlearn::ForgetOptions;
use serde_json::{Value, json};

use super::{mean_std, progress_line, write_section};
use crate::Env;
use crate::commands::{emit, load_data, on_backend, run_data};

/// Settings of `bench audit`.
pub struct AuditBench {
    pub datasets: Vec<String>,
    pub model: String,
    pub cfg: TrainConfig,
    pub seeds: usize,
    pub fraction: f64,
    pub opts: ForgetOptions,
    pub work: PathBuf,
    pub write: Option<PathBuf>,
}

/// Seed offset of the second retrain that gives the noise floor.
const FLOOR_SEED: u64 = 1000;

pub fn bench_audit(b: &AuditBench, env: &Env) -> Result<()> {
    let kind = ModelKind::parse(&b.model)?;
    std::fs::create_dir_all(&b.work)?;
    let say = |s: String| progress_line(env, &s);
    let mut md = String::new();
    let mut all = Vec::new();
    for ds in &b.datasets {
        let name = DatasetName::parse(ds)?;
        let data = load_data(name, None, env)?;
        let mut runs: Vec<Value> = Vec::new();
        for seed in 0..b.seeds as u64 {
            let cfg = TrainConfig { seed, ..b.cfg };
            let work = b.work.join(format!("audit-{ds}-s{seed}"));
            std::fs::create_dir_all(&work)?;
            let settings = BackdoorSettings {
                kind,
                cfg,
                fraction: b.fraction,
                trigger: Trigger::bottom_right(&data, 4, 0)?,
                opts: b.opts,
                work: work.clone(),
                min_original_asr: 0.9,
                asr_tolerance: 0.02,
                accuracy_tolerance: 0.003,
            };
            let (r, models) = on_backend!(env, B, device => verify_backdoor_models::<B>(&data, None, &settings, &device, &mut NoProgress)?);
            let run = work.join("backdoor-run");
            let chain = Chain::open(&run)?;
            let poisoned = run_data(&chain, env)?;
            let floor_dir = work.join("backdoor-floor");
            if floor_dir.exists() {
                std::fs::remove_dir_all(&floor_dir)?;
            }
            on_backend!(env, B, device => retrain_with_seed::<B>(&run, &floor_dir, &poisoned, seed + FLOOR_SEED, &device, &mut NoProgress)?);
            let floor = Chain::open(&floor_dir)?.served()?;
            let user: Vec<usize> = chain
                .manifest
                .deleted
                .iter()
                .filter_map(|&id| poisoned.train.row(id))
                .collect();
            let test: Vec<usize> = (0..poisoned.test.len()).collect();
            let outs = |theta: &ParamSet, split: Split, rows: &[usize]| -> Result<_> {
                Ok(
                    on_backend!(env, B, device => outputs_of::<B>(kind, theta, &poisoned, split, rows, &device)?),
                )
            };
            let mut mias = Vec::new();
            let mut test_outs = Vec::new();
            for (label, theta) in [
                ("original", &models.original),
                ("unlearned", &models.unlearned),
                ("retrained", &models.retrained),
                ("retrained-other-seed", &floor),
            ] {
                let f = outs(theta, Split::Train, &user)?;
                let t = outs(theta, Split::Test, &test)?;
                let m = mia(&f, &t, seed);
                mias.push(json!({"model": label, "loss_auc": m.loss.auc, "loss_acc": m.loss.accuracy, "conf_auc": m.confidence.auc, "conf_acc": m.confidence.accuracy}));
                test_outs.push(t);
            }
            let l2 = models.unlearned.distance(&models.retrained)?.l2;
            let floor_l2 = models.retrained.distance(&floor)?.l2;
            let kl = test_outs[2].mean_kl(&test_outs[1]);
            let floor_kl = test_outs[2].mean_kl(&test_outs[3]);
            say(format!(
                "{ds} seed {seed}: ASR {:.2}/{:.2}/{:.2} %, clean {:.2}/{:.2}/{:.2} %, loss-MIA AUC {}, {} ({} blocks retrained, forget {:.1} s, retrain {:.1} s)",
                100.0 * r.original.attack_success_rate,
                100.0 * r.unlearned.attack_success_rate,
                100.0 * r.retrained.attack_success_rate,
                100.0 * r.original.clean_accuracy,
                100.0 * r.unlearned.clean_accuracy,
                100.0 * r.retrained.clean_accuracy,
                mias.iter()
                    .map(|m| format!("{:.3}", m["loss_auc"].as_f64().unwrap_or(0.0)))
                    .collect::<Vec<_>>()
                    .join("/"),
                if r.pass { "PASS" } else { "FAIL" },
                r.forget.blocks_retrained,
                r.forget.seconds,
                r.retrain_seconds
            ));
            runs.push(json!({
                "seed": seed, "user_samples": r.user_samples, "pass": r.pass,
                "asr": [r.original.attack_success_rate, r.unlearned.attack_success_rate, r.retrained.attack_success_rate],
                "clean": [r.original.clean_accuracy, r.unlearned.clean_accuracy, r.retrained.clean_accuracy],
                "blocks_retrained": r.forget.blocks_retrained, "forget_seconds": r.forget.seconds, "retrain_seconds": r.retrain_seconds,
                "mia": mias, "weight_l2": l2, "floor_weight_l2": floor_l2, "mean_kl": kl, "floor_mean_kl": floor_kl,
            }));
            std::fs::remove_dir_all(&work)?;
        }
        md.push_str(&table(ds, kind, b, &runs));
        all.push(json!({"dataset": ds, "runs": runs}));
    }
    if let Some(path) = &b.write {
        write_section(path, "bench-audit", &md)?;
    }
    emit(env, &json!({"datasets": all}), || println!("{md}"));
    Ok(())
}

fn table(ds: &str, kind: ModelKind, b: &AuditBench, runs: &[Value]) -> String {
    let f = |v: Vec<f64>, scale: f64, p: usize| {
        let (m, s) = mean_std(&v.iter().map(|x| x * scale).collect::<Vec<_>>());
        format!("{m:.p$} ± {s:.p$}")
    };
    let at = |k: &str, i: usize| -> Vec<f64> {
        runs.iter()
            .map(|r| r[k][i].as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    let mia_at = |i: usize, k: &str| -> Vec<f64> {
        runs.iter()
            .map(|r| r["mia"][i][k].as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    let num = |k: &str| -> Vec<f64> {
        runs.iter()
            .map(|r| r[k].as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    let passes = runs.iter().filter(|r| r["pass"] == json!(true)).count();
    let mut md = format!(
        "\n**{ds}**, `{kind}`, B = {}, E = {}, batch {}, {} lr {} → ×{}, user = {:.0} % of the training set ({} samples) with a 4×4 white patch → class 0; {} seed(s), verdict PASS in {passes} of {}\n\n",
        b.cfg.blocks,
        b.cfg.epochs_per_block,
        b.cfg.batch_size,
        b.cfg.optim.kind.name(),
        b.cfg.optim.lr,
        b.cfg.lr_final,
        100.0 * b.fraction,
        runs.first()
            .map(|r| r["user_samples"].clone())
            .unwrap_or(json!(0)),
        runs.len(),
        runs.len()
    );
    md.push_str("| model | clean accuracy % | attack success % | loss-MIA AUC | loss-MIA acc | confidence-MIA AUC |\n|---|---|---|---|---|---|\n");
    for (i, label) in [
        "original",
        "unlearned",
        "retrained",
        "retrained, another seed",
    ]
    .iter()
    .enumerate()
    {
        let (clean, asr) = if i < 3 {
            (f(at("clean", i), 100.0, 2), f(at("asr", i), 100.0, 2))
        } else {
            ("—".into(), "—".into())
        };
        md.push_str(&format!(
            "| {label} | {clean} | {asr} | {} | {} | {} |\n",
            f(mia_at(i, "loss_auc"), 1.0, 3),
            f(mia_at(i, "loss_acc"), 1.0, 3),
            f(mia_at(i, "conf_auc"), 1.0, 3)
        ));
    }
    md.push_str(&format!(
        "\nDistances: unlearned vs retrained weight L2 {}, mean test KL {}; retrained vs retrained with another seed (noise floor) weight L2 {}, mean test KL {}. Forget {} s ({} blocks retrained) vs retrain {} s.\n",
        f(num("weight_l2"), 1.0, 3),
        f(num("mean_kl"), 1.0, 4),
        f(num("floor_weight_l2"), 1.0, 3),
        f(num("floor_mean_kl"), 1.0, 4),
        f(num("forget_seconds"), 1.0, 1),
        f(num("blocks_retrained"), 1.0, 0),
        f(num("retrain_seconds"), 1.0, 1)
    ));
    md
}

//! `verify backdoor`, `audit mia` and `audit distance`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use obliviate::audit::backdoor::Trigger;
use obliviate::audit::mia::{MiaReport, mia};
use obliviate::audit::outputs_of;
use obliviate::audit::verify::{BackdoorSettings, verify_backdoor};
use obliviate::chain::Chain;
use obliviate::data::{Dataset, DatasetName, Split};
use obliviate::model::ModelKind;
use serde_json::json;

use crate::commands::{emit, forget_options, on_backend, run_data, train_config, training_data};
use crate::progress::Bars;
use crate::{Env, StopArgs, TrainArgs};

/// Options of `verify backdoor`.
pub struct BackdoorArgs {
    pub fraction: f64,
    pub patch: usize,
    pub x: Option<usize>,
    pub y: Option<usize>,
    pub target: u16,
    pub work: Option<PathBuf>,
}

pub fn backdoor(args: &TrainArgs, b: &BackdoorArgs, stop: &StopArgs, env: &Env) -> Result<bool> {
    let name = DatasetName::parse(&args.dataset)?;
    let kind = ModelKind::parse(&args.model)?;
    let cfg = train_config(args)?;
    let (data, limit) = training_data(name, args, env)?;
    let mut trigger = Trigger::bottom_right(&data, b.patch, b.target)?;
    if let Some(x) = b.x {
        trigger.x = x;
    }
    if let Some(y) = b.y {
        trigger.y = y;
    }
    let work = b
        .work
        .clone()
        .unwrap_or_else(|| PathBuf::from("backdoor-runs"));
    std::fs::create_dir_all(&work)?;
    let settings = BackdoorSettings {
        kind,
        cfg,
        fraction: b.fraction,
        trigger,
        opts: forget_options(stop, false)?,
        work: work.clone(),
        min_original_asr: 0.9,
        asr_tolerance: 0.02,
        accuracy_tolerance: 0.003,
    };
    let mut bars = Bars::new(env.json);
    let r = on_backend!(env, B, device => verify_backdoor::<B>(&data, limit, &settings, &device, &mut bars)?);
    emit(env, &serde_json::to_value(&r)?, || {
        println!(
            "backdoor user: {} samples ({:.1} % of {}), trigger {}×{} at ({}, {}) → class {}",
            r.user_samples,
            100.0 * b.fraction,
            data.name,
            r.trigger.size,
            r.trigger.size,
            r.trigger.x,
            r.trigger.y,
            r.trigger.target
        );
        println!();
        println!("| model | clean accuracy | attack success rate |");
        println!("|---|---|---|");
        for (label, s) in [
            ("original", r.original),
            ("unlearned", r.unlearned),
            ("retrained", r.retrained),
        ] {
            println!(
                "| {label} | {:.2} % | {:.2} % |",
                100.0 * s.clean_accuracy,
                100.0 * s.attack_success_rate
            );
        }
        println!();
        println!(
            "forget: blocks {}..={} retrained ({} of {}), {:.1} s; retrain {:.1} s",
            r.forget.first_block,
            r.forget.stop_block,
            r.forget.blocks_retrained,
            settings.cfg.blocks,
            r.forget.seconds,
            r.retrain_seconds
        );
        for c in &r.criteria {
            println!("{c}");
        }
        println!("{}", if r.pass { "PASS" } else { "FAIL" });
        println!("runs kept in {}", work.display());
    });
    Ok(r.pass)
}

/// Outputs of a run's served model on the given rows of a split.
fn run_outputs(
    run: &Path,
    data: &Dataset,
    split: Split,
    rows: &[usize],
    env: &Env,
) -> Result<obliviate::audit::Outputs> {
    let chain = Chain::open(run)?;
    let theta = chain.served()?;
    let kind = chain.manifest.model;
    Ok(on_backend!(env, B, device => outputs_of::<B>(kind, &theta, data, split, rows, &device)?))
}

pub fn mia_cmd(
    run: &Path,
    ids: Option<Vec<u64>>,
    against: &Path,
    original: Option<&Path>,
    floor: Option<&Path>,
    seed: u64,
    env: &Env,
) -> Result<()> {
    let chain = Chain::open(run)?;
    let data = run_data(&chain, env)?;
    let ids = ids.unwrap_or_else(|| chain.manifest.deleted.clone());
    if ids.is_empty() {
        bail!("no forgotten ids: give --ids or forget some first");
    }
    let rows: Vec<usize> = ids
        .iter()
        .map(|&id| {
            data.train
                .row(id)
                .ok_or_else(|| anyhow::anyhow!("id {id} is not a training id"))
        })
        .collect::<Result<_>>()?;
    let test_rows: Vec<usize> = (0..data.test.len()).collect();
    let mut models: Vec<(&str, &Path)> = Vec::new();
    if let Some(o) = original {
        models.push(("original", o));
    }
    models.push(("unlearned", run));
    models.push(("retrained", against));
    if let Some(f) = floor {
        models.push(("retrained (another seed)", f));
    }
    let mut results: Vec<(String, MiaReport)> = Vec::new();
    for (label, path) in models {
        let c = Chain::open(path)?;
        c.check_dataset(&data)?;
        let f = run_outputs(path, &data, Split::Train, &rows, env)?;
        let t = run_outputs(path, &data, Split::Test, &test_rows, env)?;
        results.push((label.to_string(), mia(&f, &t, seed)));
    }
    let v = json!({"forgotten": ids.len(), "models": results.iter().map(|(l, r)| json!({"model": l, "loss": r.loss, "confidence": r.confidence, "members": r.members})).collect::<Vec<_>>()});
    emit(env, &v, || {
        println!(
            "membership inference on {} forgotten samples vs as many test samples",
            ids.len()
        );
        println!();
        println!("| model | loss attack AUC | loss attack acc | confidence AUC | confidence acc |");
        println!("|---|---|---|---|---|");
        for (l, r) in &results {
            println!(
                "| {l} | {:.3} | {:.3} | {:.3} | {:.3} |",
                r.loss.auc, r.loss.accuracy, r.confidence.auc, r.confidence.accuracy
            );
        }
    });
    Ok(())
}

pub fn distance_cmd(run: &Path, against: &Path, floor: Option<&Path>, env: &Env) -> Result<()> {
    let chain = Chain::open(run)?;
    let data = run_data(&chain, env)?;
    let rows: Vec<usize> = (0..data.test.len()).collect();
    let pair = |a: &Path, b: &Path| -> Result<(f64, f64)> {
        let (ca, cb) = (Chain::open(a)?, Chain::open(b)?);
        let l2 = ca.served()?.distance(&cb.served()?)?.l2;
        let oa = run_outputs(a, &data, Split::Test, &rows, env)?;
        let ob = run_outputs(b, &data, Split::Test, &rows, env)?;
        Ok((l2, ob.mean_kl(&oa)))
    };
    let (l2, kl) = pair(run, against)?;
    let floor_v = match floor {
        Some(f) => Some(pair(against, f)?),
        None => None,
    };
    let v = json!({"weight_l2": l2, "mean_kl": kl, "floor": floor_v.map(|(l, k)| json!({"weight_l2": l, "mean_kl": k}))});
    emit(env, &v, || {
        println!("| pair | weight L2 distance | mean KL(retrained ‖ other) on test |");
        println!("|---|---|---|");
        println!("| unlearned vs retrained | {l2:.4} | {kl:.5} |");
        if let Some((l, k)) = floor_v {
            println!("| retrained vs retrained, another seed (noise floor) | {l:.4} | {k:.5} |");
        }
    });
    Ok(())
}

pub fn report_cmd(run: &Path, o: obliviate::report::page::ReportOptions, env: &Env) -> Result<()> {
    let chain = Chain::open(run)?;
    let data = run_data(&chain, env)?;
    let html = on_backend!(env, B, device => obliviate::report::page::write_report::<B>(run, &data, &o, &device)?);
    emit(
        env,
        &json!({"html": html, "markdown": o.out.join("report.md")}),
        || {
            println!(
                "wrote {} and {}",
                html.display(),
                o.out.join("report.md").display()
            );
        },
    );
    Ok(())
}

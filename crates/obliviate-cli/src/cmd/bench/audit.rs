//! `bench audit`: renders `experiments::audit`.

use anyhow::Result;
use clap::Args;
use obliviate::experiments::audit::{
    AuditResult, AuditRun, AuditSettings, PATCH, run as run_bench,
};
use obliviate::experiments::backdoor::Criteria;
use serde::Serialize;

use super::{BenchArgs, pm};
use crate::args::{Env, PlacementArg, StopArgs};
use crate::backend::on_backend;
use crate::output::{emit, outln, say};

#[derive(Args, Debug)]
pub struct Audit {
    #[command(flatten)]
    bench: BenchArgs,
    /// Share of the training set owned by the backdoored user.
    #[arg(long, default_value_t = 0.01)]
    fraction: f64,
    /// Where the user's samples go.
    #[arg(long, default_value = "random")]
    placement: PlacementArg,
    #[command(flatten)]
    stop: StopArgs,
}

#[derive(Serialize)]
struct Out<'a> {
    datasets: &'a [AuditResult],
}

pub fn run(a: &Audit, env: &Env) -> Result<()> {
    let s = AuditSettings {
        setup: a.bench.setup(&a.stop, env)?,
        fraction: a.fraction,
        criteria: Criteria::default(),
        placement: a.placement.0,
    };
    let data_dir = env.data_dir.as_deref();
    let results =
        on_backend!(env, B, device => run_bench::<B>(&s, data_dir, &device, &mut say(env))?);
    let md: String = results.iter().map(|r| table(&s, r)).collect();
    a.bench.write("bench-audit", &md)?;
    emit(env, &Out { datasets: &results }, || outln!("{md}"))
}

fn table(settings: &AuditSettings, res: &AuditResult) -> String {
    let s = &settings.setup;
    let runs = &res.runs;
    let col = |f: &dyn Fn(&AuditRun) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    let passes = runs.iter().filter(|r| r.pass).count();
    let cfg = &s.cfg;
    let mut md = format!(
        "\n**{}**, `{}`, B = {}, E = {}, batch {}, {} lr {} → ×{}, user = {:.0} % of the training set ({} samples) with a {}×{} white patch → class {}; {} seed(s), verdict PASS in {passes} of {}\n\n",
        res.dataset,
        s.kind,
        cfg.blocks,
        cfg.epochs_per_block,
        cfg.batch_size,
        cfg.optim.kind.name(),
        cfg.optim.lr,
        cfg.lr_final,
        100.0 * settings.fraction,
        runs.first().map_or(0, |r| r.user_samples),
        PATCH.0,
        PATCH.0,
        PATCH.1,
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
            (
                pm(col(&|r| r.clean[i]), 100.0, 2),
                pm(col(&|r| r.asr[i]), 100.0, 2),
            )
        } else {
            ("—".into(), "—".into())
        };
        md.push_str(&format!(
            "| {label} | {clean} | {asr} | {} | {} | {} |\n",
            pm(col(&|r| r.mia[i].loss_auc), 1.0, 3),
            pm(col(&|r| r.mia[i].loss_acc), 1.0, 3),
            pm(col(&|r| r.mia[i].conf_auc), 1.0, 3)
        ));
    }
    md.push_str(&format!(
        "\nDistances: unlearned vs retrained weight L2 {}, mean test KL {}; retrained vs retrained with another seed (noise floor) weight L2 {}, mean test KL {}. Forget {} s ({} blocks retrained) vs retrain {} s.\n",
        pm(col(&|r| r.weight_l2), 1.0, 3),
        pm(col(&|r| r.mean_kl), 1.0, 4),
        pm(col(&|r| r.floor_weight_l2), 1.0, 3),
        pm(col(&|r| r.floor_mean_kl), 1.0, 4),
        pm(col(&|r| r.forget_seconds), 1.0, 1),
        pm(col(&|r| r.blocks_retrained as f64), 1.0, 0),
        pm(col(&|r| r.retrain_seconds), 1.0, 1)
    ));
    md
}

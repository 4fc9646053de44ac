//! `bench calibrate`: renders `experiments::calibrate`.

use anyhow::Result;
use clap::Args;
use obliviate::experiments::backdoor::Criteria;
use obliviate::experiments::calibrate::{
    Baseline, CalibrateResult, CalibrateSettings, GridRow, MIA_MIN_MEMBERS, Probe, Quality,
    run as run_bench,
};
use obliviate::experiments::mean_std;
use serde::Serialize;

use super::{BenchArgs, setting};
use crate::args::{Env, SegmentsArg, StopArgs, StopKind};
use crate::backend::on_backend;
use crate::output::{emit, outln, say};

#[derive(Args, Debug)]
pub struct Calibrate {
    #[command(flatten)]
    bench: BenchArgs,
    /// Thresholds ε of the fit rule to try.
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.1,0.2,0.4")]
    epsilons: Vec<f64>,
    /// Minimum residuals after the last affected block to try.
    #[arg(long = "min-points", value_delimiter = ',', default_value = "1,2,4,8")]
    min_points: Vec<usize>,
    /// The negligible share of the fit rule, the same at every grid point.
    #[arg(long, default_value_t = obliviate::unlearn::NEGLIGIBLE)]
    negligible: f64,
    /// Share of the training set owned by the backdoored user.
    #[arg(long, default_value_t = 0.01)]
    fraction: f64,
    /// Samples of the clean user.
    #[arg(long, default_value_t = 300)]
    user_size: usize,
    /// Segments or one span.
    #[arg(long, value_enum, default_value = "segmented")]
    segments: SegmentsArg,
}

#[derive(Serialize)]
struct Out<'a> {
    datasets: &'a [CalibrateResult],
}

pub fn run(a: &Calibrate, env: &Env) -> Result<()> {
    let stop = StopArgs {
        stop: StopKind::Fit,
        epsilon: a.epsilons.first().copied().unwrap_or_default(),
        negligible: a.negligible,
        rho: 0.05,
        min_points: a.min_points.first().copied().unwrap_or_default(),
        segments: a.segments,
    };
    let s = CalibrateSettings {
        setup: a.bench.setup(&stop, env)?,
        epsilons: a.epsilons.clone(),
        min_points: a.min_points.clone(),
        negligible: a.negligible,
        fraction: a.fraction,
        user_size: a.user_size,
        criteria: Criteria::default(),
    };
    s.validate()?;
    let data_dir = env.data_dir.as_deref();
    let results =
        on_backend!(env, B, device => run_bench::<B>(&s, data_dir, &device, &mut say(env))?);
    let md: String = results.iter().map(|r| render(&s, r)).collect();
    a.bench.write("bench-calibrate", &md)?;
    emit(env, &Out { datasets: &results }, || outln!("{md}"))
}

/// "mean" of `f` over `v`, or "—" when no value is defined.
fn mean_of<T>(v: &[&T], f: impl Fn(&T) -> Option<f64>, scale: f64, p: usize) -> String {
    let vals: Vec<f64> = v.iter().filter_map(|x| f(x)).map(|x| x * scale).collect();
    if vals.is_empty() {
        return "—".into();
    }
    format!("{:.p$}", mean_std(&vals).0)
}

/// The mean of losses with 4 significant digits (a single well-fitted sample's is ~1e-6).
fn loss(v: impl Iterator<Item = f64>) -> String {
    let v: Vec<f64> = v.collect();
    let m = mean_std(&v).0;
    if m != 0.0 && m.abs() < 0.01 {
        format!("{m:.3e}")
    } else {
        format!("{m:.4}")
    }
}

fn quality_cells(q: &[&Quality]) -> String {
    format!(
        "{} | {} | {} | {}",
        mean_of(q, |q| Some(q.accuracy), 100.0, 2),
        mean_of(q, |q| q.attack_success, 100.0, 2),
        loss(q.iter().map(|q| q.loss)),
        mean_of(q, |q| q.mia_auc, 1.0, 3),
    )
}

fn render(s: &CalibrateSettings, res: &CalibrateResult) -> String {
    let setup = &s.setup;
    let c = &s.criteria;
    let mut md = format!(
        "\n**{}**, `{}`, {}; {} seed(s); backdoored user {:.0} % of the training set and a clean user of {} samples, both kept together (half of each block at most); stop rule `fit` (negligible share {}), {:?}. A grid point passes when, for every request and seed, the unlearned model's test accuracy is within {:.1} pt of the retrained model's, its attack success within {:.0} pt, the forgotten samples' mean loss within the seed-to-seed spread, and the loss attack's AUC (≥ {} samples) within the seed-to-seed spread or one standard error of a null AUC.\n\n",
        res.dataset,
        setup.kind,
        setting(&setup.cfg),
        setup.seeds,
        100.0 * s.fraction,
        s.user_size,
        s.negligible,
        setup.opts.segments,
        100.0 * c.accuracy_tolerance,
        100.0 * c.asr_tolerance,
        MIA_MIN_MEMBERS,
    );
    md.push_str("References (mean over seeds): accuracy %, attack success %, mean loss of the forgotten samples, loss-attack AUC; L2 and KL to the retrained model.\n\n");
    md.push_str("| request | samples | affected blocks | first block | retrain s | model | accuracy % | attack success % | loss | MIA AUC | L2 to retrained | KL to retrained |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for probe in Probe::ALL {
        let b: Vec<&Baseline> = res.baselines.iter().filter(|b| b.probe == probe).collect();
        if b.is_empty() {
            continue;
        }
        let head = format!(
            "| {} | {} | {} | {} | {} ",
            probe.label(),
            mean_of(&b, |b| Some(b.samples as f64), 1.0, 0),
            mean_of(&b, |b| Some(b.affected_blocks as f64), 1.0, 1),
            mean_of(&b, |b| Some(b.first_block as f64), 1.0, 0),
            mean_of(&b, |b| Some(b.retrain_seconds), 1.0, 1),
        );
        let originals: Vec<&Quality> = b.iter().map(|b| &b.original).collect();
        let retrained: Vec<&Quality> = b.iter().map(|b| &b.retrained).collect();
        let floors: Vec<&Quality> = b.iter().map(|b| &b.floor).collect();
        md.push_str(&format!(
            "{head}| original | {} | {} | {} |\n",
            quality_cells(&originals),
            mean_of(&b, |b| Some(b.l2_original), 1.0, 2),
            mean_of(&b, |b| Some(b.kl_original), 1.0, 5),
        ));
        md.push_str(&format!(
            "| | | | | | retrained | {} | 0 | 0 |\n",
            quality_cells(&retrained)
        ));
        md.push_str(&format!(
            "| | | | | | retrained, another seed | {} | {} | {} |\n",
            quality_cells(&floors),
            mean_of(&b, |b| Some(b.l2_floor), 1.0, 2),
            mean_of(&b, |b| Some(b.kl_floor), 1.0, 5),
        ));
    }
    let original_asr: Vec<f64> = res
        .baselines
        .iter()
        .filter_map(|b| b.original.attack_success)
        .collect();
    if original_asr.iter().any(|&a| a < c.min_original_asr) {
        md.push_str(&format!(
            "\nThe original model did not keep the backdoor in every seed (attack success {} %, below the {:.0} % a verification needs): clean blocks after the user washed it out, so attack success cannot tell settings apart here; loss and membership still can.\n",
            original_asr
                .iter()
                .map(|a| format!("{:.2}", 100.0 * a))
                .collect::<Vec<_>>()
                .join(", "),
            100.0 * c.min_original_asr
        ));
    }
    md.push_str("\nGrid (mean over seeds; L2 closed: share of the original → retrained weight distance that forgetting closed; segments: first → stop block of each, seed 0):\n\n");
    md.push_str("| ε | min points | request | blocks retrained | segments | s | accuracy % | attack success % | loss | MIA AUC | L2 / KL to retrained | L2 closed | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for p in &res.grid {
        for probe in Probe::ALL {
            let rows: Vec<&GridRow> = res
                .rows
                .iter()
                .filter(|r| {
                    r.probe == probe && r.epsilon == p.epsilon && r.min_points == p.min_points
                })
                .collect();
            let Some(first) = rows.first() else { continue };
            let q: Vec<&Quality> = rows.iter().map(|r| &r.unlearned).collect();
            let fails: Vec<String> = rows.iter().flat_map(|r| r.failures.clone()).collect();
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
                p.epsilon,
                p.min_points,
                probe.label(),
                mean_of(&rows, |r| Some(r.blocks_retrained as f64), 1.0, 1),
                first
                    .segments
                    .iter()
                    .map(|(a, b)| format!("{a}→{b}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                mean_of(&rows, |r| Some(r.seconds), 1.0, 2),
                quality_cells(&q),
                mean_of(&rows, |r| Some(r.l2), 1.0, 2),
                mean_of(&rows, |r| Some(r.kl), 1.0, 5),
                mean_of(&rows, |r| Some(r.l2_closed), 100.0, 0) + " %",
                if fails.is_empty() {
                    "pass".to_string()
                } else {
                    format!("FAIL: {}", fails.join("; "))
                },
            ));
        }
    }
    md.push_str(&match &res.choice {
        Some(c) => format!(
            "\nCheapest passing setting: ε = {}, min points = {} ({:.1} blocks retrained over the three requests).\n",
            c.epsilon, c.min_points, c.blocks
        ),
        None => "\nNo grid point passed every check.\n".to_string(),
    });
    md
}

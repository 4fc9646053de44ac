//! `bench unlearn`: renders `experiments::unlearn`.

use anyhow::Result;
use clap::Args;
use obliviate::experiments::mean_std;
use obliviate::experiments::unlearn::{
    Kind, SequenceStep, UnlearnResult, UnlearnRow, UnlearnSettings, run as run_bench,
};
use obliviate::unlearn::Segmentation;
use serde::Serialize;

use super::{BenchArgs, pm, setting};
use crate::args::{Env, StopArgs};
use crate::backend::on_backend;
use crate::output::{emit, outln, say};

#[derive(Args, Debug)]
pub struct Unlearn {
    #[command(flatten)]
    bench: BenchArgs,
    /// Request sizes (random ids per request).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    requests: Vec<usize>,
    /// Also forget each random request as one span (the published method), for comparison.
    #[arg(long)]
    compare_single: bool,
    /// Samples per synthetic user; one user per seed is forgotten, placed together and spread
    /// (0: no user requests).
    #[arg(long, default_value_t = 100)]
    user_size: usize,
    /// Successive requests of each kind on seed 0, each building on the last (drift check):
    /// N of every `--requests` size, and N users when `--user-size` is set (0: none).
    #[arg(long, default_value_t = 20)]
    sequence: usize,
    #[command(flatten)]
    stop: StopArgs,
}

#[derive(Serialize)]
struct Out<'a> {
    datasets: &'a [UnlearnResult],
}

pub fn run(a: &Unlearn, env: &Env) -> Result<()> {
    let setup = a.bench.setup(&a.stop, env)?;
    let mut modes = vec![setup.opts.segments];
    if a.compare_single && !modes.contains(&Segmentation::Single) {
        modes.push(Segmentation::Single);
    }
    let s = UnlearnSettings {
        setup,
        requests: a.requests.clone(),
        modes,
        user_size: a.user_size,
        sequence: a.sequence,
    };
    let data_dir = env.data_dir.as_deref();
    let results =
        on_backend!(env, B, device => run_bench::<B>(&s, data_dir, &device, &mut say(env))?);
    let md = render(&s, &results);
    a.bench.write("bench-unlearn", &md)?;
    emit(env, &Out { datasets: &results }, || outln!("{md}"))
}

fn render(settings: &UnlearnSettings, results: &[UnlearnResult]) -> String {
    let s = &settings.setup;
    let mut md = String::new();
    for res in results {
        md.push_str(&format!(
            "\n**{}**, `{}`, {}, stop: {:?}, min-points {}; {} seed(s). Mean ± std over seeds; speedups are retrain seconds ÷ forget seconds (engine time, evaluation excluded). Loss: mean loss of the forgotten samples under the unlearned / retrained model, and the seed-to-seed spread |retrained − retrained with another seed|. L2: weight distance to the retrained model of the unlearned and of the original model, and the retrain-vs-retrain noise floor.\n\n",
            res.dataset,
            s.kind,
            setting(&s.cfg),
            s.opts.stop,
            s.opts.min_points,
            s.seeds
        ));
        md.push_str("| request | placement | mode | original acc % | retrained acc % | unlearned acc % | \\|gap\\| pt | blocks retrained | segments | forget s | retrain s | speedup × | loss unlearned / retrained (spread) | L2 unlearned / original (floor) |\n");
        md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        let mut keys: Vec<(Kind, usize, &str, &str)> = Vec::new();
        for r in &res.rows {
            let k = (r.kind, r.ids, r.placement, r.mode);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        for (kind, n, placement, mode) in keys {
            let rows: Vec<&UnlearnRow> = res
                .rows
                .iter()
                .filter(|r| (r.kind, r.ids, r.placement, r.mode) == (kind, n, placement, mode))
                .collect();
            let col = |f: fn(&UnlearnRow) -> f64| rows.iter().map(|r| f(r)).collect::<Vec<f64>>();
            let mean = |f: fn(&UnlearnRow) -> f64| mean_std(&col(f)).0;
            let what = match kind {
                Kind::Random => format!("{n} random id(s)"),
                Kind::User => format!("user of {n}"),
            };
            md.push_str(&format!(
                "| {what} | {placement} | {mode} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} / {:.3} ({:.3}) | {:.2} / {:.2} ({:.2}) |\n",
                pm(col(|r| r.original), 100.0, 2),
                pm(col(|r| r.retrained), 100.0, 2),
                pm(col(|r| r.unlearned), 100.0, 2),
                pm(col(|r| (r.unlearned - r.retrained).abs()), 100.0, 2),
                pm(col(|r| r.blocks_retrained as f64), 1.0, 1),
                pm(col(|r| r.segments as f64), 1.0, 1),
                pm(col(|r| r.forget_seconds), 1.0, 2),
                pm(col(|r| r.retrain_seconds), 1.0, 1),
                pm(col(|r| r.speedup), 1.0, 1),
                mean(|r| r.loss_unlearned),
                mean(|r| r.loss_retrained),
                mean(|r| (r.loss_retrained - r.loss_floor).abs()),
                mean(|r| r.l2_unlearned),
                mean(|r| r.l2_original),
                mean(|r| r.l2_floor),
            ));
        }
        if !res.placement.is_empty() {
            let r: Vec<f64> = res.placement.iter().map(|p| p.random).collect();
            let g: Vec<f64> = res.placement.iter().map(|p| p.grouped).collect();
            md.push_str(&format!(
                "\nPlacement: test accuracy with users of {} kept together {} % against {} % placed at random.\n",
                settings.user_size,
                pm(g, 100.0, 2),
                pm(r, 100.0, 2)
            ));
        }
        let mut kinds: Vec<(Kind, usize)> = Vec::new();
        for v in &res.sequence {
            if !kinds.contains(&(v.kind, v.ids)) {
                kinds.push((v.kind, v.ids));
            }
        }
        for (kind, n) in kinds {
            let seq: Vec<&SequenceStep> = res
                .sequence
                .iter()
                .filter(|v| (v.kind, v.ids) == (kind, n))
                .collect();
            let secs: Vec<f64> = seq.iter().map(|v| v.seconds).collect();
            let blocks: Vec<f64> = seq.iter().map(|v| v.blocks_retrained as f64).collect();
            let accs: Vec<f64> = seq.iter().map(|v| 100.0 * v.accuracy).collect();
            let half = secs.len() / 2;
            let (first, second) = (mean_std(&secs[..half]), mean_std(&secs[half..]));
            let (b1, b2) = (mean_std(&blocks[..half]).0, mean_std(&blocks[half..]).0);
            let what = match kind {
                Kind::Random => format!("requests of {n} random id(s)"),
                Kind::User => format!("users of {n} (grouped)"),
            };
            md.push_str(&format!(
                "\n{} successive {what} (seed 0): seconds per request first half {:.2} ± {:.2}, second half {:.2} ± {:.2}; blocks retrained per request {:.1} then {:.1}; accuracy after each request {:.2} % … {:.2} % (first {:.2} %, last {:.2} %).\n",
                secs.len(),
                first.0,
                first.1,
                second.0,
                second.1,
                b1,
                b2,
                accs.iter().copied().fold(f64::INFINITY, f64::min),
                accs.iter().copied().fold(0.0, f64::max),
                accs[0],
                accs[accs.len() - 1]
            ));
        }
    }
    md
}

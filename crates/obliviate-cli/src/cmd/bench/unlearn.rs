//! `bench unlearn`: renders `experiments::unlearn`.

use anyhow::Result;
use clap::Args;
use obliviate::experiments::mean_std;
use obliviate::experiments::unlearn::{UnlearnResult, UnlearnSettings, run as run_bench};
use serde::Serialize;

use super::{BenchArgs, pm, setting};
use crate::args::{Env, StopArgs};
use crate::backend::on_backend;
use crate::output::{emit, outln, say};

#[derive(Args, Debug)]
pub struct Unlearn {
    #[command(flatten)]
    bench: BenchArgs,
    /// Request sizes (ids per request).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    requests: Vec<usize>,
    /// Successive single-id requests on seed 0 (drift check).
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
    let s = UnlearnSettings {
        setup: a.bench.setup(&a.stop)?,
        requests: a.requests.clone(),
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
            "\n**{}**, `{}`, {}, stop: {:?}, min-points {}; {} seed(s)\n\n",
            res.dataset,
            s.kind,
            setting(&s.cfg),
            s.opts.stop,
            s.opts.min_points,
            s.seeds
        ));
        md.push_str("| ids / request | original acc % | retrained acc % | unlearned acc % | \\|unlearned − retrained\\| pt | blocks retrained | forget s | retrain s | speedup × | bytes on disk |\n");
        md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for &n in &settings.requests {
            let rows: Vec<_> = res.rows.iter().filter(|r| r.ids == n).collect();
            let col = |f: fn(&obliviate::experiments::unlearn::UnlearnRow) -> f64| {
                rows.iter().map(|r| f(r)).collect::<Vec<f64>>()
            };
            md.push_str(&format!(
                "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
                pm(col(|r| r.original), 100.0, 2),
                pm(col(|r| r.retrained), 100.0, 2),
                pm(col(|r| r.unlearned), 100.0, 2),
                pm(col(|r| (r.unlearned - r.retrained).abs()), 100.0, 2),
                pm(col(|r| r.blocks_retrained as f64), 1.0, 1),
                pm(col(|r| r.forget_seconds), 1.0, 2),
                pm(col(|r| r.retrain_seconds), 1.0, 1),
                pm(col(|r| r.speedup), 1.0, 1),
                mean_std(&col(|r| r.bytes_on_disk as f64)).0
            ));
        }
        let seq = &res.sequence;
        if !seq.is_empty() {
            let secs: Vec<f64> = seq.iter().map(|v| v.seconds).collect();
            let accs: Vec<f64> = seq.iter().map(|v| 100.0 * v.accuracy).collect();
            let half = secs.len() / 2;
            let (first, second) = (mean_std(&secs[..half]), mean_std(&secs[half..]));
            md.push_str(&format!(
                "\n{} successive single-id requests (seed 0): seconds per request first half {:.2} ± {:.2}, second half {:.2} ± {:.2}; accuracy after each request {:.2} % … {:.2} % (first {:.2} %, last {:.2} %).\n",
                secs.len(),
                first.0,
                first.1,
                second.0,
                second.1,
                accs.iter().copied().fold(f64::INFINITY, f64::min),
                accs.iter().copied().fold(0.0, f64::max),
                accs[0],
                accs[accs.len() - 1]
            ));
        }
    }
    md
}

//! `bench storage`: renders `experiments::storage`.

use anyhow::{Result, bail};
use clap::Args;
use obliviate::chain::Storage;
use obliviate::experiments::storage::{StorageResult, StorageSettings, run as run_bench};
use serde::Serialize;

use super::{BenchArgs, pm, setting};
use crate::args::{Env, StopArgs};
use crate::backend::on_backend;
use crate::output::{emit, outln, say};

#[derive(Args, Debug)]
pub struct StorageBench {
    #[command(flatten)]
    bench: BenchArgs,
    /// Storage settings compared, `DELTA/OPT[+zstd]`; the first one's retrains are the
    /// reference every unlearned model is judged against.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "f32/f32,bf16/bf16,q8/q8,q8/q8+zstd"
    )]
    storages: Vec<String>,
    /// Request sizes (random ids per request).
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    requests: Vec<usize>,
    /// Leave out the request for one id of the block at 90 % of the chain (the restore
    /// phase's worst case without keyframes).
    #[arg(long)]
    no_late_id: bool,
    #[command(flatten)]
    stop: StopArgs,
}

#[derive(Serialize)]
struct Out<'a> {
    datasets: &'a [StorageResult],
}

pub fn run(a: &StorageBench, env: &Env) -> Result<()> {
    let storages = a
        .storages
        .iter()
        .map(|s| s.parse::<Storage>())
        .collect::<obliviate::Result<Vec<_>>>()?;
    if storages.is_empty() || a.requests.is_empty() || a.requests.contains(&0) {
        bail!("--storages and --requests need at least one value each, and requests ≥ 1 id");
    }
    let s = StorageSettings {
        setup: a.bench.setup(&a.stop, env)?,
        storages,
        requests: a.requests.clone(),
        late_id: !a.no_late_id,
    };
    let data_dir = env.data_dir.as_deref();
    let results =
        on_backend!(env, B, device => run_bench::<B>(&s, data_dir, &device, &mut say(env))?);
    let md = render(&s, &results);
    a.bench.write("bench-storage", &md)?;
    emit(env, &Out { datasets: &results }, || outln!("{md}"))
}

fn render(settings: &StorageSettings, results: &[StorageResult]) -> String {
    let s = &settings.setup;
    let mut md = String::new();
    for res in results {
        md.push_str(&format!(
            "\n**{}**, `{}`, {}, {} seed(s). Mean ± std over seeds. Bytes: the whole run folder after training; ratio to the same chain in f32. Gap: unlearned − retrained test accuracy, against the first row's run retrained without the ids. Seconds are engine time (evaluation excluded).\n\n",
            res.dataset,
            s.kind,
            setting(&s.cfg),
            s.seeds
        ));
        let mut head = String::from(
            "| storage | MB on disk | % of f32 | increments MB | optimizer MB | test acc % |",
        );
        let mut rule = String::from("|---|---|---|---|---|---|");
        for n in settings.labels() {
            head.push_str(&format!(
                " {n}: forget s | restore s | MB read | blocks (replayed) | gap pt |"
            ));
            rule.push_str("---|---|---|---|---|");
        }
        md.push_str(&format!("{head}\n{rule}\n"));
        for storage in &settings.storages {
            let label = storage.to_string();
            let rows: Vec<_> = res.rows.iter().filter(|r| r.storage == label).collect();
            if rows.is_empty() {
                continue;
            }
            let mb = |f: &dyn Fn(&obliviate::chain::Bytes) -> u64| {
                pm(rows.iter().map(|r| f(&r.bytes) as f64), 1e-6, 1)
            };
            md.push_str(&format!(
                "| {label} | {} | {} | {} | {} | {} |",
                mb(&|b| b.total),
                pm(rows.iter().map(|r| r.bytes.ratio), 100.0, 1),
                mb(&|b| b.increments),
                mb(&|b| b.optimizer),
                pm(rows.iter().map(|r| r.test_accuracy), 100.0, 2),
            ));
            for i in 0..settings.labels().len() {
                let req = |f: &dyn Fn(&obliviate::experiments::storage::RequestCost) -> f64| {
                    rows.iter()
                        .map(move |r| f(&r.requests[i]))
                        .collect::<Vec<_>>()
                };
                md.push_str(&format!(
                    " {} | {} | {} | {} ({}) | {} |",
                    pm(req(&|c| c.forget_seconds), 1.0, 2),
                    pm(req(&|c| c.restore_seconds), 1.0, 3),
                    pm(req(&|c| c.bytes_read as f64), 1e-6, 1),
                    pm(req(&|c| c.blocks_retrained as f64), 1.0, 0),
                    pm(req(&|c| c.blocks_replayed as f64), 1.0, 0),
                    pm(req(&|c| c.unlearned - c.retrained), 100.0, 2),
                ));
            }
            md.push('\n');
        }
    }
    md
}

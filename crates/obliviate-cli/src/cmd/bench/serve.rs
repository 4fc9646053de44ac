//! `obliviate bench serve`: the service's load check (`obliviate_serve::bench`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use obliviate_serve::bench::{BenchConfig, BenchReport, run as bench};

use crate::args::{Env, StopArgs};
use crate::backend::on_backend;
use crate::cmd::serve::seconds;
use crate::output::{emit, outln};

/// The deletion service under load on loopback: POST rate and latency while a batch trains,
/// and coalesced against one-by-one processing of single-id requests.
#[derive(Args, Debug)]
pub struct ServeBench {
    /// A trained run (copied, never modified).
    run: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Requests the clients send while the batch trains.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Single-id requests processed coalesced and one by one.
    #[arg(long, default_value_t = 100)]
    coalesce: usize,
    /// Batch window of the coalescing service, seconds.
    #[arg(long, default_value_t = 2.0)]
    batch_window: f64,
    /// Seed of the ids chosen.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Scratch folder for the run copies (new or empty).
    #[arg(long, default_value = "bench-serve")]
    work: PathBuf,
    /// Skip measuring each batch's test accuracy.
    #[arg(long)]
    no_eval: bool,
    #[command(flatten)]
    stop: StopArgs,
}

pub fn run(a: &ServeBench, env: &Env) -> Result<()> {
    let mut forget = a.stop.options(true)?;
    forget.evaluate = !a.no_eval;
    let cfg = BenchConfig {
        run: a.run.clone(),
        work: a.work.clone(),
        data_dir: env.data_dir.clone(),
        clients: a.clients,
        requests: a.requests,
        coalesce: a.coalesce,
        window: seconds("--batch-window", a.batch_window)?,
        forget,
        seed: a.seed,
    };
    let r: BenchReport = on_backend!(env, B, device => bench::<B>(&cfg, &device)?);
    emit(env, &r, || {
        let p = &r.accepting;
        outln!(
            "accepting while a batch trains: {} of {} POSTs from {} clients in {:.2} s = {:.0} req/s; \
             latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; batch trained throughout: {}",
            p.accepted,
            p.requests,
            p.clients,
            p.seconds,
            p.per_second,
            p.p50_ms,
            p.p99_ms,
            p.max_ms,
            p.batch_trained_throughout
        );
        for (name, x) in [("coalesced", &r.coalesced), ("one by one", &r.one_by_one)] {
            outln!(
                "{name:>10}: {} single-id requests done in {:.1} s ({} batches, {} blocks retrained) = {:.0} ids/hour",
                a.coalesce,
                x.seconds,
                x.batches,
                x.blocks_retrained,
                x.ids_per_hour
            );
        }
        outln!("coalesced is {:.1}× faster", r.speedup);
    })
}

//! `obliviate bench serve`: a bounded load check of the service on loopback, in two parts.
//!
//! 1. **Accepting while a batch trains.** A copy of the run is served; a long batch is started
//!    (one id from every tenth block, so it retrains much of the chain), and once it runs,
//!    `clients` threads POST `requests` single-id requests between them. Reports accepted
//!    requests per second and the POST latency percentiles, and whether the batch was still
//!    training when the last answer came (so every latency was measured under load).
//! 2. **Coalesced against one by one.** The same `coalesce` single-id requests go to two fresh
//!    copies: one service batches them (`max_batch_ids` ≥ their count), the other takes one
//!    per batch. Reports the seconds from the first POST until every request is done, and ids
//!    forgotten per hour, side by side.
//!
//! Every server is a real `Server` on 127.0.0.1 with a token, driven over HTTP by `ureq`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use obliviate::chain::Chain;
use obliviate::unlearn::ForgetOptions;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::server::Server;

/// What the load check does.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The trained run (copied; never modified).
    pub run: PathBuf,
    /// A new or empty scratch folder for the copies.
    pub work: PathBuf,
    /// Dataset folder.
    pub data_dir: Option<PathBuf>,
    /// Concurrent clients of part 1.
    pub clients: usize,
    /// Requests of part 1.
    pub requests: usize,
    /// Single-id requests of part 2.
    pub coalesce: usize,
    /// Batch window of the coalescing service in part 2.
    pub window: Duration,
    /// How batches are forgotten.
    pub forget: ForgetOptions,
    /// Seed of the ids chosen.
    pub seed: u64,
}

/// Part 1's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Accepting {
    /// Concurrent clients.
    pub clients: usize,
    /// Requests sent.
    pub requests: usize,
    /// Requests answered 202.
    pub accepted: usize,
    /// Seconds from the first POST to the last answer.
    pub seconds: f64,
    /// Accepted requests per second.
    pub per_second: f64,
    /// Median POST latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile POST latency, milliseconds.
    pub p99_ms: f64,
    /// Slowest POST, milliseconds.
    pub max_ms: f64,
    /// True when the long batch was still training after the last answer.
    pub batch_trained_throughout: bool,
}

/// One side of part 2.
#[derive(Debug, Clone, Serialize)]
pub struct Processing {
    /// Most ids per batch the service was given.
    pub max_batch_ids: usize,
    /// Seconds from the first POST until every request was done.
    pub seconds: f64,
    /// Batches committed.
    pub batches: u64,
    /// Blocks retrained over all batches.
    pub blocks_retrained: u64,
    /// Ids forgotten per hour at this rate.
    pub ids_per_hour: f64,
}

/// The load check's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Part 1.
    pub accepting: Accepting,
    /// Part 2, batched.
    pub coalesced: Processing,
    /// Part 2, one request per batch.
    pub one_by_one: Processing,
    /// one_by_one.seconds / coalesced.seconds.
    pub speedup: f64,
}

const TOKEN: &str = "bench-token";

/// A small deterministic generator (SplitMix64) for choosing ids.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// An HTTP client of one server.
#[derive(Clone)]
struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
            base: format!("http://{addr}"),
        }
    }

    fn post(&self, body: &Value) -> Result<(u16, Value)> {
        let r = self
            .agent
            .post(&format!("{}/v1/requests", self.base))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string());
        Self::answer(r)
    }

    fn get(&self, path: &str) -> Result<(u16, Value)> {
        let r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call();
        Self::answer(r)
    }

    fn metric(&self, name: &str) -> Result<f64> {
        let r = self
            .agent
            .get(&format!("{}/metrics", self.base))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .map_err(|e| Error::Bench(format!("GET /metrics: {e}")))?;
        let text = r
            .into_string()
            .map_err(|e| Error::Bench(format!("GET /metrics: {e}")))?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .ok_or_else(|| Error::Bench(format!("/metrics lacks {name}")))
    }

    fn answer(r: std::result::Result<ureq::Response, ureq::Error>) -> Result<(u16, Value)> {
        let resp = match r {
            Ok(resp) => resp,
            Err(ureq::Error::Status(_, resp)) => resp,
            Err(e) => return Err(Error::Bench(e.to_string())),
        };
        let status = resp.status();
        let text = resp
            .into_string()
            .map_err(|e| Error::Bench(format!("reading an answer: {e}")))?;
        let v = serde_json::from_str(&text)
            .map_err(|e| Error::Bench(format!("an answer is not JSON ({e}): {text}")))?;
        Ok((status, v))
    }
}

/// Runs the load check with backend `B`.
pub fn run<B: AutodiffBackend>(cfg: &BenchConfig, device: &B::Device) -> Result<BenchReport> {
    if cfg.clients == 0 || cfg.requests == 0 || cfg.coalesce == 0 {
        return Err(Error::Config(
            "--clients, --requests and --coalesce must be at least 1".into(),
        ));
    }
    if cfg.work.exists() && cfg.work.read_dir().map_or(true, |mut d| d.next().is_some()) {
        return Err(Error::Config(format!(
            "{}: choose a new or empty folder for the load check's copies",
            cfg.work.display()
        )));
    }
    let source = Chain::open(&cfg.run)?;
    let m = source.manifest();
    // Candidate ids: the run's remaining training ids, by block.
    let by_block: Vec<Vec<u64>> = m.blocks.iter().map(|b| b.ids.clone()).collect();
    let mut rng = Mix(cfg.seed);
    let heavy: Vec<u64> = by_block
        .iter()
        .step_by(10)
        .filter_map(|ids| ids.first().copied())
        .collect();
    let mut pool: Vec<u64> = by_block
        .iter()
        .flatten()
        .copied()
        .filter(|id| !heavy.contains(id))
        .collect();
    let needed = cfg.requests.max(cfg.coalesce);
    if pool.len() < needed {
        return Err(Error::Config(format!(
            "the run has {} ids to spare; the load check needs {needed}",
            pool.len()
        )));
    }
    // Fisher–Yates prefix: the first `needed` ids of a seeded shuffle.
    for i in 0..needed {
        let j = i + (rng.next() % (pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    let singles = &pool[..needed];
    let fork = |name: &str| -> Result<PathBuf> {
        let dst = cfg.work.join(name);
        source.copy_to(&dst)?;
        Ok(dst)
    };
    let config = |run: PathBuf, window: Duration, max_batch_ids: usize| Config {
        run,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        token: Some(TOKEN.into()),
        data_dir: cfg.data_dir.clone(),
        batch_window: window,
        max_batch_ids,
        max_body_bytes: 1 << 20,
        request_timeout: Duration::from_secs(30),
        header_timeout: Duration::from_secs(10),
        forget: cfg.forget,
        handle_signals: false,
    };

    // Part 1.
    let server = Server::start::<B>(
        config(fork("accepting")?, Duration::ZERO, usize::MAX),
        device.clone(),
    )?;
    let accepting = accept_under_load(&server, &heavy, &singles[..cfg.requests], cfg.clients)?;
    server.stop()?;

    // Part 2.
    let ids = &singles[..cfg.coalesce];
    let coalesced = process::<B>(
        config(fork("coalesced")?, cfg.window, cfg.coalesce.max(1)),
        ids,
        device,
    )?;
    let one_by_one = process::<B>(config(fork("one-by-one")?, Duration::ZERO, 1), ids, device)?;
    Ok(BenchReport {
        speedup: one_by_one.seconds / coalesced.seconds.max(f64::MIN_POSITIVE),
        accepting,
        coalesced,
        one_by_one,
    })
}

/// Part 1 against `server`.
fn accept_under_load(
    server: &Server,
    heavy: &[u64],
    singles: &[u64],
    clients: usize,
) -> Result<Accepting> {
    let client = Client::new(server.addr());
    let (status, v) = client.post(&json!({ "ids": heavy }))?;
    if status != 202 {
        return Err(Error::Bench(format!(
            "the long batch was refused ({status}): {v}"
        )));
    }
    let heavy_id = v["id"].as_str().unwrap_or_default().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = client.get(&format!("/v1/requests/{heavy_id}"))?;
        if v["status"] == "running" {
            break;
        }
        if Instant::now() > deadline || v["status"] == "done" {
            return Err(Error::Bench(format!(
                "the long batch did not start training in time: {v}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(singles.len())));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for part in singles.chunks(singles.len().div_ceil(clients)) {
            let (client, latencies, failures) =
                (client.clone(), latencies.clone(), failures.clone());
            scope.spawn(move || {
                for id in part {
                    let t = Instant::now();
                    let r = client.post(&json!({ "ids": [id] }));
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    match r {
                        Ok((202, _)) => {
                            if let Ok(mut l) = latencies.lock() {
                                l.push(ms);
                            }
                        }
                        other => {
                            if let Ok(mut f) = failures.lock() {
                                f.push(format!("id {id}: {other:?}"));
                            }
                        }
                    }
                }
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let still = client.metric("obliviate_batch_running")? == 1.0;
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    if let Some(first) = failures.first() {
        return Err(Error::Bench(format!(
            "{} POST(s) were not accepted; first: {first}",
            failures.len()
        )));
    }
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| l[((p * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1];
    Ok(Accepting {
        clients,
        requests: singles.len(),
        accepted: l.len(),
        seconds,
        per_second: l.len() as f64 / seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: l.last().copied().unwrap_or(0.0),
        batch_trained_throughout: still,
    })
}

/// Part 2 on one fresh copy: POSTs one request per id, waits until all are done.
fn process<B: AutodiffBackend>(
    config: Config,
    ids: &[u64],
    device: &B::Device,
) -> Result<Processing> {
    let max_batch_ids = config.max_batch_ids;
    let server = Server::start::<B>(config, device.clone())?;
    let client = Client::new(server.addr());
    let start = Instant::now();
    let mut names = Vec::with_capacity(ids.len());
    for id in ids {
        let (status, v) = client.post(&json!({ "ids": [id] }))?;
        if status != 202 {
            return Err(Error::Bench(format!("id {id} was refused ({status}): {v}")));
        }
        names.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    for name in &names {
        loop {
            let (_, v) = client.get(&format!("/v1/requests/{name}"))?;
            match v["status"].as_str() {
                Some("done") => break,
                Some("failed") => return Err(Error::Bench(format!("{name} failed: {v}"))),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let batches = client.metric("obliviate_batch_seconds_count")? as u64;
    let blocks_retrained = client.metric("obliviate_blocks_retrained_total")? as u64;
    server.stop()?;
    Ok(Processing {
        max_batch_ids,
        seconds,
        batches,
        blocks_retrained,
        ids_per_hour: ids.len() as f64 * 3600.0 / seconds,
    })
}

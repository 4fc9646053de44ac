//! `/metrics` in the Prometheus text exposition format (version 0.0.4). A handful of series,
//! written directly: the format is a few lines of text, and the values come from the queue
//! and the worker's counters at scrape time, so they survive a restart where it matters.

use std::collections::BTreeMap;
use std::fmt::Write;

/// What this process's worker has done.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Batches committed.
    pub batches: u64,
    /// Batches that failed (their requests marked failed).
    pub failed_batches: u64,
    /// Seconds spent in committed batches.
    pub batch_seconds: f64,
    /// Seconds of the last committed batch.
    pub last_batch_seconds: f64,
    /// Blocks retrained by committed batches.
    pub blocks_retrained: u64,
    /// Ids forgotten by committed batches.
    pub ids_forgotten: u64,
    /// Requests answered by committed batches.
    pub requests_done: u64,
}

impl Counters {
    /// Records a committed batch.
    pub fn record(&mut self, seconds: f64, blocks: usize, ids: usize, requests: usize) {
        self.batches += 1;
        self.batch_seconds += seconds;
        self.last_batch_seconds = seconds;
        self.blocks_retrained += blocks as u64;
        self.ids_forgotten += ids as u64;
        self.requests_done += requests as u64;
    }
}

/// The exposition text.
pub fn render(
    statuses: &BTreeMap<&'static str, u64>,
    c: &Counters,
    forgotten_samples: usize,
    generation: u64,
    busy: bool,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    metric(
        "obliviate_queue_depth",
        "gauge",
        "Requests accepted and waiting for a batch.",
        &one(statuses.get("queued").copied().unwrap_or(0).to_string()),
    );
    let by_status: Vec<(String, String)> = statuses
        .iter()
        .map(|(s, n)| (format!("{{status=\"{s}\"}}"), n.to_string()))
        .collect();
    metric(
        "obliviate_requests",
        "gauge",
        "Requests in the queue file, by status.",
        &by_status,
    );
    metric(
        "obliviate_forgotten_samples",
        "gauge",
        "Training samples the served model has forgotten.",
        &one(forgotten_samples.to_string()),
    );
    metric(
        "obliviate_generation",
        "gauge",
        "The run's committed manifest generation.",
        &one(generation.to_string()),
    );
    metric(
        "obliviate_batch_running",
        "gauge",
        "1 while a batch is being carried out.",
        &one(u8::from(busy).to_string()),
    );
    metric(
        "obliviate_ids_forgotten_total",
        "counter",
        "Ids forgotten by batches of this process.",
        &one(c.ids_forgotten.to_string()),
    );
    metric(
        "obliviate_blocks_retrained_total",
        "counter",
        "Blocks retrained by batches of this process.",
        &one(c.blocks_retrained.to_string()),
    );
    metric(
        "obliviate_failed_batches_total",
        "counter",
        "Batches of this process that failed.",
        &one(c.failed_batches.to_string()),
    );
    metric(
        "obliviate_batch_seconds",
        "summary",
        "Seconds per committed batch, from taking its requests to recording their receipts.",
        &[
            ("_sum".into(), format!("{}", c.batch_seconds)),
            ("_count".into(), c.batches.to_string()),
        ],
    );
    metric(
        "obliviate_last_batch_seconds",
        "gauge",
        "Seconds of the last committed batch.",
        &one(format!("{}", c.last_batch_seconds)),
    );
    out
}

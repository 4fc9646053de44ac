//! The worker: takes queued requests in arrival order, coalesces them into one forget, commits,
//! and records each request's receipt. One OS thread, the run's one writer.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use obliviate::chain::Chain;
use obliviate::chain::receipts::Receipt;
use obliviate::data::Dataset;
use obliviate::train::Progress;
use obliviate::unlearn::{Ask, ForgetOptions, acknowledge, forget_asks};

use crate::error::Result;
use crate::metrics::Counters;
use crate::queue::{Queue, Row, Status};
use crate::snapshot::Snapshot;

/// State the worker and the HTTP side share.
pub struct Shared {
    /// The run as last committed.
    pub snapshot: RwLock<Arc<Snapshot>>,
    /// Batches carried out by this process.
    pub counters: Mutex<Counters>,
    /// Set to stop: the worker abandons its batch and returns.
    pub stopping: AtomicBool,
    /// True while a batch is being carried out.
    pub busy: AtomicBool,
    /// Why the worker stopped on its own, if it did.
    pub died: Mutex<Option<String>>,
}

impl Shared {
    /// Shared state starting from `snapshot`.
    pub fn new(snapshot: Snapshot) -> Shared {
        Shared {
            snapshot: RwLock::new(Arc::new(snapshot)),
            counters: Mutex::new(Counters::default()),
            stopping: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            died: Mutex::new(None),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn publish(&self, s: Snapshot) {
        match self.snapshot.write() {
            Ok(mut g) => *g = Arc::new(s),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(s),
        }
    }
}

/// How batches are formed and carried out.
pub struct Settings {
    /// Wait this long after the oldest queued request for others.
    pub window: Duration,
    /// Most ids per batch.
    pub max_ids: usize,
    /// Forget options (skip_missing on).
    pub forget: ForgetOptions,
}

/// Progress that only answers whether to stop.
struct Watch<'a>(&'a AtomicBool);

impl Progress for Watch<'_> {
    fn cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The requests the next batch takes: the oldest, and those after it while the batch stays
/// within `max_ids` ids; a request in `alone` (its batch failed) goes by itself.
fn take<'a>(queued: &'a [Row], max_ids: usize, alone: &BTreeSet<u64>) -> &'a [Row] {
    let Some(first) = queued.first() else {
        return queued;
    };
    if alone.contains(&first.seq) {
        return &queued[..1];
    }
    let mut ids = first.body.ids.len();
    let mut n = 1;
    for r in &queued[1..] {
        if alone.contains(&r.seq) || ids + r.body.ids.len() > max_ids {
            break;
        }
        ids += r.body.ids.len();
        n += 1;
    }
    &queued[..n]
}

/// Runs batches until `shared.stopping` is set (an abandoned batch goes back to the queue) or
/// the queue fails; nudges say a request arrived.
pub fn run<B: AutodiffBackend>(
    mut chain: Chain,
    data: &Dataset,
    mut queue: Queue,
    shared: &Shared,
    settings: &Settings,
    device: &B::Device,
    nudges: &Receiver<()>,
) -> Result<()> {
    let mut batch = queue.last_batch()?;
    let mut first_seen: Option<Instant> = None;
    let mut alone = BTreeSet::new();
    let idle = Duration::from_millis(250);
    while !shared.stopping.load(Ordering::SeqCst) {
        // Every request holds at least one id: a batch never takes more than max_ids + 1 rows.
        let queued = queue.oldest(Status::Queued, settings.max_ids.saturating_add(1) as u64)?;
        if queued.is_empty() {
            first_seen = None;
            let _ = nudges.recv_timeout(idle);
            continue;
        }
        let since = *first_seen.get_or_insert_with(Instant::now);
        let ids: usize = queued.iter().map(|r| r.body.ids.len()).sum();
        let left = settings.window.saturating_sub(since.elapsed());
        if !left.is_zero() && ids < settings.max_ids {
            let _ = nudges.recv_timeout(left.min(idle));
            continue;
        }
        first_seen = None;
        let rows = take(&queued, settings.max_ids, &alone);
        let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
        batch += 1;
        queue.start(&seqs, batch)?;
        shared.busy.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let outcome = carry_out::<B>(&mut chain, data, rows, settings, device, shared);
        shared.busy.store(false, Ordering::SeqCst);
        match outcome {
            Ok((receipts, blocks)) => {
                let done: Vec<(u64, Receipt)> = seqs.iter().copied().zip(receipts).collect();
                queue.finish(&done)?;
                for s in &seqs {
                    alone.remove(s);
                }
                let forgotten: usize = done.iter().map(|(_, r)| r.ids.len()).sum();
                if let Ok(mut c) = shared.counters.lock() {
                    c.record(
                        started.elapsed().as_secs_f64(),
                        blocks,
                        forgotten,
                        done.len(),
                    );
                }
                shared.publish(Snapshot::of(&chain));
            }
            Err(obliviate::Error::Cancelled) => {
                queue.requeue(&seqs)?;
                return Ok(());
            }
            Err(e) if seqs.len() > 1 => {
                // Retry each request by itself, so one bad request fails alone.
                eprintln!("batch {batch} failed ({e}); retrying its requests one by one");
                queue.requeue(&seqs)?;
                alone.extend(seqs);
            }
            Err(e) => {
                eprintln!("batch {batch} failed: {e}");
                queue.fail(&seqs, &e.to_string())?;
                alone.remove(&seqs[0]);
                if let Ok(mut c) = shared.counters.lock() {
                    c.failed_batches += 1;
                }
            }
        }
    }
    Ok(())
}

/// Forgets the batch `rows` (or acknowledges it, when earlier batches forgot all its ids);
/// returns the receipts in `rows` order and the blocks retrained.
fn carry_out<B: AutodiffBackend>(
    chain: &mut Chain,
    data: &Dataset,
    rows: &[Row],
    settings: &Settings,
    device: &B::Device,
    shared: &Shared,
) -> obliviate::Result<(Vec<Receipt>, usize)> {
    let asks: Vec<Ask> = rows
        .iter()
        .map(|r| Ask {
            name: r.id.clone(),
            ids: r.body.ids.clone(),
            groups: r.body.groups.clone(),
            requested_unix: r.accepted_unix,
        })
        .collect();
    let deleted = &chain.manifest().deleted;
    let pending = asks
        .iter()
        .flat_map(|a| &a.ids)
        .any(|id| deleted.binary_search(id).is_err());
    if !pending {
        return Ok((acknowledge(chain, &asks)?, 0));
    }
    let opts = ForgetOptions {
        skip_missing: true,
        ..settings.forget
    };
    let mut watch = Watch(&shared.stopping);
    let report = forget_asks::<B>(chain, data, &asks, &opts, device, &mut watch)?;
    Ok((report.receipts, report.blocks_retrained))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Body;

    fn row(seq: u64, n: usize) -> Row {
        Row {
            seq,
            id: format!("req-{seq}"),
            body: Body {
                ids: (0..n as u64).collect(),
                groups: Vec::new(),
            },
            accepted_unix: 0,
            status: Status::Queued,
            batch: 0,
            error: None,
            receipt: None,
        }
    }

    #[test]
    fn batches_keep_arrival_order_and_the_id_limit() {
        let q = vec![row(1, 3), row(2, 3), row(3, 5), row(4, 1)];
        let none = BTreeSet::new();
        let seqs = |r: &[Row]| r.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(take(&q, 6, &none)), vec![1, 2]);
        assert_eq!(seqs(take(&q, 100, &none)), vec![1, 2, 3, 4]);
        // A request above the limit still goes, alone.
        assert_eq!(seqs(take(&q[2..], 2, &none)), vec![3]);
        // A request whose batch failed goes alone, and ends the batch before it.
        let alone = BTreeSet::from([2]);
        assert_eq!(seqs(take(&q, 100, &alone)), vec![1]);
        assert_eq!(seqs(take(&q[1..], 100, &alone)), vec![2]);
    }
}

//! Forgetting: retrain from the first affected block, measure residual memory, stop when it has
//! decayed, stitch the stored increments back on, and commit atomically.
//!
//! A request whose ids fall in blocks d_1 < d_2 < … is carried out in segments: a segment
//! retrains from d_j until the stop rule says the memory of its affected blocks has decayed
//! (an affected block reached on the way joins the segment), the stored increments up to the
//! next affected block are stitched onto the retrained model, and the next segment restarts
//! there from the stored optimizer state. ARCHITECTURE.md argues when this is sound.

pub mod fit;
mod stop;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

pub use stop::{NEGLIGIBLE, Series, StopDecision, StopRule, decide};

use crate::chain::ledger::{Ledger, Request};
pub use crate::chain::ledger::{PowerLaw, Segment, StopReason};
use crate::chain::receipts::{GENESIS, Receipt};
use crate::chain::{BlockFiles, Chain, Shifts};
use crate::data::Dataset;
use crate::error::{Error, Result, invalid};
use crate::params::ParamSet;
use crate::store::FileRef;
use crate::train::{BlockTrainer, Progress, test_accuracy};

/// How the affected blocks of a request are retrained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Segmentation {
    /// A segment per run of affected blocks the stop rule cannot bridge (the default).
    #[default]
    Segmented,
    /// One span from the first affected block through at least the last (the method as
    /// published; for comparison).
    Single,
}

/// How a forget request is carried out.
#[derive(Debug, Clone, Copy)]
pub struct ForgetOptions {
    /// When to stop retraining a segment after its last affected block.
    pub stop: StopRule,
    /// Fewest residuals after a segment's last affected block before the stop rule may fire.
    pub min_points: usize,
    /// Ignore unknown or already forgotten ids instead of failing.
    pub skip_missing: bool,
    /// Segments, or one span.
    pub segments: Segmentation,
    /// Measure the unlearned model's test accuracy (reporting only; costs a pass over the
    /// test set).
    pub evaluate: bool,
}

impl ForgetOptions {
    /// Rejects thresholds that cannot mean anything: NaN, infinite or negative ε or ρ (a NaN
    /// ε would never stop, a negative one neither, silently).
    pub fn validate(&self) -> Result<()> {
        let checks: &[(&str, f64)] = match self.stop {
            StopRule::Fit {
                epsilon,
                negligible,
            } => &[("epsilon", epsilon), ("negligible", negligible)],
            StopRule::Relative { rho } => &[("rho", rho)],
        };
        for &(what, v) in checks {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(what, format!("{v} (must be a finite number ≥ 0)")));
            }
        }
        Ok(())
    }
}

impl Default for ForgetOptions {
    /// Segmented forgetting with the fit rule at ε = 0.02 and one point: a segment stops once
    /// its residual has decayed to 2 % of the last affected block's, or is under 5 % of the
    /// stored increment right after it. Chosen by `bench calibrate` on full MNIST (lenet5,
    /// B = 1000, Adam 0.002 → ×0.05, 3 seeds): the cheapest grid point at which every grouped
    /// user kept the retrained model's test accuracy (within 0.3 pt) and its forgotten samples
    /// the retrained model's mean loss (within the seed-to-seed spread). At ε = 0.05 a user in
    /// the chain's first blocks stopped with a 0.47 pt accuracy gap; at ε = 0.1 and above,
    /// users' losses overshot (ARCHITECTURE decisions 5 and 15).
    fn default() -> Self {
        ForgetOptions {
            stop: StopRule::fit(0.02),
            min_points: 1,
            skip_missing: false,
            segments: Segmentation::Segmented,
            evaluate: true,
        }
    }
}

/// The units of a report's series, named in its JSON.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Units {
    /// What `residuals` and a segment's `residuals` hold.
    pub residuals: &'static str,
    /// What a `fit` is fitted to.
    pub fit: &'static str,
}

/// The units every report uses.
pub const UNITS: Units = Units {
    residuals: "L1 norm of δ_k − δ'_k over all parameters",
    fit: "per parameter: the L1 residuals after the segment's last affected block, divided by the parameter count, with x = 1 at that block + 1",
};

/// What a committed forget request did.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    /// Ledger sequence number of the request.
    pub request: u64,
    /// Ids forgotten (after `--skip-missing` filtering).
    pub ids: Vec<u64>,
    /// Ids ignored by `--skip-missing`.
    pub skipped: Vec<u64>,
    /// d, the first affected block.
    pub first_block: usize,
    /// L, the last affected block.
    pub last_block: usize,
    /// s of the last segment.
    pub stop_block: usize,
    /// Blocks retrained, over all segments.
    pub blocks_retrained: usize,
    /// Blocks without removed ids trained again from the latest stored optimizer state before
    /// a segment (only when the chain stores states every few blocks).
    pub blocks_replayed: usize,
    /// The segments, in block order.
    pub segments: Vec<Segment>,
    /// Plain statements the requester should read: why a segment had to run to the chain's end.
    pub notes: Vec<String>,
    /// Every retrained block's L1 residual, in block order (the segments' series joined).
    pub residuals: Vec<f64>,
    /// The same blocks' ‖δ_k − δ'_k‖₂.
    pub residuals_l2: Vec<f64>,
    /// The last segment's fit, if the fit rule computed one.
    pub fit: Option<PowerLaw>,
    /// Why the last segment stopped.
    pub stop_rule: StopReason,
    /// Units of `residuals` and `fit`.
    pub units: Units,
    /// Wall-clock seconds from opening the run to the commit, without `eval_seconds`.
    pub seconds: f64,
    /// Seconds spent measuring the unlearned model's test accuracy (reporting, not unlearning).
    pub eval_seconds: f64,
    /// Bytes of chain files the request read: restoring θ_{d−1} and o_{d−1}, the stored
    /// increments it compared with and stitched, and the served model it checked the fold
    /// against.
    pub bytes_read: u64,
    /// Where the time went: opening and checking the run, folding θ_{d−1}, retraining, stitching
    /// the stored increments (between segments and after the last), and committing.
    pub phases: Phases,
    /// Test accuracy of the unlearned model (absent when not evaluated).
    pub test_accuracy: Option<f64>,
    /// SHA-256 of the unlearned model file.
    pub model_sha256: String,
    /// One receipt per [`Ask`] the request carried out (see `chain::receipts`).
    pub receipts: Vec<Receipt>,
}

/// One deletion request as its requester made it. A forget carries out one or more (a batch)
/// and issues a receipt for each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ask {
    /// The requester's name for the request (empty: `request-N`, N the ledger request).
    pub name: String,
    /// The ids to forget.
    pub ids: Vec<u64>,
    /// The groups the ids were named by, for the receipt (resolved to `ids` by the caller).
    pub groups: Vec<String>,
    /// Unix time of the request.
    pub requested_unix: u64,
}

impl Ask {
    /// An unnamed request for `ids`, made now.
    pub fn ids(ids: &[u64]) -> Ask {
        Ask {
            ids: ids.to_vec(),
            requested_unix: now_unix(),
            ..Ask::default()
        }
    }
}

/// Seconds since the Unix epoch (0 on a clock before it): receipts' timestamps.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds per phase of a forget request.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Phases {
    /// Opening the run, the ledger and checking ids.
    pub open: f64,
    /// θ_{d−1} = θ_0 + Σ_{i<d} δ_i and o_{d−1}.
    pub restore: f64,
    /// Retraining the segments' blocks and comparing increments.
    pub retrain: f64,
    /// Adding stored increments: between segments and after the last one.
    pub stitch: f64,
    /// Writing the model, the ledger row and the manifest.
    pub commit: f64,
}

/// Splits requested ids into (to forget, unknown, already forgotten).
fn classify(chain: &Chain, data: &Dataset, ids: &[u64]) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let deleted = &chain.manifest().deleted;
    let wanted: BTreeSet<u64> = ids.iter().copied().collect();
    let (mut ok, mut unknown, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for id in wanted {
        if data.train.row(id).is_none() {
            unknown.push(id);
        } else if deleted.binary_search(&id).is_ok() {
            gone.push(id);
        } else {
            ok.push(id);
        }
    }
    (ok, unknown, gone)
}

/// Forgets `ids` from the run `chain` (opened with [`Chain::open_mut`], so this process is its
/// one writer) and commits the new chain; see the module docs. Nothing is written before the
/// ids, the data and the run are validated. One unnamed receipt is issued.
pub fn forget<B: AutodiffBackend>(
    chain: &mut Chain,
    data: &Dataset,
    ids: &[u64],
    opts: &ForgetOptions,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<ForgetReport> {
    forget_asks::<B>(chain, data, &[Ask::ids(ids)], opts, device, progress)
}

/// Forgets the union of `asks`' ids as one request (a batch: one retraining, one commit) and
/// issues a receipt per ask; otherwise as [`forget`].
pub fn forget_asks<B: AutodiffBackend>(
    chain: &mut Chain,
    data: &Dataset,
    asks: &[Ask],
    opts: &ForgetOptions,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<ForgetReport> {
    let start = Instant::now();
    if let Some(empty) = asks.iter().position(|a| a.ids.is_empty()) {
        return Err(invalid(
            "request",
            format!("{} ({:?}) names no ids", empty + 1, asks[empty].name),
        ));
    }
    let ids: Vec<u64> = asks.iter().flat_map(|a| a.ids.iter().copied()).collect();
    let ids = &ids[..];
    opts.validate()?;
    if !chain.is_writable() {
        return Err(invalid(
            "run",
            "opened read-only; forgetting needs the writer lock (Chain::open_mut)",
        ));
    }
    chain.check_dataset(data)?;
    if !chain.manifest().is_complete() {
        return Err(Error::Unfinished {
            run: chain.dir().to_path_buf(),
        });
    }
    let generation = chain.manifest().next_generation()?;
    if ids.is_empty() {
        return Err(invalid("ids", "no ids given"));
    }
    let (ok, unknown, gone) = classify(chain, data, ids);
    if (!unknown.is_empty() || !gone.is_empty()) && !opts.skip_missing {
        return Err(Error::Ids {
            unknown,
            deleted: gone,
        });
    }
    let mut skipped = unknown;
    skipped.extend(gone);
    skipped.sort_unstable();
    if ok.is_empty() {
        return Err(invalid(
            "ids",
            format!(
                "nothing left to forget: all {} id(s) were unknown or already forgotten",
                skipped.len()
            ),
        ));
    }
    let removed: BTreeSet<u64> = ok.iter().copied().collect();
    let affected: BTreeSet<usize> = ok
        .iter()
        .map(|&id| {
            chain
                .manifest()
                .block_of(id)
                .ok_or_else(|| invalid("ids", format!("id {id} is in no block")))
        })
        .collect::<Result<_>>()?;
    let mut ledger = Ledger::open(chain.dir())?;
    let opened = start.elapsed().as_secs_f64();
    let plan = Plan {
        asks,
        read_before: chain.bytes_read(),
        ok,
        skipped,
        removed,
        affected,
        generation,
        start,
        opened,
    };
    let result = carry_out::<B>(chain, &mut ledger, data, plan, opts, device, progress);
    if result.is_err() {
        // Remove what the failed request wrote (a full disk must not stay full), judged
        // against the manifest on disk, whatever the failure left in memory.
        let _ = chain.reload_and_collect();
    }
    result
}

/// A validated request, ready to be carried out.
struct Plan<'a> {
    asks: &'a [Ask],
    ok: Vec<u64>,
    skipped: Vec<u64>,
    removed: BTreeSet<u64>,
    affected: BTreeSet<usize>,
    generation: u64,
    start: Instant,
    opened: f64,
    read_before: u64,
}

/// Retrains, stitches, evaluates and commits a validated request.
fn carry_out<B: AutodiffBackend>(
    chain: &mut Chain,
    ledger: &mut Ledger,
    data: &Dataset,
    plan: Plan<'_>,
    opts: &ForgetOptions,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<ForgetReport> {
    let (affected, generation, start) = (&plan.affected, plan.generation, plan.start);
    let replayed = replay::<B>(chain, data, &plan.removed, affected, opts, device, progress)?;
    let commit_start = Instant::now();

    // Commit: new files were written under the next generation; record, then switch manifest.
    let model = chain.write_model(generation, &replayed.model)?;
    let eval_start = Instant::now();
    let acc = match opts.evaluate {
        true => Some(test_accuracy::<B>(
            data,
            chain.manifest().model,
            &replayed.model,
            device,
        )?),
        false => None,
    };
    let eval_seconds = eval_start.elapsed().as_secs_f64();
    // Rows a crash left past the committed generation go before this request's is added.
    ledger.discard_after(chain.manifest().generation)?;
    let earlier = ledger.list(chain.manifest().generation)?;
    let request = earlier.last().map_or(1, |r| r.id + 1);
    let last = replayed.segments.last();
    let skipped: BTreeSet<u64> = plan.skipped.iter().copied().collect();
    let mut report = ForgetReport {
        request,
        ids: plan.ok,
        skipped: plan.skipped,
        first_block: affected.first().copied().unwrap_or(1),
        last_block: affected.last().copied().unwrap_or(1),
        stop_block: last.map_or(0, |s| s.stop_block),
        blocks_retrained: replayed.files.len(),
        blocks_replayed: replayed.replayed,
        residuals: replayed.residuals.iter().map(|n| n.0).collect(),
        residuals_l2: replayed.residuals.iter().map(|n| n.1).collect(),
        fit: last.and_then(|s| s.fit),
        stop_rule: last.map_or(StopReason::End, |s| s.stop_reason),
        segments: replayed.segments,
        notes: backend_note::<B>(chain)
            .into_iter()
            .chain(replayed.notes)
            .collect(),
        units: UNITS,
        seconds: start.elapsed().as_secs_f64() - eval_seconds,
        eval_seconds,
        bytes_read: chain.bytes_read() - plan.read_before,
        phases: Phases {
            open: plan.opened,
            commit: 0.0,
            ..replayed.phases
        },
        test_accuracy: acc,
        model_sha256: model.sha256.clone(),
        receipts: Vec::new(),
    };
    let committed_unix = now_unix();
    let model_before = chain
        .manifest()
        .model_file
        .as_ref()
        .map_or_else(String::new, |f| f.sha256.clone());
    let landing = Landing {
        batch: request,
        generation,
        blocks_retrained: report.blocks_retrained,
        residuals: &report.residuals,
        model_before: &model_before,
        model_after: &model.sha256,
        committed_unix,
    };
    let by = forgotten_by(&earlier, &skipped);
    report.receipts = plan
        .asks
        .iter()
        .map(|ask| receipt(ask, &plan.removed, &skipped, &by, &landing))
        .collect();
    let head = ledger.append(
        &Request {
            id: request,
            generation,
            created_unix: committed_unix,
            ids: report.ids.clone(),
            first_block: report.first_block,
            last_block: report.last_block,
            stop_block: report.stop_block,
            residuals_l1: report.residuals.clone(),
            residuals_l2: report.residuals_l2.clone(),
            fit: report.fit,
            stop_rule: report.stop_rule,
            segments: report.segments.clone(),
            seconds: report.seconds,
            test_accuracy: acc,
            model_sha256: model.sha256.clone(),
            model_before_sha256: model_before,
        },
        &mut report.receipts,
    )?;
    chain.commit_forget(
        replayed.files,
        replayed.shifts,
        &plan.removed,
        (model, acc),
        head,
    )?;
    report.phases.commit = commit_start.elapsed().as_secs_f64() - eval_seconds;
    report.seconds = start.elapsed().as_secs_f64() - eval_seconds;
    Ok(report)
}

/// A note when the request retrains on another backend than the one that trained the chain:
/// the residuals then hold the two libraries' rounding differences as well.
fn backend_note<B: AutodiffBackend>(chain: &Chain) -> Option<String> {
    let (trained, now) = (&chain.manifest().backend, crate::train::backend_name::<B>());
    (*trained != now).then(|| {
        format!(
            "the chain was trained on {trained} and this request retrained on {now}: the \
             residuals include the two backends' rounding differences, and forgetting with ε = 0 \
             equals retraining bit for bit only on the backend that trained the chain"
        )
    })
}

/// What a receipt says about the batch that carried its request out.
struct Landing<'a> {
    batch: u64,
    generation: u64,
    blocks_retrained: usize,
    residuals: &'a [f64],
    model_before: &'a str,
    model_after: &'a str,
    committed_unix: u64,
}

/// For each of `ids` an earlier committed request forgot, that request.
fn forgotten_by(earlier: &[Request], ids: &BTreeSet<u64>) -> BTreeMap<u64, u64> {
    let mut by = BTreeMap::new();
    for r in earlier {
        for id in r.ids.iter().filter(|id| ids.contains(id)) {
            by.insert(*id, r.id);
        }
    }
    by
}

/// The receipt of `ask` in a batch that removed `removed` and skipped `skipped` (earlier
/// requests forgot those in `by`, which the receipt names).
fn receipt(
    ask: &Ask,
    removed: &BTreeSet<u64>,
    skipped: &BTreeSet<u64>,
    by: &BTreeMap<u64, u64>,
    l: &Landing<'_>,
) -> Receipt {
    // The ask's ids in `set`, ascending and once each.
    let mine = |set: &BTreeSet<u64>| -> Vec<u64> {
        let v: BTreeSet<u64> = ask
            .ids
            .iter()
            .copied()
            .filter(|id| set.contains(id))
            .collect();
        v.into_iter().collect()
    };
    let skipped = mine(skipped);
    let earlier: BTreeSet<u64> = skipped
        .iter()
        .filter_map(|id| by.get(id))
        .copied()
        .collect();
    Receipt {
        seq: 0,
        request: match ask.name.is_empty() {
            true => format!("request-{}", l.batch),
            false => ask.name.clone(),
        },
        ids: mine(removed),
        groups: ask.groups.clone(),
        skipped,
        batch: l.batch,
        earlier_batches: earlier.into_iter().collect(),
        generation: l.generation,
        blocks_retrained: l.blocks_retrained,
        residuals: l.residuals.to_vec(),
        model_before_sha256: l.model_before.to_string(),
        model_after_sha256: l.model_after.to_string(),
        requested_unix: ask.requested_unix,
        committed_unix: l.committed_unix,
        previous_sha256: GENESIS.to_string(),
    }
}

/// Issues receipts for `asks` whose ids earlier requests have all forgotten (a request that
/// arrived while a batch was removing the same ids): a ledger request that retrains nothing
/// (stop rule `none`, the model unchanged), each receipt naming the requests that forgot its
/// ids in `earlier_batches`. Committed as a generation like any request.
pub fn acknowledge(chain: &mut Chain, asks: &[Ask]) -> Result<Vec<Receipt>> {
    let start = Instant::now();
    if !chain.is_writable() {
        return Err(invalid(
            "run",
            "opened read-only; acknowledging needs the writer lock (Chain::open_mut)",
        ));
    }
    if asks.is_empty() {
        return Err(invalid("request", "no requests to acknowledge"));
    }
    let deleted = &chain.manifest().deleted;
    let mut all = BTreeSet::new();
    for (i, ask) in asks.iter().enumerate() {
        let pending: Vec<u64> = ask
            .ids
            .iter()
            .copied()
            .filter(|id| deleted.binary_search(id).is_err())
            .collect();
        if ask.ids.is_empty() || !pending.is_empty() {
            return Err(invalid(
                "request",
                format!(
                    "{} ({:?}) is not fully forgotten: ids {pending:?} remain (forget them instead)",
                    i + 1,
                    ask.name
                ),
            ));
        }
        all.extend(ask.ids.iter().copied());
    }
    let current = chain.manifest().generation;
    let generation = chain.manifest().next_generation()?;
    let mut ledger = Ledger::open(chain.dir())?;
    ledger.discard_after(current)?;
    let earlier = ledger.list(current)?;
    let by = forgotten_by(&earlier, &all);
    if let Some(id) = all.iter().find(|id| !by.contains_key(id)) {
        return Err(invalid(
            "ledger",
            format!("id {id} is forgotten, but no ledger request forgot it"),
        ));
    }
    let model = chain
        .manifest()
        .model_file
        .clone()
        .ok_or_else(|| invalid("run", "it serves no model"))?;
    let request = earlier.last().map_or(1, |r| r.id + 1);
    let committed_unix = now_unix();
    let landing = Landing {
        batch: request,
        generation,
        blocks_retrained: 0,
        residuals: &[],
        model_before: &model.sha256,
        model_after: &model.sha256,
        committed_unix,
    };
    let mut receipts: Vec<Receipt> = asks
        .iter()
        .map(|ask| receipt(ask, &BTreeSet::new(), &all, &by, &landing))
        .collect();
    let row = Request {
        id: request,
        generation,
        created_unix: committed_unix,
        ids: Vec::new(),
        first_block: 0,
        last_block: 0,
        stop_block: 0,
        residuals_l1: Vec::new(),
        residuals_l2: Vec::new(),
        fit: None,
        stop_rule: StopReason::Nothing,
        segments: Vec::new(),
        seconds: start.elapsed().as_secs_f64(),
        test_accuracy: chain.manifest().test_accuracy,
        model_sha256: model.sha256.clone(),
        model_before_sha256: model.sha256.clone(),
    };
    let head = ledger.append(&row, &mut receipts)?;
    let accuracy = chain.manifest().test_accuracy;
    let committed = chain.commit_forget(
        Vec::new(),
        Vec::new(),
        &BTreeSet::new(),
        (model, accuracy),
        head,
    );
    if let Err(e) = committed {
        let _ = chain.reload_and_collect();
        return Err(e);
    }
    Ok(receipts)
}

/// Why a segment that ran to the chain's end could not stop earlier, in words: `series` holds
/// its residuals from `first`, `norms` the stored increments' sizes.
fn ran_to_the_end(first: usize, last_affected: usize, series: &[f64], norms: &[f64]) -> String {
    let at_l = series[last_affected - first];
    let after = &series[last_affected - first + 1..];
    let peak = after.iter().copied().fold(0.0, f64::max);
    let end = after.last().copied().unwrap_or(at_l);
    let share = |r: f64, i: usize| 100.0 * r / norms[i].max(f64::MIN_POSITIVE);
    let end_share = share(end, series.len() - 1);
    if peak > at_l {
        format!(
            "the segment from block {first} ran to the end of the chain: its residual rose from \
             {at_l:.3} at its last affected block {last_affected} to {peak:.3} (last {end:.3}, \
             {end_share:.0} % of the stored increment) instead of decaying. At that point of the \
             run's learning-rate schedule the retrained trajectory parts from the stored one, so \
             stored increments cannot be stitched on and early stopping is not supported there"
        )
    } else {
        format!(
            "the segment from block {first} ran to the end of the chain: its residual fell from \
             {at_l:.3} at its last affected block {last_affected} to {end:.3} \
             ({end_share:.0} % of the stored increment), never to the stop rule's threshold"
        )
    }
}

/// Result of retraining a request's segments without the removed ids.
pub struct Replay {
    /// The segments, in block order.
    pub segments: Vec<Segment>,
    /// Plain statements about segments the stop rule could not end early.
    pub notes: Vec<String>,
    /// (L1, L2) residual per retrained block, in block order.
    pub residuals: Vec<(f64, f64)>,
    /// New (δ', o', keyframe, step) files of every retrained block, written under the next
    /// generation.
    pub files: Vec<(usize, BlockFiles)>,
    /// Blocks (without removed ids) trained again to rebuild the optimizer state a segment
    /// starts from, when the chain stores states every few blocks; not written.
    pub replayed: usize,
    /// Nodes of the keyframe shift tree the request changed: the stitch offsets of its gaps
    /// (written under the next generation).
    pub shifts: Vec<(usize, FileRef)>,
    /// The unlearned model: the last segment's θ'_s + Σ_{i>s} δ_i.
    pub model: ParamSet,
    /// Restore, retrain and stitch seconds (open and commit are left at 0).
    pub phases: Phases,
}

/// Retrains the segments of a request removing `removed` from the `affected` blocks, comparing
/// each new increment with the stored one, until the stop rule ends each segment (never
/// before its last affected block), and stitches the stored increments between segments and
/// after the last. With an empty `removed` every residual is exactly zero and the model is
/// unchanged. The stored chain is folded alongside from the same reads and must equal the
/// served model, or nothing is built on it. Every file the request may read is checked to be
/// present before its first write.
#[allow(clippy::too_many_arguments)]
pub fn replay<B: AutodiffBackend>(
    chain: &Chain,
    data: &Dataset,
    removed: &BTreeSet<u64>,
    affected: &BTreeSet<usize>,
    opts: &ForgetOptions,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<Replay> {
    let m = chain.manifest();
    let total = m.blocks.len();
    let (Some(&d), Some(&l)) = (affected.first(), affected.last()) else {
        return Err(invalid("blocks", "no affected block"));
    };
    if d == 0 || l > total {
        return Err(invalid("blocks", format!("first {d}, last {l} of {total}")));
    }
    let generation = m.next_generation()?;
    let t0 = Instant::now();
    // Restore θ_{d−1} (the chain's definition) and o_{d−1} (stored, or replayed from the latest
    // stored state when the chain stores states every few blocks), while another thread checks
    // that every file the request may read is present: a missing one is named before any write.
    let (present, restored) = std::thread::scope(|s| {
        let check = s.spawn(|| chain.check_present_from(d));
        let restored = (|| -> Result<_> {
            let mut shifts = Shifts::new(chain);
            let theta = chain.theta_in(d - 1, &mut shifts)?;
            let a = m.opt_anchor(d - 1);
            // θ_a is read only when there is something to replay (every state stored: a = d − 1).
            let theta_a = match a == d - 1 {
                true => theta.clone(),
                false => chain.theta_in(a, &mut shifts)?,
            };
            let (opt, step) = replay_state::<B>(chain, data, theta_a, a, d - 1, device)?;
            // The committed chain's θ (its own definition), advanced alongside from the same
            // reads: it must end at the served model, or the request would build on (and
            // launder) a corrupt chain.
            let original = theta.clone();
            let trainer =
                BlockTrainer::<B>::new(data, m.model, m.config, theta, &opt, step, device)?;
            Ok((shifts, original, a, trainer))
        })();
        let present = check.join().unwrap_or_else(|_| {
            Err(invalid(
                "run",
                "the thread checking the run's files panicked",
            ))
        });
        (present, restored)
    });
    present?;
    let (mut shifts, mut original, a, mut trainer) = restored?;
    let mut replayed = d - 1 - a;
    let mut files = Vec::new();
    let mut restore = t0.elapsed().as_secs_f64();
    let mut stitch = 0.0;
    let scale = trainer.theta().numel() as f64;
    let mut residuals = Vec::new();
    let mut segments = Vec::new();
    let mut notes = Vec::new();
    // The open segment: its first block, last affected block, residuals and the sizes of the
    // stored increments they compare with.
    let (mut first, mut last_affected, mut series): (usize, usize, Vec<f64>) = (d, d, Vec::new());
    let mut norms: Vec<f64> = Vec::new();
    // With one span, the whole request is one segment that may not stop before L.
    let single = opts.segments == Segmentation::Single;
    let mut retrain = 0.0;
    progress.start("retrain blocks", (total - d + 1) as u64);
    let mut k = d;
    loop {
        let t = Instant::now();
        let rec = &m.blocks[k - 1];
        let ids: Vec<u64> = rec
            .ids
            .iter()
            .copied()
            .filter(|id| !removed.contains(id))
            .collect();
        let out = trainer.run_block(k, &ids)?;
        let old_ref = rec
            .delta
            .as_ref()
            .ok_or_else(|| invalid("run", format!("block {k} is not trained")))?;
        let (old, _) = chain.read_set(old_ref)?;
        original.add_assign(&old)?;
        if rec.theta.is_some() {
            // The committed chain defines θ_k by its keyframe and its shift.
            original = shifts.theta_at(k, false)?;
        }
        norms.push(old.norms().l1);
        let n = old.distance(&out.delta)?;
        if !(n.l1.is_finite() && n.l2.is_finite()) {
            return Err(invalid(
                "residual",
                format!("block {k}: ‖δ − δ'‖ is not finite ({}, {})", n.l1, n.l2),
            ));
        }
        residuals.push((n.l1, n.l2));
        series.push(n.l1);
        let stored = (&out.stored_delta, &out.stored_opt, out.step);
        // A retrained keyframe under a recorded shift S is stored as θ' − S and the live model
        // set to the chain's definition (θ' − S) + S, so what the chain defines is what the
        // segment trains on (the two differ by rounding only).
        let key = match rec.theta.is_some() {
            true => shifts.pending(k)?,
            false => None,
        };
        let written = match key {
            Some(s) => {
                let key = trainer.theta().sub(&s)?;
                let mut live = key.clone();
                live.add_assign(&s)?;
                trainer.set_theta(live)?;
                chain.write_block(k, generation, stored, &key)?
            }
            None => chain.write_block(k, generation, stored, trainer.theta())?,
        };
        files.push((k, written));
        progress.set((k - d + 1) as u64);
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        retrain += t.elapsed().as_secs_f64();
        if affected.contains(&k) {
            last_affected = k;
        }
        let must_reach = if single { l } else { last_affected };
        let decision = if k >= must_reach {
            decide(
                &opts.stop,
                Series {
                    all: &series,
                    norms: &norms,
                    after: k - last_affected,
                },
                opts.min_points,
                scale,
            )
        } else {
            StopDecision {
                stop: false,
                fit: None,
                rule: StopReason::End,
            }
        };
        let next = affected.range(k + 1..).next().copied();
        // A segment ends when the rule fires, unless the next segment would have to restart
        // before this one's end: the next affected block follows at once, or no optimizer
        // state is stored between them (segments that meet merge); or at the chain's end.
        let restartable = next.is_none_or(|dn| m.opt_anchor(dn - 1) > k);
        let ends = (decision.stop && restartable) || k == total;
        if ends {
            if !decision.stop && k > last_affected && opts.stop.can_stop_early() {
                notes.push(ran_to_the_end(first, last_affected, &series, &norms));
            }
            segments.push(Segment {
                first_block: first,
                last_affected,
                stop_block: k,
                residuals: std::mem::take(&mut series),
                fit: decision.fit,
                stop_reason: if decision.stop {
                    decision.rule
                } else {
                    StopReason::End
                },
            });
            norms.clear();
            let Some(dn) = next else {
                break;
            };
            // Stitch the stored increments onto the retrained model up to the next affected
            // block and restart there from the optimizer state stored there, or replayed from
            // the latest stored one a (past this segment's end).
            let t = Instant::now();
            let a = m.opt_anchor(dn - 1);
            let theta_a = stitch_gap(
                chain,
                &mut shifts,
                trainer.theta(),
                &mut original,
                (k + 1, a),
            )?;
            // The committed chain's θ_a, which the replay starts from.
            let committed_a = original.clone();
            let theta = stitch_gap(chain, &mut shifts, &theta_a, &mut original, (a + 1, dn - 1))?;
            stitch += t.elapsed().as_secs_f64();
            let t = Instant::now();
            // Replayed from the committed chain's θ_a, not the stitched one: that rebuilds the
            // state the stored increments after a were trained with, as a chain storing every
            // state restarts from. Replaying from the stitched θ_a retrained 879 of 1000 blocks
            // for 10 ids on full MNIST, against 20.
            let (opt, step) = replay_state::<B>(chain, data, committed_a, a, dn - 1, device)?;
            replayed += dn - 1 - a;
            trainer = BlockTrainer::<B>::new(data, m.model, m.config, theta, &opt, step, device)?;
            restore += t.elapsed().as_secs_f64();
            (first, last_affected, k) = (dn, dn, dn);
            progress.set((k - d) as u64);
            continue;
        }
        k += 1;
    }
    progress.finish();
    // Training is over: the disk makes the new files durable while the CPU stitches.
    chain.sync_ahead();
    let t = Instant::now();
    let model = stitch_gap(
        chain,
        &mut shifts,
        trainer.theta(),
        &mut original,
        (k + 1, total),
    )?;
    if !original.bit_identical(&chain.served()?) {
        return Err(Error::Chain {
            run: chain.dir().to_path_buf(),
            detail: "the chain's θ_B (its latest keyframe, or θ_0, + the increments after it) \
                     differs from the served model: the chain is corrupt, nothing was forgotten"
                .into(),
        });
    }
    model.check_finite("the unlearned model")?;
    let shifts = shifts.write(generation)?;
    stitch += t.elapsed().as_secs_f64();
    Ok(Replay {
        segments,
        notes,
        residuals,
        files,
        replayed,
        shifts,
        model,
        phases: Phases {
            restore,
            retrain,
            stitch,
            ..Phases::default()
        },
    })
}

/// The optimizer state after block `to`: o_to where the chain stores it, else replayed from
/// the stored o_a by training blocks a + 1 ..= to (which hold no removed ids) from `theta_a`,
/// the chain's θ_a. Where no request stitched those blocks, the replay retraces the stored
/// trajectory exactly (training is deterministic).
fn replay_state<B: AutodiffBackend>(
    chain: &Chain,
    data: &Dataset,
    theta_a: ParamSet,
    a: usize,
    to: usize,
    device: &B::Device,
) -> Result<(ParamSet, u64)> {
    let m = chain.manifest();
    let (opt, step) = chain.opt_state(a)?;
    if a == to {
        return Ok((opt, step));
    }
    let mut trainer = BlockTrainer::<B>::new(data, m.model, m.config, theta_a, &opt, step, device)?;
    for k in a + 1..=to {
        trainer.run_block(k, &m.blocks[k - 1].ids)?;
    }
    Ok(trainer.opt_state())
}

/// The new chain's θ at block `to`, stitched from the retrained θ'_{from−1}: the stored
/// increments of blocks `from..=to` are kept, and the keyframes among them are shifted by the
/// stitch offset θ' − θ, recorded in the shift tree (`chain::shifts`) rather than written into
/// each of them, so a gap reads its last keyframe, the tree's path above it and the increments
/// after it, not every keyframe. `original` holds the committed chain's θ_{from−1} and is
/// advanced to its θ_to, by the committed chain's own definition.
fn stitch_gap(
    chain: &Chain,
    shifts: &mut Shifts,
    retrained: &ParamSet,
    original: &mut ParamSet,
    (from, to): (usize, usize),
) -> Result<ParamSet> {
    let blocks = &chain.manifest().blocks;
    let mut keys = (from..=to).filter(|&i| blocks[i - 1].theta.is_some());
    let (Some(first), last) = (keys.next(), keys.next_back()) else {
        let mut theta = retrained.clone();
        chain.fold_into_all(&mut [&mut theta, original], from, to)?;
        return Ok(theta);
    };
    let last = last.unwrap_or(first);
    let offset = retrained.sub(original)?;
    // The last keyframe is read while the cover's nodes are (independent files).
    let (key, added) = rayon::join(|| chain.keyframe(last), || shifts.add(first, last, &offset));
    added?;
    let key = key?;
    *original = shifts.shifted(key.clone(), last, false)?;
    let mut theta = shifts.shifted(key, last, true)?;
    theta.check_finite(&format!("keyframe {last} shifted by the stitch offset"))?;
    chain.fold_into_all(&mut [&mut theta, original], last + 1, to)?;
    Ok(theta)
}

#[cfg(test)]
mod tests {
    use super::ran_to_the_end;

    #[test]
    fn a_segment_that_ran_to_the_end_says_why() {
        // An id in block 8 of full MNIST: the residual rose to 67 % of the increments.
        let rising = ran_to_the_end(8, 8, &[6.0, 12.6, 23.1, 33.1], &[100.0, 60.0, 55.0, 49.4]);
        assert!(
            rising.contains("rose from 6.000")
                && rising.contains("67 %")
                && rising.contains("not supported"),
            "{rising}"
        );
        let falling = ran_to_the_end(3, 4, &[9.0, 8.0, 5.0, 4.0], &[10.0; 4]);
        assert!(
            falling.contains("fell from 8.000") && falling.contains("block 4"),
            "{falling}"
        );
    }
}

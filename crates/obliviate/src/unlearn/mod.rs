//! Forgetting: retrain from the first affected block, measure residual memory, stop when it has
//! decayed, stitch the stored increments back on, and commit atomically.

pub mod fit;
mod stop;

use std::collections::BTreeSet;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

pub use stop::{StopDecision, StopRule, decide};

use crate::chain::ledger::{Ledger, Request};
pub use crate::chain::ledger::{PowerLaw, StopReason};
use crate::chain::{BlockFiles, Chain};
use crate::data::Dataset;
use crate::error::{Error, Result, invalid};
use crate::params::ParamSet;
use crate::train::{BlockTrainer, Progress, test_accuracy};

/// How a forget request is carried out.
#[derive(Debug, Clone, Copy)]
pub struct ForgetOptions {
    /// When to stop retraining after the last affected block.
    pub stop: StopRule,
    /// Fewest residuals (blocks retrained) before the stop rule may fire.
    pub min_points: usize,
    /// Ignore unknown or already forgotten ids instead of failing.
    pub skip_missing: bool,
}

impl ForgetOptions {
    /// Rejects thresholds that cannot mean anything: NaN, infinite or negative ε or ρ (a NaN
    /// ε would never stop, a negative one neither, silently).
    pub fn validate(&self) -> Result<()> {
        let (what, v) = match self.stop {
            StopRule::Fit { epsilon } => ("epsilon", epsilon),
            StopRule::Relative { rho } => ("rho", rho),
        };
        if !(v.is_finite() && v >= 0.0) {
            return Err(invalid(what, format!("{v} (must be a finite number ≥ 0)")));
        }
        Ok(())
    }
}

impl Default for ForgetOptions {
    fn default() -> Self {
        ForgetOptions {
            stop: StopRule::Fit { epsilon: 1e-5 },
            min_points: 15,
            skip_missing: false,
        }
    }
}

/// What a committed forget request did.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    /// Ledger sequence number of the request.
    pub request: u64,
    /// Ids forgotten (after `--skip-missing` filtering).
    pub ids: Vec<u64>,
    /// Ids ignored by `--skip-missing`.
    pub skipped: Vec<u64>,
    /// d.
    pub first_block: usize,
    /// L.
    pub last_block: usize,
    /// s.
    pub stop_block: usize,
    /// s − d + 1.
    pub blocks_retrained: usize,
    /// r_k = ‖δ_k − δ'_k‖₁ for k = d..=s.
    pub residuals: Vec<f64>,
    /// ‖δ_k − δ'_k‖₂ for k = d..=s.
    pub residuals_l2: Vec<f64>,
    /// Fitted decay at the stop, if the fit rule was used.
    pub fit: Option<PowerLaw>,
    /// Which rule ended retraining.
    pub stop_rule: StopReason,
    /// Wall-clock seconds from opening the run to the commit, without `eval_seconds`.
    pub seconds: f64,
    /// Seconds spent measuring the unlearned model's test accuracy (reporting, not unlearning).
    pub eval_seconds: f64,
    /// Where the time went: opening and checking the run, folding θ_{d−1}, retraining, stitching
    /// the remaining increments, and committing.
    pub phases: Phases,
    /// Test accuracy of the unlearned model.
    pub test_accuracy: f64,
    /// SHA-256 of the unlearned model file.
    pub model_sha256: String,
}

/// Seconds per phase of a forget request.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Phases {
    /// Opening the run, the ledger and checking ids.
    pub open: f64,
    /// θ_{d−1} = θ_0 + Σ_{i<d} δ_i and o_{d−1}.
    pub restore: f64,
    /// Retraining blocks d..=s and comparing increments.
    pub retrain: f64,
    /// θ'_s + Σ_{i>s} δ_i.
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
/// ids, the data and the run are validated.
pub fn forget<B: AutodiffBackend>(
    chain: &mut Chain,
    data: &Dataset,
    ids: &[u64],
    opts: &ForgetOptions,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<ForgetReport> {
    let start = Instant::now();
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
    let blocks: BTreeSet<usize> = ok
        .iter()
        .map(|&id| {
            chain
                .manifest()
                .block_of(id)
                .ok_or_else(|| invalid("ids", format!("id {id} is in no block")))
        })
        .collect::<Result<_>>()?;
    let (d, l) = (*blocks.first().unwrap_or(&1), *blocks.last().unwrap_or(&1));
    chain.check_present()?;
    let mut ledger = Ledger::open(chain.dir())?;
    ledger.discard_after(chain.manifest().generation)?;
    let (opened, first, last) = (start.elapsed().as_secs_f64(), d, l);
    let plan = Plan {
        ok,
        skipped,
        removed,
        first,
        last,
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
struct Plan {
    ok: Vec<u64>,
    skipped: Vec<u64>,
    removed: BTreeSet<u64>,
    first: usize,
    last: usize,
    generation: u64,
    start: Instant,
    opened: f64,
}

/// Retrains, stitches, evaluates and commits a validated request.
fn carry_out<B: AutodiffBackend>(
    chain: &mut Chain,
    ledger: &mut Ledger,
    data: &Dataset,
    plan: Plan,
    opts: &ForgetOptions,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<ForgetReport> {
    let Plan {
        ok,
        skipped,
        removed,
        first: d,
        last: l,
        generation,
        start,
        opened,
    } = plan;
    let replayed = replay::<B>(chain, data, &removed, d, l, opts, device, progress)?;
    let commit_start = Instant::now();

    // Commit: new files were written under the next generation; record, then switch manifest.
    let model = chain.write_model(generation, &replayed.model)?;
    let eval_start = Instant::now();
    let acc = test_accuracy::<B>(data, chain.manifest().model, &replayed.model, device)?;
    let eval_seconds = eval_start.elapsed().as_secs_f64();
    let request = ledger
        .list(chain.manifest().generation)?
        .last()
        .map_or(1, |r| r.id + 1);
    let mut report = ForgetReport {
        request,
        ids: ok,
        skipped,
        first_block: d,
        last_block: l,
        stop_block: replayed.stop_block,
        blocks_retrained: replayed.stop_block - d + 1,
        residuals: replayed.residuals.iter().map(|n| n.0).collect(),
        residuals_l2: replayed.residuals.iter().map(|n| n.1).collect(),
        fit: replayed.fit,
        stop_rule: replayed.rule,
        seconds: start.elapsed().as_secs_f64() - eval_seconds,
        eval_seconds,
        phases: Phases {
            open: opened,
            commit: 0.0,
            ..replayed.phases
        },
        test_accuracy: acc,
        model_sha256: model.sha256.clone(),
    };
    ledger.append(&Request {
        id: request,
        generation,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        ids: report.ids.clone(),
        first_block: d,
        last_block: l,
        stop_block: report.stop_block,
        residuals_l1: report.residuals.clone(),
        residuals_l2: report.residuals_l2.clone(),
        fit: report.fit,
        stop_rule: report.stop_rule,
        seconds: report.seconds,
        test_accuracy: acc,
        model_sha256: model.sha256.clone(),
    })?;
    chain.commit_forget(d, replayed.files, &removed, model, acc)?;
    report.phases.commit = commit_start.elapsed().as_secs_f64() - eval_seconds;
    report.seconds = start.elapsed().as_secs_f64() - eval_seconds;
    Ok(report)
}

/// Result of retraining blocks d..=s without the removed ids.
pub struct Replay {
    /// s.
    pub stop_block: usize,
    /// (L1, L2) residual per retrained block.
    pub residuals: Vec<(f64, f64)>,
    /// Fit at the stop.
    pub fit: Option<PowerLaw>,
    /// Rule that ended retraining.
    pub rule: StopReason,
    /// New (δ', o', step) files for blocks d..=s, written under the next generation.
    pub files: Vec<BlockFiles>,
    /// θ'_s + Σ_{i>s} δ_i.
    pub model: ParamSet,
    /// Restore, retrain and stitch seconds (open and commit are left at 0).
    pub phases: Phases,
}

/// Retrains blocks from `d` without `removed`, comparing each new increment with the stored one,
/// until the stop rule fires (never before `l`), and stitches the rest of the chain on.
/// With an empty `removed` every residual is exactly zero and the model is unchanged.
#[allow(clippy::too_many_arguments)]
pub fn replay<B: AutodiffBackend>(
    chain: &Chain,
    data: &Dataset,
    removed: &BTreeSet<u64>,
    d: usize,
    l: usize,
    opts: &ForgetOptions,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<Replay> {
    let m = chain.manifest();
    let total = m.blocks.len();
    if d == 0 || d > l || l > total {
        return Err(invalid("blocks", format!("first {d}, last {l} of {total}")));
    }
    let generation = m.next_generation()?;
    let t0 = Instant::now();
    let theta = chain.theta(d - 1)?;
    // θ_0 + Σδ_i of the stored chain, folded alongside from the same reads: it must be the
    // served model, or the request would build on (and launder) a corrupt chain.
    let mut original = theta.clone();
    let (opt, step) = chain.opt_state(d - 1)?;
    let mut trainer = BlockTrainer::<B>::new(data, m.model, m.config, theta, &opt, step, device)?;
    let t1 = Instant::now();
    let scale = trainer.theta().numel() as f64;
    let mut residuals = Vec::new();
    let mut files = Vec::new();
    let mut decision = StopDecision {
        stop: false,
        fit: None,
        rule: StopReason::End,
    };
    progress.start("retrain blocks", (total - d + 1) as u64);
    let mut k = d;
    loop {
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
        let n = old.distance(&out.delta)?;
        if !(n.l1.is_finite() && n.l2.is_finite()) {
            return Err(invalid(
                "residual",
                format!("block {k}: ‖δ − δ'‖ is not finite ({}, {})", n.l1, n.l2),
            ));
        }
        residuals.push((n.l1, n.l2));
        files.push(chain.write_block(k, generation, &out.delta, &out.opt_state, out.step)?);
        progress.set((k - d + 1) as u64);
        if k >= l {
            let l1: Vec<f64> = residuals.iter().map(|r| r.0).collect();
            decision = decide(&opts.stop, &l1, opts.min_points, scale);
            if decision.stop {
                break;
            }
        }
        if k == total {
            decision.rule = StopReason::End;
            break;
        }
        k += 1;
    }
    progress.finish();
    let t2 = Instant::now();
    let mut model = trainer.theta().clone();
    chain.fold_into_all(&mut [&mut model, &mut original], k + 1, total)?;
    if !original.bit_identical(&chain.served()?) {
        return Err(Error::Chain {
            run: chain.dir().to_path_buf(),
            detail: "θ_0 + Σδ_i differs from the served model: the chain is corrupt, nothing was \
                     forgotten"
                .into(),
        });
    }
    model.check_finite("the unlearned model")?;
    let phases = Phases {
        restore: t1.duration_since(t0).as_secs_f64(),
        retrain: t2.duration_since(t1).as_secs_f64(),
        stitch: t2.elapsed().as_secs_f64(),
        ..Phases::default()
    };
    Ok(Replay {
        phases,
        stop_block: k,
        residuals,
        fit: decision.fit,
        rule: decision.rule,
        files,
        model,
    })
}

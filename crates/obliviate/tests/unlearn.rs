//! Forgetting: exactness against retraining, zero residuals for empty requests, crash safety,
//! bad ids, and successive requests.

mod common;

use std::collections::BTreeSet;

use common::*;
use obliviate::chain::Chain;
use obliviate::chain::ledger::Ledger;
use obliviate::model::ModelKind;
use obliviate::store::atomic;
use obliviate::train::NoProgress;
use obliviate::unlearn::{ForgetOptions, StopReason, StopRule, replay};

/// ε = 0 with the stop rule consulted from the third residual on: a rule that stops early
/// with ε = 0 would break exactness, so the minimum is one the requests below reach.
fn exact() -> ForgetOptions {
    ForgetOptions {
        stop: StopRule::fit(0.0),
        min_points: 3,
        ..ForgetOptions::default()
    }
}

fn quick() -> ForgetOptions {
    ForgetOptions {
        stop: StopRule::fit(1e-5),
        min_points: 3,
        ..ForgetOptions::default()
    }
}

#[test]
fn forget_with_zero_epsilon_equals_retraining_bit_for_bit() {
    let data = tiny_data();
    let (run, gold) = (Tmp::new("exact-run"), Tmp::new("exact-gold"));
    train_tiny(&run.0, &data, ModelKind::Lenet5, tiny_cfg(11));
    let before = Chain::open(&run.0).unwrap().into_manifest();
    let ids = [
        before.blocks[4].ids[0],
        before.blocks[4].ids[3],
        before.blocks[8].ids[1],
    ];
    let r = forget_in(&run.0, &data, &ids, &exact()).unwrap();
    assert_eq!((r.first_block, r.last_block, r.stop_block), (5, 9, 12));
    assert_eq!(r.blocks_retrained, 8);
    assert_eq!(r.stop_rule, StopReason::End);
    assert!(
        r.residuals.iter().all(|&x| x > 0.0),
        "removing samples changes every later increment: {:?}",
        r.residuals
    );
    let g = retrain_exact(&run.0, &gold.0, &data);
    assert_eq!(
        r.model_sha256, g.model_sha256,
        "forget(ε = 0) must equal retraining"
    );
    let (a, b) = (Chain::open(&run.0).unwrap(), Chain::open(&gold.0).unwrap());
    assert!(a.served().unwrap().bit_identical(&b.served().unwrap()));
    for (x, y) in a.manifest().blocks.iter().zip(&b.manifest().blocks) {
        assert_eq!(x.ids, y.ids);
        assert_eq!(
            x.delta.as_ref().unwrap().sha256,
            y.delta.as_ref().unwrap().sha256,
            "block {}",
            x.index
        );
        assert_eq!(
            x.opt.as_ref().unwrap().sha256,
            y.opt.as_ref().unwrap().sha256,
            "block {}",
            x.index
        );
    }
    assert_eq!(
        a.manifest().deleted,
        ids.iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    a.verify().unwrap();
}

/// Batch norm's running statistics are state outside the gradient: the chain must hold each
/// block's last update (burn applies it lazily), or a forget restoring θ_{d−1} from the chain
/// would start from other statistics than the original training carried on with.
#[test]
fn a_batch_norm_model_forgets_exactly_too() {
    let data = tiny_data().truncated(64, 16).unwrap();
    let (run, gold) = (Tmp::new("exact-bn-run"), Tmp::new("exact-bn-gold"));
    let cfg = obliviate::chain::TrainConfig {
        blocks: 4,
        batch_size: 8,
        micro_batches: 1,
        ..tiny_cfg(21)
    };
    train_tiny(&run.0, &data, ModelKind::Resnet18, cfg);
    let before = Chain::open(&run.0).unwrap().into_manifest();
    let r = forget_in(&run.0, &data, &[before.blocks[1].ids[2]], &exact()).unwrap();
    assert_eq!((r.first_block, r.blocks_retrained), (2, 3));
    let g = retrain_exact(&run.0, &gold.0, &data);
    assert_eq!(
        r.model_sha256, g.model_sha256,
        "forget(ε = 0) must equal retraining"
    );
}

#[test]
fn deleting_nothing_leaves_zero_residuals_and_the_same_model() {
    let data = tiny_data();
    let run = Tmp::new("nothing");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(4));
    let chain = Chain::open(&run.0).unwrap();
    let r = replay::<B>(
        &chain,
        &data,
        &BTreeSet::new(),
        &BTreeSet::from([3]),
        &exact(),
        &Default::default(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(r.residuals.len(), 10);
    assert!(
        r.residuals.iter().all(|&(l1, l2)| l1 == 0.0 && l2 == 0.0),
        "{:?}",
        r.residuals
    );
    assert!(r.model.bit_identical(&chain.served().unwrap()));
}

fn state(dir: &std::path::Path) -> (u64, Option<String>, usize, Vec<u64>) {
    let c = Chain::open(dir).unwrap();
    c.verify().unwrap();
    let requests = Ledger::open(dir)
        .unwrap()
        .list(c.manifest().generation)
        .unwrap()
        .len();
    (
        c.manifest().generation,
        c.manifest().model_file.as_ref().map(|f| f.sha256.clone()),
        requests,
        c.manifest().deleted.clone(),
    )
}

#[test]
fn a_crash_at_any_write_leaves_the_old_chain_or_the_new_one() {
    crash_at_every_write(tiny_cfg(6));
}

/// The same with keyframes every 4 blocks: the commit also writes retrained keyframes and
/// shifts the ones after each segment.
#[test]
fn a_crash_at_any_write_of_a_commit_that_shifts_keyframes_leaves_the_old_chain_or_the_new_one() {
    let mut cfg = tiny_cfg(6);
    cfg.storage.keyframe_every = 4;
    crash_at_every_write(cfg);
}

fn crash_at_every_write(cfg: obliviate::chain::TrainConfig) {
    let data = tiny_data();
    let (reference, run) = (Tmp::new("crash-ref"), Tmp::new("crash-run"));
    train_tiny(&reference.0, &data, ModelKind::MlpSmall, cfg);
    train_tiny(&run.0, &data, ModelKind::MlpSmall, cfg);
    // Ids in blocks 2 and 11 with a rule that stops at once: two segments and a stitched gap.
    let ids = {
        let m = Chain::open(&run.0).unwrap().into_manifest();
        vec![m.blocks[1].ids[2], m.blocks[10].ids[0]]
    };
    let old = state(&run.0);
    let done = forget_in(&reference.0, &data, &ids, &eager()).unwrap();
    assert_eq!(done.segments.len(), 2, "{:?}", done.segments);
    let new = state(&reference.0);
    assert_eq!(new.0, old.0 + 1);
    assert_eq!(new.2, 1);
    let mut crashes = 0;
    for n in 1.. {
        // Fail at the n-th event: every file write (before and after its rename) and the ledger append.
        atomic::arm("", n);
        let r = forget_in(&run.0, &data, &ids, &eager());
        let fired = !atomic::disarm();
        let now = state(&run.0);
        // The receipts agree with the chain the crash left, old or new.
        let receipts = obliviate::chain::receipts::verify(&run.0).unwrap();
        assert!(receipts.is_sound(), "event {n}: {:?}", receipts.problems);
        assert_eq!(
            receipts.receipts.len(),
            now.2,
            "one receipt per committed request"
        );
        if fired {
            assert!(matches!(r, Err(obliviate::Error::Failpoint(_))), "{r:?}");
            crashes += 1;
            assert!(
                now == old || now == new,
                "after a crash at event {n} the run is neither old nor new: {now:?}"
            );
            if now == new {
                break; // Crashed after the commit point (cleanup only).
            }
        } else {
            let r = r.unwrap();
            assert_eq!(r.model_sha256, done.model_sha256);
            assert_eq!(now, new);
            break;
        }
    }
    assert!(
        crashes >= 10,
        "expected a failure injected at every write, got {crashes}"
    );
    // The next writer removes what the interrupted commit left; then the run is the
    // uninterrupted one, file for file.
    drop(Chain::open_mut(&run.0).unwrap());
    assert_eq!(chain_files(&reference.0), chain_files(&run.0));
}

#[test]
fn unknown_or_repeated_ids_fail_without_changing_anything() {
    let data = tiny_data();
    let run = Tmp::new("bad-ids");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(8));
    let manifest = std::fs::read(run.join("manifest.json")).unwrap();
    let e = forget_in(&run.0, &data, &[5, 600, 99_999], &quick()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("600") && msg.contains("99999") && msg.contains("unknown"),
        "{msg}"
    );
    assert_eq!(std::fs::read(run.join("manifest.json")).unwrap(), manifest);
    forget_in(&run.0, &data, &[5], &quick()).unwrap();
    let e = forget_in(&run.0, &data, &[5, 7], &quick())
        .unwrap_err()
        .to_string();
    assert!(e.contains("already forgotten: 5"), "{e}");
    let opts = ForgetOptions {
        skip_missing: true,
        ..quick()
    };
    let r = forget_in(&run.0, &data, &[5, 7, 123_456], &opts).unwrap();
    assert_eq!(r.ids, vec![7]);
    assert_eq!(r.skipped, vec![5, 123_456]);
    let e = forget_in(&run.0, &data, &[5, 7], &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing left to forget"), "{e}");
}

#[test]
fn successive_requests_build_on_the_committed_chain() {
    let data = tiny_data();
    let run = Tmp::new("sequence");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(9));
    let m = Chain::open(&run.0).unwrap().into_manifest();
    // A batch spanning many blocks, then two single ids.
    let batch: Vec<u64> = m.blocks.iter().step_by(3).map(|b| b.ids[1]).collect();
    let r1 = forget_in(&run.0, &data, &batch, &quick()).unwrap();
    assert_eq!((r1.first_block, r1.last_block), (1, 10));
    assert!(r1.stop_block >= 10);
    let r2 = forget_in(&run.0, &data, &[m.blocks[5].ids[0]], &quick()).unwrap();
    let r3 = forget_in(&run.0, &data, &[m.blocks[1].ids[4]], &quick()).unwrap();
    assert_eq!((r2.request, r3.request), (2, 3));
    assert_eq!(r2.first_block, 6);
    assert!(r2.stop_block >= 8, "at least min_points residuals: {r2:?}");
    let c = Chain::open(&run.0).unwrap();
    c.verify().unwrap();
    assert_eq!(c.manifest().generation, 3);
    assert_eq!(c.manifest().deleted.len(), batch.len() + 2);
    for id in &c.manifest().deleted {
        assert!(
            c.manifest().block_of(*id).is_none(),
            "id {id} still in a block"
        );
    }
    let ledger = Ledger::open(&run.0)
        .unwrap()
        .list(c.manifest().generation)
        .unwrap();
    assert_eq!(ledger.len(), 3);
    assert_eq!(
        ledger[2].model_sha256,
        c.manifest().model_file.as_ref().unwrap().sha256
    );
    let mut sorted = batch.clone();
    sorted.sort_unstable();
    assert_eq!(ledger[0].ids, sorted);
    // Only files of the live chain remain on disk.
    assert_eq!(chain_files(&run.0).len(), c.manifest().files().len());
}

#[test]
fn a_full_disk_is_reported_by_name_and_loses_nothing() {
    let data = tiny_data();
    let run = Tmp::new("enospc");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(10));
    let old = state(&run.0);
    for nth in [1, 5, 12] {
        atomic::arm_errno("write:data:", nth, 28);
        let e = forget_in(&run.0, &data, &[3], &quick()).unwrap_err();
        atomic::disarm();
        let msg = e.to_string();
        assert!(
            msg.contains("No space left on device") && msg.contains(".safetensors"),
            "{msg}"
        );
        assert_eq!(
            state(&run.0),
            old,
            "a failed write must leave the old chain"
        );
        // ...and none of the failed request's files: a full disk must not stay full.
        let c = Chain::open(&run.0).unwrap();
        assert_eq!(
            chain_files(&run.0).len(),
            c.manifest().files().len(),
            "{nth}"
        );
    }
    // Once space is back the request goes through.
    forget_in(&run.0, &data, &[3], &quick()).unwrap();
    assert_eq!(state(&run.0).0, old.0 + 1);
}

#[test]
fn readers_during_successive_forgets_always_find_the_files_they_opened() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let data = tiny_data();
    let run = Tmp::new("readers");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(8));
    let m = Chain::open(&run.0).unwrap().into_manifest();
    let ids: Vec<u64> = (0..6).map(|k| m.blocks[2 * k].ids[1]).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, dir) = (stop.clone(), run.0.clone());
            std::thread::spawn(move || {
                let (mut reads, mut errors) = (0, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    match Chain::open(&dir).and_then(|c| c.verify()) {
                        Ok(()) => reads += 1,
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (reads, errors)
            })
        })
        .collect();
    for id in ids {
        forget_in(&run.0, &data, &[id], &quick()).unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        let (reads, errors) = r.join().unwrap();
        assert!(
            errors.is_empty(),
            "{} of {} reads failed: {:?}",
            errors.len(),
            reads + errors.len(),
            errors.first()
        );
        assert!(reads > 0);
    }
    // What was left while readers read is collected by the next writer.
    drop(Chain::open_mut(&run.0).unwrap());
    let c = Chain::open(&run.0).unwrap();
    assert_eq!(c.manifest().generation, 6);
    assert_eq!(chain_files(&run.0).len(), c.manifest().files().len());
}

/// Rewrites block `k`'s increment through `edit` and reseals the manifest to match, as a
/// writer able to recompute the hashes would.
fn tamper(run: &std::path::Path, k: usize, edit: impl Fn(&mut f32)) {
    let mut m = Chain::open(run).unwrap().into_manifest();
    let r = m.blocks[k].delta.clone().unwrap();
    let path = run.join(&r.file);
    let (mut set, meta) = obliviate::params::decode(&std::fs::read(&path).unwrap(), &path).unwrap();
    edit(&mut set.tensors[0].data[0]);
    let bytes = obliviate::params::encode(&meta.precision.encode(&set), &meta).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    m.blocks[k].delta = Some(obliviate::store::FileRef {
        sha256: obliviate::store::sha256(&bytes),
        bytes: bytes.len() as u64,
        ..r
    });
    obliviate::store::sealed::write_sealed(&run.join("manifest.json"), &m).unwrap();
}

#[test]
fn a_corrupt_chain_is_refused_not_laundered_into_the_next_model() {
    let data = tiny_data();
    let run = Tmp::new("launder");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(12));
    // A finite change with matching hashes: only the fold against the served model sees it.
    tamper(&run.0, 9, |x| *x += 0.25);
    let before = std::fs::read(run.join("manifest.json")).unwrap();
    let e = forget_in(
        &run.0,
        &data,
        &[Chain::open(&run.0).unwrap().manifest().blocks[2].ids[0]],
        &quick(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("differs from the served model"), "{e}");
    assert_eq!(
        std::fs::read(run.join("manifest.json")).unwrap(),
        before,
        "nothing committed"
    );
    assert!(Chain::open(&run.0).unwrap().verify().is_err());
    // A NaN is named wherever it is read.
    tamper(&run.0, 4, |x| *x = f32::NAN);
    let e = Chain::open(&run.0)
        .unwrap()
        .verify()
        .unwrap_err()
        .to_string();
    assert!(e.contains("NaN") && e.contains("00005.delta"), "{e}");
    let e = forget_in(&run.0, &data, &[7], &quick())
        .unwrap_err()
        .to_string();
    assert!(e.contains("NaN"), "{e}");
}

#[test]
fn a_generation_the_ledger_cannot_store_is_refused_before_any_write() {
    let data = tiny_data();
    let run = Tmp::new("generation");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(13));
    for g in [u64::MAX, i64::MAX as u64] {
        let mut m = Chain::open(&run.0).unwrap().into_manifest();
        m.generation = g;
        obliviate::store::sealed::write_sealed(&run.join("manifest.json"), &m).unwrap();
        let files = chain_files(&run.0);
        let e = forget_in(&run.0, &data, &[3], &quick())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("generation") && e.contains(&g.to_string()),
            "{e}"
        );
        assert_eq!(chain_files(&run.0), files, "nothing written");
    }
}

#[test]
fn meaningless_thresholds_are_refused() {
    for stop in [
        StopRule::fit(f64::NAN),
        StopRule::fit(-1e-5),
        StopRule::Relative { rho: f64::INFINITY },
    ] {
        let o = ForgetOptions { stop, ..quick() };
        assert!(o.validate().is_err(), "{stop:?}");
    }
    assert!(exact().validate().is_ok() && quick().validate().is_ok());
}

#[test]
fn a_missing_ledger_row_is_reported() {
    let data = tiny_data();
    let run = Tmp::new("ledger-row");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(14));
    forget_in(&run.0, &data, &[3], &quick()).unwrap();
    forget_in(&run.0, &data, &[9], &quick()).unwrap();
    assert_eq!(Ledger::committed(&run.0, 2).unwrap().len(), 2);
    let db = rusqlite::Connection::open(run.join("ledger.sqlite")).unwrap();
    db.execute("DELETE FROM requests WHERE generation = 1", [])
        .unwrap();
    drop(db);
    let e = Ledger::committed(&run.0, 2).unwrap_err().to_string();
    assert!(
        e.contains("2 committed request(s)") && e.contains("1 matching row"),
        "{e}"
    );
}

#[test]
fn segments_retrain_around_each_affected_block_and_keep_the_stored_increments_between() {
    let data = tiny_data();
    let run = Tmp::new("segments");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(15));
    let before = Chain::open(&run.0).unwrap().into_manifest();
    let ids = [
        before.blocks[1].ids[0],
        before.blocks[2].ids[3],
        before.blocks[8].ids[1],
    ];
    let r = forget_in(&run.0, &data, &ids, &eager()).unwrap();
    // Blocks 2 and 3 meet (one segment, stopping one block after 3); block 9 starts another.
    let spans: Vec<(usize, usize, usize)> = r
        .segments
        .iter()
        .map(|s| (s.first_block, s.last_affected, s.stop_block))
        .collect();
    assert_eq!(spans, [(2, 3, 4), (9, 9, 10)]);
    assert_eq!(r.blocks_retrained, 5);
    assert_eq!(r.residuals.len(), 5);
    let after = Chain::open(&run.0).unwrap();
    after.verify().unwrap();
    for (i, (a, b)) in after
        .manifest()
        .blocks
        .iter()
        .zip(&before.blocks)
        .enumerate()
    {
        let retrained = matches!(i + 1, 2..=4 | 9..=10);
        assert_eq!(
            a.delta != b.delta,
            retrained,
            "block {}: retrained blocks hold δ', the others the stored δ",
            i + 1
        );
    }
}

#[test]
fn a_request_inside_one_block_is_the_same_segmented_or_as_one_span() {
    let data = tiny_data();
    let (a, b) = (Tmp::new("one-block-a"), Tmp::new("one-block-b"));
    train_tiny(&a.0, &data, ModelKind::MlpSmall, tiny_cfg(16));
    train_tiny(&b.0, &data, ModelKind::MlpSmall, tiny_cfg(16));
    let m = Chain::open(&a.0).unwrap().into_manifest();
    let ids = [m.blocks[4].ids[0], m.blocks[4].ids[7]];
    let single = ForgetOptions {
        segments: obliviate::unlearn::Segmentation::Single,
        ..eager()
    };
    let ra = forget_in(&a.0, &data, &ids, &eager()).unwrap();
    let rb = forget_in(&b.0, &data, &ids, &single).unwrap();
    assert_eq!(ra.segments.len(), 1);
    assert_eq!(ra.model_sha256, rb.model_sha256);
    assert_eq!(chain_files(&a.0), chain_files(&b.0));
}

#[test]
fn one_span_does_not_stop_before_the_last_affected_block() {
    let data = tiny_data();
    let run = Tmp::new("single-span");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(17));
    let m = Chain::open(&run.0).unwrap().into_manifest();
    let single = ForgetOptions {
        segments: obliviate::unlearn::Segmentation::Single,
        ..eager()
    };
    let r = forget_in(
        &run.0,
        &data,
        &[m.blocks[1].ids[0], m.blocks[8].ids[0]],
        &single,
    )
    .unwrap();
    assert_eq!(r.segments.len(), 1);
    assert_eq!((r.first_block, r.stop_block), (2, 10));
    assert_eq!(r.blocks_retrained, 9);
}

/// A request checks the files it may read before it writes anything: a missing one from its
/// restore point on is named and nothing is written; one before that point (which it neither
/// reads nor rewrites) does not stop it.
#[test]
fn a_missing_file_the_request_reads_is_named_before_any_write() {
    let data = tiny_data();
    let run = Tmp::new("missing-file");
    let mut cfg = tiny_cfg(12);
    cfg.storage.keyframe_every = 4;
    train_tiny(&run.0, &data, ModelKind::MlpSmall, cfg);
    let m = Chain::open(&run.0).unwrap().into_manifest();
    let id = m.blocks[9].ids[0];
    let ahead = m.blocks[10].delta.clone().unwrap().file;
    let hidden = run.join("hidden.safetensors");
    std::fs::rename(run.join(&ahead), &hidden).unwrap();
    let files = chain_files(&run.0);
    let manifest = std::fs::read(run.join("manifest.json")).unwrap();
    let e = forget_in(&run.0, &data, &[id], &quick())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&ahead), "{e}");
    assert_eq!(chain_files(&run.0), files, "nothing written");
    assert_eq!(std::fs::read(run.join("manifest.json")).unwrap(), manifest);
    std::fs::rename(&hidden, run.join(&ahead)).unwrap();
    // Block 2 lies before the keyframe of block 8, where a request in block 10 starts.
    let before = m.blocks[1].delta.clone().unwrap().file;
    std::fs::rename(run.join(&before), &hidden).unwrap();
    let r = forget_in(&run.0, &data, &[id], &quick()).unwrap();
    assert_eq!(r.first_block, 10);
    std::fs::rename(&hidden, run.join(&before)).unwrap();
    Chain::open(&run.0).unwrap().verify().unwrap();
}

/// A long-lived writer (the service keeps one) carries on after a failed request: the next
/// request on the same handle commits, and leaves only the live chain's files.
#[test]
fn a_writer_carries_on_after_a_failed_request() {
    let data = tiny_data();
    let run = Tmp::new("carry-on");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(13));
    let mut chain = Chain::open_mut(&run.0).unwrap();
    let forget = |chain: &mut Chain, id: u64| {
        obliviate::unlearn::forget::<B>(
            chain,
            &data,
            &[id],
            &quick(),
            &Default::default(),
            &mut NoProgress,
        )
    };
    // The failed requests wrote files of blocks the next request does not touch.
    let m = chain.manifest().clone();
    let (early, late) = (m.blocks[1].ids[0], m.blocks[9].ids[0]);
    for nth in [2, 4] {
        atomic::arm_errno("write:data:", nth, 28);
        let e = forget(&mut chain, early).unwrap_err().to_string();
        atomic::disarm();
        assert!(e.contains("No space left on device"), "{e}");
    }
    let r = forget(&mut chain, late).unwrap();
    assert_eq!((r.ids.clone(), r.first_block), (vec![late], 10));
    drop(chain);
    let c = Chain::open(&run.0).unwrap();
    c.verify().unwrap();
    assert_eq!(c.manifest().generation, 1);
    assert_eq!(chain_files(&run.0).len(), c.manifest().files().len());
}

/// A writer killed inside a ledger transaction after SQLite synced its journal leaves a hot
/// journal, which read-only connections cannot roll back: every reader of the ledger (the
/// service reads it at start) fails until a writer rolls it back, which opening the run does.
#[test]
fn the_writer_rolls_back_a_ledger_transaction_a_crash_interrupted() {
    let data = tiny_data();
    let run = Tmp::new("hot-journal");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(14));
    forget_in(&run.0, &data, &[3], &quick()).unwrap();
    // The files as a crash would leave them: a transaction larger than SQLite's page cache
    // spills to the database file, which needs the journal synced first; copied mid-way.
    let (ledger, journal) = (run.join("ledger.sqlite"), run.join("ledger.sqlite-journal"));
    let crashed = {
        let c = rusqlite::Connection::open(&ledger).unwrap();
        c.execute_batch("PRAGMA cache_size = 2; BEGIN;").unwrap();
        for i in 0..200 {
            c.execute(
                "INSERT INTO requests (id, generation, body, sha256) VALUES (?1, ?1, ?2, '')",
                rusqlite::params![1000 + i, "x".repeat(4000)],
            )
            .unwrap();
        }
        let files = (
            std::fs::read(&ledger).unwrap(),
            std::fs::read(&journal).unwrap(),
        );
        c.execute_batch("ROLLBACK;").unwrap();
        files
    };
    std::fs::write(&ledger, &crashed.0).unwrap();
    std::fs::write(&journal, &crashed.1).unwrap();
    let e = Ledger::committed(&run.0, 1).unwrap_err().to_string();
    assert!(e.contains("ledger.sqlite"), "{e}");
    drop(Chain::open_mut(&run.0).unwrap());
    assert!(!journal.exists(), "the writer rolled the journal back");
    let rows = Ledger::committed(&run.0, 1).unwrap();
    assert_eq!((rows.len(), rows[0].ids.clone()), (1, vec![3]));
    forget_in(&run.0, &data, &[5], &quick()).unwrap();
    assert_eq!(Ledger::committed(&run.0, 2).unwrap().len(), 2);
}

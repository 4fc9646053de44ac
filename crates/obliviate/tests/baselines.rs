//! The rival methods: SISA's exactness, crash safety and bad input; Amnesiac's log; the step
//! baselines' determinism and direction.

mod common;

use common::*;
use obliviate::audit::outputs_of;
use obliviate::baselines::sisa::{self, Aggregate, Sisa};
use obliviate::baselines::{amnesiac, steps};
use obliviate::chain::{Chain, TrainConfig};
use obliviate::data::{Dataset, Split};
use obliviate::model::ModelKind;
use obliviate::store::atomic;
use obliviate::train::NoProgress;

fn sisa_cfg(seed: u64) -> TrainConfig {
    TrainConfig {
        blocks: 3,
        ..tiny_cfg(seed)
    }
}

fn train_sisa(dir: &std::path::Path, data: &Dataset, shards: usize) -> sisa::SisaReport {
    sisa::train::<B>(
        dir,
        data,
        ModelKind::MlpSmall,
        sisa_cfg(3),
        shards,
        &Default::default(),
        &mut NoProgress,
    )
    .expect("sisa training")
}

#[test]
fn sisa_forget_touches_only_affected_shards_and_rejects_bad_ids() {
    let data = tiny_data();
    let dir = Tmp::new("sisa-forget");
    let t = train_sisa(&dir.0, &data, 3);
    assert_eq!(t.steps, 9);
    assert!(t.test_accuracy > 0.5, "{}", t.test_accuracy);
    let before = Sisa::open(&dir.0).unwrap().manifest;
    // One id from the last slice of shard 1: only that shard's last checkpoint changes.
    let id = before.shards[1].slices[2][0];
    let r = sisa::forget::<B>(&dir.0, &data, &[id], &Default::default(), &mut NoProgress).unwrap();
    assert_eq!(r.shards_trained, vec![1]);
    assert_eq!(r.steps, 1);
    let after = Sisa::open(&dir.0).unwrap().manifest;
    assert_eq!(after.generation, 1);
    assert_eq!(after.deleted, vec![id]);
    assert_eq!(after.shards[0], before.shards[0]);
    assert_eq!(after.shards[2], before.shards[2]);
    assert_eq!(
        after.shards[1].checkpoints[..3],
        before.shards[1].checkpoints[..3]
    );
    assert_ne!(
        after.shards[1].checkpoints[3],
        before.shards[1].checkpoints[3]
    );
    assert!(!after.shards[1].slices[2].contains(&id));
    // Unknown and already-forgotten ids: an error naming them, nothing written.
    let manifest = std::fs::read(dir.join("sisa.json")).unwrap();
    let e = sisa::forget::<B>(
        &dir.0,
        &data,
        &[id, 99_999],
        &Default::default(),
        &mut NoProgress,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("99999") && msg.contains(&id.to_string()),
        "{msg}"
    );
    assert_eq!(std::fs::read(dir.join("sisa.json")).unwrap(), manifest);
}

#[test]
fn sisa_detects_corrupt_checkpoints_and_manifests() {
    let data = tiny_data();
    let dir = Tmp::new("sisa-corrupt");
    train_sisa(&dir.0, &data, 2);
    let s = Sisa::open(&dir.0).unwrap();
    let f = dir.join(&s.manifest.shards[1].checkpoints[3].theta.file);
    let mut bytes = std::fs::read(&f).unwrap();
    let k = bytes.len() / 2;
    bytes[k] ^= 1;
    std::fs::write(&f, &bytes).unwrap();
    let e = s.models().unwrap_err().to_string();
    assert!(e.contains("checksum") && e.contains("003.theta"), "{e}");
    let m = dir.join("sisa.json");
    let text = std::fs::read_to_string(&m).unwrap();
    let forged = text.replacen("\"generation\":0", "\"generation\":7", 1);
    assert_ne!(forged, text, "the manifest names its generation");
    std::fs::write(&m, forged).unwrap();
    let e = Sisa::open(&dir.0).unwrap_err().to_string();
    assert!(e.contains("sisa.json") && e.contains("checksum"), "{e}");
}

#[test]
fn sisa_forget_interrupted_at_any_write_leaves_old_or_new_ensemble() {
    let data = tiny_data();
    let (run, reference) = (Tmp::new("sisa-crash"), Tmp::new("sisa-crash-ref"));
    train_sisa(&run.0, &data, 2);
    Sisa::open(&run.0).unwrap().copy_to(&reference.0).unwrap();
    let s = Sisa::open(&run.0).unwrap().manifest;
    let ids = [s.shards[0].slices[1][2], s.shards[1].slices[0][4]];
    let old = std::fs::read(run.join("sisa.json")).unwrap();
    sisa::forget::<B>(
        &reference.0,
        &data,
        &ids,
        &Default::default(),
        &mut NoProgress,
    )
    .unwrap();
    let new = std::fs::read(reference.join("sisa.json")).unwrap();
    assert_ne!(old, new);
    let mut crashes = 0;
    for n in 1.. {
        atomic::arm("", n);
        let r = sisa::forget::<B>(&run.0, &data, &ids, &Default::default(), &mut NoProgress);
        let fired = !atomic::disarm();
        let now = std::fs::read(run.join("sisa.json")).unwrap();
        // Whatever the manifest says must be readable and verified.
        Sisa::open(&run.0).unwrap().models().unwrap();
        if fired {
            assert!(matches!(r, Err(obliviate::Error::Failpoint(_))), "{r:?}");
            crashes += 1;
            assert!(
                now == old || now == new,
                "crash at event {n}: neither old nor new"
            );
            if now == new {
                break;
            }
        } else {
            r.unwrap();
            assert_eq!(now, new);
            break;
        }
    }
    assert!(crashes >= 10, "failures injected: {crashes}");
}

#[test]
fn sisa_vote_and_softmax_aggregate_the_constituents() {
    let data = tiny_data();
    let dir = Tmp::new("sisa-agg");
    train_sisa(&dir.0, &data, 3);
    let s = Sisa::open(&dir.0).unwrap();
    let rows: Vec<usize> = (0..data.test.len()).collect();
    let dev = Default::default();
    let each: Vec<_> = s
        .models()
        .unwrap()
        .iter()
        .map(|m| outputs_of::<B>(ModelKind::MlpSmall, m, &data, Split::Test, &rows, &dev).unwrap())
        .collect();
    let vote = sisa::outputs::<B>(&s, &data, Split::Test, &rows, Aggregate::Vote, &dev).unwrap();
    let soft =
        sisa::outputs::<B>(&s, &data, Split::Test, &rows, Aggregate::MeanSoftmax, &dev).unwrap();
    for i in 0..rows.len() {
        let mut counts = [0usize; 10];
        for o in &each {
            counts[o.predicted(i)] += 1;
        }
        let max = *counts.iter().max().unwrap();
        assert_eq!(
            counts[vote.predicted(i)],
            max,
            "sample {i}: vote is not a majority"
        );
        let mean: f32 = each.iter().map(|o| o.row(i)[3]).sum::<f32>() / 3.0;
        assert!((soft.row(i)[3] - mean).abs() < 1e-5);
    }
}

#[test]
fn amnesiac_trains_the_chain_model_and_subtracts_exactly_the_batches_of_the_ids() {
    let data = tiny_data();
    let run = Tmp::new("amnesiac");
    let cfg = tiny_cfg(5);
    train_tiny(&run.0, &data, ModelKind::MlpSmall, cfg);
    let (theta, log) = amnesiac::train::<B>(
        &data,
        ModelKind::MlpSmall,
        cfg,
        &Default::default(),
        &mut NoProgress,
    )
    .unwrap();
    let chain = Chain::open(&run.0).unwrap();
    assert!(
        theta.bit_identical(&chain.served().unwrap()),
        "recording updates must not change training"
    );
    // 12 blocks of 50 samples, batch 16 → 4 batches each.
    assert_eq!(log.batches.len(), 48);
    let id = log.batches[7][0];
    let (one, removed) = amnesiac::forget(&theta, &log, &[id]).unwrap();
    assert_eq!(
        removed, 1,
        "one epoch per block: each id is in exactly one batch"
    );
    let d = theta.distance(&one).unwrap().l2;
    let u: f64 = log.updates[7]
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((d - u).abs() < 1e-4 * u.max(1.0), "{d} vs {u}");
    // Removing every batch takes θ back to θ_0 (up to f32 rounding of the sums).
    let (zero, all) = amnesiac::forget(&theta, &log, &data.train.ids).unwrap();
    assert_eq!(all, 48);
    let gap = zero.distance(&chain.theta(0).unwrap()).unwrap().l2;
    assert!(gap < 1e-3, "{gap}");
    // Unknown ids are named.
    let e = amnesiac::forget(&theta, &log, &[123_456])
        .unwrap_err()
        .to_string();
    assert!(e.contains("123456"), "{e}");
    // The log survives a round trip; a truncated file is a clear error.
    let f = run.join("log.safetensors");
    amnesiac::save(&log, &f).unwrap();
    let back = amnesiac::load(&f).unwrap();
    assert_eq!(back.batches, log.batches);
    assert_eq!(back.updates, log.updates);
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let e = amnesiac::load(&f).unwrap_err().to_string();
    assert!(
        e.contains("log.safetensors") && e.contains("amnesiac"),
        "{e}"
    );
}

#[test]
fn neggrad_raises_the_forget_loss_and_step_baselines_are_deterministic() {
    let data = tiny_data();
    let run = Tmp::new("steps");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(2));
    let theta = Chain::open(&run.0).unwrap().served().unwrap();
    let forget: Vec<u64> = data.train.ids[..20].to_vec();
    let retain = steps::retained(&data, &forget, &[]);
    assert_eq!(retain.len(), data.train.len() - 20);
    let c = |steps, beta| steps::StepConfig {
        steps,
        batch_size: 16,
        optim: obliviate::optim::OptimConfig::sgd(0.01, 0.9),
        beta,
        seed: 4,
    };
    let dev = Default::default();
    let k = ModelKind::MlpSmall;
    let unchanged = steps::run::<B>(&data, k, &theta, &retain, &forget, &c(0, 1.0), &dev).unwrap();
    assert!(unchanged.bit_identical(&theta));
    let a = steps::run::<B>(&data, k, &theta, &retain, &forget, &c(30, 0.5), &dev).unwrap();
    let b = steps::run::<B>(&data, k, &theta, &retain, &forget, &c(30, 0.5), &dev).unwrap();
    assert!(a.bit_identical(&b), "same seed, same result");
    let rows: Vec<usize> = (0..20).collect();
    let loss = |t| {
        let o = outputs_of::<B>(k, t, &data, Split::Train, &rows, &dev).unwrap();
        (0..o.len()).map(|i| o.loss(i)).sum::<f64>() / o.len() as f64
    };
    let ft = steps::run::<B>(&data, k, &theta, &retain, &forget, &c(30, 1.0), &dev).unwrap();
    assert!(
        loss(&a) > loss(&ft) && loss(&a) > loss(&theta),
        "NegGrad+ {} fine-tune {} original {}",
        loss(&a),
        loss(&ft),
        loss(&theta)
    );
    let e = steps::run::<B>(&data, k, &theta, &retain, &[77_777], &c(1, 0.5), &dev)
        .unwrap_err()
        .to_string();
    assert!(e.contains("77777"), "{e}");
}

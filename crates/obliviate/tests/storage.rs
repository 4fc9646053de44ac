//! Storage precisions: at every precision the chain stays exact (fold = served model, forget
//! with ε = 0 = retraining, same seed = same bytes), files hold what they say, and corrupt
//! codes or scales are named.

mod common;

use common::*;
use obliviate::chain::{Chain, Storage, TrainConfig};
use obliviate::model::ModelKind;
use obliviate::params::Precision::{self, Bf16, F16, F32, Q8};
use obliviate::store::Compression;
use obliviate::train::NoProgress;
use obliviate::unlearn::{ForgetOptions, StopRule};

fn cfg(delta: Precision, opt: Precision) -> TrainConfig {
    TrainConfig {
        storage: Storage {
            delta,
            opt,
            ..Default::default()
        },
        ..tiny_cfg(21)
    }
}

/// Every precision of increments, and every one of optimizer states, at least once.
const MODES: [(Precision, Precision); 5] =
    [(Bf16, Bf16), (F16, F32), (Q8, Q8), (Q8, Bf16), (F32, Q8)];

/// ε = 0 with the stop rule consulted from the second residual on: it must never stop early.
fn exact() -> ForgetOptions {
    ForgetOptions {
        stop: StopRule::fit(0.0),
        min_points: 2,
        ..ForgetOptions::default()
    }
}

fn precision_of(chain: &Chain, r: &obliviate::store::FileRef) -> Precision {
    chain.read_set(r).unwrap().1.precision
}

#[test]
fn every_precision_keeps_the_chain_exact() {
    let data = tiny_data();
    let reference = Tmp::new("prec-f32");
    train_tiny(&reference.0, &data, ModelKind::MlpSmall, cfg(F32, F32));
    let f32_chain = Chain::open(&reference.0).unwrap();
    let f32_block = f32_chain.manifest().blocks[0].clone();
    for (d, o) in MODES {
        let what = format!("{}/{}", d.name(), o.name());
        let (a, b, gold) = (
            Tmp::new("prec-a"),
            Tmp::new("prec-b"),
            Tmp::new("prec-gold"),
        );
        let sa = train_tiny(&a.0, &data, ModelKind::MlpSmall, cfg(d, o));
        let sb = train_tiny(&b.0, &data, ModelKind::MlpSmall, cfg(d, o));
        assert_eq!(chain_files(&a.0), chain_files(&b.0), "{what}: same seed");
        assert_eq!(sa.model_sha256, sb.model_sha256);
        assert!(sa.test_accuracy > 0.3, "{what}: {}", sa.test_accuracy);
        let chain = Chain::open(&a.0).unwrap();
        chain.verify().unwrap_or_else(|e| panic!("{what}: {e}"));
        let block = &chain.manifest().blocks[0];
        let (delta, opt) = (block.delta.as_ref().unwrap(), block.opt.as_ref().unwrap());
        assert_eq!(
            (precision_of(&chain, delta), precision_of(&chain, opt)),
            (d, o)
        );
        // Rounding is real: a compact file is smaller, and the trajectory differs from f32's.
        for (r, f32_ref, p) in [
            (delta, f32_block.delta.as_ref().unwrap(), d),
            (opt, f32_block.opt.as_ref().unwrap(), o),
        ] {
            let limit = match p {
                F32 => 1.0,
                Bf16 | F16 => 0.51,
                Q8 => 0.27,
            };
            assert!(
                r.bytes as f64 <= limit * f32_ref.bytes as f64,
                "{what}: {} of {} bytes",
                r.bytes,
                f32_ref.bytes
            );
        }
        assert_ne!(
            sa.model_sha256,
            f32_chain.manifest().model_file.as_ref().unwrap().sha256,
            "{what}"
        );
        drop(chain);

        // Forgetting with ε = 0 retrains under the same procedure: it equals retraining.
        let m = Chain::open(&a.0).unwrap().into_manifest();
        let ids = [m.blocks[3].ids[0], m.blocks[8].ids[2]];
        let r = forget_in(&a.0, &data, &ids, &exact()).unwrap();
        assert_eq!((r.first_block, r.stop_block), (4, 12), "{what}");
        let g = retrain_exact(&a.0, &gold.0, &data);
        assert_eq!(
            r.model_sha256, g.model_sha256,
            "{what}: forget(ε = 0) ≠ retrain"
        );
        let (x, y) = (Chain::open(&a.0).unwrap(), Chain::open(&gold.0).unwrap());
        let hashes = |c: &Chain| -> Vec<(String, String)> {
            c.manifest()
                .blocks
                .iter()
                .map(|b| {
                    let h =
                        |r: &Option<obliviate::store::FileRef>| r.as_ref().unwrap().sha256.clone();
                    (h(&b.delta), h(&b.opt))
                })
                .collect()
        };
        assert_eq!(hashes(&x), hashes(&y), "{what}: every δ and o as retrained");
        x.verify().unwrap();
    }
}

/// The byte range of tensor `name`'s data in a safetensors file.
fn data_range(bytes: &[u8], name: &str) -> std::ops::Range<usize> {
    let (n, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let info = meta.info(name).unwrap();
    let (a, b) = info.data_offsets;
    8 + n + a..8 + n + b
}

#[test]
fn a_corrupt_q8_scale_is_named_by_file_and_tensor() {
    let data = tiny_data();
    let run = Tmp::new("q8-corrupt");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, cfg(Q8, Q8));
    let m = Chain::open(&run.0).unwrap().into_manifest();
    let r = m.blocks[2].delta.clone().unwrap();
    let path = run.0.join(&r.file);
    let good = std::fs::read(&path).unwrap();
    let name = obliviate::params::decode(&good, &path).unwrap().1.order[0].clone();
    let scales = data_range(&good, &format!("{name}.q8_scale"));

    // One flipped byte in a scale: the recorded hash catches it, naming the file.
    let mut bad = good.clone();
    bad[scales.start + 1] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    let err = verify_error(&run.0);
    assert!(err.contains(&r.file) && err.contains("checksum"), "{err}");

    // A writer who recomputes the hash cannot slip a NaN scale past the decoder.
    let mut bad = good.clone();
    bad[scales.start..scales.start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let mut m2 = m.clone();
    m2.blocks[2].delta = Some(forge(&run.0, &r, &bad));
    reseal(&run.0, &m2);
    let err = verify_error(&run.0);
    assert!(
        err.contains(&r.file) && err.contains(&format!("{name}.q8_scale")) && err.contains("NaN"),
        "{err}"
    );

    // A code the encoder never writes (−128) is refused the same way.
    let mut bad = good.clone();
    let codes = data_range(&good, &name);
    bad[codes.start] = 0x80;
    m2.blocks[2].delta = Some(forge(&run.0, &r, &bad));
    reseal(&run.0, &m2);
    let err = verify_error(&run.0);
    assert!(err.contains(&name) && err.contains("−128"), "{err}");
}

#[test]
fn optimizer_state_in_f16_is_refused_before_anything_is_written() {
    let data = tiny_data();
    let run = Tmp::new("opt-f16");
    let err = try_train(&run.0, &data, ModelKind::MlpSmall, cfg(F32, F16))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("f16") && err.contains("bf16 or q8"), "{err}");
    assert_eq!(std::fs::read_dir(&run.0).unwrap().count(), 0);
}

#[test]
fn a_corrupt_compressed_file_is_named() {
    let data = tiny_data();
    let run = Tmp::new("zstd-corrupt");
    let storage = Storage {
        delta: Q8,
        opt: Bf16,
        compression: Compression::Zstd,
        keyframe_every: 0,
        opt_every: 0,
    };
    let cfg = TrainConfig {
        storage,
        ..tiny_cfg(21)
    };
    train_tiny(&run.0, &data, ModelKind::MlpSmall, cfg);
    let c = Chain::open(&run.0).unwrap();
    c.verify().unwrap();
    let m = c.into_manifest();
    let r = m.blocks[4].opt.clone().unwrap();
    assert!(
        r.file.ends_with(".safetensors.zst") && r.unpacked.is_some(),
        "{r:?}"
    );
    let path = run.0.join(&r.file);
    let good = std::fs::read(&path).unwrap();

    // A flipped byte: the recorded hash names the file.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&path, &bad).unwrap();
    let err = verify_error(&run.0);
    assert!(err.contains(&r.file) && err.contains("checksum"), "{err}");

    // With the hash recomputed: garbage is not a zstd frame, and a frame holding more than the
    // manifest records is refused without inflating it further.
    let forged = |bytes: &[u8], unpacked: Option<u64>| {
        let mut m2 = m.clone();
        m2.blocks[4].opt = Some(obliviate::store::FileRef {
            unpacked,
            ..forge(&run.0, &r, bytes)
        });
        reseal(&run.0, &m2);
        verify_error(&run.0)
    };
    let err = forged(&bad[..good.len() / 3], r.unpacked);
    assert!(err.contains(&r.file) && err.contains("zstd"), "{err}");
    let n = r.unpacked.unwrap();
    let err = forged(&good, Some(n - 1));
    assert!(
        err.contains(&r.file) && err.contains(&format!("more than {}", n - 1)),
        "{err}"
    );
    let err = forged(&good, Some(n + 1));
    assert!(err.contains(&format!("holds {n} bytes")), "{err}");
}

#[test]
fn a_format_1_manifest_opens_and_a_newer_format_is_refused_by_number() {
    let data = tiny_data();
    let run = Tmp::new("format");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, cfg(F32, F32));
    let mut m = Chain::open(&run.0).unwrap().into_manifest();
    let path = run.0.join("manifest.json");
    // An all-f32 chain written before precisions existed: format 1, no storage field.
    m.format = 1;
    obliviate::store::sealed::write_sealed(&path, &m).unwrap();
    assert!(!std::fs::read_to_string(&path).unwrap().contains("storage"));
    let c = Chain::open(&run.0).unwrap();
    c.verify().unwrap();
    assert_eq!(c.manifest().config.storage, Storage::default());
    drop(c);
    m.format = 99;
    obliviate::store::sealed::write_sealed(&path, &m).unwrap();
    let err = Chain::open(&run.0).unwrap_err().to_string();
    assert!(
        err.contains("manifest format 99")
            && err.contains(&format!("1 to {}", obliviate::chain::manifest::FORMAT)),
        "{err}"
    );
}

fn keyframed(k: usize) -> TrainConfig {
    let mut cfg = tiny_cfg(21);
    cfg.storage.keyframe_every = k;
    cfg
}

#[test]
fn keyframes_change_no_model_and_let_a_request_read_less() {
    let data = tiny_data();
    let (plain, keyed, gold) = (
        Tmp::new("kf-plain"),
        Tmp::new("kf-keyed"),
        Tmp::new("kf-gold"),
    );
    let a = train_tiny(&plain.0, &data, ModelKind::MlpSmall, keyframed(0));
    let b = train_tiny(&keyed.0, &data, ModelKind::MlpSmall, keyframed(4));
    assert_eq!(
        a.model_sha256, b.model_sha256,
        "keyframes are a copy of θ_i"
    );
    let (p, k) = (
        Chain::open(&plain.0).unwrap(),
        Chain::open(&keyed.0).unwrap(),
    );
    k.verify().unwrap();
    let keys: Vec<usize> = k
        .manifest()
        .blocks
        .iter()
        .filter(|b| b.theta.is_some())
        .map(|b| b.index)
        .collect();
    assert_eq!(keys, vec![4, 8, 12]);
    for i in 0..=12 {
        assert!(
            k.theta(i).unwrap().bit_identical(&p.theta(i).unwrap()),
            "θ_{i}"
        );
    }
    assert!(k.bytes().keyframes > 0 && p.bytes().keyframes == 0);
    let m = p.manifest().clone();
    drop((p, k));

    // Two segments (blocks 2 and 11), stitched: the keyframes at 4 and 8 are shifted (the
    // offset recorded in the shift tree, their files kept), the one at 12 retrained; the keyed
    // chain reads fewer bytes and lands on the same model up to the rounding of the shift.
    let ids = [m.blocks[1].ids[2], m.blocks[10].ids[0]];
    let rp = forget_in(&plain.0, &data, &ids, &eager()).unwrap();
    let rk = forget_in(&keyed.0, &data, &ids, &eager()).unwrap();
    assert_eq!(rk.segments.len(), 2, "{:?}", rk.segments);
    assert_eq!(rp.blocks_retrained, rk.blocks_retrained);
    assert!(
        rk.bytes_read < rp.bytes_read,
        "keyframes {} bytes, without {}",
        rk.bytes_read,
        rp.bytes_read
    );
    let (p, k) = (
        Chain::open(&plain.0).unwrap(),
        Chain::open(&keyed.0).unwrap(),
    );
    k.verify().unwrap();
    let (sp, sk) = (p.served().unwrap(), k.served().unwrap());
    let off = sp.max_abs_diff(&sk).unwrap();
    assert!(
        off <= 1e-5 * sp.norms_max().max(1.0),
        "served models differ by {off}"
    );
    let generation = k.manifest().generation;
    for (b, rewritten) in [(4, false), (8, false), (12, true)] {
        let f = &k.manifest().blocks[b - 1].theta.as_ref().unwrap().file;
        assert_eq!(
            f.ends_with(&format!(".g{generation}.safetensors")),
            rewritten,
            "keyframe {b}: {f}"
        );
    }
    assert!(!k.manifest().shifts.is_empty() && k.bytes().shifts > 0);
    for b in 1..=12 {
        let off = k
            .theta(b)
            .unwrap()
            .max_abs_diff(&p.theta(b).unwrap())
            .unwrap();
        assert!(
            off <= 1e-5,
            "θ_{b} differs by {off} from the chain without keyframes"
        );
    }
    drop((p, k));
    // A second request builds on the shifted keyframes.
    let r2 = forget_in(&keyed.0, &data, &[m.blocks[5].ids[1]], &eager()).unwrap();
    assert!(r2.blocks_retrained >= 2);
    Chain::open(&keyed.0).unwrap().verify().unwrap();

    // ε = 0 runs to the end: nothing is shifted, and it equals retraining bit for bit.
    let fresh = Tmp::new("kf-exact");
    train_tiny(&fresh.0, &data, ModelKind::MlpSmall, keyframed(4));
    let r = forget_in(&fresh.0, &data, &ids, &exact()).unwrap();
    let g = retrain_exact(&fresh.0, &gold.0, &data);
    assert_eq!(r.model_sha256, g.model_sha256);
}

/// Requests early in chains of 12 and 24 keyframes: what a request reads beyond the blocks it
/// retrains does not grow with the chain (eager shifting read every keyframe after the
/// segment: 9 and 21 of them here).
#[test]
fn a_request_reads_a_few_keyframes_whatever_the_chains_length() {
    let data = tiny_data();
    for blocks in [12, 24] {
        let run = Tmp::new("kf-length");
        let mut cfg = keyframed(1);
        cfg.blocks = blocks;
        train_tiny(&run.0, &data, ModelKind::MlpSmall, cfg);
        let m = Chain::open(&run.0).unwrap().into_manifest();
        let unit = m.theta0.bytes;
        let mut extra = Vec::new();
        // The second request restarts under the first one's shifts and retrains keyframes
        // that carry one.
        for id in [m.blocks[1].ids[0], m.blocks[3].ids[0], m.blocks[2].ids[1]] {
            let r = forget_in(&run.0, &data, &[id], &eager()).unwrap();
            assert!(r.stop_block < blocks - 4, "{:?}", r.segments);
            // Each file read is one θ-sized unit: keyframes, increments, shift nodes, model.
            extra.push(r.bytes_read.div_ceil(unit) as usize - r.blocks_retrained);
            Chain::open(&run.0).unwrap().verify().unwrap();
        }
        // Restore (keyframe + path), stitch (keyframe + old and new path), served model.
        let bound = 3 + 2 * shifts_path_len(blocks);
        assert!(
            extra.iter().all(|&e| e <= bound),
            "B = {blocks}: files read beyond the retrained blocks {extra:?}, bound {bound}"
        );
    }
}

fn shifts_path_len(n: usize) -> usize {
    obliviate::chain::shifts::path(n, 0).count()
}

#[test]
fn a_tampered_shift_node_is_named() {
    let data = tiny_data();
    let run = Tmp::new("shift-tamper");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, keyframed(2));
    let m = Chain::open(&run.0).unwrap().into_manifest();
    forget_in(&run.0, &data, &[m.blocks[1].ids[0]], &eager()).unwrap();
    let m = Chain::open(&run.0).unwrap().into_manifest();
    let r = m.shifts.values().next().expect("a recorded shift").clone();
    let path = run.0.join(&r.file);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let err = verify_error(&run.0);
    assert!(err.contains(&r.file), "{err}");
    // A request names it too, and changes nothing.
    let before = std::fs::read(run.0.join("manifest.json")).unwrap();
    let e = forget_in(&run.0, &data, &[m.blocks[0].ids[0]], &eager()).unwrap_err();
    assert!(e.to_string().contains(&r.file), "{e}");
    assert_eq!(std::fs::read(run.0.join("manifest.json")).unwrap(), before);
    // A node outside the tree of 6 keyframes (nodes 1..12) is refused when the run opens.
    let mut forged = m.clone();
    forged.shifts.insert(12, r.clone());
    reseal(&run.0, &forged);
    let e = Chain::open(&run.0).unwrap_err().to_string();
    assert!(e.contains("shift node 12") && e.contains("1..12"), "{e}");
}

#[test]
fn a_keyframe_that_does_not_match_its_fold_is_named() {
    let data = tiny_data();
    let run = Tmp::new("kf-tamper");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, keyframed(4));
    let mut m = Chain::open(&run.0).unwrap().into_manifest();
    let r = m.blocks[7].theta.clone().unwrap();
    let path = run.0.join(&r.file);
    let (mut set, meta) = obliviate::params::decode(&std::fs::read(&path).unwrap(), &path).unwrap();
    set.tensors[0].data[0] += 0.5;
    let bytes = obliviate::params::encode(&meta.precision.encode(&set), &meta).unwrap();
    m.blocks[7].theta = Some(forge(&run.0, &r, &bytes));
    reseal(&run.0, &m);
    let err = verify_error(&run.0);
    assert!(
        err.contains(&r.file) && err.contains("differs from the fold"),
        "{err}"
    );
}

fn sparse_opt() -> TrainConfig {
    let mut cfg = tiny_cfg(21);
    cfg.storage.keyframe_every = 2;
    cfg.storage.opt_every = 4;
    cfg
}

#[test]
fn optimizer_states_every_few_blocks_are_replayed_exactly() {
    let data = tiny_data();
    let (plain, sparse, gold) = (
        Tmp::new("opt-plain"),
        Tmp::new("opt-sparse"),
        Tmp::new("opt-gold"),
    );
    let a = train_tiny(&plain.0, &data, ModelKind::MlpSmall, keyframed(2));
    let b = train_tiny(&sparse.0, &data, ModelKind::MlpSmall, sparse_opt());
    assert_eq!(
        a.model_sha256, b.model_sha256,
        "where o_i is stored changes no model"
    );
    let c = Chain::open(&sparse.0).unwrap();
    c.verify().unwrap();
    let stored: Vec<usize> = c
        .manifest()
        .blocks
        .iter()
        .filter(|b| b.opt.is_some())
        .map(|b| b.index)
        .collect();
    assert_eq!(stored, vec![4, 8, 12]);
    assert!(c.bytes().optimizer * 3 < Chain::open(&plain.0).unwrap().bytes().optimizer);
    let m = c.into_manifest();

    // ε = 0 from an id in block 7: blocks 5 and 6 are replayed from o_4, then 7..12 retrained;
    // the result is the retrained chain bit for bit.
    let ids = [m.blocks[6].ids[0]];
    let r = forget_in(&sparse.0, &data, &ids, &exact()).unwrap();
    assert_eq!((r.blocks_replayed, r.blocks_retrained), (2, 6), "{r:?}");
    let g = retrain_exact(&sparse.0, &gold.0, &data);
    assert_eq!(r.model_sha256, g.model_sha256);
    Chain::open(&sparse.0).unwrap().verify().unwrap();

    // Two segments (blocks 2 and 11) that stop at once: the second restarts from o_8 and
    // replays 9 and 10; the chain stays sound and the next request builds on it.
    let two = Tmp::new("opt-two");
    train_tiny(&two.0, &data, ModelKind::MlpSmall, sparse_opt());
    let r = forget_in(
        &two.0,
        &data,
        &[m.blocks[1].ids[2], m.blocks[10].ids[0]],
        &eager(),
    )
    .unwrap();
    assert_eq!(r.segments.len(), 2, "{:?}", r.segments);
    assert_eq!(
        r.blocks_replayed,
        1 + 2,
        "block 1 before the first, 9 and 10 before the second"
    );
    Chain::open(&two.0).unwrap().verify().unwrap();
    forget_in(&two.0, &data, &[m.blocks[5].ids[1]], &eager()).unwrap();
    Chain::open(&two.0).unwrap().verify().unwrap();
}

#[test]
fn resuming_between_stored_optimizer_states_replays_to_the_uninterrupted_chain() {
    let data = tiny_data();
    let (whole, cut) = (Tmp::new("opt-whole"), Tmp::new("opt-cut"));
    train_tiny(&whole.0, &data, ModelKind::MlpSmall, sparse_opt());
    train_tiny(&cut.0, &data, ModelKind::MlpSmall, sparse_opt());
    // As if training had committed block 6 and crashed: blocks 7.. and the model unrecorded.
    let mut m = Chain::open(&cut.0).unwrap().into_manifest();
    for b in &mut m.blocks[6..] {
        (b.delta, b.opt, b.theta, b.step) = (None, None, None, 0);
    }
    m.model_file = None;
    m.test_accuracy = None;
    reseal(&cut.0, &m);
    let s =
        obliviate::train::resume::<B>(&cut.0, &data, &Default::default(), &mut NoProgress).unwrap();
    assert_eq!(s.resumed_from, 6);
    assert_eq!(chain_files(&whole.0), chain_files(&cut.0));
    assert_eq!(manifest_sans_timing(&whole.0), manifest_sans_timing(&cut.0));
}

#[test]
fn optimizer_states_without_keyframes_beside_them_are_refused() {
    let data = tiny_data();
    let run = Tmp::new("opt-no-kf");
    let mut cfg = tiny_cfg(21);
    cfg.storage.opt_every = 4;
    cfg.storage.keyframe_every = 3;
    let err = try_train(&run.0, &data, ModelKind::MlpSmall, cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("keyframe"), "{err}");
    assert_eq!(std::fs::read_dir(&run.0).unwrap().count(), 0);
}

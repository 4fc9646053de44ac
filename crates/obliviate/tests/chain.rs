//! The increment chain: determinism, exact folds, corruption detection, resume.

mod common;

use common::*;
use obliviate::chain::Chain;
use obliviate::model::ModelKind;
use obliviate::params::{extract, load_into};
use obliviate::store::atomic;
use obliviate::train::{BlockTrainer, NoProgress};

#[test]
fn same_seed_gives_a_byte_identical_chain() {
    let data = tiny_data();
    let (a, b, c) = (Tmp::new("det-a"), Tmp::new("det-b"), Tmp::new("det-c"));
    let sa = train_tiny(&a.0, &data, ModelKind::Lenet5, tiny_cfg(7));
    let sb = train_tiny(&b.0, &data, ModelKind::Lenet5, tiny_cfg(7));
    let sc = train_tiny(&c.0, &data, ModelKind::Lenet5, tiny_cfg(8));
    let (fa, fb) = (chain_files(&a.0), chain_files(&b.0));
    assert_eq!(
        fa.len(),
        2 + 2 * 12 + 1,
        "theta0, opt0, 12 × (delta, opt), model"
    );
    assert_eq!(fa, fb, "same seed must give identical chain files");
    assert_eq!(manifest_sans_timing(&a.0), manifest_sans_timing(&b.0));
    assert_eq!(sa.model_sha256, sb.model_sha256);
    assert_ne!(
        sa.model_sha256, sc.model_sha256,
        "another seed gives another model"
    );
    assert!(
        sa.test_accuracy > 0.3,
        "the tiny run should beat chance (10 %) clearly: {}",
        sa.test_accuracy
    );
}

#[test]
fn fold_of_increments_equals_the_trained_model_exactly() {
    let data = tiny_data();
    let dir = Tmp::new("fold");
    let cfg = tiny_cfg(3);
    train_tiny(&dir.0, &data, ModelKind::MlpSmall, cfg);
    let chain = Chain::open(&dir.0).unwrap();
    chain.verify().unwrap();

    // Train the same blocks by hand, keeping the live model, and compare with the fold.
    let device = Default::default();
    let (theta0, opt0) =
        BlockTrainer::<B>::initial(&data, ModelKind::MlpSmall, &cfg, &device).unwrap();
    assert!(theta0.bit_identical(&chain.theta(0).unwrap()));
    let mut t =
        BlockTrainer::<B>::new(&data, ModelKind::MlpSmall, cfg, theta0, &opt0, 0, &device).unwrap();
    for (i, b) in chain.manifest().blocks.iter().enumerate() {
        let out = t.run_block(i + 1, &b.ids).unwrap();
        let (stored, _) = chain.read_set(b.delta.as_ref().unwrap()).unwrap();
        assert!(out.delta.bit_identical(&stored), "δ_{} differs", i + 1);
        let live = extract(t.model());
        assert!(
            live.bit_identical(&chain.theta(i + 1).unwrap()),
            "θ_{} ≠ θ_0 + Σδ",
            i + 1
        );
    }
    assert!(extract(t.model()).bit_identical(&chain.served().unwrap()));
}

/// Slicing a minibatch changes only the rounding of its gradient: one block trained whole and
/// in 2 or 3 slices lands on the same increment within float error, and the slices are recorded.
#[test]
fn micro_batches_compute_the_minibatch_gradient() {
    let data = tiny_data();
    let ids: Vec<u64> = data.train.ids[..64].to_vec();
    let device = Default::default();
    let block = |micro_batches: usize| {
        let cfg = obliviate::chain::TrainConfig {
            micro_batches,
            ..tiny_cfg(5)
        };
        let (theta0, opt0) =
            BlockTrainer::<B>::initial(&data, ModelKind::Lenet5, &cfg, &device).unwrap();
        let mut t =
            BlockTrainer::<B>::new(&data, ModelKind::Lenet5, cfg, theta0, &opt0, 0, &device)
                .unwrap();
        t.run_block(1, &ids).unwrap().delta
    };
    let whole = block(1);
    let scale = whole
        .tensors
        .iter()
        .flat_map(|t| &t.data)
        .fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "the block moved the model");
    for slices in [2, 3] {
        let sliced = block(slices);
        let mut worst = 0f32;
        for (a, b) in whole.tensors.iter().zip(&sliced.tensors) {
            assert_eq!(a.name, b.name);
            for (x, y) in a.data.iter().zip(&b.data) {
                worst = worst.max((x - y).abs());
            }
        }
        assert!(
            worst <= 1e-3 * scale,
            "{slices} slices: increment differs by {worst} (largest entry {scale})"
        );
    }

    let dir = Tmp::new("micro");
    train_tiny(&dir.0, &data, ModelKind::MlpSmall, tiny_cfg(5));
    assert_eq!(
        Chain::open(&dir.0).unwrap().manifest().config.micro_batches,
        2
    );
    let mut old = manifest_sans_timing(&dir.0);
    old["config"]
        .as_object_mut()
        .unwrap()
        .remove("micro_batches");
    let old: obliviate::chain::TrainConfig = serde_json::from_value(old["config"].clone()).unwrap();
    assert_eq!(
        old.micro_batches, 1,
        "a manifest without the field trained whole minibatches"
    );
}

#[test]
fn batch_norm_models_refuse_micro_batches_before_writing() {
    let data = tiny_data();
    let dir = Tmp::new("micro-bn");
    let run = dir.join("run");
    let err = try_train(&run, &data, ModelKind::Resnet18, tiny_cfg(1))
        .expect_err("resnet18 with 2 slices must be refused");
    assert!(err.to_string().contains("batch norm"), "{err}");
    assert!(!run.exists(), "nothing may be written");
    let too_many = obliviate::chain::TrainConfig {
        micro_batches: 17,
        ..tiny_cfg(1)
    };
    let err = try_train(&run, &data, ModelKind::Lenet5, too_many)
        .expect_err("more slices than samples per minibatch");
    assert!(err.to_string().contains("micro-batches"), "{err}");
    assert!(!run.exists());
}

#[test]
fn a_flipped_byte_in_any_chain_file_is_detected_and_named() {
    let data = tiny_data();
    let dir = Tmp::new("flip");
    train_tiny(&dir.0, &data, ModelKind::MlpSmall, tiny_cfg(1));
    let chain = Chain::open(&dir.0).unwrap();
    let mut files: Vec<String> = chain
        .manifest()
        .files()
        .iter()
        .map(|f| f.file.clone())
        .collect();
    drop(chain);
    files.push("manifest.json".into());
    for file in files {
        let path = dir.join(&file);
        let original = std::fs::read(&path).unwrap();
        let mut bad = original.clone();
        let pos = bad.len() / 2 + 3;
        bad[pos] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        let err = Chain::open(&dir.0)
            .and_then(|c| c.verify())
            .expect_err(&format!("corruption of {file} went unnoticed"));
        let msg = err.to_string();
        assert!(
            msg.contains(&file),
            "error for {file} does not name it: {msg}"
        );
        std::fs::write(&path, &original).unwrap();
    }
    Chain::open(&dir.0).unwrap().verify().unwrap();
}

#[test]
fn resume_after_a_crash_gives_the_uninterrupted_chain() {
    let data = tiny_data();
    let cfg = tiny_cfg(5);
    let (whole, broken) = (Tmp::new("resume-whole"), Tmp::new("resume-broken"));
    train_tiny(&whole.0, &data, ModelKind::MlpSmall, cfg);
    // Crash right after block 7's files are written (its manifest update may not be).
    atomic::arm("train:block-written:7", 1);
    let r = try_train(&broken.0, &data, ModelKind::MlpSmall, cfg);
    assert!(matches!(r, Err(obliviate::Error::Failpoint(_))), "{r:?}");
    let partial = Chain::open(&broken.0).unwrap();
    assert!(partial.manifest().completed() < 12 && partial.manifest().model_file.is_none());
    drop(partial);
    let s = obliviate::train::resume::<B>(&broken.0, &data, &Default::default(), &mut NoProgress)
        .unwrap();
    assert!(s.resumed_from < 12);
    assert_eq!(chain_files(&whole.0), chain_files(&broken.0));
    assert_eq!(
        manifest_sans_timing(&whole.0),
        manifest_sans_timing(&broken.0)
    );
}

#[test]
fn a_run_refuses_other_data_and_parameters_of_another_model() {
    let data = tiny_data();
    let dir = Tmp::new("mismatch");
    train_tiny(&dir.0, &data, ModelKind::MlpSmall, tiny_cfg(2));
    let chain = Chain::open(&dir.0).unwrap();
    let other = data.truncated(500, 200).unwrap();
    let e = chain.check_dataset(&other).unwrap_err().to_string();
    assert!(e.contains("fingerprint"), "{e}");
    // Parameters of an MLP cannot be loaded into LeNet-5.
    let device = Default::default();
    let lenet =
        obliviate::model::Net::<B>::new(ModelKind::Lenet5, data.shape, 10, 0, &device).unwrap();
    let e = load_into(lenet, &chain.served().unwrap(), &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("expects"), "{e}");
    // Training into an existing run is refused.
    let e = obliviate::train::train::<B>(
        &dir.0,
        &data,
        ModelKind::MlpSmall,
        tiny_cfg(2),
        None,
        &device,
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("already holds a run"), "{e}");
}

/// (inode, file) for each file the manifest of `run` references.
#[cfg(unix)]
fn inodes(run: &std::path::Path) -> Vec<(u64, String)> {
    use std::os::unix::fs::MetadataExt;
    let chain = Chain::open(run).unwrap();
    chain
        .manifest()
        .files()
        .iter()
        .map(|r| {
            (
                std::fs::metadata(run.join(&r.file)).unwrap().ino(),
                r.file.clone(),
            )
        })
        .collect()
}

#[cfg(unix)]
#[test]
fn a_fork_shares_its_sources_files_and_a_request_there_leaves_the_source_as_it_was() {
    let data = tiny_data();
    let (src, fork) = (Tmp::new("fork-src"), Tmp::new("fork-dst"));
    train_tiny(&src.0, &data, ModelKind::Lenet5, tiny_cfg(3));
    let (files, manifest) = (
        chain_files(&src.0),
        std::fs::read(src.join("manifest.json")).unwrap(),
    );
    Chain::open(&src.0).unwrap().copy_to(&fork.0).unwrap();
    assert_eq!(inodes(&src.0), inodes(&fork.0), "every file is linked");
    forget_in(&fork.0, &data, &[3, 40], &eager()).unwrap();
    forget_in(&fork.0, &data, &[77], &eager()).unwrap();
    assert_eq!(
        chain_files(&src.0),
        files,
        "the source's files are unchanged"
    );
    assert_eq!(std::fs::read(src.join("manifest.json")).unwrap(), manifest);
    Chain::open(&src.0).unwrap().verify().unwrap();
    Chain::open(&fork.0).unwrap().verify().unwrap();
}

#[cfg(unix)]
#[test]
fn a_file_that_cannot_be_linked_is_copied() {
    let data = tiny_data();
    let (src, fork) = (Tmp::new("fork-exdev-src"), Tmp::new("fork-exdev-dst"));
    train_tiny(&src.0, &data, ModelKind::MlpSmall, tiny_cfg(4));
    let chain = Chain::open(&src.0).unwrap();
    // EXDEV: the fork's folder is on another file system than its source.
    atomic::arm_errno("link:", 2, 18);
    chain.copy_to(&fork.0).unwrap();
    assert!(!atomic::disarm(), "the second link was refused");
    let (a, b) = (inodes(&src.0), inodes(&fork.0));
    let differ: Vec<&String> = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x != y)
        .map(|(x, _)| &x.1)
        .collect();
    assert_eq!(differ.len(), 1, "one copy, the rest links: {differ:?}");
    Chain::open(&fork.0).unwrap().verify().unwrap();
    assert!(
        chain
            .served()
            .unwrap()
            .bit_identical(&Chain::open(&fork.0).unwrap().served().unwrap())
    );
}

//! Shared fixtures: a small slice of the bundled MNIST subset and fast training settings.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use obliviate::chain::TrainConfig;
use obliviate::data::{Dataset, DatasetName};
use obliviate::model::ModelKind;
use obliviate::optim::OptimConfig;
use obliviate::train::{NoProgress, TrainSummary};

#[cfg(not(feature = "tch"))]
pub type B = obliviate::CpuBackend;
/// With `--features tch` the engine's tests run on libtorch (CPU): `cargo test --features tch`.
#[cfg(feature = "tch")]
pub type B = obliviate::TchBackend;

/// First 600 training and 200 test samples of the bundled mnist-mini.
pub fn tiny_data() -> Dataset {
    Dataset::load(DatasetName::MnistMini, None)
        .expect("bundled data")
        .truncated(600, 200)
        .expect("truncate")
}

/// 12 blocks of 50 samples, one epoch each, momentum SGD with a decaying rate, each minibatch
/// computed as two slices (the CLI's default on flex, so every engine test runs that path).
pub fn tiny_cfg(seed: u64) -> TrainConfig {
    TrainConfig {
        blocks: 12,
        epochs_per_block: 1,
        batch_size: 16,
        optim: OptimConfig::sgd(0.05, 0.9),
        seed,
        lr_final: 0.3,
        storage: Default::default(),
        micro_batches: 2,
    }
}

/// A fresh empty folder under the system temp dir, removed on drop.
pub struct Tmp(pub PathBuf);

impl Tmp {
    pub fn new(name: &str) -> Tmp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "obliviate-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Tmp(p)
    }
    pub fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn train_tiny(dir: &Path, data: &Dataset, kind: ModelKind, cfg: TrainConfig) -> TrainSummary {
    try_train(dir, data, kind, cfg).expect("training")
}

/// Trains a chain in `dir`, returning what went wrong (tests of refusals and crashes).
pub fn try_train(
    dir: &Path,
    data: &Dataset,
    kind: ModelKind,
    cfg: TrainConfig,
) -> obliviate::Result<TrainSummary> {
    obliviate::train::train::<B>(
        dir,
        data,
        kind,
        cfg,
        None,
        &Default::default(),
        &mut NoProgress,
    )
}

/// Every file under `dir` (relative path → bytes), skipping the lock and the manifest.
pub fn chain_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .expect("prefix")
                    .to_string_lossy()
                    .into_owned();
                if rel.ends_with(".safetensors") {
                    out.insert(rel, std::fs::read(&p).expect("read"));
                }
            }
        }
    }
    out
}

/// The manifest without the fields that legitimately differ between equal runs (timings,
/// checksum over them).
pub fn manifest_sans_timing(dir: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("json");
    v["train_seconds"] = serde_json::Value::Null;
    v["checksum"] = serde_json::Value::Null;
    v
}

/// Opens `run` as its writer and forgets `ids` in it (what `obliviate forget` does).
pub fn forget_in(
    run: &Path,
    data: &Dataset,
    ids: &[u64],
    opts: &obliviate::unlearn::ForgetOptions,
) -> obliviate::Result<obliviate::unlearn::ForgetReport> {
    let mut chain = obliviate::chain::Chain::open_mut(run)?;
    obliviate::unlearn::forget::<B>(
        &mut chain,
        data,
        ids,
        opts,
        &Default::default(),
        &mut NoProgress,
    )
}

/// Retrains `run` without its forgotten ids into `out` with its own seed, split and order: what
/// forgetting with ε = 0 must equal bit for bit.
pub fn retrain_exact(run: &Path, out: &Path, data: &Dataset) -> TrainSummary {
    obliviate::train::retrain::<B>(run, out, data, None, &Default::default(), &mut NoProgress)
        .expect("retraining")
}

/// A rule that ends a segment one block after its last affected block: segments on demand.
pub fn eager() -> obliviate::unlearn::ForgetOptions {
    obliviate::unlearn::ForgetOptions {
        stop: obliviate::unlearn::StopRule::Relative { rho: 10.0 },
        min_points: 1,
        ..obliviate::unlearn::ForgetOptions::default()
    }
}

/// Overwrites the run's file `r` with `bytes` and returns the reference a writer able to
/// recompute hashes would record for it (record it, then [`reseal`]).
pub fn forge(run: &Path, r: &obliviate::store::FileRef, bytes: &[u8]) -> obliviate::store::FileRef {
    std::fs::write(run.join(&r.file), bytes).expect("write forged file");
    obliviate::store::FileRef {
        sha256: obliviate::store::sha256(bytes),
        bytes: bytes.len() as u64,
        ..r.clone()
    }
}

/// Writes `m` as the run's manifest with a valid checksum.
pub fn reseal(run: &Path, m: &obliviate::chain::Manifest) {
    obliviate::store::sealed::write_sealed(&run.join("manifest.json"), m).expect("reseal");
}

/// What `verify` says is wrong with the run.
pub fn verify_error(run: &Path) -> String {
    obliviate::chain::Chain::open(run)
        .expect("open")
        .verify()
        .expect_err("verify must fail")
        .to_string()
}

/// Runs the Python script `tests/NAME` on the run folder `run` and parses the JSON it prints;
/// `hint` says what to install when it fails.
pub fn python_json(name: &str, run: &Path, hint: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name);
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(run)
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "python3 {name} failed ({hint}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from python")
}

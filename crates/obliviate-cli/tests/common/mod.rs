//! What the binary's test files share: the binary, scratch folders, a small run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_obliviate"))
}

/// A scratch folder removed when dropped.
pub struct Tmp(pub PathBuf);
impl Tmp {
    pub fn new(name: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("obliviate-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small, fast run of the bundled data.
pub const TRAIN: &[&str] = &[
    "train",
    "--dataset",
    "mnist-mini",
    "--model",
    "mlp-small",
    "--blocks",
    "12",
    "--epochs-per-block",
    "1",
    "--batch-size",
    "16",
    "--optimizer",
    "sgd",
    "--momentum",
    "0.9",
    "--lr",
    "0.05",
    "--lr-final",
    "0.3",
    "--seed",
    "3",
    "--train-limit",
    "600",
    "--test-limit",
    "200",
];

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn obliviate")
}

pub fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim().lines().count(),
        1,
        "--json prints exactly one line: {text}"
    );
    serde_json::from_str(text.trim()).expect("stdout is JSON")
}

pub fn train(dir: &Path, extra: &[&str]) -> Output {
    run(bin()
        .args(TRAIN)
        .arg("--out")
        .arg(dir)
        .args(extra)
        .arg("--json"))
}

//! The increment chain on disk: θ_0, o_0, δ_i and o_i per block, the served model, and the
//! manifest that ties them together.
//!
//! Layout of a run folder:
//!
//! ```text
//! RUN/manifest.json                  commit point: written last, atomically
//! RUN/theta0.safetensors             θ_0
//! RUN/opt0.safetensors               o_0
//! RUN/blocks/00001.delta.g0.safetensors   δ_1 (generation 0 = initial training)
//! RUN/blocks/00001.opt.g0.safetensors     o_1
//! RUN/model.g0.safetensors           θ_0 + Σδ_i, the served model
//! RUN/ledger.sqlite                  forget requests (see `ledger`)
//! ```
//!
//! Files are never modified in place: a commit writes new files named by its generation, then
//! the manifest, then removes what the old manifest alone referenced. A reader sees the old
//! chain or the new one. Every read checks the file's SHA-256 against the manifest.

pub mod atomic;
pub mod manifest;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use manifest::{BlockRecord, DataOrigin, DatasetRecord, FileRef, Manifest, TrainConfig};

use crate::data::{Dataset, hex};
use crate::error::{Error, IoContext, Result};
use crate::params::{FileMeta, ParamSet, decode, encode};

/// Manifest file name.
pub const MANIFEST: &str = "manifest.json";

/// An opened run folder.
#[derive(Debug)]
pub struct Chain {
    dir: PathBuf,
    /// The committed manifest (edit, then [`Chain::commit`]).
    pub manifest: Manifest,
    _lock: Option<std::fs::File>,
}

fn chain_err(dir: &Path, detail: impl Into<String>) -> Error {
    Error::Chain {
        run: dir.to_path_buf(),
        detail: detail.into(),
    }
}

/// SHA-256 of bytes, hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of a manifest's JSON with its `checksum` member removed, taken over the
/// key-sorted compact form of the JSON *value*. Hashing the value as written (not the struct
/// re-serialised) keeps manifests of older builds, which lack fields added since, verifiable.
pub(crate) fn body_checksum(v: &serde_json::Value) -> Result<String> {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("checksum");
    }
    let body =
        serde_json::to_vec(&v).map_err(|e| crate::error::invalid("manifest", e.to_string()))?;
    Ok(sha256(&body))
}

/// Serialises `m` as pretty JSON with a `checksum` member over the rest ([`body_checksum`]).
pub(crate) fn seal<T: serde::Serialize>(m: &T) -> Result<Vec<u8>> {
    let mut v =
        serde_json::to_value(m).map_err(|e| crate::error::invalid("manifest", e.to_string()))?;
    let sum = body_checksum(&v)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("checksum".into(), serde_json::Value::String(sum));
    }
    let mut out = serde_json::to_vec_pretty(&v)
        .map_err(|e| crate::error::invalid("manifest", e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

impl Chain {
    /// Creates a new run folder with `manifest` (θ_0 and o_0 must be written with
    /// [`Chain::write_set`] before committing). Fails if the folder already holds a run.
    pub fn create(dir: &Path, manifest: Manifest) -> Result<Chain> {
        if dir.join(MANIFEST).exists() {
            return Err(chain_err(
                dir,
                "already holds a run (pass --resume to continue it, or choose another --out)",
            ));
        }
        std::fs::create_dir_all(dir.join("blocks")).at(dir)?;
        let lock = lock(dir)?;
        Ok(Chain {
            dir: dir.to_path_buf(),
            manifest,
            _lock: Some(lock),
        })
    }

    /// Opens a run for reading: parses and checks the manifest (not the chain files; see
    /// [`Chain::verify`]).
    pub fn open(dir: &Path) -> Result<Chain> {
        let manifest: Manifest = read_sealed(
            dir,
            MANIFEST,
            "manifest JSON",
            "no manifest.json: not a run folder, or training never committed a block",
        )?;
        if manifest.format != manifest::FORMAT {
            return Err(chain_err(
                dir,
                format!(
                    "manifest format {} (this build reads {})",
                    manifest.format,
                    manifest::FORMAT
                ),
            ));
        }
        let c = Chain {
            dir: dir.to_path_buf(),
            manifest,
            _lock: None,
        };
        c.check_structure()?;
        Ok(c)
    }

    /// Opens a run for changing it: takes the folder's exclusive lock (one writer at a time)
    /// and removes files left by an interrupted commit.
    pub fn open_mut(dir: &Path) -> Result<Chain> {
        let lock = lock(dir)?;
        let mut c = Chain::open(dir)?;
        c._lock = Some(lock);
        c.collect_garbage()?;
        Ok(c)
    }

    fn check_structure(&self) -> Result<()> {
        let m = &self.manifest;
        if m.blocks.len() != m.config.blocks {
            return Err(chain_err(
                &self.dir,
                format!(
                    "{} block records for {} blocks",
                    m.blocks.len(),
                    m.config.blocks
                ),
            ));
        }
        for (i, b) in m.blocks.iter().enumerate() {
            if b.index != i + 1 {
                return Err(chain_err(
                    &self.dir,
                    format!("block record {} has index {}", i + 1, b.index),
                ));
            }
            if b.delta.is_some() != b.opt.is_some() {
                return Err(chain_err(
                    &self.dir,
                    format!(
                        "block {} has an increment without optimizer state or vice versa",
                        b.index
                    ),
                ));
            }
        }
        let done = m.completed();
        if m.blocks[done..].iter().any(|b| b.delta.is_some()) {
            return Err(chain_err(
                &self.dir,
                "trained blocks are not a prefix of the chain",
            ));
        }
        Ok(())
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Absolute path of a chain file.
    pub fn path(&self, r: &FileRef) -> PathBuf {
        self.dir.join(&r.file)
    }

    /// Fails unless `data` is the dataset the chain was trained on.
    pub fn check_dataset(&self, data: &Dataset) -> Result<()> {
        check_dataset(&self.dir, &self.manifest.dataset, data)
    }

    /// Writes a tensor set as `rel` (atomically) and returns its reference.
    pub fn write_set(&self, rel: &str, set: &ParamSet, meta: &FileMeta) -> Result<FileRef> {
        write_tensors(&self.dir, rel, set, meta)
    }

    /// Reads and verifies a chain file.
    pub fn read_set(&self, r: &FileRef) -> Result<(ParamSet, FileMeta)> {
        read_tensors(&self.dir, r)
    }

    /// Commits the in-memory manifest: bumps nothing, seals and writes `manifest.json`.
    pub fn commit(&mut self) -> Result<()> {
        let bytes = seal(&self.manifest)?;
        atomic::write_file(&self.dir.join(MANIFEST), &bytes)?;
        self.manifest.checksum = serde_json::from_slice::<Manifest>(&bytes)
            .map(|m| m.checksum)
            .unwrap_or_default();
        Ok(())
    }

    /// θ_k = θ_0 + δ_1 + … + δ_k, folded left to right in f32 (the definition of the chain).
    pub fn theta(&self, k: usize) -> Result<ParamSet> {
        let (mut theta, _) = self.read_set(&self.manifest.theta0)?;
        self.fold_into(&mut theta, 1, k)?;
        Ok(theta)
    }

    /// Adds δ_from ..= δ_to (1-based) to `acc`, in block order. Files are read, hashed and
    /// decoded in parallel, in batches of bounded size; the additions stay sequential so the
    /// result is bit-identical to a one-by-one fold.
    pub fn fold_into(&self, acc: &mut ParamSet, from: usize, to: usize) -> Result<()> {
        use rayon::prelude::*;
        if from > to {
            return Ok(());
        }
        let refs: Vec<&FileRef> = self.manifest.blocks[from - 1..to]
            .iter()
            .map(|b| {
                b.delta.as_ref().ok_or_else(|| {
                    chain_err(&self.dir, format!("block {} is not trained", b.index))
                })
            })
            .collect::<Result<_>>()?;
        const BATCH_BYTES: u64 = 256 << 20;
        let mut start = 0;
        while start < refs.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < refs.len() && (end == start || bytes + refs[end].bytes <= BATCH_BYTES) {
                bytes += refs[end].bytes;
                end += 1;
            }
            let sets: Vec<Result<ParamSet>> = refs[start..end]
                .par_iter()
                .map(|r| self.read_set(r).map(|s| s.0))
                .collect();
            for (r, set) in refs[start..end].iter().zip(sets) {
                acc.add_assign(&set?)
                    .map_err(|e| chain_err(&self.dir, format!("{}: {e}", r.file)))?;
            }
            start = end;
        }
        Ok(())
    }

    /// o_k and the optimizer step count after block k.
    pub fn opt_state(&self, k: usize) -> Result<(ParamSet, u64)> {
        let r = if k == 0 {
            &self.manifest.opt0
        } else {
            self.manifest.blocks[k - 1]
                .opt
                .as_ref()
                .ok_or_else(|| chain_err(&self.dir, format!("block {k} is not trained")))?
        };
        let (set, meta) = self.read_set(r)?;
        Ok((set, meta.step))
    }

    /// The served model, read from its file.
    pub fn served(&self) -> Result<ParamSet> {
        let r = self.manifest.model_file.as_ref().ok_or_else(|| {
            chain_err(&self.dir, "training is not finished (no served model yet)")
        })?;
        Ok(self.read_set(r)?.0)
    }

    /// Checks every file's hash and that θ_0 + Σδ_i equals the served model bit for bit.
    pub fn verify(&self) -> Result<()> {
        let m = &self.manifest;
        // The fold reads (and hash-checks) θ_0 and every increment once; the other files are
        // read here. Reading each file once keeps `check` I/O-bound at one pass.
        let folded = self.theta(m.completed())?;
        for r in [&m.opt0]
            .into_iter()
            .chain(m.blocks.iter().filter_map(|b| b.opt.as_ref()))
        {
            self.read_set(r)?;
        }
        if let Some(model) = &m.model_file {
            let (served, _) = self.read_set(model)?;
            if m.is_complete() && !folded.bit_identical(&served) {
                return Err(chain_err(
                    &self.dir,
                    "θ_0 + Σδ_i differs from the served model",
                ));
            }
        }
        Ok(())
    }

    /// Sum of the sizes of all referenced files plus the manifest.
    pub fn bytes_on_disk(&self) -> u64 {
        let files: u64 = self.manifest.files().iter().map(|r| r.bytes).sum();
        let manifest = std::fs::metadata(self.dir.join(MANIFEST))
            .map(|m| m.len())
            .unwrap_or(0);
        let ledger = std::fs::metadata(self.dir.join(crate::ledger::LEDGER))
            .map(|m| m.len())
            .unwrap_or(0);
        files + manifest + ledger
    }

    /// Removes chain files no longer referenced by the manifest (left by a commit that replaced
    /// them, or by one interrupted before its manifest was written).
    pub fn collect_garbage(&self) -> Result<()> {
        let keep: std::collections::HashSet<PathBuf> =
            self.manifest.files().iter().map(|r| self.path(r)).collect();
        for (sub, in_blocks) in [(self.dir.clone(), false), (self.dir.join("blocks"), true)] {
            let Ok(entries) = std::fs::read_dir(&sub) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                let tensor_file =
                    name.ends_with(".safetensors") && (in_blocks || name.starts_with("model.g"));
                let ours =
                    tensor_file || (name.starts_with('.') && name.ends_with(".safetensors.tmp"));
                if ours && !keep.contains(&p) {
                    std::fs::remove_file(&p).at(&p)?;
                }
            }
        }
        Ok(())
    }
}

/// Reads `dir/name` as sealed JSON (see [`seal`]): parses it as `T` and checks its checksum.
/// `missing` is the message when the file does not exist.
pub(crate) fn read_sealed<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
    format: &'static str,
    missing: &str,
) -> Result<T> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            chain_err(dir, missing)
        } else {
            Error::Io {
                path: path.clone(),
                source,
            }
        }
    })?;
    let format_err = |e: serde_json::Error| Error::Format {
        path: path.clone(),
        format,
        offset: 0,
        detail: e.to_string(),
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(format_err)?;
    let expected = value
        .get("checksum")
        .and_then(|c| c.as_str())
        .unwrap_or_default()
        .to_string();
    let actual = body_checksum(&value)?;
    if actual != expected {
        return Err(Error::Checksum {
            path,
            algo: "sha256 (manifest body)",
            expected,
            actual,
        });
    }
    serde_json::from_value(value).map_err(format_err)
}

/// Fails unless `data` is the dataset `record` describes (the folder `dir` names the culprit).
pub(crate) fn check_dataset(dir: &Path, record: &DatasetRecord, data: &Dataset) -> Result<()> {
    if record.name != data.name || record.fingerprint != data.fingerprint {
        return Err(chain_err(
            dir,
            format!(
                "was trained on {} (fingerprint {}), but the data given is {} (fingerprint {})",
                record.name,
                &record.fingerprint[..12.min(record.fingerprint.len())],
                data.name,
                &data.fingerprint[..12.min(data.fingerprint.len())]
            ),
        ));
    }
    Ok(())
}

/// Writes a tensor set as `dir/rel` (atomically, creating its folder) and returns its reference.
pub(crate) fn write_tensors(
    dir: &Path,
    rel: &str,
    set: &ParamSet,
    meta: &FileMeta,
) -> Result<FileRef> {
    let bytes = encode(set, meta)?;
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).at(parent)?;
    }
    atomic::write_file(&path, &bytes)?;
    Ok(FileRef {
        file: rel.to_string(),
        sha256: sha256(&bytes),
        bytes: bytes.len() as u64,
    })
}

/// Reads `dir/r.file`, checking its SHA-256 against the reference.
pub(crate) fn read_tensors(dir: &Path, r: &FileRef) -> Result<(ParamSet, FileMeta)> {
    let path = dir.join(&r.file);
    let bytes = std::fs::read(&path).at(&path)?;
    let actual = sha256(&bytes);
    if actual != r.sha256 {
        return Err(Error::Checksum {
            path,
            algo: "sha256",
            expected: r.sha256.clone(),
            actual,
        });
    }
    decode(&bytes, &path)
}

/// Takes the folder's exclusive `.lock` (one writer per run folder).
pub(crate) fn lock(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at(&path)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(chain_err(
            dir,
            "another obliviate process is changing this run",
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Io { path, source: e }),
    }
}

#[cfg(test)]
mod seal_tests {
    use super::*;

    /// Sealed JSON must verify after parsing, whatever floats it holds (serde_json's default
    /// float parser is not correctly rounded; the `float_roundtrip` feature makes it so).
    #[test]
    fn sealed_floats_survive_the_round_trip() {
        let mut state = 7u64;
        for _ in 0..20_000 {
            state = crate::data::split::mix(state);
            let x = (state >> 11) as f64 / (1u64 << 53) as f64 * 1000.0;
            let bytes = seal(&serde_json::json!({ "seconds": x, "n": state })).expect("seal");
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("parse");
            let sum = v["checksum"].as_str().expect("checksum").to_string();
            assert_eq!(body_checksum(&v).expect("sum"), sum, "{x:?}");
            assert_eq!(v["seconds"].as_f64(), Some(x));
        }
    }
}

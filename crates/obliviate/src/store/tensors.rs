//! Tensor files referenced by hash: every read is checked against the SHA-256 and length the
//! referring document recorded.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{atomic, sha256};
use crate::error::{Error, IoContext, Result};
use crate::params::{FileMeta, ParamSet, decode, encode};

/// A stored file: path relative to its folder, SHA-256 and length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Path relative to the folder.
    pub file: String,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
    /// Length in bytes.
    pub bytes: u64,
}

/// Writes a tensor set as `dir/rel` (atomically, creating its folder) and returns its reference.
pub fn write_tensors(dir: &Path, rel: &str, set: &ParamSet, meta: &FileMeta) -> Result<FileRef> {
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

/// Fails unless `dir/r.file` is a regular file of the recorded length (a cheap check that
/// needs no read: a missing, truncated, replaced or special file is named before any work).
pub fn check_present(dir: &Path, r: &FileRef) -> Result<()> {
    let path = dir.join(&r.file);
    let meta = std::fs::metadata(&path).at(&path)?;
    if !meta.is_file() || meta.len() != r.bytes {
        return Err(Error::Format {
            path,
            format: "stored tensor file",
            offset: 0,
            detail: format!(
                "{} of {} bytes where the manifest records a {}-byte file",
                if meta.is_file() {
                    "a file"
                } else {
                    "not a regular file"
                },
                meta.len(),
                r.bytes
            ),
        });
    }
    Ok(())
}

/// Reads `dir/r.file`, checking its length before reading it, its SHA-256 against the
/// reference, and that every value is finite.
pub fn read_tensors(dir: &Path, r: &FileRef) -> Result<(ParamSet, FileMeta)> {
    check_present(dir, r)?;
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
    let (set, meta) = decode(&bytes, &path)?;
    set.check_finite(&path.display().to_string())?;
    Ok((set, meta))
}

/// Copies the files `refs` name (and `extra` plain files, where present) from folder `src` into
/// `dst`, which must be absent or empty, and returns `dst`'s writer lock; the caller writes
/// its manifest last. Each copy is checked against its recorded hash, so a fork of a corrupt
/// folder fails instead of spreading the corruption.
pub fn copy_referenced<'a>(
    src: &Path,
    dst: &Path,
    refs: impl IntoIterator<Item = &'a FileRef>,
    extra: &[&str],
) -> Result<super::FolderLock> {
    super::require_empty(dst, "a copy")?;
    std::fs::create_dir_all(dst).at(dst)?;
    let lock = super::FolderLock::acquire(dst)?;
    let mut folders = std::collections::BTreeSet::new();
    for r in refs {
        let from = src.join(&r.file);
        let bytes = std::fs::read(&from).at(&from)?;
        let actual = sha256(&bytes);
        if actual != r.sha256 {
            return Err(Error::Checksum {
                path: from,
                algo: "sha256",
                expected: r.sha256.clone(),
                actual,
            });
        }
        let to = dst.join(&r.file);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
            folders.insert(parent.to_path_buf());
        }
        std::fs::write(&to, &bytes).at(&to)?;
    }
    for name in extra {
        let from = src.join(name);
        if from.exists() {
            std::fs::copy(&from, dst.join(name)).at(dst.join(name))?;
        }
    }
    for f in &folders {
        atomic::sync_dir(f)?;
    }
    Ok(lock)
}

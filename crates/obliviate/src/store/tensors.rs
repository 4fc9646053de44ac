//! Tensor files referenced by hash: every read is checked against the SHA-256 and length the
//! referring document recorded.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{atomic, sha256};
use crate::error::{Error, IoContext, Result};
use crate::params::{EncodedSet, FileMeta, ParamSet, Precision, decode, encode};

/// A stored file: path relative to its folder, SHA-256 and length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Path relative to the folder.
    pub file: String,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
    /// Length in bytes.
    pub bytes: u64,
    /// For a zstd-compressed file, the length of the safetensors bytes it holds: decompression
    /// stops there, so a hostile file cannot inflate beyond what its referrer recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpacked: Option<u64>,
}

/// Lossless compression of a tensor file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain safetensors.
    #[default]
    None,
    /// A zstd frame (level [`ZSTD_LEVEL`]) holding the safetensors bytes.
    Zstd,
}

impl Compression {
    /// Every compression.
    pub const ALL: [Compression; 2] = [Compression::None, Compression::Zstd];

    /// The name used in flags and manifests.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        }
    }

    /// True for no compression (the default, omitted from manifests).
    pub fn is_none(&self) -> bool {
        *self == Compression::None
    }

    /// The file-name suffix after `.safetensors`.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
        }
    }
}

/// zstd's default level, fast enough to stay out of the training loop's way (docs/BENCHMARKS.md
/// has what it saves).
pub const ZSTD_LEVEL: i32 = 3;

/// Writes a tensor set in f32 as `dir/rel` (atomically, creating its folder) and returns its
/// reference.
pub fn write_tensors(dir: &Path, rel: &str, set: &ParamSet, meta: &FileMeta) -> Result<FileRef> {
    write_encoded(
        dir,
        rel,
        &Precision::F32.encode(set),
        meta,
        Compression::None,
        Durability::Now,
    )
}

/// When a written file becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the call returns: written to a temporary, fsynced, renamed into place.
    Now,
    /// When the document that will reference it commits (see [`atomic::write_unsynced`]):
    /// only for a name no committed document references.
    AtCommit,
}

/// Writes a set in its stored form as `dir/rel` (creating its folder), compressed as asked,
/// durable as asked, and returns its reference.
pub fn write_encoded(
    dir: &Path,
    rel: &str,
    set: &EncodedSet,
    meta: &FileMeta,
    compression: Compression,
    durability: Durability,
) -> Result<FileRef> {
    let plain = encode(set, meta)?;
    let path = dir.join(rel);
    let (bytes, unpacked) = match compression {
        Compression::None => (plain, None),
        Compression::Zstd => {
            let packed = zstd::bulk::compress(&plain, ZSTD_LEVEL).at(&path)?;
            (packed, Some(plain.len() as u64))
        }
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).at(parent)?;
    }
    match durability {
        Durability::Now => atomic::write_file(&path, &bytes)?,
        Durability::AtCommit => atomic::write_unsynced(&path, &bytes)?,
    }
    Ok(FileRef {
        file: rel.to_string(),
        sha256: sha256(&bytes),
        bytes: bytes.len() as u64,
        unpacked,
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
    let (set, meta) = match r.unpacked {
        None => decode(&bytes, &path)?,
        Some(n) => decode(&unpack(&bytes, n, &path)?, &path)?,
    };
    set.check_finite(&path.display().to_string())?;
    Ok((set, meta))
}

/// The `n` bytes a zstd file holds; fails unless it holds exactly that many. Reads at most
/// n + 1 bytes of output and reserves at most 256 MiB ahead of them.
fn unpack(bytes: &[u8], n: u64, path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let fmt = |detail: String| Error::Format {
        path: path.to_path_buf(),
        format: "zstd",
        offset: 0,
        detail,
    };
    let decoder = zstd::stream::read::Decoder::new(bytes).map_err(|e| fmt(e.to_string()))?;
    let mut out = Vec::with_capacity(n.min(256 << 20) as usize);
    decoder
        .take(n.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| fmt(e.to_string()))?;
    if out.len() as u64 != n {
        return Err(fmt(format!(
            "holds {} bytes where the manifest records {n}",
            if out.len() as u64 > n {
                format!("more than {n}")
            } else {
                out.len().to_string()
            }
        )));
    }
    Ok(out)
}

/// Forks the files `refs` name (and copies `extra` plain files, where present) from folder
/// `src` into `dst`, which must be absent or empty, makes them durable and returns `dst`'s
/// writer lock; the caller writes its manifest last. Each file is checked against its
/// recorded hash, so a fork of a corrupt folder fails instead of spreading the corruption.
///
/// A referenced file is hard-linked, not copied: the engine never writes through a name it
/// has referenced (files are immutable once a manifest names them, and [`atomic`] writes new
/// files under fresh inodes), so the fork and its source can share them; a fork is then
/// metadata, and a request forked from a large run does not start behind the disk writing
/// a copy of it. Where linking fails (another file system, no link support), the file is
/// copied and fsynced. `extra` files (the ledger, which SQLite writes in place) are always
/// copied.
pub fn copy_referenced<'a>(
    src: &Path,
    dst: &Path,
    refs: impl IntoIterator<Item = &'a FileRef>,
    extra: &[&str],
) -> Result<super::FolderLock> {
    super::require_empty(dst, "a copy")?;
    std::fs::create_dir_all(dst).at(dst)?;
    let lock = super::FolderLock::acquire(dst)?;
    let (mut linked, mut copied) = (Vec::new(), Vec::new());
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
        }
        match atomic::link(&from, &to) {
            Ok(()) => linked.push(to),
            Err(_) => {
                atomic::write_unsynced(&to, &bytes)?;
                copied.push(to);
            }
        }
    }
    for name in extra {
        let from = src.join(name);
        if from.exists() {
            let to = dst.join(name);
            std::fs::copy(&from, &to).at(&to)?;
            copied.push(to);
        }
    }
    // Durable before the caller writes the manifest that names them: copies' contents (a
    // link's are its source's, durable since the source committed), then every name.
    atomic::sync_contents(&copied)?;
    linked.append(&mut copied);
    atomic::sync_folders(&linked)?;
    Ok(lock)
}

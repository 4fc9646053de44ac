//! Durable, verifiable files: the storage layer under the chain, SISA folders, the ledger and
//! dataset downloads.
//!
//! Four pieces, each used by every folder format obliviate writes:
//! - [`atomic`]: crash-safe writes (temporary sibling, fsync, rename, folder fsync) and the
//!   failpoints that prove them;
//! - [`sealed`]: JSON documents carrying a checksum over their own body (manifests);
//! - [`tensors`]: safetensors files referenced by path, SHA-256 and length ([`FileRef`]);
//! - [`lock`]: one writer per folder, and readers the writer never collects files under.
//!
//! Nothing here knows what a chain or a shard is.

pub mod atomic;
pub mod lock;
pub mod sealed;
pub mod tensors;

pub use lock::{FolderLock, ReaderLock, ReadersGone};
pub use tensors::{Compression, FileRef};

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// Fails unless `dir` is absent or empty, naming an entry it holds: new folders of the
/// engine's never mix its files with a user's (whose files it would later collect).
pub fn require_empty(dir: &Path, purpose: &str) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    match entries.next() {
        None => Ok(()),
        Some(e) => Err(Error::Chain {
            run: dir.to_path_buf(),
            detail: format!(
                "is not empty (it holds {}): {purpose} needs an empty or new folder",
                e.at(dir)?.file_name().to_string_lossy()
            ),
        }),
    }
}

/// SHA-256 of bytes, lower-case hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

//! One writer per folder: an exclusive OS lock on `DIR/.lock`, held for the life of the value.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Name of the lock file inside a locked folder.
pub const LOCK_FILE: &str = ".lock";

/// A held exclusive lock; dropping it releases the lock.
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
}

impl FolderLock {
    /// Takes `dir`'s exclusive lock without waiting; fails with [`Error::Busy`] when another
    /// process holds it.
    pub fn acquire(dir: &Path) -> Result<FolderLock> {
        let path = dir.join(LOCK_FILE);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .at(&path)?;
        match f.try_lock() {
            Ok(()) => Ok(FolderLock { _file: f }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy {
                dir: PathBuf::from(dir),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::Io { path, source: e }),
        }
    }
}

//! Who may touch a folder: one writer at a time (`.lock`, exclusive), and readers that hold
//! `.readers` shared while they read so the writer never removes a file under them.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Name of the writer's lock file inside a locked folder.
pub const LOCK_FILE: &str = ".lock";

/// Name of the readers' lock file.
pub const READERS_FILE: &str = ".readers";

/// A held exclusive writer lock; dropping it releases the lock.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
}

/// Opens (creating) `path` and takes its exclusive lock without waiting: `None` while someone
/// else holds it.
fn try_exclusive(path: &Path) -> Result<Option<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .at(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(Error::Io {
            path: path.to_path_buf(),
            cause: e,
        }),
    }
}

impl FolderLock {
    /// Takes `dir`'s exclusive lock without waiting; fails with [`Error::Busy`] when another
    /// process holds it.
    pub fn acquire(dir: &Path) -> Result<FolderLock> {
        match try_exclusive(&dir.join(LOCK_FILE))? {
            Some(f) => Ok(FolderLock { _file: f }),
            None => Err(Error::Busy {
                dir: PathBuf::from(dir),
            }),
        }
    }
}

/// A reader's shared hold on a folder, for as long as it reads. The writer removes superseded
/// files only while it can take the readers' lock exclusively ([`ReadersGone`]), so a reader
/// that opened one generation's manifest finds every file that manifest names.
#[derive(Debug)]
pub struct ReaderLock {
    _file: Option<File>,
}

impl ReaderLock {
    /// Takes a shared hold on `dir`, waiting while the writer collects garbage (briefly). A
    /// folder without `marker` (not one of the engine's) gets no lock file; nor does a read-only
    /// one without it, which no writer can change either.
    pub fn acquire(dir: &Path, marker: &str) -> Result<ReaderLock> {
        let none = ReaderLock { _file: None };
        if !dir.join(marker).is_file() {
            return Ok(none);
        }
        let path = dir.join(READERS_FILE);
        let file = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            // A read-only folder or file system: open what is there, if anything.
            Err(_) => match File::open(&path) {
                Ok(f) => f,
                Err(_) => return Ok(none),
            },
        };
        file.lock_shared().at(&path)?;
        Ok(ReaderLock { _file: Some(file) })
    }
}

/// Proof that no reader holds `dir` (the writer's exclusive hold on the readers' lock).
#[derive(Debug)]
pub struct ReadersGone {
    _file: File,
}

impl ReadersGone {
    /// Takes the readers' lock exclusively without waiting: `None` while some reader reads.
    pub fn try_acquire(dir: &Path) -> Result<Option<ReadersGone>> {
        Ok(try_exclusive(&dir.join(READERS_FILE))?.map(|f| ReadersGone { _file: f }))
    }
}

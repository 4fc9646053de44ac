//! The next generation's files that are not durable yet (ARCHITECTURE robustness rule 4).
//!
//! They are written unsynced, under names no committed manifest references, and fsynced before
//! the manifest that references them is written. A request starts their fsyncs as soon as its
//! training ends ([`Pending::sync_ahead`]), so the disk works while the CPU stitches.

use std::path::PathBuf;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::store::atomic::{hit, sync_contents, sync_folders};

/// Files written since the last commit: some waiting, some being fsynced on a thread.
#[derive(Debug, Default)]
pub(super) struct Pending {
    written: Vec<PathBuf>,
    ahead: Vec<(Vec<PathBuf>, JoinHandle<Result<()>>)>,
}

impl Pending {
    pub(super) fn push(&mut self, path: PathBuf) {
        self.written.push(path);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.written.is_empty() && self.ahead.is_empty()
    }

    /// Starts fsyncing the files written so far on a background thread.
    pub(super) fn sync_ahead(&mut self) {
        if self.written.is_empty() {
            return;
        }
        let paths = std::mem::take(&mut self.written);
        let list = paths.clone();
        let handle = std::thread::spawn(move || sync_contents(&list));
        self.ahead.push((paths, handle));
    }

    /// Makes every pending file durable: waits for the fsyncs in flight, fsyncs the rest, then
    /// each folder holding them once.
    pub(super) fn sync_all(self) -> Result<()> {
        let mut all = Vec::new();
        for (paths, handle) in self.ahead {
            handle.join().unwrap_or_else(|_| {
                Err(Error::Io {
                    path: paths.first().cloned().unwrap_or_default(),
                    cause: std::io::Error::other("the thread fsyncing this file panicked"),
                })
            })?;
            all.extend(paths);
        }
        sync_contents(&self.written)?;
        all.extend(self.written);
        hit("sync:files")?;
        sync_folders(&all)
    }

    /// Forgets every pending file (a failed request's, about to be removed) once the fsyncs in
    /// flight have ended.
    pub(super) fn clear(&mut self) {
        for (_, handle) in self.ahead.drain(..) {
            let _ = handle.join();
        }
        self.written.clear();
    }
}

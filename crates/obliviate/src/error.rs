//! The library's one error type: every failure names the file, id or value at fault.

use std::path::PathBuf;

/// Everything that can go wrong in obliviate, each variant naming what is wrong and where.
///
/// Texts name files, ids and values, never command-line flags: the binary adds its own hints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O failure on a named path (full disk, permissions, missing file).
    #[error("{path}: {cause}")]
    Io {
        /// The file or folder being read or written.
        path: PathBuf,
        /// What the OS reported (shown in the message, so not chained as a source: callers
        /// that print error chains would say it twice).
        cause: std::io::Error,
    },
    /// A file whose bytes do not follow its format.
    #[error("{path}: corrupt {format} file at byte {offset}: {detail}")]
    Format {
        /// The offending file.
        path: PathBuf,
        /// The format expected (IDX, safetensors, MAT v5, ...).
        format: &'static str,
        /// Byte offset (in the decompressed stream where compressed) of the fault.
        offset: u64,
        /// What was expected and what was found.
        detail: String,
    },
    /// A file whose content hash differs from the one recorded for it.
    #[error("{path}: checksum mismatch: expected {algo} {expected}, found {actual}")]
    Checksum {
        /// The offending file.
        path: PathBuf,
        /// Hash algorithm.
        algo: &'static str,
        /// Recorded digest.
        expected: String,
        /// Digest of the bytes on disk.
        actual: String,
    },
    /// A run folder whose contents do not form a valid increment chain.
    #[error("run {run}: {detail}")]
    Chain {
        /// The run folder.
        run: PathBuf,
        /// What is inconsistent.
        detail: String,
    },
    /// A folder another process is changing (its writer lock is held).
    #[error("{dir}: another obliviate process is changing this folder")]
    Busy {
        /// The locked folder.
        dir: PathBuf,
    },
    /// A folder that already holds what would be created there.
    #[error("{dir} already holds a {what}")]
    AlreadyExists {
        /// The folder.
        dir: PathBuf,
        /// What it holds (`run`, `SISA ensemble`).
        what: &'static str,
    },
    /// A run whose training has not finished, asked to do what needs a finished chain.
    #[error("run {run}: training is not finished (no served model yet)")]
    Unfinished {
        /// The run folder.
        run: PathBuf,
    },
    /// Dataset files that are not where they were looked for.
    #[error("dataset {dataset}: {detail}")]
    MissingData {
        /// The dataset's name.
        dataset: String,
        /// Where it was looked for.
        detail: String,
    },
    /// Tensors holding NaN or ±∞, which no model, increment or optimizer state may.
    #[error("{what}: tensor {tensor} holds NaN or an infinity")]
    NonFinite {
        /// The file or result at fault.
        what: String,
        /// The first such tensor.
        tensor: String,
    },
    /// Sample ids that are not in the training set or were already forgotten.
    #[error("{}", describe_ids(.unknown, .deleted))]
    Ids {
        /// Ids outside the training set.
        unknown: Vec<u64>,
        /// Ids forgotten by an earlier request.
        deleted: Vec<u64>,
    },
    /// A user-supplied value that cannot be used.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// The argument or setting.
        what: &'static str,
        /// Why it is rejected.
        detail: String,
    },
    /// The SQLite request ledger failed.
    #[error("ledger {path}: {cause}")]
    Ledger {
        /// The ledger database.
        path: PathBuf,
        /// The SQLite error (in the message, not chained).
        cause: rusqlite::Error,
    },
    /// A download failed or delivered the wrong bytes.
    #[error("download {url}: {detail}")]
    Download {
        /// The source address.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// A figure could not be drawn or written.
    #[error("{path}: cannot render figure: {detail}")]
    Render {
        /// The image file.
        path: PathBuf,
        /// What plotters reported.
        detail: String,
    },
    /// The compute backend reported a failure (libtorch's exceptions arrive here).
    #[error("backend: {0}")]
    Backend(String),
    /// The caller abandoned the work (`Progress::cancelled`); nothing was committed.
    #[error("cancelled before the commit; the run is unchanged")]
    Cancelled,
    /// An injected failure (tests of crash safety); never raised in normal use.
    #[error("failpoint {0} triggered")]
    Failpoint(String),
}

fn describe_ids(unknown: &[u64], deleted: &[u64]) -> String {
    let mut parts = Vec::new();
    if !unknown.is_empty() {
        parts.push(format!(
            "{} unknown sample id(s) (not in the training set): {}",
            unknown.len(),
            list(unknown)
        ));
    }
    if !deleted.is_empty() {
        parts.push(format!(
            "{} sample id(s) already forgotten: {}",
            deleted.len(),
            list(deleted)
        ));
    }
    parts.join("; ")
}

fn list(ids: &[u64]) -> String {
    const SHOW: usize = 20;
    let mut s: Vec<String> = ids.iter().take(SHOW).map(u64::to_string).collect();
    if ids.len() > SHOW {
        s.push(format!("... ({} more)", ids.len() - SHOW));
    }
    s.join(", ")
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|cause| Error::Io {
            path: path.into(),
            cause,
        })
    }
}

/// Shorthand for an [`Error::Invalid`].
pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Error {
    Error::Invalid {
        what,
        detail: detail.into(),
    }
}

//! What can stop the service.

use std::path::PathBuf;

/// The service's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine refused or failed (opening the run, forgetting, committing).
    #[error(transparent)]
    Engine(#[from] obliviate::Error),
    /// The request queue's SQLite file failed.
    #[error("request queue {path}: {cause}")]
    Queue {
        /// The queue database.
        path: PathBuf,
        /// The SQLite error.
        cause: rusqlite::Error,
    },
    /// A setting that cannot be served safely.
    #[error("{0}")]
    Config(String),
    /// Binding the address or running the HTTP server failed.
    #[error("{what}: {cause}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// A queue row the service did not write as it is.
    #[error("request queue: {0}")]
    Corrupt(String),
    /// A load-check client failed.
    #[error("load check: {0}")]
    Bench(String),
}

/// The service's result.
pub type Result<T> = std::result::Result<T, Error>;

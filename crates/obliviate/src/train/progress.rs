//! Progress reporting from long operations, without tying the library to a terminal.

/// Receives progress of long work; the CLI draws bars, tests and `--json` ignore it.
pub trait Progress {
    /// A phase starts with `total` steps.
    fn start(&mut self, _label: &str, _total: u64) {}
    /// `done` steps of the current phase are finished.
    fn set(&mut self, _done: u64) {}
    /// The current phase ended.
    fn finish(&mut self) {}
    /// True once the caller wants the work abandoned (a service shutting down): a forget checks
    /// it between blocks and fails with `Error::Cancelled`, writing nothing.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Ignores all progress.
pub struct NoProgress;

impl Progress for NoProgress {}

//! What a service is started with, resolved once by the caller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use obliviate::unlearn::ForgetOptions;

use crate::error::{Error, Result};

/// A service's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The run folder served.
    pub run: PathBuf,
    /// Address to listen on (port 0: any free port; see `Server::addr`).
    pub listen: SocketAddr,
    /// Bearer token every endpoint but `/healthz` requires (`None`: no authentication, only
    /// on a loopback address).
    pub token: Option<String>,
    /// Dataset folder (`None`: the run's recorded source or the bundled data).
    pub data_dir: Option<PathBuf>,
    /// How long the worker waits after the oldest queued request for more to join its batch.
    pub batch_window: Duration,
    /// Most ids one batch takes (a request larger than this is a batch of its own).
    pub max_batch_ids: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Time limit of one HTTP request, from its headers to the answer.
    pub request_timeout: Duration,
    /// Time a connection may take to send a request's headers (also how long an idle
    /// keep-alive connection stays open): slow or silent clients cannot hold connections.
    pub header_timeout: Duration,
    /// How batches are forgotten (`skip_missing` is forced on: ids another batch forgot first
    /// get an acknowledgement).
    pub forget: ForgetOptions,
    /// Stop on SIGTERM / Ctrl-C (the command line); a load check stops its servers itself.
    pub handle_signals: bool,
}

impl Config {
    /// Refuses settings that would serve unsafely: no token on a non-loopback address, an empty
    /// token, zero limits.
    pub fn validate(&self) -> Result<()> {
        if self.token.is_none() && !self.listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "refusing to listen on {} without a token: anyone who can reach it could read the \
                 model and queue deletions. Give --token-file (or OBLIVIATE_TOKEN), or listen on \
                 127.0.0.1",
                self.listen
            )));
        }
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(Error::Config("the token is empty".into()));
        }
        if self.max_batch_ids == 0 || self.max_body_bytes == 0 {
            return Err(Error::Config(
                "--max-batch-ids and --max-body-bytes must be at least 1".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::Config("--request-timeout must be above zero".into()));
        }
        Ok(())
    }
}

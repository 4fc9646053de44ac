//! `obliviate serve`: deletion requests over HTTP for one run.
//!
//! Requests are validated against the run, written to a durable SQLite queue (`RUN/queue.sqlite`,
//! fsynced before the 202 goes out) and carried out by one worker thread that coalesces the
//! queued requests into batches (one forget, one commit, a receipt per request). The queue row
//! of a request says where it is; the run's committed receipts say what is done, so after a crash
//! the queue is reconciled from them and no request is lost or carried out twice
//! (ARCHITECTURE.md, "The deletion service").
//!
//! The HTTP side is axum on tokio (the maintained Rust HTTP stack; tower layers give the body
//! limit and timeouts). Training runs on its own OS thread, outside the async runtime, so
//! accepting requests never waits for a batch.

#![forbid(unsafe_code)]

mod api;
pub mod bench;
mod config;
mod error;
mod metrics;
mod queue;
mod server;
mod snapshot;
mod worker;

pub use config::Config;
pub use error::{Error, Result};
pub use server::Server;

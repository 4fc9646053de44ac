//! `obliviate serve`: the deletion service over HTTP (the `obliviate-serve` crate).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use obliviate_serve::{Config, Server};

use crate::args::{Env, StopArgs};
use crate::backend::on_backend;

/// Serve deletion requests over HTTP: a durable queue, batched forgetting, receipts.
#[derive(Args, Debug)]
pub struct Serve {
    /// Run folder (its writer lock is held while serving).
    run: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    token: TokenArgs,
    /// Seconds the worker waits after the oldest queued request for others to join its batch.
    #[arg(long, default_value_t = 5.0)]
    batch_window: f64,
    /// Most ids one batch forgets (a larger request is a batch of its own).
    #[arg(long, default_value_t = 10_000)]
    max_batch_ids: usize,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Seconds one HTTP request may take, from its headers to the answer.
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
    /// Seconds a connection may take to send a request's headers (and stay idle between
    /// requests).
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Skip measuring each batch's test accuracy (`/v1/model` then reports none).
    #[arg(long)]
    no_eval: bool,
    #[command(flatten)]
    stop: StopArgs,
}

/// Where the bearer token comes from.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// File holding the bearer token clients must send (Authorization: Bearer TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The token itself (prefer --token-file: the environment of a process can be read by
    /// others of the same user).
    #[arg(long, env = "OBLIVIATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl TokenArgs {
    /// The token, if one is given.
    pub fn read(&self) -> Result<Option<String>> {
        match (&self.token_file, &self.token) {
            (Some(_), Some(_)) => bail!("give --token-file or OBLIVIATE_TOKEN, not both"),
            (Some(f), None) => {
                let t = std::fs::read_to_string(f)
                    .with_context(|| format!("--token-file {}", f.display()))?;
                let t = t.trim().to_string();
                if t.is_empty() {
                    bail!("--token-file {}: the file is empty", f.display());
                }
                Ok(Some(t))
            }
            (None, t) => Ok(t.clone()),
        }
    }
}

/// Seconds from a flag, refused when negative or not finite.
pub fn seconds(flag: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{flag} {s}: not a number of seconds"))
}

pub fn run(a: &Serve, env: &Env) -> Result<()> {
    let mut forget = a.stop.options(true)?;
    forget.evaluate = !a.no_eval;
    let config = Config {
        run: a.run.clone(),
        listen: a.listen,
        token: a.token.read()?,
        data_dir: env.data_dir.clone(),
        batch_window: seconds("--batch-window", a.batch_window)?,
        max_batch_ids: a.max_batch_ids,
        max_body_bytes: a.max_body_bytes,
        request_timeout: seconds("--request-timeout", a.request_timeout)?,
        header_timeout: seconds("--header-timeout", a.header_timeout)?,
        forget,
        handle_signals: true,
    };
    on_backend!(env, B, device => {
        let server = Server::start::<B>(config, device)?;
        // The address line is what scripts wait for (port 0 binds any free port).
        println!("listening on http://{}", server.addr());
        server.wait()?;
    });
    eprintln!("stopped");
    Ok(())
}

//! Starting and stopping a service: open the run as its writer, reconcile the queue with the
//! committed receipts, then run three things until told to stop: the HTTP server (tokio), the
//! queue's writer thread (group commit: one fsync for the requests that arrived together) and
//! the worker thread (batches).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use burn::tensor::backend::AutodiffBackend;
use obliviate::chain::Chain;
use obliviate::chain::ledger::Ledger;
use obliviate::chain::receipts::Receipt;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;

use crate::api::{AppState, Pending, router};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::queue::{NewRequest, Queue};
use crate::snapshot::Snapshot;
use crate::worker::{self, Settings, Shared};

/// Most requests one queue transaction records.
const GROUP_COMMIT: usize = 512;

/// A running service.
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    http: Option<JoinHandle<Result<()>>>,
}

/// The committed receipts of the run in `run`, parsed.
fn committed_receipts(run: &Path, generation: u64) -> Result<Vec<Receipt>> {
    Ledger::committed_receipts(run, generation)?
        .into_iter()
        .map(|row| {
            serde_json::from_str(&row.body).map_err(|e| {
                Error::Corrupt(format!(
                    "receipt {} of the ledger does not parse ({e}); run `obliviate receipts verify`",
                    row.seq
                ))
            })
        })
        .collect()
}

impl Server {
    /// Opens the run (taking its writer lock), loads its data, reconciles the queue and starts
    /// serving on `config.listen`. Fails before listening if anything is wrong.
    pub fn start<B: AutodiffBackend>(config: Config, device: B::Device) -> Result<Server> {
        config.validate()?;
        let chain = Chain::open_mut(&config.run)?;
        if !chain.manifest().is_complete() {
            return Err(obliviate::Error::Unfinished {
                run: config.run.clone(),
            }
            .into());
        }
        chain.check_present()?;
        let data = Arc::new(chain.load_data(config.data_dir.as_deref())?);
        chain.check_dataset(&data)?;
        let mut queue = Queue::open(&config.run)?;
        let receipts = committed_receipts(&config.run, chain.manifest().generation)?;
        let (done, requeued) = queue.reconcile(&receipts)?;
        if done + requeued > 0 {
            eprintln!(
                "recovered the queue: {done} request(s) found done by their receipts, \
                 {requeued} sent back to the queue"
            );
        }
        let shared = Arc::new(Shared::new(Snapshot::of(&chain)));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|cause| Error::Io {
                what: "starting the async runtime".into(),
                cause,
            })?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(config.listen))
            .map_err(|cause| Error::Io {
                what: format!("listening on {}", config.listen),
                cause,
            })?;
        let addr = listener.local_addr().map_err(|cause| Error::Io {
            what: "reading the bound address".into(),
            cause,
        })?;

        let (accept, pending) = channel::<Pending>();
        let writer_queue = Queue::open(&config.run)?;
        let writer = std::thread::spawn(move || write_requests(writer_queue, &pending));

        let (nudge, nudges) = channel::<()>();
        let (stop, stopped) = watch::channel(false);
        let settings = Settings {
            window: config.batch_window,
            max_ids: config.max_batch_ids,
            forget: config.forget,
        };
        let worker_shared = shared.clone();
        let worker_data = data.clone();
        let worker_stop = stop.clone();
        let worker = std::thread::spawn(move || {
            let r = worker::run::<B>(
                chain,
                &worker_data,
                queue,
                &worker_shared,
                &settings,
                &device,
                &nudges,
            );
            if let Err(e) = &r {
                eprintln!("the worker stopped: {e}");
                if let Ok(mut d) = worker_shared.died.lock() {
                    *d = Some(e.to_string());
                }
            }
            // Whatever ended the worker ends the service.
            let _ = worker_stop.send(true);
            r
        });

        let state = Arc::new(AppState {
            token: config
                .token
                .as_ref()
                .map(|t| Sha256::digest(t.trim().as_bytes()).into()),
            shared: shared.clone(),
            data,
            run: config.run.clone(),
            accept,
            reader: Mutex::new(Queue::open(&config.run)?),
            nudge,
        });
        let app = router(state)
            .layer(DefaultBodyLimit::max(config.max_body_bytes))
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                config.request_timeout,
            ));
        let signals = config.handle_signals;
        let header_timeout = config.header_timeout;
        let signal_stop = stop.clone();
        let http = std::thread::spawn(move || {
            let flag = shared.clone();
            rt.block_on(async move {
                if signals {
                    tokio::spawn(stop_on_signals(signal_stop));
                }
                // The worker abandons its batch at once, while connections drain.
                let mut on_stop = stopped.clone();
                tokio::spawn(async move {
                    let _ = on_stop.wait_for(|s| *s).await;
                    flag.stopping.store(true, Ordering::SeqCst);
                });
                serve_http(listener, app, header_timeout, stopped).await;
            });
            shared.stopping.store(true, Ordering::SeqCst);
            rt.shutdown_timeout(Duration::from_secs(5));
            let worked = worker
                .join()
                .unwrap_or_else(|_| Err(Error::Corrupt("the worker thread panicked".into())));
            let _ = writer.join();
            worked
        });
        Ok(Server {
            addr,
            stop,
            http: Some(http),
        })
    }

    /// The address served (the bound port when `listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the service stops (a signal, or the worker failing) and returns why.
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    /// Stops the service: no new connections, requests in flight answered, a batch in flight
    /// abandoned before its commit (its requests stay queued).
    pub fn stop(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.http.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(Error::Corrupt("the server thread panicked".into()))),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = self.join();
    }
}

/// Longest wait for connections to finish after the stop signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Accepts connections until `stopped`, then lets those open finish (at most [`DRAIN`]).
/// hyper's HTTP/1 connection directly rather than `axum::serve`, for the header-read timeout
/// (axum's server sets no timer, so hyper's own default of 30 s never applies).
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let service = hyper_util::service::TowerToHyperService::new(app.clone());
                    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    eprintln!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stopped.wait_for(|s| *s) => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => eprintln!("connections still open after {DRAIN:?}: closing them"),
    }
}

/// Sets `stop` on SIGTERM or Ctrl-C.
async fn stop_on_signals(stop: watch::Sender<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    eprintln!("stopping: finishing requests in flight, abandoning the batch before its commit");
    let _ = stop.send(true);
}

/// The queue's writer: records requests as they come, all that are waiting in one transaction.
fn write_requests(mut queue: Queue, pending: &Receiver<Pending>) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT {
            match pending.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let items: Vec<NewRequest> = batch.iter().map(|p| p.item.clone()).collect();
        match queue.accept(&items) {
            Ok(answers) => {
                for (p, a) in batch.into_iter().zip(answers) {
                    let _ = p.reply.send(Ok(a));
                }
            }
            Err(e) => {
                eprintln!("recording requests failed: {e}");
                for p in batch {
                    let _ = p.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

//! The HTTP API under `/v1`: handlers, authentication, and the JSON shape of errors
//! (`{"error": "..."}` plus details). Handlers never touch the chain: they read the worker's
//! snapshot, the queue (its own connection) and the ledger, and hand new requests to the
//! queue's writer thread.

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use obliviate::chain::ledger::Ledger;
use obliviate::chain::receipts::Receipt;
use obliviate::data::Dataset;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use crate::metrics;
use crate::queue::{Accepted, NewRequest, Queue};
use crate::worker::Shared;

/// A request for the queue's writer thread, with where to send its answer.
pub struct Pending {
    /// What to accept.
    pub item: NewRequest,
    /// The answer (an error in words when the queue failed).
    pub reply: oneshot::Sender<Result<Accepted, String>>,
}

/// What every handler can reach.
pub struct AppState {
    /// SHA-256 of the bearer token (compared in constant time), if one is required.
    pub token: Option<[u8; 32]>,
    /// The worker's snapshot and counters.
    pub shared: Arc<Shared>,
    /// The run's training data (validation of ids).
    pub data: Arc<Dataset>,
    /// The run folder.
    pub run: PathBuf,
    /// To the queue's writer thread.
    pub accept: Sender<Pending>,
    /// Reads of the queue.
    pub reader: Mutex<Queue>,
    /// Wakes the worker.
    pub nudge: Sender<()>,
}

type Ctx = Arc<AppState>;

/// Longest `Idempotency-Key` accepted.
const MAX_KEY: usize = 255;

/// The router: `/healthz` open, everything else behind the token (when one is set).
pub fn router(state: Ctx) -> Router {
    Router::new()
        .route("/v1/requests", post(post_request))
        .route("/v1/requests/{id}", get(get_request))
        .route("/v1/model", get(get_model))
        .route("/v1/model/weights", get(get_weights))
        .route("/v1/receipts", get(get_receipts))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(healthz))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// A JSON error response.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

async fn auth(State(s): State<Ctx>, req: Request, next: Next) -> Response {
    let Some(expected) = &s.token else {
        return next.run(req).await;
    };
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = given.is_some_and(|t| {
        let digest: [u8; 32] = Sha256::digest(t.trim().as_bytes()).into();
        bool::from(digest.ct_eq(expected))
    });
    if ok {
        return next.run(req).await;
    }
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required (Authorization: Bearer TOKEN)",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The body of `POST /v1/requests`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    #[serde(default)]
    ids: Vec<u64>,
    #[serde(default)]
    groups: Vec<String>,
}

async fn post_request(State(s): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= MAX_KEY => Some(k.to_string()),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters"),
            );
        }
    };
    let asked: PostBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not a request ({{\"ids\": [...]}} or {{\"groups\": [...]}}): {e}"
                ),
            );
        }
    };
    let snapshot = s.shared.snapshot();
    let resolved = match snapshot.resolve(&s.data, &asked.ids, &asked.groups) {
        Ok(b) => b,
        Err(refusal) => {
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(refusal)).into_response();
        }
    };
    let (reply, answer) = oneshot::channel();
    let pending = Pending {
        item: NewRequest {
            key,
            body: resolved,
            accepted_unix: obliviate::unlearn::now_unix(),
        },
        reply,
    };
    if s.accept.send(pending).is_err() {
        return internal("the request queue is closed (the service is stopping)");
    }
    let accepted = match answer.await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return internal(format!("the request was not recorded: {e}")),
        Err(_) => return internal("the request queue stopped before recording the request"),
    };
    let _ = s.nudge.send(());
    let queued = |id: &str| {
        let mut r = (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "status": "queued" })),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("/v1/requests/{id}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    };
    match accepted {
        Accepted::New(id) | Accepted::Repeat(id) => queued(&id),
        Accepted::Conflict(id) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": "this Idempotency-Key was used for a different request",
                "id": id,
            })),
        )
            .into_response(),
    }
}

/// Runs `f` with the queue's read connection on the blocking pool.
async fn with_reader<T: Send + 'static>(
    s: &Ctx,
    f: impl FnOnce(&Queue) -> crate::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || match s.reader.lock() {
        Ok(q) => f(&q).map_err(|e| e.to_string()),
        Err(_) => Err("the queue reader failed earlier".to_string()),
    })
    .await
    .map_err(internal)?
    .map_err(internal)
}

async fn get_request(State(s): State<Ctx>, Path(id): Path<String>) -> Response {
    let row = match with_reader(&s, move |q| q.get(&id)).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(row) = row else {
        return error(StatusCode::NOT_FOUND, "no request has this id");
    };
    let mut out = json!({
        "id": row.id,
        "status": row.status,
        "accepted_unix": row.accepted_unix,
        "ids": row.body.ids,
    });
    if !row.body.groups.is_empty() {
        out["groups"] = json!(row.body.groups);
    }
    if row.batch > 0 {
        out["batch"] = json!(row.batch);
    }
    if let Some(e) = row.error {
        out["error"] = json!(e);
    }
    if let Some(r) = row.receipt {
        out["receipt"] = json!(r);
    }
    Json(out).into_response()
}

async fn get_model(State(s): State<Ctx>) -> Response {
    let m = s.shared.snapshot();
    Json(json!({
        "generation": m.generation,
        "model_sha256": m.model_sha256,
        "test_accuracy": m.test_accuracy,
        "forgotten_samples": m.deleted.len(),
        "receipts_head": m.receipts_head,
    }))
    .into_response()
}

async fn get_weights(State(s): State<Ctx>) -> Response {
    // A commit may remove the file between reading the snapshot and opening it: the next
    // snapshot names the new one. An open file stays readable whatever happens to its name.
    for _ in 0..3 {
        let m = s.shared.snapshot();
        match tokio::fs::File::open(&m.model_path).await {
            Ok(f) => {
                let len = f.metadata().await.map(|md| md.len()).ok();
                let mut r =
                    HttpBody::from_stream(tokio_util::io::ReaderStream::new(f)).into_response();
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                if let Some(len) = len {
                    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                }
                if let Ok(v) = HeaderValue::from_str(&m.model_sha256) {
                    h.insert("x-model-sha256", v);
                }
                h.insert("x-generation", HeaderValue::from(m.generation));
                return r;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return internal(format!("{}: {e}", m.model_path.display())),
        }
    }
    internal("the served model file is missing")
}

#[derive(Deserialize)]
struct Since {
    #[serde(default)]
    since: u64,
}

async fn get_receipts(State(s): State<Ctx>, Query(q): Query<Since>) -> Response {
    let m = s.shared.snapshot();
    let run = s.run.clone();
    let rows = tokio::task::spawn_blocking(move || {
        Ledger::committed_receipts(&run, m.generation).map(|rows| (rows, m))
    })
    .await;
    let (rows, m) = match rows {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    let mut out = Vec::new();
    for row in rows.into_iter().filter(|r| r.seq > q.since) {
        let receipt: Receipt = match serde_json::from_str(&row.body) {
            Ok(r) => r,
            Err(e) => return internal(format!("receipt {} does not parse: {e}", row.seq)),
        };
        out.push(json!({ "seq": row.seq, "sha256": row.sha256, "receipt": receipt }));
    }
    Json(json!({ "receipts": out, "head": m.receipts_head, "generation": m.generation }))
        .into_response()
}

async fn get_metrics(State(s): State<Ctx>) -> Response {
    let counts = match with_reader(&s, |q| q.counts()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let counters = s
        .shared
        .counters
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    let m = s.shared.snapshot();
    let busy = s.shared.busy.load(std::sync::atomic::Ordering::SeqCst);
    let text = metrics::render(&counts, &counters, m.deleted.len(), m.generation, busy);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn healthz(State(s): State<Ctx>) -> Response {
    let died = s.shared.died.lock().ok().and_then(|d| d.clone());
    match died {
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "failing", "error": why })),
        )
            .into_response(),
        None => Json(json!({ "status": "ok" })).into_response(),
    }
}

//! The durable request queue: one SQLite file in the run folder, in WAL mode with
//! `synchronous=FULL`, so a committed insert has reached the disk before its 202 is sent.
//!
//! Rows move `queued` → `running` → `done` (or `failed`). The run's committed receipts, not
//! this file, say whether a request was carried out: [`Queue::reconcile`] marks a request done
//! when a receipt names it and sends a `running` one back to `queued` otherwise, so a crash at
//! any point leaves every accepted request to be carried out exactly once.
//!
//! Every write transaction begins `IMMEDIATE` (takes the write lock first), so a writer waits
//! for another instead of failing on a stale read snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use obliviate::chain::receipts::Receipt;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A request's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted, waiting for a batch.
    Queued,
    /// In the batch being carried out.
    Running,
    /// Carried out: its receipt is committed.
    Done,
    /// Its batch failed with an error that retrying would not fix.
    Failed,
}

impl Status {
    /// All states, for metrics.
    pub const ALL: [Status; 4] = [
        Status::Queued,
        Status::Running,
        Status::Done,
        Status::Failed,
    ];

    /// The stored spelling.
    pub fn name(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// What a request asked, as accepted (groups resolved to ids at acceptance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// The ids to forget (ascending, once each).
    pub ids: Vec<u64>,
    /// The groups named, if the request named groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// A queue row.
#[derive(Debug, Clone)]
pub struct Row {
    /// Arrival order.
    pub seq: u64,
    /// The request's id (`req-N`), which its receipt names.
    pub id: String,
    /// What was asked.
    pub body: Body,
    /// Unix time of acceptance.
    pub accepted_unix: u64,
    /// Where it is.
    pub status: Status,
    /// The worker batch it ran in (0: none yet).
    pub batch: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// Its receipt, once done.
    pub receipt: Option<Receipt>,
}

/// A request to accept.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// The `Idempotency-Key` header, if given.
    pub key: Option<String>,
    /// What is asked.
    pub body: Body,
    /// Unix time of arrival.
    pub accepted_unix: u64,
}

/// What accepting a request gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A new row with this id.
    New(String),
    /// The idempotency key was used before for the same request: its id.
    Repeat(String),
    /// The idempotency key was used before for a different request: its id.
    Conflict(String),
}

/// A connection to the queue. Each thread opens its own; SQLite serialises writers.
pub struct Queue {
    conn: Connection,
    path: PathBuf,
}

impl Queue {
    /// Opens (creating) the queue of the run folder `run`.
    pub fn open(run: &Path) -> Result<Queue> {
        let path = run.join(obliviate::chain::layout::QUEUE);
        let e = failed(&path);
        let conn = Connection::open(&path).map_err(&e)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(&e)?;
        // A file of that name that the service did not write is refused before anything is
        // written to it (reading a file that is not SQLite fails here too).
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(&e)?;
        let ours = conn
            .prepare("SELECT 1 FROM pragma_table_info('requests') WHERE name = 'idempotency_key'")
            .and_then(|mut s| s.exists([]))
            .map_err(&e)?;
        if tables.iter().any(|t| t != "requests") || (!tables.is_empty() && !ours) {
            return Err(Error::Corrupt(format!(
                "{} is not a request queue this service wrote (tables {tables:?}); move it away",
                path.display()
            )));
        }
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS requests (
                 seq INTEGER PRIMARY KEY,
                 id TEXT NOT NULL UNIQUE,
                 idempotency_key TEXT UNIQUE,
                 body TEXT NOT NULL,
                 accepted_unix INTEGER NOT NULL,
                 status TEXT NOT NULL,
                 batch INTEGER NOT NULL DEFAULT 0,
                 error TEXT,
                 receipt TEXT
             );
             CREATE INDEX IF NOT EXISTS requests_status ON requests (status, seq);",
        )
        .map_err(&e)?;
        drop(e);
        Ok(Queue { conn, path })
    }

    fn err(&self, cause: rusqlite::Error) -> Error {
        failed(&self.path)(cause)
    }

    /// Accepts `items` in one transaction (one fsync for all: the writer thread's group
    /// commit). Each gets its answer; a failed transaction fails them all.
    pub fn accept(&mut self, items: &[NewRequest]) -> Result<Vec<Accepted>> {
        let e = failed(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        let mut next: u64 = tx
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM requests", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(&e)? as u64;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let body = serde_json::to_string(&item.body)
                .map_err(|x| Error::Corrupt(format!("cannot encode a request: {x}")))?;
            if let Some(key) = &item.key {
                let before: Option<(String, String)> = tx
                    .query_row(
                        "SELECT id, body FROM requests WHERE idempotency_key = ?1",
                        params![key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(&e)?;
                if let Some((id, first)) = before {
                    out.push(match first == body {
                        true => Accepted::Repeat(id),
                        false => Accepted::Conflict(id),
                    });
                    continue;
                }
            }
            next += 1;
            let id = format!("req-{next:06}");
            tx.execute(
                "INSERT INTO requests (seq, id, idempotency_key, body, accepted_unix, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued')",
                params![next as i64, id, item.key, body, item.accepted_unix as i64],
            )
            .map_err(&e)?;
            out.push(Accepted::New(id));
        }
        tx.commit().map_err(&e)?;
        Ok(out)
    }

    /// The row of request `id`.
    pub fn get(&self, id: &str) -> Result<Option<Row>> {
        let mut rows = self.select("WHERE id = ?1", params![id])?;
        Ok(rows.pop())
    }

    /// Rows in `status`, in arrival order.
    pub fn with_status(&self, status: Status) -> Result<Vec<Row>> {
        self.oldest(status, u64::MAX)
    }

    /// The `limit` oldest rows in `status`.
    pub fn oldest(&self, status: Status, limit: u64) -> Result<Vec<Row>> {
        self.select(
            "WHERE status = ?1 ORDER BY seq LIMIT ?2",
            params![status.name(), limit.min(i64::MAX as u64) as i64],
        )
    }

    fn select(&self, clause: &str, args: impl rusqlite::Params) -> Result<Vec<Row>> {
        let sql = format!(
            "SELECT seq, id, body, accepted_unix, status, batch, error, receipt FROM requests {clause}"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|c| self.err(c))?;
        let raw = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)? as u64,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)? as u64,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .map_err(|c| self.err(c))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|c| self.err(c))?;
        raw.into_iter()
            .map(
                |(seq, id, body, accepted_unix, status, batch, error, receipt)| {
                    let bad = |what: &str| Error::Corrupt(format!("request {id}: {what}"));
                    Ok(Row {
                        seq,
                        body: serde_json::from_str(&body)
                            .map_err(|x| bad(&format!("body: {x}")))?,
                        accepted_unix,
                        status: Status::parse(&status)
                            .ok_or_else(|| bad(&format!("unknown status {status:?}")))?,
                        batch,
                        error,
                        receipt: receipt
                            .map(|r| serde_json::from_str(&r))
                            .transpose()
                            .map_err(|x| bad(&format!("receipt: {x}")))?,
                        id,
                    })
                },
            )
            .collect()
    }

    /// Requests per status.
    pub fn counts(&self) -> Result<BTreeMap<&'static str, u64>> {
        let mut out: BTreeMap<&'static str, u64> =
            Status::ALL.iter().map(|s| (s.name(), 0)).collect();
        let mut stmt = self
            .conn
            .prepare("SELECT status, COUNT(*) FROM requests GROUP BY status")
            .map_err(|c| self.err(c))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|c| self.err(c))?;
        for row in rows {
            let (status, n) = row.map_err(|c| self.err(c))?;
            if let Some(s) = Status::parse(&status) {
                out.insert(s.name(), n);
            }
        }
        Ok(out)
    }

    /// The last batch number used.
    pub fn last_batch(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(batch), 0) FROM requests", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(|c| self.err(c))
    }

    /// Marks requests `seqs` running in `batch`.
    pub fn start(&mut self, seqs: &[u64], batch: u64) -> Result<()> {
        self.update(seqs, |tx, &seq| {
            tx.execute(
                "UPDATE requests SET status = 'running', batch = ?2 WHERE seq = ?1",
                params![seq as i64, batch as i64],
            )
        })
    }

    /// Marks each request done with its receipt.
    pub fn finish(&mut self, done: &[(u64, Receipt)]) -> Result<()> {
        let bodies: Vec<(u64, String)> = done
            .iter()
            .map(|(seq, r)| {
                serde_json::to_string(r)
                    .map(|b| (*seq, b))
                    .map_err(|x| Error::Corrupt(format!("cannot encode a receipt: {x}")))
            })
            .collect::<Result<_>>()?;
        self.update(&bodies, |tx, (seq, body)| {
            tx.execute(
                "UPDATE requests SET status = 'done', error = NULL, receipt = ?2 WHERE seq = ?1",
                params![*seq as i64, body],
            )
        })
    }

    /// Marks requests `seqs` failed with `error`.
    pub fn fail(&mut self, seqs: &[u64], error: &str) -> Result<()> {
        self.update(seqs, |tx, &seq| {
            tx.execute(
                "UPDATE requests SET status = 'failed', error = ?2 WHERE seq = ?1",
                params![seq as i64, error],
            )
        })
    }

    /// Sends requests `seqs` back to the queue (their batch was abandoned).
    pub fn requeue(&mut self, seqs: &[u64]) -> Result<()> {
        self.update(seqs, |tx, &seq| {
            tx.execute(
                "UPDATE requests SET status = 'queued' WHERE seq = ?1 AND status = 'running'",
                params![seq as i64],
            )
        })
    }

    /// Runs `f` on each of `items` in one write transaction.
    fn update<T>(
        &mut self,
        items: &[T],
        f: impl Fn(&rusqlite::Transaction<'_>, &T) -> rusqlite::Result<usize>,
    ) -> Result<()> {
        let e = failed(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        for item in items {
            f(&tx, item).map_err(&e)?;
        }
        tx.commit().map_err(&e)
    }

    /// Brings the queue in line with the run's committed `receipts` after a restart: a queued
    /// or running request that a receipt names (same id, same ids) is done; any other running
    /// one is queued again. Returns (done, requeued).
    pub fn reconcile(&mut self, receipts: &[Receipt]) -> Result<(usize, usize)> {
        let by_name: BTreeMap<&str, &Receipt> =
            receipts.iter().map(|r| (r.request.as_str(), r)).collect();
        let mut open = self.with_status(Status::Running)?;
        open.extend(self.with_status(Status::Queued)?);
        let mut done = Vec::new();
        let mut back = Vec::new();
        for row in open {
            match by_name.get(row.id.as_str()) {
                Some(r) if answers(r, &row.body) => done.push((row.seq, (*r).clone())),
                _ if row.status == Status::Running => back.push(row.seq),
                _ => {}
            }
        }
        self.finish(&done)?;
        self.requeue(&back)?;
        Ok((done.len(), back.len()))
    }
}

/// The error of the queue at `path` failing with a SQLite error.
fn failed(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |cause| Error::Queue {
        path: path.to_path_buf(),
        cause,
    }
}

/// True when receipt `r` covers exactly the ids of `body` (forgotten or skipped).
pub fn answers(r: &Receipt, body: &Body) -> bool {
    let mut all: Vec<u64> = r.ids.iter().chain(&r.skipped).copied().collect();
    all.sort_unstable();
    all.dedup();
    all == body.ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_file_of_the_queue_s_name_is_refused_untouched() {
        let dir = std::env::temp_dir().join(format!("obliviate-queue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(obliviate::chain::layout::QUEUE);
        // Not SQLite at all.
        std::fs::write(&path, b"my notes, not a database").unwrap();
        assert!(Queue::open(&dir).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"my notes, not a database");
        // Someone else's SQLite database.
        std::fs::remove_file(&path).unwrap();
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE requests (who TEXT); INSERT INTO requests VALUES ('x');")
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let e = Queue::open(&dir).err().unwrap().to_string();
        assert!(e.contains("not a request queue this service wrote"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // Its own file opens again.
        std::fs::remove_file(&path).unwrap();
        drop(Queue::open(&dir).unwrap());
        drop(Queue::open(&dir).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

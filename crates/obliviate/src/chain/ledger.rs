//! The request ledger: one SQLite row per committed forget request.
//!
//! The manifest is the commit point of a request; the ledger row is written just before it,
//! tagged with the generation the request produces. Rows of a generation newer than the
//! manifest's belong to a commit that never happened: readers ignore them and the next writer
//! deletes them. So the ledger and the chain always agree.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::layout::LEDGER;
use super::receipts::{GENESIS, Receipt, StoredReceipt};
use crate::error::{Error, Result};
use crate::store::sha256;

/// Why retraining stopped at block s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// The residual decayed to ε of the last affected block's.
    Fit,
    /// The residuals stayed below the negligible share of the stored increments.
    Negligible,
    /// The residual fell below ρ times the first one.
    Relative,
    /// Retraining reached the last block.
    End,
    /// Nothing was retrained: the request acknowledged ids earlier requests had forgotten
    /// (`unlearn::acknowledge`).
    Nothing,
}

impl StopReason {
    /// The spelling in JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Fit => "fit",
            StopReason::Negligible => "negligible",
            StopReason::Relative => "relative",
            StopReason::End => "end",
            StopReason::Nothing => "none",
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Fitted power law y = a·x^(−h) + b of a residual series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerLaw {
    /// Scale.
    pub a: f64,
    /// Offset.
    pub b: f64,
    /// Decay exponent.
    pub h: f64,
}

/// One segment of a request: blocks `first_block..=stop_block` retrained, the last of the
/// request's affected blocks among them being `last_affected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Where retraining (re)started.
    pub first_block: usize,
    /// The segment's last affected block.
    pub last_affected: usize,
    /// Where it stopped.
    pub stop_block: usize,
    /// ‖δ_k − δ'_k‖₁ for k = first_block..=stop_block.
    pub residuals: Vec<f64>,
    /// The fit the rule used at the stop (per parameter), if any.
    pub fit: Option<PowerLaw>,
    /// Why it stopped.
    pub stop_reason: StopReason,
}

/// A committed forget request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Sequence number (1-based).
    pub id: u64,
    /// Manifest generation this request produced.
    pub generation: u64,
    /// Unix time of the commit.
    pub created_unix: u64,
    /// Ids forgotten.
    pub ids: Vec<u64>,
    /// First affected block d.
    pub first_block: usize,
    /// Last affected block L.
    pub last_block: usize,
    /// Block s where retraining stopped.
    pub stop_block: usize,
    /// ‖δ_k − δ'_k‖₁ for k = d..=s.
    pub residuals_l1: Vec<f64>,
    /// ‖δ_k − δ'_k‖₂ for k = d..=s.
    pub residuals_l2: Vec<f64>,
    /// Power-law fit at the stop (when the fit rule was used and a fit existed).
    pub fit: Option<PowerLaw>,
    /// Why the last segment stopped.
    pub stop_rule: StopReason,
    /// The segments (absent in rows written before segmented forgetting: one span).
    #[serde(default)]
    pub segments: Vec<Segment>,
    /// Wall-clock seconds of the request.
    pub seconds: f64,
    /// Test accuracy of the unlearned model, when it was measured.
    pub test_accuracy: Option<f64>,
    /// SHA-256 of the unlearned model file.
    pub model_sha256: String,
    /// SHA-256 of the served model file the request started from (absent in rows written
    /// before receipts).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model_before_sha256: String,
}

/// An open ledger.
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

impl Ledger {
    /// The committed requests of the run in `run` whose manifest is at `generation`, read
    /// without creating or changing anything. Every generation 1..=`generation` must have
    /// exactly one row (each committed forget writes one): a missing ledger or row is an error.
    pub fn committed(run: &Path, generation: u64) -> Result<Vec<Request>> {
        let path = run.join(LEDGER);
        let rows = match Ledger::read_only(run)? {
            Some(ledger) => ledger.list(generation)?,
            None => Vec::new(),
        };
        let generations: Vec<u64> = rows.iter().map(|r| r.generation).collect();
        if generations != (1..=generation).collect::<Vec<_>>() {
            return Err(Error::Chain {
                run: run.to_path_buf(),
                detail: format!(
                    "{} records {generation} committed request(s), but {} holds {} matching row(s){}",
                    super::layout::MANIFEST,
                    LEDGER,
                    rows.len(),
                    if path.exists() {
                        ""
                    } else {
                        " (the file is missing)"
                    }
                ),
            });
        }
        Ok(rows)
    }

    /// Rolls back what a writer killed inside a ledger transaction left (SQLite's hot
    /// journal), if anything: read-only connections cannot, so until a writer does, every
    /// reader of the ledger fails. The run's writer calls it when it opens the run.
    pub fn recover(run: &Path) -> Result<()> {
        if !run.join(LEDGER).exists() {
            return Ok(());
        }
        let ledger = Ledger::open(run)?;
        // Any read rolls a hot journal back.
        ledger
            .conn
            .query_row("SELECT count(*) FROM requests", [], |row| {
                row.get::<_, i64>(0)
            })
            .map_err(|e| ledger.err(e))?;
        Ok(())
    }

    /// The ledger of the run in `run` opened read-only (`None` when there is none).
    fn read_only(run: &Path) -> Result<Option<Ledger>> {
        let path = run.join(LEDGER);
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|cause| Error::Ledger {
            path: path.clone(),
            cause,
        })?;
        Ok(Some(Ledger { conn, path }))
    }

    /// The committed receipt rows (generation ≤ `generation`) of the run in `run`, by number,
    /// as stored (see [`super::receipts::verify`]); none for a ledger that predates receipts.
    pub fn committed_receipts(run: &Path, generation: u64) -> Result<Vec<StoredReceipt>> {
        let Some(ledger) = Ledger::read_only(run)? else {
            return Ok(Vec::new());
        };
        let has_table: bool = ledger
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'receipts'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map_err(|e| ledger.err(e))?
            > 0;
        if !has_table {
            return Ok(Vec::new());
        }
        ledger.receipt_rows(generation)
    }

    fn receipt_rows(&self, generation: u64) -> Result<Vec<StoredReceipt>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, generation, body, sha256 FROM receipts WHERE generation <= ?1 \
                 ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![generation.min(i64::MAX as u64) as i64], |row| {
                Ok(StoredReceipt {
                    seq: row.get::<_, i64>(0)? as u64,
                    generation: row.get::<_, i64>(1)? as u64,
                    body: row.get(2)?,
                    sha256: row.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        let out: std::result::Result<Vec<StoredReceipt>, _> = rows.collect();
        out.map_err(|e| self.err(e))
    }

    /// Opens (creating if needed) the ledger of a run folder, for its writer.
    pub fn open(run: &Path) -> Result<Ledger> {
        let path = run.join(LEDGER);
        let e = |cause| Error::Ledger {
            path: path.clone(),
            cause,
        };
        let conn = Connection::open(&path).map_err(e)?;
        // One transaction: a new ledger costs one journal commit, not one per table.
        conn.execute_batch(
            "PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;
             BEGIN;
             CREATE TABLE IF NOT EXISTS requests (
                 id INTEGER PRIMARY KEY,
                 generation INTEGER NOT NULL UNIQUE,
                 body TEXT NOT NULL,
                 sha256 TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS receipts (
                 seq INTEGER PRIMARY KEY,
                 generation INTEGER NOT NULL,
                 body TEXT NOT NULL,
                 sha256 TEXT NOT NULL
             );
             COMMIT;",
        )
        .map_err(e)?;
        Ok(Ledger { conn, path })
    }

    fn err(&self, cause: rusqlite::Error) -> Error {
        Error::Ledger {
            path: self.path.clone(),
            cause,
        }
    }

    /// Appends a request and its receipts (durably) in one transaction. Numbers each receipt
    /// and links it to the one before (the last stored, committed receipt); returns the last
    /// one's SHA-256, which the manifest of `r.generation` records.
    pub fn append(&mut self, r: &Request, receipts: &mut [Receipt]) -> Result<Option<String>> {
        let json =
            |what: &'static str, e: serde_json::Error| crate::error::invalid(what, e.to_string());
        let body = serde_json::to_string(r).map_err(|e| json("ledger row", e))?;
        let last = self
            .conn
            .query_row(
                "SELECT seq, sha256 FROM receipts ORDER BY seq DESC LIMIT 1",
                [],
                |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let (mut seq, mut previous) = last.unwrap_or((0, GENESIS.to_string()));
        let mut stored = Vec::with_capacity(receipts.len());
        for receipt in receipts.iter_mut() {
            seq += 1;
            receipt.seq = seq;
            receipt.generation = r.generation;
            receipt.previous_sha256 = previous;
            let body = serde_json::to_string(receipt).map_err(|e| json("receipt", e))?;
            previous = sha256(body.as_bytes());
            stored.push((seq, body, previous.clone()));
        }
        crate::store::atomic::hit("ledger:before-append")?;
        let e = |cause| Error::Ledger {
            path: self.path.clone(),
            cause,
        };
        let tx = self.conn.transaction().map_err(e)?;
        tx.execute(
            "INSERT INTO requests (id, generation, body, sha256) VALUES (?1, ?2, ?3, ?4)",
            params![
                r.id as i64,
                r.generation as i64,
                body,
                sha256(body.as_bytes())
            ],
        )
        .map_err(e)?;
        for (seq, body, hash) in &stored {
            tx.execute(
                "INSERT INTO receipts (seq, generation, body, sha256) VALUES (?1, ?2, ?3, ?4)",
                params![*seq as i64, r.generation as i64, body, hash],
            )
            .map_err(e)?;
        }
        crate::store::atomic::hit("ledger:in-append")?;
        tx.commit().map_err(e)?;
        crate::store::atomic::hit("ledger:after-append")?;
        Ok(stored.last().map(|s| s.2.clone()))
    }

    /// Deletes rows of generations after `generation` (an interrupted commit's).
    pub fn discard_after(&self, generation: u64) -> Result<usize> {
        // Usually there is nothing to discard: look before taking the write lock (a write
        // transaction costs a journal commit even when it deletes nothing).
        let stale: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM requests WHERE generation > ?1)
                     OR EXISTS (SELECT 1 FROM receipts WHERE generation > ?1)",
                params![generation as i64],
                |row| row.get(0),
            )
            .map_err(|e| self.err(e))?;
        if !stale {
            return Ok(0);
        }
        let gone = |table: &str| {
            self.conn
                .execute(
                    &format!("DELETE FROM {table} WHERE generation > ?1"),
                    params![generation as i64],
                )
                .map_err(|e| self.err(e))
        };
        gone("receipts")?;
        gone("requests")
    }

    /// Committed requests (generation ≤ `generation`), oldest first; rows are checked against
    /// their stored SHA-256.
    pub fn list(&self, generation: u64) -> Result<Vec<Request>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, body, sha256 FROM requests WHERE generation <= ?1 ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![generation as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body, hash) = row.map_err(|e| self.err(e))?;
            let actual = sha256(body.as_bytes());
            if actual != hash {
                return Err(Error::Checksum {
                    path: self.path.join(format!("request {id}")),
                    algo: "sha256",
                    expected: hash,
                    actual,
                });
            }
            out.push(serde_json::from_str(&body).map_err(|e| Error::Format {
                path: self.path.clone(),
                format: "ledger row",
                offset: 0,
                detail: format!("request {id}: {e}"),
            })?);
        }
        Ok(out)
    }
}

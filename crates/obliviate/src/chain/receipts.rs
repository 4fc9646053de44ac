//! Deletion receipts: one per request, hash-chained, checkable by an auditor.
//!
//! A receipt says what was asked (the ids, and the groups they were named by), where it landed
//! (the generation and the ledger request, the *batch*, that removed them), what it cost
//! (blocks retrained, the residual trace) and what it changed (the served model's SHA-256
//! before and after). Each receipt carries the SHA-256 of the one before it, and the manifest
//! records the latest one's (sealed with the manifest), so an edited, removed, inserted or
//! reordered row is found by [`verify`] and named by its number.
//!
//! Receipts live in the ledger's SQLite file, written in the same transaction as their batch's
//! ledger row and tagged with its generation: like ledger rows they count once the manifest
//! of that generation is committed, and an interrupted commit's are discarded.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Chain;
use super::ledger::{Ledger, Request};
use crate::error::Result;
use crate::store::sha256;

/// What the first receipt names as its predecessor.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One deletion request's receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Position in the run's receipt log (1-based, no gaps).
    pub seq: u64,
    /// The requester's name for the request (`request-N` for the ledger request N when the
    /// requester gave none).
    pub request: String,
    /// Ids the request asked for that the batch removed.
    pub ids: Vec<u64>,
    /// Groups the request named (its ids are theirs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Ids the request asked for that were unknown or already forgotten (skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<u64>,
    /// The ledger request (the forget) that carried the request out: the one that removed its
    /// ids, or, when earlier requests had forgotten them all, the acknowledgement that records
    /// so (nothing retrained, the model unchanged).
    pub batch: u64,
    /// The ledger requests that had already forgotten the skipped ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_batches: Vec<u64>,
    /// The manifest generation the batch committed.
    pub generation: u64,
    /// Blocks the batch retrained.
    pub blocks_retrained: usize,
    /// The batch's residuals ‖δ_k − δ'_k‖₁, retrained block by block.
    pub residuals: Vec<f64>,
    /// SHA-256 of the served model file before the batch.
    pub model_before_sha256: String,
    /// SHA-256 of the served model file the batch committed.
    pub model_after_sha256: String,
    /// Unix time the request was made.
    pub requested_unix: u64,
    /// Unix time the batch was committed.
    pub committed_unix: u64,
    /// SHA-256 of the previous receipt's stored body ([`GENESIS`] for the first).
    pub previous_sha256: String,
}

/// A receipt row as stored: its number, generation tag, body and the body's SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReceipt {
    /// Row number.
    pub seq: u64,
    /// Generation tag.
    pub generation: u64,
    /// The receipt's JSON.
    pub body: String,
    /// The stored SHA-256 of `body`.
    pub sha256: String,
}

/// What a verification found wrong with one receipt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// The receipt's row number (0: the log as a whole).
    pub receipt: u64,
    /// What is wrong, in words.
    pub detail: String,
}

/// Result of [`verify`].
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Committed receipts read (those that parse).
    pub receipts: Vec<Receipt>,
    /// Everything found wrong, by receipt; empty when the log is sound.
    pub problems: Vec<Problem>,
    /// Facts that are not faults (requests that predate receipts).
    pub notes: Vec<String>,
}

impl Verification {
    /// True when nothing is wrong.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Recomputes the receipt chain of the run in `run` and checks every receipt against its
/// stored hash, its predecessor, its batch's ledger row, the manifest's forgotten ids and the
/// manifest's record of the latest receipt. A damaged ledger row or manifest is an error; a
/// receipt that does not check out is a [`Problem`] naming it.
pub fn verify(run: &Path) -> Result<Verification> {
    let chain = Chain::open(run)?;
    let m = chain.manifest();
    let requests = Ledger::committed(run, m.generation)?;
    let rows = Ledger::committed_receipts(run, m.generation)?;
    let mut v = Verification {
        receipts: Vec::new(),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let mut problem = |receipt: u64, detail: String| v.problems.push(Problem { receipt, detail });
    let by_id: HashMap<u64, &Request> = requests.iter().map(|r| (r.id, r)).collect();
    let deleted: BTreeSet<u64> = m.deleted.iter().copied().collect();
    let mut previous = (0u64, GENESIS.to_string());
    let mut covered = BTreeSet::new();
    let mut receipts = Vec::new();
    for row in &rows {
        let n = row.seq;
        if n != previous.0 + 1 {
            problem(
                n,
                format!(
                    "follows receipt {}: receipts in between are missing",
                    previous.0
                ),
            );
        }
        let actual = sha256(row.body.as_bytes());
        if actual != row.sha256 {
            problem(
                n,
                format!(
                    "its body does not match its stored SHA-256 (the row was edited): {actual} ≠ {}",
                    row.sha256
                ),
            );
        }
        let r: Receipt = match serde_json::from_str(&row.body) {
            Ok(r) => r,
            Err(e) => {
                problem(n, format!("its body is not a receipt: {e}"));
                previous = (n, row.sha256.clone());
                continue;
            }
        };
        if r.previous_sha256 != previous.1 {
            let expected = match previous.0 {
                0 => "the first receipt in the log names none".to_string(),
                p => format!("receipt {p} has {}", previous.1),
            };
            problem(
                n,
                format!(
                    "names {} as the previous receipt's SHA-256, but {expected} (the hash chain \
                     is broken: a row before it was edited, removed or inserted)",
                    r.previous_sha256
                ),
            );
        }
        if r.seq != n || r.generation != row.generation {
            problem(
                n,
                format!(
                    "its body says receipt {} of generation {}, its row {n} of generation {}",
                    r.seq, r.generation, row.generation
                ),
            );
        }
        for e in against_earlier(&r, &by_id, &deleted) {
            problem(n, e);
        }
        match by_id.get(&r.batch) {
            None => problem(
                n,
                format!("names batch {}, which the ledger lacks", r.batch),
            ),
            Some(b) => {
                covered.insert(b.id);
                for e in against_batch(&r, b) {
                    problem(n, e);
                }
            }
        }
        let kept: Vec<u64> = r
            .ids
            .iter()
            .copied()
            .filter(|id| !deleted.contains(id))
            .collect();
        if !kept.is_empty() {
            problem(
                n,
                format!(
                    "ids {kept:?} are not among the run's forgotten ids: the chain still trains on them"
                ),
            );
        }
        previous = (n, row.sha256.clone());
        receipts.push(r);
    }
    match (&m.receipts_head, rows.last()) {
        (Some(head), Some(last)) if *head != last.sha256 => problem(
            last.seq,
            format!(
                "the manifest records {head} as the latest receipt's SHA-256, the log ends with \
                 {} (the last row was edited, or rows were added or removed after it)",
                last.sha256
            ),
        ),
        (Some(head), None) => problem(
            0,
            format!("the manifest records receipt {head}, but the log holds none"),
        ),
        (None, Some(last)) => problem(
            last.seq,
            "the manifest records no receipt, but the log holds some".into(),
        ),
        _ => {}
    }
    // Every ledger request after the first one with a receipt has one. Earlier ones were
    // written before receipts existed, if the log starts at receipt 1; if it does not, they
    // lost theirs.
    let starts = rows.first().is_none_or(|r| r.seq == 1);
    let first = covered.first().copied();
    let (old, missing): (Vec<u64>, Vec<u64>) = requests
        .iter()
        .map(|r| r.id)
        .filter(|id| !covered.contains(id))
        .partition(|id| starts && first.is_none_or(|f| *id < f));
    if !old.is_empty() {
        v.notes.push(format!(
            "ledger requests {} predate receipts (written by an earlier version): they have none",
            ranges(&old)
        ));
    }
    if !missing.is_empty() {
        v.problems.push(Problem {
            receipt: 0,
            detail: format!(
                "ledger requests {} have no receipt (receipts were removed)",
                ranges(&missing)
            ),
        });
    }
    v.receipts = receipts;
    Ok(v)
}

/// How a receipt's `earlier_batches` disagree with the ledger: each must exist and precede
/// the receipt's batch, and together they must hold the skipped ids the run has forgotten.
fn against_earlier(
    r: &Receipt,
    by_id: &HashMap<u64, &Request>,
    deleted: &BTreeSet<u64>,
) -> Vec<String> {
    let mut out = Vec::new();
    if r.earlier_batches.is_empty() {
        return out;
    }
    let mut theirs = BTreeSet::new();
    for b in &r.earlier_batches {
        match by_id.get(b) {
            None => out.push(format!("names earlier batch {b}, which the ledger lacks")),
            Some(_) if *b >= r.batch => out.push(format!(
                "names batch {b} as earlier than its own batch {}",
                r.batch
            )),
            Some(q) => theirs.extend(q.ids.iter().copied()),
        }
    }
    let outside: Vec<u64> = r
        .skipped
        .iter()
        .copied()
        .filter(|id| deleted.contains(id) && !theirs.contains(id))
        .collect();
    if !outside.is_empty() {
        out.push(format!(
            "ids {outside:?} were not forgotten by its earlier batches {:?}",
            r.earlier_batches
        ));
    }
    out
}

/// How a receipt disagrees with its batch's ledger row.
fn against_batch(r: &Receipt, b: &Request) -> Vec<String> {
    let mut out = Vec::new();
    let mut differs = |what: &str, receipt: String, ledger: String| {
        if receipt != ledger {
            out.push(format!(
                "its {what} ({receipt}) differs from batch {}'s in the ledger ({ledger})",
                b.id
            ));
        }
    };
    differs(
        "generation",
        r.generation.to_string(),
        b.generation.to_string(),
    );
    differs(
        "model after",
        r.model_after_sha256.clone(),
        b.model_sha256.clone(),
    );
    if !b.model_before_sha256.is_empty() {
        differs(
            "model before",
            r.model_before_sha256.clone(),
            b.model_before_sha256.clone(),
        );
    }
    differs(
        "blocks retrained",
        r.blocks_retrained.to_string(),
        b.residuals_l1.len().to_string(),
    );
    if r.residuals != b.residuals_l1 {
        out.push(format!(
            "its residual trace differs from batch {}'s in the ledger",
            b.id
        ));
    }
    let batch: BTreeSet<u64> = b.ids.iter().copied().collect();
    let outside: Vec<u64> = r
        .ids
        .iter()
        .copied()
        .filter(|id| !batch.contains(id))
        .collect();
    if !outside.is_empty() {
        out.push(format!(
            "ids {outside:?} were not forgotten by batch {}",
            b.id
        ));
    }
    out
}

/// `1–3, 7` for [1, 2, 3, 7].
fn ranges(ids: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        parts.push(match i == j {
            true => ids[i].to_string(),
            false => format!("{}–{}", ids[i], ids[j]),
        });
        i = j + 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::ranges;

    #[test]
    fn ranges_are_compact() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), "1–3, 7, 9–10");
        assert_eq!(ranges(&[]), "");
    }
}

//! What the HTTP side knows of the run: the committed state the worker last saw, replaced whole
//! after each commit so a reader sees one generation or the next, never a mix.

use std::path::PathBuf;

use obliviate::chain::Chain;
use obliviate::data::{Dataset, Groups};
use serde::Serialize;

use crate::queue::Body;

/// The run as of one committed generation.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The manifest generation.
    pub generation: u64,
    /// SHA-256 of the served model file.
    pub model_sha256: String,
    /// The served model file.
    pub model_path: PathBuf,
    /// Its test accuracy, if measured.
    pub test_accuracy: Option<f64>,
    /// Forgotten ids, ascending.
    pub deleted: Vec<u64>,
    /// The run's user groups.
    pub groups: Option<Groups>,
    /// SHA-256 of the latest receipt.
    pub receipts_head: Option<String>,
}

/// Why a request is refused (422).
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// What is wrong, in words.
    pub error: String,
    /// Ids not in the training set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_ids: Vec<u64>,
    /// Ids already forgotten.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forgotten_ids: Vec<u64>,
    /// Group names the run does not have.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_groups: Vec<String>,
}

impl Refusal {
    fn new(error: impl Into<String>) -> Refusal {
        Refusal {
            error: error.into(),
            unknown_ids: Vec::new(),
            forgotten_ids: Vec::new(),
            unknown_groups: Vec::new(),
        }
    }
}

impl Snapshot {
    /// The committed state of `chain`.
    pub fn of(chain: &Chain) -> Snapshot {
        let m = chain.manifest();
        let (model_sha256, model_path) = m
            .model_file
            .as_ref()
            .map_or_else(Default::default, |f| (f.sha256.clone(), chain.path(f)));
        Snapshot {
            generation: m.generation,
            model_sha256,
            model_path,
            test_accuracy: m.test_accuracy,
            deleted: m.deleted.clone(),
            groups: m.groups.clone(),
            receipts_head: m.receipts_head.clone(),
        }
    }

    /// Resolves a request's ids and groups against the run: every id must be a training
    /// sample not yet forgotten, every group one of the run's.
    pub fn resolve(&self, data: &Dataset, ids: &[u64], groups: &[String]) -> Result<Body, Refusal> {
        let mut all: Vec<u64> = ids.to_vec();
        if !groups.is_empty() {
            let Some(known) = &self.groups else {
                return Err(Refusal::new(
                    "this run was trained without groups: name ids instead",
                ));
            };
            let unknown: Vec<String> = groups.iter().filter(|g| !known.knows(g)).cloned().collect();
            if !unknown.is_empty() {
                let mut r = Refusal::new(format!("{} unknown group(s)", unknown.len()));
                r.unknown_groups = unknown;
                return Err(r);
            }
            let names: Vec<&str> = groups.iter().map(String::as_str).collect();
            all.extend(
                known
                    .ids_of(&names)
                    .map_err(|e| Refusal::new(e.to_string()))?,
            );
        }
        all.sort_unstable();
        all.dedup();
        if all.is_empty() {
            return Err(Refusal::new("the request names no ids"));
        }
        let unknown: Vec<u64> = all
            .iter()
            .copied()
            .filter(|id| data.train.row(*id).is_none())
            .collect();
        let forgotten: Vec<u64> = all
            .iter()
            .copied()
            .filter(|id| self.deleted.binary_search(id).is_ok())
            .collect();
        if !unknown.is_empty() || !forgotten.is_empty() {
            let mut r = Refusal::new(format!(
                "{} unknown and {} already forgotten id(s)",
                unknown.len(),
                forgotten.len()
            ));
            r.unknown_ids = unknown;
            r.forgotten_ids = forgotten;
            return Err(r);
        }
        let mut groups = groups.to_vec();
        groups.sort();
        groups.dedup();
        Ok(Body { ids: all, groups })
    }
}

//! `obliviate check`: every file's hash, the fold against the served model, and the ledger.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use obliviate::chain::Chain;
use obliviate::chain::ledger::Ledger;
use obliviate::store::sealed::{KEY_FILE_ENV, KeyedSeal};
use serde::Serialize;

use crate::args::Env;
use crate::output::{emit, outln};

/// Check every chain file's SHA-256, that θ_0 + Σδ_i equals the served model, that the
/// ledger holds one intact row per committed request, and that the deletion receipts check out.
#[derive(Args, Debug)]
pub struct Check {
    /// Run folder.
    run: PathBuf,
}

#[derive(Serialize)]
struct CheckReport {
    ok: bool,
    files: usize,
    requests: usize,
    receipts: usize,
    complete: bool,
    /// `verified`, `unverified` (sealed with a key that was not given) or `absent`.
    keyed_seal: KeyedSeal,
}

pub fn run(a: &Check, env: &Env) -> Result<()> {
    let chain = Chain::open(&a.run)?;
    chain.verify()?;
    let m = chain.manifest();
    let requests = Ledger::committed(&a.run, m.generation)?.len();
    let receipts = obliviate::chain::receipts::verify(&a.run)?;
    if let Some(p) = receipts.problems.first() {
        bail!(
            "receipt {}: {} ({} problem(s) in all; `obliviate receipts verify {}` lists them)",
            p.receipt,
            p.detail,
            receipts.problems.len(),
            a.run.display()
        );
    }
    let r = CheckReport {
        ok: true,
        files: m.files().len(),
        requests,
        receipts: receipts.receipts.len(),
        complete: m.is_complete(),
        keyed_seal: chain.keyed_seal(),
    };
    emit(env, &r, || {
        if r.complete {
            outln!(
                "ok: {} files verified; θ_B (θ_0 or the latest keyframe + Σδ_i) equals the served model; {requests} request(s) in the ledger, {} receipt(s) verified",
                r.files,
                r.receipts
            );
        } else {
            outln!(
                "ok so far: {} files verified; training is unfinished ({} of {} blocks), so there is no served model to compare",
                r.files,
                m.completed(),
                m.blocks.len()
            );
        }
        match r.keyed_seal {
            KeyedSeal::Verified => outln!("keyed seal verified"),
            KeyedSeal::Unverified => outln!(
                "the manifest carries a keyed seal, not verified: set {KEY_FILE_ENV} to its key file"
            ),
            KeyedSeal::Absent => {}
        }
    })
}

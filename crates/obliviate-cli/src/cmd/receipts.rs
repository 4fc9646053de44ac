//! `obliviate receipts`: the run's deletion receipts, and their verification.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use obliviate::chain::receipts::{self, Receipt, Verification};
use serde::Serialize;

use crate::args::Env;
use crate::output::{emit, outln};

/// Deletion receipts: one per request, hash-chained.
#[derive(Subcommand, Debug)]
pub enum Receipts {
    /// Recompute the receipt chain and check every receipt against its hash, its predecessor,
    /// its batch in the ledger and the manifest. Exit code 0 = sound, 2 = a receipt does not
    /// check out (each is named).
    Verify(Run),
    /// Print the receipts (after `--since N`).
    List(List),
}

#[derive(Args, Debug)]
pub struct Run {
    /// Run folder.
    run: PathBuf,
}

#[derive(Args, Debug)]
pub struct List {
    /// Run folder.
    run: PathBuf,
    /// Only receipts numbered above N.
    #[arg(long, default_value_t = 0)]
    since: u64,
}

#[derive(Serialize)]
struct Listed<'a> {
    receipts: &'a [Receipt],
}

/// Runs a `receipts` command; `Ok(false)` when verification found a problem.
pub fn run(r: &Receipts, env: &Env) -> Result<bool> {
    match r {
        Receipts::Verify(a) => {
            let v = receipts::verify(&a.run)?;
            emit(env, &v, || render(&v))?;
            Ok(v.is_sound())
        }
        Receipts::List(a) => {
            let all = receipts::verify(&a.run)?.receipts;
            let shown: Vec<Receipt> = all.into_iter().filter(|r| r.seq > a.since).collect();
            emit(env, &Listed { receipts: &shown }, || {
                for r in &shown {
                    outln!(
                        "receipt {}: {} — {} id(s){} forgotten by request {} (generation {}, {} block(s) retrained); model {} → {}",
                        r.seq,
                        r.request,
                        r.ids.len(),
                        match r.groups.is_empty() {
                            true => String::new(),
                            false => format!(" of {}", r.groups.join(", ")),
                        },
                        r.batch,
                        r.generation,
                        r.blocks_retrained,
                        short(&r.model_before_sha256),
                        short(&r.model_after_sha256)
                    );
                    if !r.earlier_batches.is_empty() {
                        let earlier: Vec<String> =
                            r.earlier_batches.iter().map(u64::to_string).collect();
                        outln!(
                            "  ids it asked for had been forgotten by request(s) {}",
                            earlier.join(", ")
                        );
                    }
                }
            })?;
            Ok(true)
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn render(v: &Verification) {
    for n in &v.notes {
        outln!("note: {n}");
    }
    for p in &v.problems {
        match p.receipt {
            0 => outln!("FAIL: {}", p.detail),
            n => outln!("FAIL receipt {n}: {}", p.detail),
        }
    }
    if v.is_sound() {
        outln!(
            "ok: {} receipt(s); the hash chain, the ledger and the manifest agree",
            v.receipts.len()
        );
    }
}

//! `obliviate`: the command-line front end of the unlearning engine. Flags are parsed once
//! into typed values (`args`), each command lives in its own module (`cmd`), and this file
//! only dispatches and turns errors into messages with the hints only a command line knows.

#![forbid(unsafe_code)]

mod args;
mod backend;
mod cmd;
mod output;

use clap::{Parser, Subcommand};

use args::Env;

/// mimalloc rather than glibc's allocator: flex allocates and frees megabytes per step, and
/// glibc returned them to the system and faulted them back in (the MLP's `bench train` rate,
/// three alternations: 11.0–13.2k samples/s with glibc, 13.0–13.6k with mimalloc; ARCHITECTURE
/// decision 25).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Machine unlearning for deep networks: train block-wise, forget samples fast, prove it.
#[derive(Parser, Debug)]
#[command(name = "obliviate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    env: Env,
}

#[derive(Subcommand, Debug)]
enum Command {
    Train(cmd::train::Train),
    Eval(cmd::eval::Eval),
    Info(cmd::info::Info),
    Check(cmd::check::Check),
    Forget(cmd::forget::Forget),
    Retrain(cmd::retrain::Retrain),
    Serve(cmd::serve::Serve),
    Demo(cmd::demo::Demo),
    /// Prove a deletion: backdoor verification.
    #[command(subcommand)]
    Verify(cmd::verify::Verify),
    /// Audit a deletion: membership inference and distance to the retrained model.
    #[command(subcommand)]
    Audit(cmd::audit::Audit),
    Report(cmd::report::Report),
    /// The SISA baseline (sharded, sliced ensembles; exact unlearning by shard retraining).
    #[command(subcommand)]
    Sisa(cmd::sisa::SisaCmd),
    /// Benchmarks whose figures go into docs/BENCHMARKS.md.
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
    /// Dataset files.
    #[command(subcommand)]
    Data(cmd::data::Data),
    /// Deletion receipts: list them, verify the hash chain against the ledger and manifest.
    #[command(subcommand)]
    Receipts(cmd::receipts::Receipts),
}

/// Exit status of a verification that ran and failed.
const FAILED_VERIFICATION: i32 = 2;

fn main() {
    let started = std::time::Instant::now();
    let cli = Cli::parse();
    let env = &cli.env;
    let result = match &cli.command {
        Command::Train(a) => cmd::train::run(a, env),
        Command::Eval(a) => cmd::eval::run(a, env),
        Command::Info(a) => cmd::info::run(a, env),
        Command::Check(a) => cmd::check::run(a, env),
        Command::Forget(a) => cmd::forget::run(a, env, started),
        Command::Retrain(a) => cmd::retrain::run(a, env),
        Command::Serve(a) => cmd::serve::run(a, env),
        Command::Demo(a) => cmd::demo::run(a, env),
        Command::Verify(a) => match cmd::verify::run(a, env) {
            Ok(false) => std::process::exit(FAILED_VERIFICATION),
            other => other.map(|_| ()),
        },
        Command::Audit(a) => cmd::audit::run(a, env),
        Command::Report(a) => cmd::report::run(a, env),
        Command::Sisa(a) => cmd::sisa::run(a, env),
        Command::Bench(a) => cmd::bench::run(a, env),
        Command::Data(a) => cmd::data::run(a, env),
        Command::Receipts(a) => match cmd::receipts::run(a, env) {
            Ok(false) => std::process::exit(FAILED_VERIFICATION),
            other => other.map(|_| ()),
        },
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        if let Some(h) = hint(&e) {
            eprintln!("hint: {h}");
        }
        std::process::exit(1);
    }
}

/// What to do about a library error, in terms of this binary's commands and flags.
fn hint(e: &anyhow::Error) -> Option<String> {
    use obliviate::Error;
    Some(match e.downcast_ref::<Error>()? {
        Error::AlreadyExists { what: "run", .. } => {
            "to continue an interrupted run pass --resume; otherwise choose another --out".into()
        }
        Error::AlreadyExists { .. } => "choose another --out".into(),
        Error::Unfinished { run } => format!(
            "finish training first: obliviate train --resume --out {}",
            run.display()
        ),
        Error::MissingData { dataset, .. } => format!(
            "pass --data-dir DIR (or set OBLIVIATE_DATA_DIR); get the files with `obliviate data fetch {dataset} --data-dir DIR`"
        ),
        Error::Busy { .. } => "wait for the other command to finish, then retry".into(),
        _ => return None,
    })
}

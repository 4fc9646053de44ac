//! `obliviate verify backdoor`: the backdoor experiment, with a pass/fail exit code.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use obliviate::data::backdoor::Trigger;
use obliviate::experiments::backdoor::{BackdoorSettings, Criteria, verify_backdoor};

use crate::args::{Env, PlacementArg, StopArgs, TrainArgs};
use crate::backend::on_backend;
use crate::output::{Bars, emit, outln};

/// Prove a deletion: backdoor verification.
#[derive(Subcommand, Debug)]
pub enum Verify {
    /// Train with a backdoored user, forget them, retrain without them; compare attack success.
    /// Exit code 0 = pass, 2 = fail. Defaults (a setting that plants the backdoor on the
    /// bundled data): lenet5 on mnist-mini, 100 blocks × 4 epochs, batch 32, Adam lr 0.002
    /// decaying to ×0.05, user = 3 % of the training set spread over the chain.
    Backdoor(Backdoor),
}

#[derive(Args, Debug)]
pub struct Backdoor {
    #[command(flatten)]
    args: TrainArgs,
    /// Share of the training set owned by the user.
    #[arg(long, default_value_t = BackdoorSettings::DEFAULT_FRACTION)]
    fraction: f64,
    /// Side of the square trigger patch in pixels.
    #[arg(long, default_value_t = 4)]
    patch: usize,
    /// Column of the patch (default: right edge).
    #[arg(long)]
    x: Option<usize>,
    /// Row of the patch (default: bottom edge).
    #[arg(long)]
    y: Option<usize>,
    /// Class the trigger maps to.
    #[arg(long, default_value_t = 0)]
    target: u16,
    /// Where the user's samples go: spread like any samples, together at a seeded position, or
    /// together in the last blocks (a user likely to leave).
    #[arg(long, default_value = "random")]
    placement: PlacementArg,
    /// Folder for the two runs.
    #[arg(long, default_value = "backdoor-runs")]
    work: PathBuf,
    #[command(flatten)]
    stop: StopArgs,
}

/// Runs the verification; returns whether it passed.
pub fn run(v: &Verify, env: &Env) -> Result<bool> {
    let Verify::Backdoor(b) = v;
    let cfg = b.args.config(BackdoorSettings::default_training(), env)?;
    let kind = b.args.model();
    let data = b.args.data.load(env)?;
    let mut trigger = Trigger::bottom_right(&data, b.patch, b.target)?;
    trigger.x = b.x.unwrap_or(trigger.x);
    trigger.y = b.y.unwrap_or(trigger.y);
    let settings = BackdoorSettings {
        kind,
        cfg,
        fraction: b.fraction,
        trigger: trigger.checked(&data)?,
        opts: b.stop.options(false)?,
        placement: b.placement.0,
        work: b.work.clone(),
        criteria: Criteria::default(),
    };
    let mut bars = Bars::new(env);
    let r =
        on_backend!(env, B, device => verify_backdoor::<B>(&data, &settings, &device, &mut bars)?);
    emit(env, &r, || {
        outln!(
            "backdoor user: {} samples ({:.1} % of {}), trigger {}×{} at ({}, {}) → class {}",
            r.user_samples,
            100.0 * b.fraction,
            data.name,
            r.trigger.size,
            r.trigger.size,
            r.trigger.x,
            r.trigger.y,
            r.trigger.target
        );
        outln!();
        outln!("| model | clean accuracy | attack success rate |");
        outln!("|---|---|---|");
        for (label, s) in [
            ("original", r.original),
            ("unlearned", r.unlearned),
            ("retrained", r.retrained),
        ] {
            outln!(
                "| {label} | {:.2} % | {:.2} % |",
                100.0 * s.clean_accuracy,
                100.0 * s.attack_success_rate
            );
        }
        outln!();
        outln!(
            "user placed {}: in {} of {} blocks",
            r.placement.name(),
            r.user_blocks,
            cfg.blocks
        );
        outln!(
            "forget: blocks {}..={} retrained ({} of {}, {} segment(s)), {:.1} s; retrain {:.1} s",
            r.forget.first_block,
            r.forget.stop_block,
            r.forget.blocks_retrained,
            cfg.blocks,
            r.forget.segments.len(),
            r.forget.seconds,
            r.retrain_seconds
        );
        for c in &r.criteria {
            outln!("{c}");
        }
        outln!("{}", if r.pass { "PASS" } else { "FAIL" });
        outln!("runs kept in {}", b.work.display());
    })?;
    Ok(r.pass)
}

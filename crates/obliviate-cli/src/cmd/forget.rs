//! `obliviate forget`: one deletion request, committed atomically.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use obliviate::chain::Chain;
use obliviate::report::plot::{Format, ResidualSeries, residuals};
use obliviate::unlearn::ForgetReport;

use crate::args::{Env, IdArgs, StopArgs};
use crate::backend::on_backend;
use crate::output::{Bars, emit, outln};

/// Forget training samples: retrain from the first affected block until residual memory decays.
#[derive(Args, Debug)]
pub struct Forget {
    /// Run folder.
    run: PathBuf,
    #[command(flatten)]
    ids: IdArgs,
    #[command(flatten)]
    stop: StopArgs,
    /// Ignore unknown or already forgotten ids instead of failing.
    #[arg(long)]
    skip_missing: bool,
    /// Write a residual-memory plot (.png or .svg) to this new file, outside the run folder.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Skip measuring the unlearned model's test accuracy (reporting only; saves a pass over
    /// the test set).
    #[arg(long)]
    no_eval: bool,
}

/// The report, and what the user waited for.
#[derive(serde::Serialize)]
struct Out<'a> {
    #[serde(flatten)]
    report: &'a ForgetReport,
    /// Seconds of the whole command, from its start: loading data, forgetting, evaluating.
    wall_seconds: f64,
}

/// Refuses a plot path before anything is forgotten: it must name a new .png or .svg file in
/// an existing folder that is not the run's.
fn check_plot_path(plot: &Path, run: &Path) -> Result<()> {
    Format::of(plot)?;
    if plot.exists() {
        bail!(
            "--plot {}: the file exists; choose a new name",
            plot.display()
        );
    }
    let parent = match plot.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = parent
        .canonicalize()
        .with_context(|| format!("--plot {}: its folder does not exist", plot.display()))?;
    let run = run
        .canonicalize()
        .with_context(|| format!("cannot open {}", run.display()))?;
    if parent.starts_with(&run) {
        bail!(
            "--plot {}: inside the run folder {}; write figures elsewhere",
            plot.display(),
            run.display()
        );
    }
    Ok(())
}

pub fn run(a: &Forget, env: &Env, started: Instant) -> Result<()> {
    let mut opts = a.stop.options(a.skip_missing)?;
    opts.evaluate = !a.no_eval;
    if let Some(p) = &a.plot {
        check_plot_path(p, &a.run)?;
    }
    let mut chain = Chain::open_mut(&a.run)?;
    let asks = a.ids.read(chain.manifest().groups.as_ref())?;
    let data = chain.load_data(env.data_dir.as_deref())?;
    let mut bars = Bars::new(env);
    let r = on_backend!(env, B, device => obliviate::unlearn::forget_asks::<B>(&mut chain, &data, &asks, &opts, &device, &mut bars)?);
    let blocks = chain.manifest().blocks.len();
    // The request is committed: from here on, report it whatever else fails.
    let plotted = match &a.plot {
        Some(p) => {
            let scale = chain.served()?.numel() as f64;
            residuals(p, &ResidualSeries::from_report(&r, scale))
                .with_context(|| {
                    format!(
                        "request {} was committed, but the plot was not written",
                        r.request
                    )
                })
                .map(|()| Some(p))
        }
        None => Ok(None),
    };
    let out = Out {
        report: &r,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    emit(env, &out, || {
        outln!(
            "request {}: forgot {} id(s){}",
            r.request,
            r.ids.len(),
            if r.skipped.is_empty() {
                String::new()
            } else {
                format!(
                    " (skipped {} unknown or already forgotten)",
                    r.skipped.len()
                )
            }
        );
        outln!("  first affected block d   {}", r.first_block);
        outln!("  last affected block L    {}", r.last_block);
        outln!(
            "  stopped at block s       {} ({} rule)",
            r.stop_block,
            r.stop_rule
        );
        outln!(
            "  blocks retrained         {} of {blocks}, in {} segment(s){}",
            r.blocks_retrained,
            r.segments.len(),
            match r.blocks_replayed {
                0 => String::new(),
                n => format!(", and {n} replayed from a stored optimizer state"),
            }
        );
        for s in &r.segments {
            outln!(
                "    blocks {}..={} (last affected {}), {} rule, r {:.3e} .. {:.3e}",
                s.first_block,
                s.stop_block,
                s.last_affected,
                s.stop_reason,
                s.residuals.first().unwrap_or(&0.0),
                s.residuals.last().unwrap_or(&0.0)
            );
        }
        for n in &r.notes {
            outln!("  note: {n}");
        }
        if let Some(f) = r.fit {
            outln!(
                "  fit (per parameter)      y = {:.4e}·x^(-{:.3}) + {:.4e}",
                f.a,
                f.h,
                f.b
            );
        }
        outln!(
            "  residual r_d .. r_s (L1) {:.4e} .. {:.4e}",
            r.residuals.first().unwrap_or(&0.0),
            r.residuals.last().unwrap_or(&0.0)
        );
        outln!(
            "  seconds                  {:.2} (whole command {:.2})",
            r.seconds,
            out.wall_seconds
        );
        outln!(
            "  chain bytes read         {:.1} MB",
            r.bytes_read as f64 / 1e6
        );
        if let Some(acc) = r.test_accuracy {
            outln!("  test accuracy            {:.2} %", 100.0 * acc);
        }
        for rc in &r.receipts {
            outln!(
                "  receipt {:<17}{}: {} id(s){}",
                rc.seq,
                rc.request,
                rc.ids.len(),
                match rc.skipped.len() {
                    0 => String::new(),
                    n => format!(", {n} skipped"),
                }
            );
        }
        outln!("  model sha256             {}", r.model_sha256);
        if let Ok(Some(p)) = &plotted {
            outln!("  plot                     {}", p.display());
        }
    })?;
    plotted.map(|_| ())
}

//! `obliviate train`: block-wise training into a new run folder, or `--resume`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use obliviate::chain::Chain;
use obliviate::data::Groups;

use crate::args::{Env, TrainArgs, default_training};
use crate::backend::on_backend;
use crate::output::{Bars, emit, outln};

/// Train a model block by block, storing every increment (the chain) in --out.
#[derive(Args, Debug)]
pub struct Train {
    #[command(flatten)]
    args: TrainArgs,
    /// Run folder to create (absent or empty).
    #[arg(long)]
    out: PathBuf,
    /// Continue an interrupted run in --out from its last committed block, with its recorded settings.
    #[arg(long)]
    resume: bool,
    /// CSV of `id,group` lines: each group's samples are kept in as few consecutive blocks as
    /// the block size allows (ids not listed are their own group), and `forget --group` can
    /// name them.
    #[arg(long)]
    groups: Option<PathBuf>,
    /// Groups (one name per line) to place in the last blocks: users likely to leave.
    #[arg(long, requires = "groups")]
    late_groups: Option<PathBuf>,
    /// The largest share of a block one group may hold (1 = as few blocks as possible; below,
    /// a group is interleaved with other samples over a longer window).
    #[arg(long, requires = "groups", default_value_t = 1.0)]
    group_share: f64,
}

pub fn run(a: &Train, env: &Env) -> Result<()> {
    let mut bars = Bars::new(env);
    let out = &a.out;
    let summary = if a.resume {
        if a.args.is_set() || a.groups.is_some() {
            bail!("--resume continues a run with its recorded settings; give no training flags");
        }
        let chain = Chain::open(out).with_context(|| format!("cannot resume {}", out.display()))?;
        let data = chain.load_data(env.data_dir.as_deref())?;
        drop(chain);
        on_backend!(env, B, device => obliviate::train::resume::<B>(out, &data, &device, &mut bars)?)
    } else {
        let cfg = a.args.config(default_training(), env)?;
        let kind = a.args.model();
        let data = a.args.data.load(env)?;
        let groups = match &a.groups {
            Some(path) => {
                let mut g = Groups::read_csv(path, &data)?.with_share(a.group_share)?;
                if let Some(late) = &a.late_groups {
                    g.read_late(late)?;
                }
                Some(g)
            }
            None => None,
        };
        on_backend!(env, B, device => obliviate::train::train::<B>(out, &data, kind, cfg, groups.as_ref(), &device, &mut bars)?)
    };
    emit(env, &summary, || {
        outln!(
            "trained {} blocks in {:.1} s{}",
            summary.blocks,
            summary.seconds,
            if summary.resumed_from > 0 {
                format!(" (resumed after block {})", summary.resumed_from)
            } else {
                String::new()
            }
        );
        outln!("test accuracy  {:.2} %", 100.0 * summary.test_accuracy);
        outln!("bytes on disk  {}", summary.bytes_on_disk);
        outln!("model sha256   {}", summary.model_sha256);
        outln!("run            {}", out.display());
    })
}

//! `obliviate audit mia|distance`: evidence against a retrained run.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use obliviate::audit::mia::{MiaReport, mia};
use obliviate::audit::{Outputs, outputs_of};
use obliviate::chain::Chain;
use obliviate::data::{Dataset, Split};
use serde::Serialize;

use crate::args::Env;
use crate::backend::on_backend;
use crate::output::{emit, outln};

/// Audit a deletion: membership inference and distance to the retrained model.
#[derive(Subcommand, Debug)]
pub enum Audit {
    /// Membership-inference attacks (loss and confidence) on the forgotten samples.
    Mia(Mia),
    /// Weight L2 distance and mean output KL divergence between the unlearned and retrained models.
    Distance(Distance),
}

#[derive(Args, Debug)]
pub struct Mia {
    /// The unlearned run.
    run: PathBuf,
    /// Forgotten ids to attack (default: every id the run has forgotten).
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u64>>,
    /// The retrained run (`obliviate retrain`).
    #[arg(long)]
    against: PathBuf,
    /// A copy of the run from before forgetting.
    #[arg(long)]
    original: Option<PathBuf>,
    /// A retrain with another seed (`retrain --seed`), for the noise floor.
    #[arg(long)]
    floor: Option<PathBuf>,
    /// Seed of the attacks' sampling and cross-validation folds.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Debug)]
pub struct Distance {
    /// The unlearned run.
    run: PathBuf,
    /// The retrained run.
    #[arg(long)]
    against: PathBuf,
    /// A retrain with another seed: prints the retrain-vs-retrain noise floor too.
    #[arg(long)]
    floor: Option<PathBuf>,
}

pub fn run(a: &Audit, env: &Env) -> Result<()> {
    match a {
        Audit::Mia(m) => mia_cmd(m, env),
        Audit::Distance(d) => distance_cmd(d, env),
    }
}

/// A run compared with `unlearned`: same data and model, or the comparison means nothing.
/// `retrain` additionally requires the same forgotten ids (a retrain of that run).
fn open_peer(path: &Path, unlearned: &Chain, data: &Dataset, retrain: bool) -> Result<Chain> {
    let c = Chain::open(path)?;
    c.check_dataset(data)?;
    let (m, u) = (c.manifest(), unlearned.manifest());
    if m.model != u.model {
        bail!(
            "{} is a {} run, {} a {} run",
            path.display(),
            m.model,
            unlearned.dir().display(),
            u.model
        );
    }
    if retrain && m.deleted != u.deleted {
        bail!(
            "{} left out {} id(s), but {} forgot {}: not a retrain of that run",
            path.display(),
            m.deleted.len(),
            unlearned.dir().display(),
            u.deleted.len()
        );
    }
    Ok(c)
}

fn outputs(c: &Chain, data: &Dataset, split: Split, rows: &[usize], env: &Env) -> Result<Outputs> {
    let theta = c.served()?;
    let kind = c.manifest().model;
    Ok(on_backend!(env, B, device => outputs_of::<B>(kind, &theta, data, split, rows, &device)?))
}

#[derive(Serialize)]
struct MiaRow<'a> {
    model: &'a str,
    #[serde(flatten)]
    report: &'a MiaReport,
}

#[derive(Serialize)]
struct MiaOut<'a> {
    forgotten: usize,
    models: Vec<MiaRow<'a>>,
}

fn mia_cmd(a: &Mia, env: &Env) -> Result<()> {
    let chain = Chain::open(&a.run)?;
    let data = chain.load_data(env.data_dir.as_deref())?;
    let deleted = &chain.manifest().deleted;
    let ids = a.ids.clone().unwrap_or_else(|| deleted.clone());
    if ids.is_empty() {
        bail!("no forgotten ids: give --ids or forget some first");
    }
    let never: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| deleted.binary_search(id).is_err())
        .collect();
    if !never.is_empty() {
        bail!(
            "{} id(s) were never forgotten by {}: {:?}",
            never.len(),
            a.run.display(),
            &never[..never.len().min(20)]
        );
    }
    let rows: Vec<usize> = ids.iter().filter_map(|&id| data.train.row(id)).collect();
    let test_rows: Vec<usize> = (0..data.test.len()).collect();
    let mut models: Vec<(&str, Chain)> = Vec::new();
    if let Some(o) = &a.original {
        models.push(("original", open_peer(o, &chain, &data, false)?));
    }
    let against = open_peer(&a.against, &chain, &data, true)?;
    let floor = match &a.floor {
        Some(f) => Some(open_peer(f, &chain, &data, true)?),
        None => None,
    };
    models.push(("unlearned", chain));
    models.push(("retrained", against));
    if let Some(f) = floor {
        models.push(("retrained (another seed)", f));
    }
    let mut results: Vec<(&str, MiaReport)> = Vec::new();
    for (label, c) in &models {
        let f = outputs(c, &data, Split::Train, &rows, env)?;
        let t = outputs(c, &data, Split::Test, &test_rows, env)?;
        results.push((label, mia(&f, &t, a.seed)));
    }
    let out = MiaOut {
        forgotten: ids.len(),
        models: results
            .iter()
            .map(|(l, r)| MiaRow {
                model: l,
                report: r,
            })
            .collect(),
    };
    emit(env, &out, || {
        outln!(
            "membership inference on {} forgotten samples vs as many test samples",
            ids.len()
        );
        outln!();
        outln!("| model | loss attack AUC | loss attack acc | confidence AUC | confidence acc |");
        outln!("|---|---|---|---|---|");
        for (l, r) in &results {
            outln!(
                "| {l} | {:.3} | {:.3} | {:.3} | {:.3} |",
                r.loss.auc,
                r.loss.accuracy,
                r.confidence.auc,
                r.confidence.accuracy
            );
        }
    })
}

#[derive(Serialize)]
struct Pair {
    weight_l2: f64,
    mean_kl: f64,
}

#[derive(Serialize)]
struct DistanceOut {
    weight_l2: f64,
    mean_kl: f64,
    floor: Option<Pair>,
}

fn distance_cmd(a: &Distance, env: &Env) -> Result<()> {
    let chain = Chain::open(&a.run)?;
    let data = chain.load_data(env.data_dir.as_deref())?;
    let rows: Vec<usize> = (0..data.test.len()).collect();
    let pair = |x: &Chain, y: &Chain| -> Result<Pair> {
        let weight_l2 = x.served()?.distance(&y.served()?)?.l2;
        let ox = outputs(x, &data, Split::Test, &rows, env)?;
        let oy = outputs(y, &data, Split::Test, &rows, env)?;
        Ok(Pair {
            weight_l2,
            mean_kl: oy.mean_kl(&ox),
        })
    };
    let against = open_peer(&a.against, &chain, &data, true)?;
    let main = pair(&chain, &against)?;
    let floor = match &a.floor {
        Some(f) => Some(pair(&against, &open_peer(f, &chain, &data, true)?)?),
        None => None,
    };
    let out = DistanceOut {
        weight_l2: main.weight_l2,
        mean_kl: main.mean_kl,
        floor,
    };
    emit(env, &out, || {
        outln!("| pair | weight L2 distance | mean KL(retrained ‖ other) on test |");
        outln!("|---|---|---|");
        outln!(
            "| unlearned vs retrained | {:.4} | {:.5} |",
            out.weight_l2,
            out.mean_kl
        );
        if let Some(f) = &out.floor {
            outln!(
                "| retrained vs retrained, another seed (noise floor) | {:.4} | {:.5} |",
                f.weight_l2,
                f.mean_kl
            );
        }
    })
}

//! `sisa train|forget|eval`: the SISA baseline as a user would run it.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use obliviate::baselines::sisa::{self, Aggregate, Sisa};
use obliviate::chain::DataOrigin;
use obliviate::data::{Dataset, DatasetName, Split};
use obliviate::model::ModelKind;
use serde_json::json;

use crate::commands::{emit, on_backend, read_ids, train_config, training_data};
use crate::progress::Bars;
use crate::{Env, IdArgs, TrainArgs};

fn sisa_data(s: &Sisa, env: &Env) -> Result<Dataset> {
    let d = &s.manifest.dataset;
    let data = Dataset::load(d.name, env.data_dir.as_deref())?.derive(&d.origin())?;
    s.check_dataset(&data)?;
    Ok(data)
}

fn print_report(r: &sisa::SisaReport, what: &str) {
    println!(
        "{what}: {} shard(s) trained ({} steps) in {:.1} s; majority-vote test accuracy {:.2} %; {} bytes on disk",
        r.shards_trained.len(),
        r.steps,
        r.seconds,
        100.0 * r.test_accuracy,
        r.bytes_on_disk
    );
}

pub fn train(args: &TrainArgs, shards: usize, slices: usize, out: &Path, env: &Env) -> Result<()> {
    if args.blocks != 100 {
        bail!("SISA has no blocks: give --shards and --slices");
    }
    let name = DatasetName::parse(&args.dataset)?;
    let kind = ModelKind::parse(&args.model)?;
    let mut cfg = train_config(args)?;
    cfg.blocks = slices;
    let (data, limit) = training_data(name, args, env)?;
    let origin = DataOrigin {
        limit,
        backdoor: None,
    };
    let mut bars = Bars::new(env.json);
    let r = on_backend!(env, B, device => sisa::train::<B>(out, &data, kind, cfg, shards, &origin, &device, &mut bars)?);
    emit(env, &serde_json::to_value(&r)?, || {
        print_report(&r, "trained")
    });
    Ok(())
}

pub fn forget(dir: &Path, ids: &IdArgs, env: &Env) -> Result<()> {
    let ids = read_ids(ids)?;
    let data = sisa_data(&Sisa::open(dir)?, env)?;
    let mut bars = Bars::new(env.json);
    let r = on_backend!(env, B, device => sisa::forget::<B>(dir, &data, &ids, &device, &mut bars)?);
    emit(env, &serde_json::to_value(&r)?, || {
        print_report(&r, &format!("forgot {} id(s)", r.ids.len()))
    });
    Ok(())
}

pub fn eval(dir: &Path, aggregate: &str, env: &Env) -> Result<()> {
    let how = Aggregate::parse(aggregate)?;
    let s = Sisa::open(dir)?;
    let data = sisa_data(&s, env)?;
    let kind = s.manifest.model;
    let models = s.models()?;
    let rows: Vec<usize> = (0..data.test.len()).collect();
    let (acc, each, per_1000) = on_backend!(env, B, device => {
        let t = Instant::now();
        let agg = sisa::outputs_of_models::<B>(kind, &models, &data, Split::Test, &rows, how, &device)?;
        let per_1000 = t.elapsed().as_secs_f64() * 1000.0 / rows.len().max(1) as f64;
        let mut each = Vec::new();
        for m in &models {
            each.push(obliviate::audit::outputs_of::<B>(kind, m, &data, Split::Test, &rows, &device)?.accuracy());
        }
        (agg.accuracy(), each, per_1000)
    });
    let v = json!({"test_accuracy": acc, "aggregate": aggregate, "constituents": each, "seconds_per_1000": per_1000, "shards": models.len(), "deleted": s.manifest.deleted.len()});
    emit(env, &v, || {
        println!(
            "{} shards, {} id(s) forgotten; {aggregate} test accuracy {:.2} % ({:.3} s per 1,000 predictions)",
            models.len(),
            s.manifest.deleted.len(),
            100.0 * acc,
            per_1000
        );
        let lo = each.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = each.iter().copied().fold(0.0, f64::max);
        println!(
            "constituent models: {:.2} % … {:.2} %",
            100.0 * lo,
            100.0 * hi
        );
    });
    Ok(())
}

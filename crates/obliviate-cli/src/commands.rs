//! One function per subcommand: parse arguments into library calls, print text or JSON.

use std::path::Path;

use anyhow::{Context, Result, bail};
use obliviate::chain::{Chain, TrainConfig};
use obliviate::data::{Dataset, DatasetName};
use obliviate::model::ModelKind;
use obliviate::optim::{OptimConfig, OptimizerKind};
use serde_json::json;

use crate::progress::Bars;
use crate::{Env, TrainArgs};

/// Runs `$body` with `$B` bound to the backend named by `--device` and `$dev` to its device.
macro_rules! on_backend {
    ($env:expr, $B:ident, $dev:ident => $body:expr) => {{
        match $env.device.as_str() {
            "cpu" => {
                type $B = obliviate::CpuBackend;
                let $dev = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            "cuda" => {
                type $B = obliviate::CudaBackend;
                let $dev = Default::default();
                $body
            }
            other => anyhow::bail!(
                "unknown --device {other:?}; this build supports: cpu{}",
                if cfg!(feature = "cuda") {
                    ", cuda"
                } else {
                    " (rebuild with --features cuda for cuda)"
                }
            ),
        }
    }};
}

pub(crate) use on_backend;

/// Prints `value` as one JSON line (with `--json`) or runs `text`.
pub fn emit(env: &Env, value: &serde_json::Value, text: impl FnOnce()) {
    if env.json {
        println!("{value}");
    } else {
        text();
    }
}

/// Loads a dataset by name, truncated to the given limits.
pub fn load_data(name: DatasetName, limit: Option<(usize, usize)>, env: &Env) -> Result<Dataset> {
    let data = Dataset::load(name, env.data_dir.as_deref())?;
    Ok(match limit {
        Some((tr, te)) => data.truncated(tr, te)?,
        None => data,
    })
}

/// The (train, test) prefix `--train-limit`/`--test-limit` ask for (`usize::MAX` = all).
pub fn requested_limit(args: &TrainArgs) -> Option<(usize, usize)> {
    match (args.train_limit, args.test_limit) {
        (None, None) => None,
        (tr, te) => Some((tr.unwrap_or(usize::MAX), te.unwrap_or(usize::MAX))),
    }
}

/// The dataset named by the training flags, cut to `--train-limit`/`--test-limit`, and the
/// limit to record in the run (the actual sizes, or `None` for the whole dataset).
pub fn training_data(
    name: DatasetName,
    args: &TrainArgs,
    env: &Env,
) -> Result<(Dataset, Option<(usize, usize)>)> {
    let limit = requested_limit(args);
    let data = load_data(name, limit, env)?;
    let limit = limit.map(|_| (data.train.len(), data.test.len()));
    Ok((data, limit))
}

/// Loads the dataset a run was trained on.
pub fn run_data(chain: &Chain, env: &Env) -> Result<Dataset> {
    let d = &chain.manifest.dataset;
    let data = Dataset::load(d.name, env.data_dir.as_deref())?.derive(&d.origin())?;
    chain.check_dataset(&data)?;
    Ok(data)
}

/// Training hyper-parameters from the flags.
pub fn train_config(args: &TrainArgs) -> Result<TrainConfig> {
    let kind = OptimizerKind::parse(&args.optimizer)?;
    let mut optim = match kind {
        OptimizerKind::Sgd => OptimConfig::sgd(args.lr, args.momentum),
        OptimizerKind::Adam => OptimConfig::adam(args.lr),
    };
    optim.weight_decay = args.weight_decay;
    optim.validate()?;
    Ok(TrainConfig {
        blocks: args.blocks,
        epochs_per_block: args.epochs_per_block,
        batch_size: args.batch_size,
        optim,
        seed: args.seed,
        lr_final: args.lr_final,
    })
}

pub fn train(args: &TrainArgs, out: &Path, resume: bool, env: &Env) -> Result<()> {
    let mut bars = Bars::new(env.json);
    let summary = if resume {
        let chain = Chain::open(out).with_context(|| format!("cannot resume {}", out.display()))?;
        let data = run_data(&chain, env)?;
        drop(chain);
        on_backend!(env, B, device => obliviate::train::resume::<B>(out, &data, &device, &mut bars)?)
    } else {
        let name = DatasetName::parse(&args.dataset)?;
        let kind = ModelKind::parse(&args.model)?;
        let cfg = train_config(args)?;
        let (data, limit) = training_data(name, args, env)?;
        on_backend!(env, B, device => obliviate::train::train::<B>(out, &data, kind, cfg, limit, &device, &mut bars)?)
    };
    emit(env, &serde_json::to_value(&summary)?, || {
        println!(
            "trained {} blocks in {:.1} s{}",
            summary.blocks,
            summary.seconds,
            if summary.resumed_from > 0 {
                format!(" (resumed after block {})", summary.resumed_from)
            } else {
                String::new()
            }
        );
        println!("test accuracy  {:.2} %", 100.0 * summary.test_accuracy);
        println!("bytes on disk  {}", summary.bytes_on_disk);
        println!("model sha256   {}", summary.model_sha256);
        println!("run            {}", out.display());
    });
    Ok(())
}

pub fn eval(run: &Path, env: &Env) -> Result<()> {
    let chain = Chain::open(run)?;
    let data = run_data(&chain, env)?;
    let m = &chain.manifest;
    let theta = chain.theta(m.completed())?;
    if m.is_complete() && !theta.bit_identical(&chain.served()?) {
        bail!(
            "run {}: θ_0 + Σδ_i differs from the served model file",
            run.display()
        );
    }
    let acc = on_backend!(env, B, device => obliviate::train::test_accuracy::<B>(&data, m.model, &theta, &device)?);
    emit(
        env,
        &json!({"test_accuracy": acc, "blocks": m.completed(), "test_samples": data.test.len()}),
        || {
            println!(
                "test accuracy {:.2} % on {} test samples ({} of {} blocks)",
                100.0 * acc,
                data.test.len(),
                m.completed(),
                m.blocks.len()
            );
        },
    );
    Ok(())
}

pub fn info(run: &Path, ids: bool, env: &Env) -> Result<()> {
    let chain = Chain::open(run)?;
    let m = &chain.manifest;
    let requests = obliviate::ledger::Ledger::open(run)
        .and_then(|l| l.list(m.generation))
        .map(|r| r.len())
        .unwrap_or(0);
    let ids_total: usize = m.blocks.iter().map(|b| b.ids.len()).sum();
    let sizes: Vec<usize> = m.blocks.iter().map(|b| b.ids.len()).collect();
    let mut v = json!({
        "run": run,
        "dataset": m.dataset,
        "model": m.model,
        "config": m.config,
        "backend": m.backend,
        "blocks": m.blocks.len(),
        "blocks_trained": m.completed(),
        "ids": ids_total,
        "deleted": m.deleted.len(),
        "block_sizes": {"min": sizes.iter().min(), "max": sizes.iter().max()},
        "bytes_on_disk": chain.bytes_on_disk(),
        "test_accuracy": m.test_accuracy,
        "train_seconds": m.train_seconds,
        "generation": m.generation,
        "requests": requests,
        "model_sha256": m.model_file.as_ref().map(|f| &f.sha256),
    });
    if ids {
        v["block_ids"] = json!(m.blocks.iter().map(|b| &b.ids).collect::<Vec<_>>());
    }
    emit(env, &v, || {
        let c = &m.config;
        println!("run          {}", run.display());
        println!(
            "dataset      {} ({} train / {} test, {} classes){}",
            m.dataset.name,
            m.dataset.train_samples,
            m.dataset.test_samples,
            m.dataset.classes,
            m.dataset
                .limit
                .map(|(a, b)| format!(", limited to {a}/{b}"))
                .unwrap_or_default()
        );
        println!("model        {}   backend {}", m.model, m.backend);
        println!(
            "blocks       {} trained of {}, {} ids (block sizes {}..{}), {} forgotten in {} request(s)",
            m.completed(),
            m.blocks.len(),
            ids_total,
            sizes.iter().min().unwrap_or(&0),
            sizes.iter().max().unwrap_or(&0),
            m.deleted.len(),
            requests
        );
        println!(
            "training     E={} batch={} {} lr={} momentum={} wd={} seed={}",
            c.epochs_per_block,
            c.batch_size,
            c.optim.kind.name(),
            c.optim.lr,
            c.optim.momentum,
            c.optim.weight_decay,
            c.seed
        );
        println!("bytes        {}", chain.bytes_on_disk());
        if let Some(a) = m.test_accuracy {
            println!("accuracy     {:.2} %", 100.0 * a);
        }
        println!("train time   {:.1} s", m.train_seconds);
        if ids {
            for b in &m.blocks {
                println!("block {:>5}: {:?}", b.index, b.ids);
            }
        }
    });
    Ok(())
}

pub fn check(run: &Path, env: &Env) -> Result<()> {
    let chain = Chain::open(run)?;
    chain.verify()?;
    let files = chain.manifest.files().len();
    emit(env, &json!({"ok": true, "files": files}), || {
        println!("ok: {files} files verified; θ_0 + Σδ_i equals the served model");
    });
    Ok(())
}

pub fn fetch(name: &str, mirror: Option<&str>, env: &Env) -> Result<()> {
    let name = DatasetName::parse(name)?;
    let dir = env
        .data_dir
        .clone()
        .context("data fetch needs --data-dir DIR")?;
    if name == DatasetName::MnistMini {
        bail!("mnist-mini is bundled with obliviate; nothing to fetch");
    }
    let bars = std::cell::RefCell::new(None::<indicatif::ProgressBar>);
    let show = !env.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = |file: &str, done: u64, total: Option<u64>| {
        if !show {
            return;
        }
        let mut b = bars.borrow_mut();
        let bar = b.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        bar.set_message(file.to_string());
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(done);
        if Some(done) == total {
            bar.finish_and_clear();
            *b = None;
        }
    };
    let fetched = obliviate::data::fetch::fetch(name, &dir, mirror, &mut progress)?;
    emit(env, &json!({"dataset": name, "files": fetched}), || {
        for f in &fetched {
            println!(
                "{}  {}  {} bytes{}",
                f.sha256,
                f.path.display(),
                f.bytes,
                if f.downloaded {
                    ""
                } else {
                    " (already present)"
                }
            );
        }
    });
    Ok(())
}

/// Reads the ids of `--ids` or `--ids-file` (one per line, or a JSON array).
pub fn read_ids(args: &crate::IdArgs) -> Result<Vec<u64>> {
    if let Some(ids) = &args.ids {
        return Ok(ids.clone());
    }
    let Some(path) = &args.ids_file else {
        bail!("give --ids or --ids-file")
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let t = text.trim();
    if t.starts_with('[') {
        return serde_json::from_str(t).with_context(|| {
            format!(
                "{}: not a JSON array of non-negative integers",
                path.display()
            )
        });
    }
    t.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| {
            l.trim().parse::<u64>().with_context(|| {
                format!(
                    "{}:{}: {:?} is not a sample id",
                    path.display(),
                    i + 1,
                    l.trim()
                )
            })
        })
        .collect()
}

/// Turns the stop flags into library options.
pub fn forget_options(
    stop: &crate::StopArgs,
    skip_missing: bool,
) -> Result<obliviate::unlearn::ForgetOptions> {
    use obliviate::unlearn::StopRule;
    let rule = match stop.stop.as_str() {
        "fit" => StopRule::Fit {
            epsilon: stop.epsilon,
        },
        "relative" => StopRule::Relative { rho: stop.rho },
        other => bail!("unknown --stop {other:?}; expected fit or relative"),
    };
    Ok(obliviate::unlearn::ForgetOptions {
        stop: rule,
        min_points: stop.min_points,
        skip_missing,
    })
}

pub fn forget(
    run: &Path,
    ids: &crate::IdArgs,
    stop: &crate::StopArgs,
    skip_missing: bool,
    plot: Option<&Path>,
    env: &Env,
) -> Result<()> {
    let ids = read_ids(ids)?;
    let opts = forget_options(stop, skip_missing)?;
    let data = run_data(&Chain::open(run)?, env)?;
    let mut bars = Bars::new(env.json);
    let r = on_backend!(env, B, device => obliviate::unlearn::forget::<B>(run, &data, &ids, &opts, &device, &mut bars)?);
    if let Some(p) = plot {
        let scale = Chain::open(run)?.served()?.numel() as f64;
        obliviate::report::plot::residuals(
            p,
            &obliviate::report::plot::ResidualSeries::from_report(&r, scale),
        )?;
    }
    let v = json!({
        "first_block": r.first_block, "last_block": r.last_block, "stop_block": r.stop_block,
        "blocks_retrained": r.blocks_retrained, "residuals": r.residuals, "residuals_l2": r.residuals_l2,
        "fit": r.fit, "stop_rule": r.stop_rule, "seconds": r.seconds, "test_accuracy": r.test_accuracy,
        "model_sha256": r.model_sha256, "request": r.request, "ids": r.ids, "skipped": r.skipped,
        "eval_seconds": r.eval_seconds, "phases": r.phases,
    });
    emit(env, &v, || {
        println!(
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
        println!("  first affected block d   {}", r.first_block);
        println!("  last affected block L    {}", r.last_block);
        println!(
            "  stopped at block s       {} ({} rule)",
            r.stop_block, r.stop_rule
        );
        println!(
            "  blocks retrained         {} of {}",
            r.blocks_retrained,
            data_blocks(run)
        );
        if let Some(f) = r.fit {
            println!(
                "  fit                      y = {:.4e}·x^(-{:.3}) + {:.4e}",
                f.a, f.h, f.b
            );
        }
        println!(
            "  residual r_d .. r_s      {:.4e} .. {:.4e}",
            r.residuals.first().unwrap_or(&0.0),
            r.residuals.last().unwrap_or(&0.0)
        );
        println!("  seconds                  {:.2}", r.seconds);
        println!(
            "  test accuracy            {:.2} %",
            100.0 * r.test_accuracy
        );
        println!("  model sha256             {}", r.model_sha256);
        if let Some(p) = plot {
            println!("  plot                     {}", p.display());
        }
    });
    Ok(())
}

fn data_blocks(run: &Path) -> usize {
    Chain::open(run)
        .map(|c| c.manifest.blocks.len())
        .unwrap_or(0)
}

pub fn retrain(run: &Path, out: &Path, seed: Option<u64>, env: &Env) -> Result<()> {
    let data = run_data(&Chain::open(run)?, env)?;
    let mut bars = Bars::new(env.json);
    let s = match seed {
        None => {
            on_backend!(env, B, device => obliviate::train::retrain::<B>(run, out, &data, &device, &mut bars)?)
        }
        Some(seed) => {
            on_backend!(env, B, device => obliviate::train::retrain_with_seed::<B>(run, out, &data, seed, &device, &mut bars)?)
        }
    };
    emit(env, &serde_json::to_value(&s)?, || {
        println!(
            "retrained {} blocks from scratch in {:.1} s",
            s.blocks, s.seconds
        );
        println!("test accuracy  {:.2} %", 100.0 * s.test_accuracy);
        println!("model sha256   {}", s.model_sha256);
        println!("run            {}", out.display());
    });
    Ok(())
}

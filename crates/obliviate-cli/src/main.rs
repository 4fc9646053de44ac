//! `obliviate`: the command-line front end of the unlearning engine.

mod audit;
mod bench;
mod commands;
mod demo;
mod progress;
mod sisa;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Machine unlearning for deep networks: train block-wise, forget samples fast, prove it.
#[derive(Parser)]
#[command(name = "obliviate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the dataset files are and which compute device to use.
#[derive(Args, Clone)]
pub struct Env {
    /// Folder holding the canonical dataset files (or <DIR>/<dataset>/); not needed for mnist-mini.
    #[arg(long, env = "OBLIVIATE_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Compute device: cpu (flex backend) or cuda (build with --features cuda).
    #[arg(long, default_value = "cpu", global = true)]
    device: String,
    /// Print one JSON object on stdout instead of text and progress bars.
    #[arg(long, global = true)]
    json: bool,
}

/// Hyper-parameters of block-wise training.
#[derive(Args, Clone)]
pub struct TrainArgs {
    /// Dataset: mnist-mini (bundled), mnist, fashion-mnist, cifar10, svhn, purchase.
    #[arg(long, default_value = "mnist-mini")]
    dataset: String,
    /// Model: mlp, mlp-small, lenet5, cnn, resnet18.
    #[arg(long, default_value = "lenet5")]
    model: String,
    /// Number of blocks B.
    #[arg(long, default_value_t = 100)]
    blocks: usize,
    /// Epochs E on each block.
    #[arg(long, default_value_t = 2)]
    epochs_per_block: usize,
    /// Minibatch size.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Optimizer: sgd or adam.
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    /// Learning rate.
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Learning rate of the last block as a fraction of --lr (inverse-time decay over blocks; 1 = constant).
    #[arg(long, default_value_t = 1.0)]
    lr_final: f64,
    /// L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Seed of the split, the initial weights and the minibatch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training samples (ids keep their meaning).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Use only the first N test samples.
    #[arg(long)]
    test_limit: Option<usize>,
}

/// Which ids to forget.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
pub struct IdArgs {
    /// Comma-separated sample ids.
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u64>>,
    /// File with one id per line, or a JSON array of ids.
    #[arg(long)]
    ids_file: Option<PathBuf>,
}

/// When to stop retraining.
#[derive(Args, Clone)]
pub struct StopArgs {
    /// Stop rule: fit (power-law slope below --epsilon) or relative (r_k / r_d below --rho).
    #[arg(long, default_value = "fit")]
    stop: String,
    /// Slope threshold of the fit rule.
    #[arg(long, default_value_t = 1e-5)]
    epsilon: f64,
    /// Ratio threshold of the relative rule.
    #[arg(long, default_value_t = 0.05)]
    rho: f64,
    /// Fewest residuals before stopping.
    #[arg(long, default_value_t = 15)]
    min_points: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model block by block, storing every increment (the chain) in --out.
    Train {
        #[command(flatten)]
        args: TrainArgs,
        /// Run folder to create.
        #[arg(long)]
        out: PathBuf,
        /// Continue an interrupted run in --out from its last complete block.
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        env: Env,
    },
    /// Test accuracy of the served model θ_0 + Σδ_i (recomputed from the chain).
    Eval {
        /// Run folder.
        run: PathBuf,
        #[command(flatten)]
        env: Env,
    },
    /// Blocks, ids, bytes on disk and hyper-parameters of a run.
    Info {
        /// Run folder.
        run: PathBuf,
        /// Also list the ids of every block.
        #[arg(long)]
        ids: bool,
        #[command(flatten)]
        env: Env,
    },
    /// Check every chain file's SHA-256 and that θ_0 + Σδ_i equals the served model.
    Check {
        /// Run folder.
        run: PathBuf,
        #[command(flatten)]
        env: Env,
    },
    /// Forget training samples: retrain from the first affected block until residual memory decays.
    Forget {
        /// Run folder.
        run: PathBuf,
        #[command(flatten)]
        ids: IdArgs,
        #[command(flatten)]
        stop: StopArgs,
        /// Ignore unknown or already forgotten ids instead of failing.
        #[arg(long)]
        skip_missing: bool,
        /// Write a residual-memory plot (PNG or SVG by extension).
        #[arg(long)]
        plot: Option<PathBuf>,
        #[command(flatten)]
        env: Env,
    },
    /// Retrain from scratch (same seed, split and order) without every forgotten id: the gold standard.
    Retrain {
        /// Run folder whose forgotten ids are left out.
        run: PathBuf,
        /// New run folder.
        #[arg(long)]
        out: PathBuf,
        /// Use another seed (new split, weights and order): a second retrain for noise floors.
        #[arg(long)]
        seed: Option<u64>,
        #[command(flatten)]
        env: Env,
    },
    /// Train on the bundled MNIST subset, forget random ids, retrain from scratch, compare.
    Demo {
        /// Where to keep the runs (default: a fresh temporary folder, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Number of single-id forget requests.
        #[arg(long, default_value_t = 3)]
        requests: usize,
        /// Seed of the training run and of the ids picked.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        env: Env,
    },
    /// Prove a deletion: backdoor verification.
    Verify {
        #[command(subcommand)]
        command: VerifyCommand,
    },
    /// Audit a deletion: membership inference and distance to the retrained model.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Write a Markdown and a standalone HTML report of a run (requests, audits, figures).
    Report {
        /// The run.
        run: PathBuf,
        /// Output folder.
        #[arg(long, default_value = "report")]
        out: PathBuf,
        /// A retrained run to compare with (adds membership inference and distances).
        #[arg(long)]
        against: Option<PathBuf>,
        /// A copy of the run from before forgetting.
        #[arg(long)]
        original: Option<PathBuf>,
        /// A retrain with another seed (noise floor).
        #[arg(long)]
        floor: Option<PathBuf>,
        #[command(flatten)]
        env: Env,
    },
    /// The SISA baseline (sharded, sliced ensembles; exact unlearning by shard retraining).
    Sisa {
        #[command(subcommand)]
        command: SisaCommand,
    },
    /// Benchmarks whose figures go into docs/BENCHMARKS.md.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Dataset files.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
}

// Parsed once per process; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum BenchCommand {
    /// Training throughput of every model, obliviate against PyTorch (CPU, same threads and shapes).
    Train {
        /// Models to measure.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "mlp,mlp-small,lenet5,cnn,resnet18"
        )]
        models: Vec<String>,
        /// Interleaved rounds (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Python with PyTorch installed.
        #[arg(long, default_value = "python3")]
        python: String,
        #[command(flatten)]
        env: Env,
    },
    /// DeepObliviate against retraining from scratch on real data (writes a table).
    Unlearn {
        /// Datasets.
        #[arg(long, value_delimiter = ',', default_value = "mnist,fashion-mnist")]
        datasets: Vec<String>,
        #[command(flatten)]
        args: TrainArgs,
        /// Request sizes (ids per request).
        #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
        requests: Vec<usize>,
        /// Number of seeds.
        #[arg(long, default_value_t = 3)]
        seeds: usize,
        /// Successive single-id requests on seed 0 (drift check).
        #[arg(long, default_value_t = 20)]
        sequence: usize,
        #[command(flatten)]
        stop: StopArgs,
        /// Scratch folder for the runs.
        #[arg(long, default_value = "bench-runs")]
        work: PathBuf,
        /// Markdown file whose `bench-unlearn` section receives the table.
        #[arg(long)]
        write: Option<PathBuf>,
        #[command(flatten)]
        env: Env,
    },
    /// DeepObliviate against Retrain, SISA, Amnesiac, Fine-tune and NegGrad+ on the same
    /// requests (writes a table).
    Compare {
        /// Datasets.
        #[arg(long, value_delimiter = ',', default_value = "mnist,fashion-mnist")]
        datasets: Vec<String>,
        #[command(flatten)]
        args: TrainArgs,
        /// Request sizes (ids per request).
        #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
        requests: Vec<usize>,
        /// Number of seeds.
        #[arg(long, default_value_t = 3)]
        seeds: usize,
        #[command(flatten)]
        stop: StopArgs,
        /// SISA shard counts to compare.
        #[arg(long, value_delimiter = ',', default_value = "5,10,20")]
        shards: Vec<usize>,
        /// SISA slices per shard.
        #[arg(long, default_value_t = 5)]
        slices: usize,
        /// SISA epochs per slice step (default: max(1, round(2E/(R+1))), the paper's rule for
        /// the same training budget as E epochs).
        #[arg(long)]
        sisa_epochs: Option<usize>,
        /// Fine-tune steps.
        #[arg(long, default_value_t = 200)]
        finetune_steps: usize,
        /// NegGrad+ steps.
        #[arg(long, default_value_t = 200)]
        neggrad_steps: usize,
        /// NegGrad+ weight of the retain loss.
        #[arg(long, default_value_t = 0.95)]
        neggrad_beta: f64,
        /// Amnesiac repair (fine-tune) steps after subtracting updates.
        #[arg(long, default_value_t = 50)]
        repair_steps: usize,
        /// Scratch folder for the runs.
        #[arg(long, default_value = "bench-runs")]
        work: PathBuf,
        /// Markdown file whose `bench-compare` section receives the tables.
        #[arg(long)]
        write: Option<PathBuf>,
        #[command(flatten)]
        env: Env,
    },
    /// Backdoor verification, membership inference and distances to retrained models, per
    /// dataset over seeds (writes a table).
    Audit {
        /// Datasets.
        #[arg(long, value_delimiter = ',', default_value = "mnist,fashion-mnist")]
        datasets: Vec<String>,
        #[command(flatten)]
        args: TrainArgs,
        /// Number of seeds.
        #[arg(long, default_value_t = 3)]
        seeds: usize,
        /// Share of the training set owned by the backdoored user.
        #[arg(long, default_value_t = 0.01)]
        fraction: f64,
        #[command(flatten)]
        stop: StopArgs,
        /// Scratch folder for the runs.
        #[arg(long, default_value = "bench-runs")]
        work: PathBuf,
        /// Markdown file whose `bench-audit` section receives the table.
        #[arg(long)]
        write: Option<PathBuf>,
        #[command(flatten)]
        env: Env,
    },
}

#[derive(Subcommand)]
enum SisaCommand {
    /// Train S shard models, each on R slices incrementally, storing every slice checkpoint.
    Train {
        #[command(flatten)]
        args: TrainArgs,
        /// Number of shards S.
        #[arg(long, default_value_t = 10)]
        shards: usize,
        /// Slices per shard R.
        #[arg(long, default_value_t = 5)]
        slices: usize,
        /// Folder to create.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        env: Env,
    },
    /// Forget ids: retrain the shards holding them from their first affected slice.
    Forget {
        /// The SISA folder.
        dir: PathBuf,
        #[command(flatten)]
        ids: IdArgs,
        #[command(flatten)]
        env: Env,
    },
    /// Test accuracy of the aggregate and of each constituent, and prediction latency.
    Eval {
        /// The SISA folder.
        dir: PathBuf,
        /// Aggregation: vote (majority) or softmax (mean of probabilities).
        #[arg(long, default_value = "vote")]
        aggregate: String,
        #[command(flatten)]
        env: Env,
    },
}

#[derive(Subcommand)]
enum VerifyCommand {
    /// Train with a backdoored user, forget them, retrain without them; compare attack success.
    /// Exit code 0 = pass, 2 = fail.
    Backdoor {
        #[command(flatten)]
        args: TrainArgs,
        /// Share of the training set owned by the user.
        #[arg(long, default_value_t = 0.01)]
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
        /// Folder for the two runs (default ./backdoor-runs).
        #[arg(long)]
        work: Option<PathBuf>,
        #[command(flatten)]
        stop: StopArgs,
        #[command(flatten)]
        env: Env,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Membership-inference attacks (loss and confidence) on the forgotten samples.
    Mia {
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
        #[command(flatten)]
        env: Env,
    },
    /// Weight L2 distance and mean output KL divergence between the unlearned and retrained models.
    Distance {
        /// The unlearned run.
        run: PathBuf,
        /// The retrained run.
        #[arg(long)]
        against: PathBuf,
        /// A retrain with another seed: prints the retrain-vs-retrain noise floor too.
        #[arg(long)]
        floor: Option<PathBuf>,
        #[command(flatten)]
        env: Env,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download a dataset's canonical files and verify their checksums.
    Fetch {
        /// Dataset name.
        name: String,
        /// Base URL replacing the canonical hosts (files are fetched as <URL>/<file>).
        #[arg(long)]
        mirror: Option<String>,
        #[command(flatten)]
        env: Env,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train {
            args,
            out,
            resume,
            env,
        } => commands::train(&args, &out, resume, &env),
        Command::Eval { run, env } => commands::eval(&run, &env),
        Command::Info { run, ids, env } => commands::info(&run, ids, &env),
        Command::Check { run, env } => commands::check(&run, &env),
        Command::Forget {
            run,
            ids,
            stop,
            skip_missing,
            plot,
            env,
        } => commands::forget(&run, &ids, &stop, skip_missing, plot.as_deref(), &env),
        Command::Retrain {
            run,
            out,
            seed,
            env,
        } => commands::retrain(&run, &out, seed, &env),
        Command::Verify {
            command:
                VerifyCommand::Backdoor {
                    args,
                    fraction,
                    patch,
                    x,
                    y,
                    target,
                    work,
                    stop,
                    env,
                },
        } => {
            let b = audit::BackdoorArgs {
                fraction,
                patch,
                x,
                y,
                target,
                work,
            };
            match audit::backdoor(&args, &b, &stop, &env) {
                Ok(true) => Ok(()),
                Ok(false) => std::process::exit(2),
                Err(e) => Err(e),
            }
        }
        Command::Audit {
            command:
                AuditCommand::Mia {
                    run,
                    ids,
                    against,
                    original,
                    floor,
                    seed,
                    env,
                },
        } => audit::mia_cmd(
            &run,
            ids,
            &against,
            original.as_deref(),
            floor.as_deref(),
            seed,
            &env,
        ),
        Command::Report {
            run,
            out,
            against,
            original,
            floor,
            env,
        } => audit::report_cmd(
            &run,
            obliviate::report::page::ReportOptions {
                out,
                against,
                original,
                floor,
                seed: 0,
            },
            &env,
        ),
        Command::Audit {
            command:
                AuditCommand::Distance {
                    run,
                    against,
                    floor,
                    env,
                },
        } => audit::distance_cmd(&run, &against, floor.as_deref(), &env),
        Command::Demo {
            dir,
            requests,
            seed,
            env,
        } => demo::demo(dir.as_deref(), requests, seed, &env),
        Command::Bench {
            command:
                BenchCommand::Train {
                    models,
                    rounds,
                    python,
                    env,
                },
        } => bench::bench_train(&models, rounds, &python, &env),
        Command::Bench {
            command:
                BenchCommand::Unlearn {
                    datasets,
                    args,
                    requests,
                    seeds,
                    sequence,
                    stop,
                    work,
                    write,
                    env,
                },
        } => commands::forget_options(&stop, false).and_then(|opts| {
            commands::train_config(&args).and_then(|cfg| {
                let b = bench::UnlearnBench {
                    datasets,
                    model: args.model.clone(),
                    cfg,
                    requests,
                    seeds,
                    sequence,
                    opts,
                    work,
                    write,
                };
                bench::bench_unlearn(&b, &env)
            })
        }),
        Command::Bench {
            command:
                BenchCommand::Compare {
                    datasets,
                    args,
                    requests,
                    seeds,
                    stop,
                    shards,
                    slices,
                    sisa_epochs,
                    finetune_steps,
                    neggrad_steps,
                    neggrad_beta,
                    repair_steps,
                    work,
                    write,
                    env,
                },
        } => commands::forget_options(&stop, false).and_then(|opts| {
            commands::train_config(&args).and_then(|cfg| {
                let limit = commands::requested_limit(&args);
                let sisa_epochs = sisa_epochs.unwrap_or_else(|| {
                    ((2.0 * cfg.epochs_per_block as f64 / (slices as f64 + 1.0)).round() as usize)
                        .max(1)
                });
                let b = bench::CompareBench {
                    datasets,
                    model: args.model.clone(),
                    cfg,
                    limit,
                    requests,
                    seeds,
                    opts,
                    shards,
                    slices,
                    sisa_epochs,
                    finetune_steps,
                    neggrad_steps,
                    neggrad_beta,
                    repair_steps,
                    work,
                    write,
                };
                bench::bench_compare(&b, &env)
            })
        }),
        Command::Bench {
            command:
                BenchCommand::Audit {
                    datasets,
                    args,
                    seeds,
                    fraction,
                    stop,
                    work,
                    write,
                    env,
                },
        } => commands::forget_options(&stop, false).and_then(|opts| {
            commands::train_config(&args).and_then(|cfg| {
                let b = bench::AuditBench {
                    datasets,
                    model: args.model.clone(),
                    cfg,
                    seeds,
                    fraction,
                    opts,
                    work,
                    write,
                };
                bench::bench_audit(&b, &env)
            })
        }),
        Command::Sisa {
            command:
                SisaCommand::Train {
                    args,
                    shards,
                    slices,
                    out,
                    env,
                },
        } => sisa::train(&args, shards, slices, &out, &env),
        Command::Sisa {
            command: SisaCommand::Forget { dir, ids, env },
        } => sisa::forget(&dir, &ids, &env),
        Command::Sisa {
            command:
                SisaCommand::Eval {
                    dir,
                    aggregate,
                    env,
                },
        } => sisa::eval(&dir, &aggregate, &env),
        Command::Data {
            command: DataCommand::Fetch { name, mirror, env },
        } => commands::fetch(&name, mirror.as_deref(), &env),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

//! Flags shared by several commands, each resolved once into the library's typed values.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};
use obliviate::baselines::sisa::Aggregate;
use obliviate::chain::{Storage, TrainConfig};
use obliviate::data::{Dataset, DatasetName, Groups};
use obliviate::experiments::backdoor::Placement;
use obliviate::model::ModelKind;
use obliviate::optim::{OptimConfig, OptimizerKind};
use obliviate::params::Precision;
use obliviate::store::Compression;
use obliviate::unlearn::{Ask, ForgetOptions, Segmentation, StopRule, now_unix};

/// A clap value for a library enum that lists its values in `ALL` and spells them with
/// `name()`: `--help` shows the values and parsing yields the library's type.
macro_rules! value_enum {
    ($(#[$doc:meta])* $arg:ident => $lib:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $arg(pub $lib);

        impl ValueEnum for $arg {
            fn value_variants<'a>() -> &'a [Self] {
                const N: usize = <$lib>::ALL.len();
                static ALL: [$arg; N] = {
                    let mut out = [$arg(<$lib>::ALL[0]); N];
                    let mut i = 0;
                    while i < N {
                        out[i] = $arg(<$lib>::ALL[i]);
                        i += 1;
                    }
                    out
                };
                &ALL
            }
            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(PossibleValue::new(self.0.name()))
            }
        }
    };
}

value_enum!(
    /// A dataset name.
    DatasetArg => DatasetName
);
value_enum!(
    /// A model architecture.
    ModelArg => ModelKind
);
value_enum!(
    /// An update rule.
    OptimizerArg => OptimizerKind
);
value_enum!(
    /// How SISA combines its constituents.
    AggregateArg => Aggregate
);
value_enum!(
    /// Where a backdoored user's samples go.
    PlacementArg => Placement
);
value_enum!(
    /// A storage precision of increments.
    PrecisionArg => Precision
);
value_enum!(
    /// Lossless compression of chain files.
    CompressionArg => Compression
);

/// A storage precision of optimizer states (no f16: Adam's second moment underflows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptPrecisionArg {
    /// IEEE single precision.
    F32,
    /// bfloat16.
    Bf16,
    /// 8-bit codes with per-chunk scales.
    Q8,
}

impl From<OptPrecisionArg> for Precision {
    fn from(p: OptPrecisionArg) -> Precision {
        match p {
            OptPrecisionArg::F32 => Precision::F32,
            OptPrecisionArg::Bf16 => Precision::Bf16,
            OptPrecisionArg::Q8 => Precision::Q8,
        }
    }
}

/// The compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// CPU.
    Cpu,
    /// NVIDIA GPU: burn's CUDA backend (build with `--features cuda`), or libtorch's CUDA
    /// device with `--backend tch`.
    Cuda,
}

/// The tensor library that trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// burn's pure-Rust backends (flex on CPU, CubeCL on CUDA): nothing to install.
    Flex,
    /// libtorch through burn-tch (build with `--features tch`; see the README for the setup).
    Tch,
}

/// Where the dataset files are, which device to use, and how to print: every command's flags.
#[derive(Args, Clone, Debug)]
pub struct Env {
    /// Folder holding the canonical dataset files (or <DIR>/<dataset>/); not needed for mnist-mini.
    #[arg(long, env = "OBLIVIATE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Tensor library (chains are read and written alike by both; forgetting with ε = 0
    /// equals retraining bit for bit on the backend that trained the chain).
    #[arg(long, value_enum, default_value = "flex", global = true)]
    pub backend: BackendArg,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu", global = true)]
    pub device: Device,
    /// Print one JSON object on stdout instead of text and progress bars.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Which data to train on.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// Dataset [default: mnist-mini].
    #[arg(long)]
    pub dataset: Option<DatasetArg>,
    /// Use only the first N training samples (ids keep their meaning).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test samples.
    #[arg(long)]
    pub test_limit: Option<usize>,
}

impl DataArgs {
    /// The (train, test) prefix asked for (`usize::MAX` = all), if any; zero is refused.
    pub fn limit(&self) -> Result<Option<(usize, usize)>> {
        if self.train_limit == Some(0) || self.test_limit == Some(0) {
            bail!("--train-limit and --test-limit must be at least 1");
        }
        Ok(match (self.train_limit, self.test_limit) {
            (None, None) => None,
            (tr, te) => Some((tr.unwrap_or(usize::MAX), te.unwrap_or(usize::MAX))),
        })
    }

    /// The dataset asked for (mnist-mini when unset).
    pub fn name(&self) -> DatasetName {
        self.dataset.map_or(DatasetName::MnistMini, |d| d.0)
    }

    /// Loads the dataset, cut to the limits; the result records the cut (its origin).
    pub fn load(&self, env: &Env) -> Result<Dataset> {
        let limit = self.limit()?;
        Ok(obliviate::experiments::load_dataset(
            self.name(),
            limit,
            env.data_dir.as_deref(),
        )?)
    }
}

/// Hyper-parameters of block-wise training; unset flags take the command's defaults (the
/// help shows `train`'s; `verify backdoor` states its own).
#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Model [default: lenet5].
    #[arg(long)]
    pub model: Option<ModelArg>,
    /// Number of blocks B [train default: 100].
    #[arg(long)]
    pub blocks: Option<usize>,
    /// Epochs E on each block [train default: 4].
    #[arg(long)]
    pub epochs_per_block: Option<usize>,
    /// Minibatch size [train default: 32].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Update rule [train default: adam].
    #[arg(long)]
    pub optimizer: Option<OptimizerArg>,
    /// Learning rate [train default: 0.002].
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum [train default: 0].
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Learning rate of the last block as a fraction of --lr (inverse-time decay over blocks; 1 = constant) [train default: 0.05].
    #[arg(long)]
    pub lr_final: Option<f64>,
    /// L2 weight decay [default: 0].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Seed of the split, the initial weights and the minibatch order [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Precision of the stored increments; training rounds to it, so the chain stays exact [default: f32].
    #[arg(long)]
    pub storage: Option<PrecisionArg>,
    /// Precision of the stored optimizer states [default: f32].
    #[arg(long, value_enum)]
    pub opt_storage: Option<OptPrecisionArg>,
    /// Lossless compression of the increment and optimizer-state files [default: none].
    #[arg(long)]
    pub compress: Option<CompressionArg>,
    /// Store a full θ every K blocks, so restoring a block reads one keyframe and fewer than K increments (0: none) [default: ⌈√B⌉].
    #[arg(long)]
    pub keyframe_every: Option<usize>,
    /// Store the optimizer state only every K blocks (a multiple of --keyframe-every); a request replays up to K − 1 blocks to restore it (0 or 1: every block) [default: 0].
    #[arg(long)]
    pub opt_every: Option<usize>,
    /// Compute each minibatch as N slices at once and sum their gradients in order; recorded in the chain, so the result does not depend on the machine [default: 2 for mlp-small, lenet5 and cnn with --backend flex on the CPU, else 1].
    #[arg(long)]
    pub micro_batches: Option<usize>,
}

/// Slices per minibatch when `--micro-batches` is not given: 2 with burn-flex on the CPU for
/// the models whose small kernels it runs no faster on two cores than on one (mlp-small,
/// LeNet-5, the CNN), 1 elsewhere: flex spreads mlp's large products over both cores,
/// libtorch's own threads and the slices
/// oversubscribe the cores (full-MNIST LeNet-5 trained 1.5× slower with 2), GPUs parallelise
/// each kernel, and batch norm forbids slicing. ARCHITECTURE decision 22 has the figures.
pub fn micro_batches(env: &Env, kind: ModelKind) -> usize {
    let one_core = matches!(
        kind,
        ModelKind::MlpSmall | ModelKind::Lenet5 | ModelKind::Cnn
    );
    if env.backend == BackendArg::Flex && env.device == Device::Cpu && one_core {
        2
    } else {
        1
    }
}

/// Keyframes every ⌈√B⌉ blocks: a request then reads about 2√B files to restore and stitch
/// instead of B, for ⌈√B⌉ full copies of θ (1 % of an f32 LeNet-5 chain at B = 1000).
fn default_keyframes(blocks: usize) -> usize {
    (blocks as f64).sqrt().ceil() as usize
}

/// The training defaults of `train` and the benchmarks: the documented setting.
pub fn default_training() -> TrainConfig {
    TrainConfig::standard()
}

impl TrainArgs {
    /// True when any training flag was given.
    pub fn is_set(&self) -> bool {
        let d = &self.data;
        d.dataset.is_some()
            || d.train_limit.is_some()
            || d.test_limit.is_some()
            || self.model.is_some()
            || self.blocks.is_some()
            || self.epochs_per_block.is_some()
            || self.batch_size.is_some()
            || self.optimizer.is_some()
            || self.lr.is_some()
            || self.momentum.is_some()
            || self.lr_final.is_some()
            || self.weight_decay.is_some()
            || self.seed.is_some()
            || self.storage.is_some()
            || self.opt_storage.is_some()
            || self.compress.is_some()
            || self.keyframe_every.is_some()
            || self.opt_every.is_some()
            || self.micro_batches.is_some()
    }

    /// The model asked for (LeNet-5 by default).
    pub fn model(&self) -> ModelKind {
        self.model.map_or(ModelKind::Lenet5, |m| m.0)
    }

    /// The configuration: `base` with every given flag applied, validated for the model on
    /// `env`'s device.
    pub fn config(&self, base: TrainConfig, env: &Env) -> Result<TrainConfig> {
        let kind = self.optimizer.map_or(base.optim.kind, |o| o.0);
        let lr = self.lr.unwrap_or(base.optim.lr);
        let mut optim = match kind {
            OptimizerKind::Sgd => {
                OptimConfig::sgd(lr, self.momentum.unwrap_or(base.optim.momentum))
            }
            OptimizerKind::Adam => OptimConfig::adam(lr),
        };
        optim.weight_decay = self.weight_decay.unwrap_or(base.optim.weight_decay);
        let blocks = self.blocks.unwrap_or(base.blocks);
        let cfg = TrainConfig {
            blocks,
            epochs_per_block: self.epochs_per_block.unwrap_or(base.epochs_per_block),
            batch_size: self.batch_size.unwrap_or(base.batch_size),
            optim,
            seed: self.seed.unwrap_or(base.seed),
            lr_final: self.lr_final.unwrap_or(base.lr_final),
            storage: Storage {
                delta: self.storage.map_or(base.storage.delta, |p| p.0),
                opt: self.opt_storage.map_or(base.storage.opt, Precision::from),
                compression: self.compress.map_or(base.storage.compression, |c| c.0),
                keyframe_every: self.keyframe_every.unwrap_or(default_keyframes(blocks)),
                opt_every: self.opt_every.unwrap_or(base.storage.opt_every),
            },
            micro_batches: self
                .micro_batches
                .unwrap_or_else(|| micro_batches(env, self.model())),
        };
        cfg.validate_for(self.model())
            .context("invalid training flags")?;
        Ok(cfg)
    }
}

/// Which ids to forget.
#[derive(Args, Clone, Debug)]
#[group(required = true, multiple = false)]
pub struct IdArgs {
    /// Comma-separated sample ids.
    #[arg(long, value_delimiter = ',')]
    pub ids: Option<Vec<u64>>,
    /// File with one id per line (# starts a comment), or a JSON array of ids.
    #[arg(long)]
    pub ids_file: Option<PathBuf>,
    /// Comma-separated user groups (of the run's `train --groups` file).
    #[arg(long, value_delimiter = ',')]
    pub group: Option<Vec<String>>,
    /// File with one group name per line.
    #[arg(long)]
    pub groups_file: Option<PathBuf>,
    /// JSON array of deletion requests carried out as one batch, each receipted on its own:
    /// `[{"name": "portal-17", "ids": [3, 17]}, {"groups": ["alice"], "requested_unix": 1764288000}]`.
    #[arg(long)]
    pub requests_file: Option<PathBuf>,
}

/// Largest `--ids-file` read (a file of ids a hundred times the largest dataset's).
const MAX_IDS_FILE: u64 = 256 << 20;

/// Reads a text file of at most [`MAX_IDS_FILE`] bytes.
fn read_list(path: &std::path::Path) -> Result<String> {
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
            MAX_IDS_FILE + 1,
        ),
        &mut text,
    )
    .with_context(|| format!("{}: not UTF-8 text", path.display()))?;
    if text.len() as u64 > MAX_IDS_FILE {
        bail!(
            "{}: larger than {} MiB; not an id list",
            path.display(),
            MAX_IDS_FILE >> 20
        );
    }
    Ok(text)
}

/// One entry of `--requests-file`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestEntry {
    #[serde(default)]
    name: String,
    #[serde(default)]
    ids: Vec<u64>,
    #[serde(default)]
    groups: Vec<String>,
    requested_unix: Option<u64>,
}

impl IdArgs {
    /// The requests of `--ids`, `--ids-file`, `--group`, `--groups-file` (one unnamed request)
    /// or `--requests-file`; groups resolve through `groups`, the run's recorded groups (`None`
    /// for a run placed without groups).
    pub fn read(&self, groups: Option<&Groups>) -> Result<Vec<Ask>> {
        let resolve = |names: &[String]| -> Result<Vec<u64>> {
            let Some(groups) = groups else {
                bail!("this run was trained without --groups: it has no groups to forget");
            };
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            Ok(groups.ids_of(&refs)?)
        };
        if let Some(path) = &self.requests_file {
            let entries: Vec<RequestEntry> = serde_json::from_str(&read_list(path)?)
                .with_context(|| {
                    format!(
                        "{}: not a JSON array of requests ({{\"name\", \"ids\", \"groups\", \"requested_unix\"}})",
                        path.display()
                    )
                })?;
            if entries.is_empty() {
                bail!("{}: no requests", path.display());
            }
            let mut names = std::collections::BTreeSet::new();
            return entries
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    let what = format!("{}: request {} ({:?})", path.display(), i + 1, e.name);
                    if e.ids.is_empty() && e.groups.is_empty() {
                        bail!("{what} names no ids and no groups");
                    }
                    if !e.name.is_empty() && !names.insert(e.name.clone()) {
                        bail!("{what}: the name is used twice");
                    }
                    let mut ids = e.ids;
                    if !e.groups.is_empty() {
                        ids.extend(resolve(&e.groups).with_context(|| what.clone())?);
                    }
                    Ok(Ask {
                        name: e.name,
                        ids,
                        groups: e.groups,
                        requested_unix: e.requested_unix.unwrap_or_else(now_unix),
                    })
                })
                .collect();
        }
        let one = |ids: Vec<u64>, groups: Vec<String>| {
            Ok(vec![Ask {
                groups,
                ..Ask::ids(&ids)
            }])
        };
        if let Some(ids) = &self.ids {
            return one(ids.clone(), Vec::new());
        }
        let names: Option<Vec<String>> = match (&self.group, &self.groups_file) {
            (Some(g), _) => Some(g.clone()),
            (None, Some(path)) => Some(
                read_list(path)?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from)
                    .collect(),
            ),
            (None, None) => None,
        };
        if let Some(names) = names {
            return one(resolve(&names)?, names);
        }
        let Some(path) = &self.ids_file else {
            bail!("give --ids, --ids-file, --group, --groups-file or --requests-file")
        };
        let text = read_list(path)?;
        let t = text.trim();
        if t.starts_with('[') {
            let ids = serde_json::from_str(t).with_context(|| {
                format!(
                    "{}: not a JSON array of non-negative integers",
                    path.display()
                )
            })?;
            return one(ids, Vec::new());
        }
        let ids = t
            .lines()
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
            .collect::<Result<Vec<u64>>>()?;
        one(ids, Vec::new())
    }
}

/// The stop rule's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StopKind {
    /// Stop once the residual has decayed to --epsilon of the last affected block's, or stays
    /// under --negligible of the stored increments for --min-points blocks.
    Fit,
    /// Stop when r_k / r_d is below --rho.
    Relative,
}

/// When to stop retraining.
#[derive(Args, Clone, Debug)]
pub struct StopArgs {
    /// Stop rule.
    #[arg(long, value_enum, default_value = "fit")]
    pub stop: StopKind,
    /// Fit rule: the largest share of the last affected block's residual that may remain when
    /// a segment stops; 0 = never stop early.
    #[arg(long, default_value_t = default_epsilon())]
    pub epsilon: f64,
    /// Fit rule: a residual at most this share of its stored increment, for --min-points blocks
    /// in a row, ends a segment (how single ids stop).
    #[arg(long, default_value_t = obliviate::unlearn::NEGLIGIBLE)]
    pub negligible: f64,
    /// Ratio threshold of the relative rule.
    #[arg(long, default_value_t = 0.05)]
    pub rho: f64,
    /// Fewest residuals after a segment's last affected block before the rule may stop.
    #[arg(long, default_value_t = ForgetOptions::default().min_points)]
    pub min_points: usize,
    /// Retrain in segments (one per run of affected blocks the stop rule cannot bridge) or in
    /// one span from the first affected block (the published method).
    #[arg(long, value_enum, default_value = "segmented")]
    pub segments: SegmentsArg,
}

/// How the affected blocks are retrained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SegmentsArg {
    /// Segments.
    Segmented,
    /// One span.
    Single,
}

/// The library's default ε of the fit rule.
fn default_epsilon() -> f64 {
    match ForgetOptions::default().stop {
        StopRule::Fit { epsilon, .. } => epsilon,
        StopRule::Relative { .. } => 0.0,
    }
}

impl StopArgs {
    /// The library's options.
    pub fn options(&self, skip_missing: bool) -> Result<ForgetOptions> {
        let rule = match self.stop {
            StopKind::Fit => StopRule::Fit {
                epsilon: self.epsilon,
                negligible: self.negligible,
            },
            StopKind::Relative => StopRule::Relative { rho: self.rho },
        };
        let opts = ForgetOptions {
            stop: rule,
            min_points: self.min_points,
            skip_missing,
            segments: match self.segments {
                SegmentsArg::Segmented => Segmentation::Segmented,
                SegmentsArg::Single => Segmentation::Single,
            },
            evaluate: true,
        };
        opts.validate().context("invalid stop flags")?;
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[derive(clap::Parser)]
    struct Probe {
        #[command(flatten)]
        train: TrainArgs,
    }

    /// The help texts quote `train`'s defaults; they must be the ones applied.
    #[test]
    fn help_states_the_defaults_that_apply() {
        let cmd = Probe::command();
        let help = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default()
        };
        let d = default_training();
        for (id, value) in [
            ("blocks", d.blocks.to_string()),
            ("epochs_per_block", d.epochs_per_block.to_string()),
            ("batch_size", d.batch_size.to_string()),
            ("optimizer", d.optim.kind.name().to_string()),
            ("lr", d.optim.lr.to_string()),
            ("momentum", d.optim.momentum.to_string()),
            ("lr_final", d.lr_final.to_string()),
            ("weight_decay", d.optim.weight_decay.to_string()),
            ("seed", d.seed.to_string()),
        ] {
            let h = help(id);
            assert!(h.contains(&format!("default: {value}]")), "{id}: {h}");
        }
    }
}

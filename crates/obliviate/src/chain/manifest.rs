//! The run manifest: what was trained, how, and which files hold the chain.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::data::{DatasetRecord, Groups};
use crate::model::ModelKind;
use crate::optim::OptimConfig;
use crate::params::Precision;
use crate::store::{Compression, FileRef};

/// Manifest format version this build writes. Format 2 added storage precisions
/// ([`Storage`]); a format-1 manifest reads as an all-f32 chain. Format 3 added
/// `receipts_head`; a format-2 manifest reads as a run without receipts. Format 4 added
/// `shifts`; an older manifest reads as a run whose keyframes carry no shift.
pub const FORMAT: u32 = 4;

/// Oldest manifest format this build reads.
pub const OLDEST_FORMAT: u32 = 1;

/// How a chain stores its increments and optimizer states. Part of the training procedure, not
/// of the file layout: training rounds to it (see `params::codec`), so a chain is exact at any
/// precision and forgetting follows the same procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Storage {
    /// Precision of the increments δ_i.
    pub delta: Precision,
    /// Precision of the optimizer states o_i (θ_0, o_0 and the served model stay f32).
    pub opt: Precision,
    /// Lossless compression of the δ_i and o_i files (θ_0, o_0 and the served model stay
    /// plain safetensors).
    #[serde(default, skip_serializing_if = "Compression::is_none")]
    pub compression: Compression,
    /// A full θ_i (f32) is stored after every block i that is a multiple of this (0: none), and
    /// θ_i is defined as its latest keyframe plus the increments after it (see
    /// [`super::Chain::theta`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keyframe_every: usize,
    /// The optimizer state o_i is stored only after blocks that are multiples of this (0 or 1:
    /// after every block); a request replays the blocks from the latest stored state. Needs a
    /// keyframe wherever a state is stored.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub opt_every: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Storage {
    /// True for the all-f32 default (omitted from manifests).
    pub fn is_f32(&self) -> bool {
        *self == Storage::default()
    }

    /// True when block `block` (1-based) stores its optimizer state.
    pub fn stores_opt(&self, block: usize) -> bool {
        self.opt_every <= 1 || block.is_multiple_of(self.opt_every)
    }

    /// True when block `block` (1-based) stores a keyframe.
    pub fn is_keyframe(&self, block: usize) -> bool {
        self.keyframe_every > 0 && block.is_multiple_of(self.keyframe_every)
    }
}

/// `DELTA/OPT` with `+zstd` when compressed, e.g. `q8/q8+zstd`: how tables and flags name a
/// storage.
impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.delta.name(), self.opt.name())?;
        if !self.compression.is_none() {
            write!(f, "+{}", self.compression.name())?;
        }
        if self.keyframe_every > 0 {
            write!(f, "+kf{}", self.keyframe_every)?;
        }
        if self.opt_every > 1 {
            write!(f, "+opt{}", self.opt_every)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Storage {
    type Err = crate::Error;

    /// Parses what [`Storage`]'s `Display` writes.
    fn from_str(s: &str) -> crate::Result<Storage> {
        let bad = || {
            crate::error::invalid(
                "storage",
                format!(
                    "{s:?} (expected DELTA/OPT[+zstd][+kfK][+optK], e.g. q8/bf16+zstd+kf32+opt32)"
                ),
            )
        };
        let mut parts = s.split('+');
        let precisions = parts.next().unwrap_or_default();
        let (mut compression, mut keyframe_every, mut opt_every) = (Compression::None, 0, 0);
        let count = |k: &str| k.parse().ok().filter(|&k: &usize| k > 0).ok_or_else(bad);
        for part in parts {
            if let Some(k) = part.strip_prefix("kf") {
                keyframe_every = count(k)?;
            } else if let Some(k) = part.strip_prefix("opt") {
                opt_every = count(k)?;
            } else {
                compression = Compression::ALL
                    .into_iter()
                    .find(|x| x.name() == part)
                    .ok_or_else(bad)?;
            }
        }
        let (d, o) = precisions.split_once('/').ok_or_else(bad)?;
        let p = |n: &str| {
            Precision::ALL
                .into_iter()
                .find(|x| x.name() == n)
                .ok_or_else(bad)
        };
        Ok(Storage {
            delta: p(d)?,
            opt: p(o)?,
            compression,
            keyframe_every,
            opt_every,
        })
    }
}

/// Hyper-parameters of block-wise training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Number of blocks B.
    pub blocks: usize,
    /// Epochs E on each block.
    pub epochs_per_block: usize,
    /// Minibatch size.
    pub batch_size: usize,
    /// Update rule and its hyper-parameters.
    pub optim: OptimConfig,
    /// Seed of the split, the initial weights and the minibatch order.
    pub seed: u64,
    /// Learning rate of the last block as a fraction of the first (inverse-time decay across
    /// blocks; 1 = constant). Decaying the rate makes increments, and so residual memory,
    /// decay as a power law, which is what lets forgetting stop early.
    #[serde(default = "one")]
    pub lr_final: f64,
    /// Precisions of the stored increments and optimizer states (f32 when absent).
    #[serde(default, skip_serializing_if = "Storage::is_f32")]
    pub storage: Storage,
    /// Each minibatch's gradient is the sum, in a fixed order, of the gradients of this many
    /// contiguous slices of it, computed concurrently (1 when absent). Part of the chain's
    /// truth: the slices, not the machine's cores, decide the rounding, so a chain retrains
    /// bit for bit anywhere. ARCHITECTURE decision 22.
    #[serde(default = "one_slice", skip_serializing_if = "is_one_slice")]
    pub micro_batches: usize,
}

fn one() -> f64 {
    1.0
}

fn one_slice() -> usize {
    1
}

fn is_one_slice(n: &usize) -> bool {
    *n == 1
}

impl TrainConfig {
    /// The documented setting: B = 100, E = 4, batch 32, Adam 0.002 decaying to ×0.05 by the
    /// last block, seed 0, f32 storage. The benchmarks measure it (with their own B); the
    /// decaying rate is what lets residual memory decay (ARCHITECTURE decision 4). SGD 0.05
    /// with momentum 0.9 at a constant rate, the earlier default, left LeNet-5 at 12 % on the
    /// bundled data.
    pub fn standard() -> TrainConfig {
        TrainConfig {
            blocks: 100,
            epochs_per_block: 4,
            batch_size: 32,
            optim: OptimConfig::adam(0.002),
            seed: 0,
            lr_final: 0.05,
            storage: Storage::default(),
            micro_batches: 1,
        }
    }

    /// Rejects settings that cannot train, before anything is created.
    pub fn validate(&self) -> crate::Result<()> {
        use crate::error::invalid;
        self.optim.validate()?;
        if !(self.lr_final > 0.0 && self.lr_final <= 1.0) {
            return Err(invalid(
                "final learning-rate fraction",
                format!("{} (must be in (0, 1])", self.lr_final),
            ));
        }
        let st = self.storage;
        if st.opt_every > 1
            && (st.keyframe_every == 0 || !st.opt_every.is_multiple_of(st.keyframe_every))
        {
            return Err(invalid(
                "optimizer state interval",
                format!(
                    "every {} blocks, with keyframes every {}: a stored state needs a keyframe \
                     beside it (the keyframe interval must divide it)",
                    st.opt_every, st.keyframe_every
                ),
            ));
        }
        if self.storage.opt == Precision::F16 {
            return Err(invalid(
                "optimizer state precision",
                "f16 (Adam's second moment underflows it; use bf16 or q8)",
            ));
        }
        if self.batch_size == 0 || self.epochs_per_block == 0 || self.blocks == 0 {
            return Err(invalid(
                "training",
                "blocks, batch size and epochs per block must be at least 1",
            ));
        }
        if self.micro_batches == 0 || self.micro_batches > self.batch_size {
            return Err(invalid(
                "micro-batches",
                format!(
                    "{} (must be between 1 and the minibatch size, {})",
                    self.micro_batches, self.batch_size
                ),
            ));
        }
        Ok(())
    }

    /// [`TrainConfig::validate`], plus what depends on the model: batch norm normalises over
    /// the whole minibatch, so slicing it would change the model's function (and race on the
    /// running statistics).
    pub fn validate_for(&self, kind: ModelKind) -> crate::Result<()> {
        self.validate()?;
        if self.micro_batches > 1 && kind.has_batch_norm() {
            return Err(crate::error::invalid(
                "micro-batches",
                format!(
                    "{} for {} (its batch norm needs the whole minibatch: use 1)",
                    self.micro_batches,
                    kind.name()
                ),
            ));
        }
        Ok(())
    }

    /// Learning rate used for block `block` (1-based):
    /// lr / (1 + (block − 1)·(1/lr_final − 1)/(B − 1)).
    pub fn lr_at(&self, block: usize) -> f64 {
        if self.blocks <= 1 || self.lr_final >= 1.0 || self.lr_final <= 0.0 {
            return self.optim.lr;
        }
        let t = (block.saturating_sub(1)) as f64 / (self.blocks - 1) as f64;
        self.optim.lr / (1.0 + t * (1.0 / self.lr_final - 1.0))
    }
}

/// One block of the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRecord {
    /// 1-based position.
    pub index: usize,
    /// Training ids currently in the block (ascending; forgotten ids have left).
    pub ids: Vec<u64>,
    /// δ_i, once trained.
    pub delta: Option<FileRef>,
    /// o_i, once trained.
    pub opt: Option<FileRef>,
    /// θ_i in full, on keyframe blocks once trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theta: Option<FileRef>,
    /// Optimizer steps taken up to the end of this block.
    pub step: u64,
}

/// The stored state after one block: δ_i, o_i and the optimizer's step count.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockFiles {
    /// δ_i.
    pub delta: FileRef,
    /// o_i, on blocks that store it.
    pub opt: Option<FileRef>,
    /// θ_i, on keyframe blocks.
    pub keyframe: Option<FileRef>,
    /// Optimizer steps taken up to the end of the block.
    pub step: u64,
}

/// Everything needed to read, verify, extend and unlearn a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// Bumped by every committed change; names the files each commit wrote.
    pub generation: u64,
    /// Training data identity.
    pub dataset: DatasetRecord,
    /// Architecture.
    pub model: ModelKind,
    /// Hyper-parameters.
    pub config: TrainConfig,
    /// Backend that trained the chain (chains are bit-exact per backend).
    pub backend: String,
    /// θ_0.
    pub theta0: FileRef,
    /// o_0.
    pub opt0: FileRef,
    /// Blocks in training order.
    pub blocks: Vec<BlockRecord>,
    /// Ids forgotten so far (ascending).
    pub deleted: Vec<u64>,
    /// The served model θ_0 + Σδ_i, once all blocks are trained.
    pub model_file: Option<FileRef>,
    /// Test accuracy of the served model.
    pub test_accuracy: Option<f64>,
    /// Wall-clock seconds of the initial training (all sessions of a resumed run).
    pub train_seconds: f64,
    /// User groups the placement kept together, resolvable by name in forget requests
    /// (absent for runs placed without groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Groups>,
    /// SHA-256 of the latest deletion receipt committed (see `chain::receipts`), so the last
    /// receipt is as tamper-evident as the manifest itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipts_head: Option<String>,
    /// Stored nodes of the keyframe shift tree (node index → file, see `chain::shifts`): the
    /// stitch offsets of past requests, recorded instead of rewriting every later keyframe.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shifts: BTreeMap<usize, FileRef>,
    /// SHA-256 of the manifest's sealed bytes (detects edits and bit rot; see `store::sealed`,
    /// which writes it).
    #[serde(default, skip_serializing)]
    pub checksum: String,
}

impl Manifest {
    /// The manifest of a run about to be trained on `blocks` (ids per block, in training
    /// order, placed with `groups` if given); `deleted` lists ids left out from the start (a
    /// retrain of a run that forgot them). θ_0 and o_0 are filled in by
    /// [`super::Chain::create`].
    pub fn new(
        dataset: DatasetRecord,
        model: ModelKind,
        config: TrainConfig,
        backend: String,
        blocks: Vec<Vec<u64>>,
        deleted: Vec<u64>,
        groups: Option<Groups>,
    ) -> Manifest {
        let unset = FileRef {
            file: String::new(),
            sha256: String::new(),
            bytes: 0,
            unpacked: None,
        };
        Manifest {
            format: FORMAT,
            generation: 0,
            dataset,
            model,
            config,
            backend,
            theta0: unset.clone(),
            opt0: unset,
            blocks: blocks
                .into_iter()
                .enumerate()
                .map(|(i, ids)| BlockRecord {
                    index: i + 1,
                    ids,
                    delta: None,
                    opt: None,
                    theta: None,
                    step: 0,
                })
                .collect(),
            deleted,
            model_file: None,
            test_accuracy: None,
            train_seconds: 0.0,
            groups,
            receipts_head: None,
            shifts: BTreeMap::new(),
            checksum: String::new(),
        }
    }

    /// Records block `block`'s (1-based) stored state.
    pub(crate) fn set_block(&mut self, block: usize, files: BlockFiles) {
        let rec = &mut self.blocks[block - 1];
        rec.delta = Some(files.delta);
        rec.opt = files.opt;
        rec.theta = files.keyframe;
        rec.step = files.step;
    }

    /// The generation the next commit will have. The ledger stores generations as SQLite
    /// integers (i64), so a manifest at i64::MAX (or one forged beyond) has no next one.
    pub fn next_generation(&self) -> crate::Result<u64> {
        self.generation
            .checked_add(1)
            .filter(|&g| i64::try_from(g).is_ok())
            .ok_or_else(|| {
                crate::error::invalid(
                    "generation",
                    format!("{} has no successor the ledger can store", self.generation),
                )
            })
    }

    /// The next generation: each retrained block takes its `files`, each shift-tree node the
    /// request changed its `shifts` file, `removed` leaves every block and joins `deleted`, `model`
    /// is served and `receipt` (the SHA-256 of the request's last receipt) is the latest.
    pub(crate) fn record_forget(
        &mut self,
        files: Vec<(usize, BlockFiles)>,
        shifts: Vec<(usize, FileRef)>,
        removed: &BTreeSet<u64>,
        (model, test_accuracy): (FileRef, Option<f64>),
        receipt: Option<String>,
    ) -> crate::Result<()> {
        let generation = self.next_generation()?;
        // A build that reads no receipts (or no shifts) must not rewrite this manifest without
        // them.
        if receipt.is_some() || !shifts.is_empty() {
            self.format = FORMAT;
        }
        if receipt.is_some() {
            self.receipts_head = receipt;
        }
        for (block, f) in files {
            self.set_block(block, f);
        }
        self.shifts.extend(shifts);
        for rec in &mut self.blocks {
            rec.ids.retain(|id| !removed.contains(id));
        }
        self.deleted.extend(removed);
        self.deleted.sort_unstable();
        self.deleted.dedup();
        self.model_file = Some(model);
        self.test_accuracy = test_accuracy;
        self.generation = generation;
        Ok(())
    }

    /// Number of leading blocks whose increments are stored.
    pub fn completed(&self) -> usize {
        self.blocks.iter().take_while(|b| b.delta.is_some()).count()
    }

    /// True once every block is trained and the served model is written.
    pub fn is_complete(&self) -> bool {
        self.completed() == self.blocks.len() && self.model_file.is_some()
    }

    /// Every file the manifest references.
    pub fn files(&self) -> Vec<&FileRef> {
        self.files_after_keyframe(0)
    }

    /// The files a request whose first affected block is `first` may read: from the keyframe
    /// its restore starts at (θ_0 and o_0 when none) to the end, the shift tree and the served
    /// model. Blocks before that keyframe are neither read nor rewritten.
    pub fn files_read_from(&self, first: usize) -> Vec<&FileRef> {
        let anchor = self.opt_anchor(first.saturating_sub(1));
        self.files_after_keyframe(self.keyframe_at_or_before(anchor).map_or(0, |(k, _)| k))
    }

    /// The files of blocks `from..` (θ_0 and o_0 too when `from` is 0), the shift tree's and
    /// the served model.
    fn files_after_keyframe(&self, from: usize) -> Vec<&FileRef> {
        let mut v = match from {
            0 => vec![&self.theta0, &self.opt0],
            _ => Vec::new(),
        };
        for b in self.blocks.iter().skip(from.saturating_sub(1)) {
            v.extend(b.delta.iter());
            v.extend(b.opt.iter());
            v.extend(b.theta.iter());
        }
        v.extend(self.shifts.values());
        v.extend(self.model_file.iter());
        v
    }

    /// The latest block at or before `k` whose optimizer state is stored (0 for o_0).
    pub fn opt_anchor(&self, k: usize) -> usize {
        self.blocks[..k.min(self.blocks.len())]
            .iter()
            .rev()
            .find(|b| b.opt.is_some())
            .map_or(0, |b| b.index)
    }

    /// The latest keyframe at or before block `k`: (its block, its file).
    pub fn keyframe_at_or_before(&self, k: usize) -> Option<(usize, &FileRef)> {
        self.blocks[..k.min(self.blocks.len())]
            .iter()
            .rev()
            .find_map(|b| b.theta.as_ref().map(|f| (b.index, f)))
    }

    /// The (1-based) blocks holding at least one of `ids` (ascending), in order: the blocks a
    /// request for them affects.
    pub fn blocks_holding(&self, ids: &[u64]) -> Vec<usize> {
        self.blocks
            .iter()
            .filter(|b| b.ids.iter().any(|id| ids.binary_search(id).is_ok()))
            .map(|b| b.index)
            .collect()
    }

    /// Block holding each training id: `(block index, id)`; ids not in any block are absent.
    pub fn block_of(&self, id: u64) -> Option<usize> {
        self.blocks
            .iter()
            .find(|b| b.ids.binary_search(&id).is_ok())
            .map(|b| b.index)
    }
}

//! The run manifest: what was trained, how, and which files hold the chain.

use serde::{Deserialize, Serialize};

use crate::data::DatasetName;
use crate::model::{InputShape, ModelKind};
use crate::optim::OptimConfig;

/// Manifest format version this build reads and writes.
pub const FORMAT: u32 = 1;

/// A chain file: relative path, SHA-256 and length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Path relative to the run folder.
    pub file: String,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
    /// Length in bytes.
    pub bytes: u64,
}

/// Identity of the training data the chain was built on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// Dataset name.
    pub name: DatasetName,
    /// SHA-256 over the decoded samples ([`crate::data::Dataset::fingerprint`]).
    pub fingerprint: String,
    /// Training samples when the run was created.
    pub train_samples: usize,
    /// Test samples.
    pub test_samples: usize,
    /// Input geometry.
    pub shape: InputShape,
    /// Classes.
    pub classes: usize,
    /// When set, only the first N training / test samples were used.
    #[serde(default)]
    pub limit: Option<(usize, usize)>,
    /// When set, these training samples carried a backdoor trigger (`verify backdoor`).
    #[serde(default)]
    pub backdoor: Option<crate::audit::backdoor::Backdoor>,
}

impl DatasetRecord {
    /// How the training data was derived from the canonical files.
    pub fn origin(&self) -> DataOrigin {
        DataOrigin {
            limit: self.limit,
            backdoor: self.backdoor.clone(),
        }
    }
}

/// How a run's data derives from the canonical dataset: a prefix and/or a backdoored user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataOrigin {
    /// Only the first (train, test) samples.
    pub limit: Option<(usize, usize)>,
    /// A poisoned user.
    pub backdoor: Option<crate::audit::backdoor::Backdoor>,
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
}

fn one() -> f64 {
    1.0
}

impl TrainConfig {
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
    /// Optimizer steps taken up to the end of this block.
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
    /// SHA-256 of this manifest serialised with an empty `checksum` (detects edits and bit rot).
    #[serde(default)]
    pub checksum: String,
}

impl Manifest {
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
        let mut v = vec![&self.theta0, &self.opt0];
        for b in &self.blocks {
            v.extend(b.delta.iter());
            v.extend(b.opt.iter());
        }
        v.extend(self.model_file.iter());
        v
    }

    /// Block holding each training id: `(block index, id)`; ids not in any block are absent.
    pub fn block_of(&self, id: u64) -> Option<usize> {
        self.blocks
            .iter()
            .find(|b| b.ids.binary_search(&id).is_ok())
            .map(|b| b.index)
    }
}

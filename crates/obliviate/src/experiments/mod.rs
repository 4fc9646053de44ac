//! The experiments behind `obliviate bench`, `verify backdoor` and `demo`: protocols whose
//! results are typed rows, so the binary only renders them and tests can assert protocol
//! facts (Retrain's gap is 0; with ε = 0 DeepObliviate's model is Retrain's).
//!
//! Every experiment works in a scratch folder of its own, removes the runs it made, and reports
//! progress through a [`Say`] callback (one line per finished step).

pub mod audit;
pub mod backdoor;
pub mod calibrate;
pub mod compare;
pub mod demo;
pub mod storage;
pub mod throughput;
pub mod unlearn;

use std::path::Path;

use crate::data::split::mix;
use crate::data::{Dataset, DatasetName};
use crate::error::{Error, IoContext, Result};

/// What every data experiment is run on: datasets, model, training, seeds, forgetting and a
/// scratch folder.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Datasets, each loaded whole or cut to `limit`.
    pub datasets: Vec<DatasetName>,
    /// Only the first (train, test) samples of each dataset.
    pub limit: Option<(usize, usize)>,
    /// Model.
    pub kind: crate::model::ModelKind,
    /// Training; its seed is replaced by 0..seeds.
    pub cfg: crate::chain::TrainConfig,
    /// Number of seeds.
    pub seeds: usize,
    /// How DeepObliviate forgets.
    pub opts: crate::unlearn::ForgetOptions,
    /// Scratch folder for the runs (each experiment removes what it made).
    pub work: std::path::PathBuf,
}

impl Setup {
    /// The training of seed `seed`.
    pub fn cfg_for(&self, seed: u64) -> crate::chain::TrainConfig {
        crate::chain::TrainConfig { seed, ..self.cfg }
    }
}

/// Seed offset of the second retrain that gives the seed-to-seed noise floor.
pub const FLOOR_SEED: u64 = 1000;

/// Receives one human-readable line per finished step of an experiment.
pub type Say<'a> = dyn FnMut(&str) + 'a;

/// Loads `name` from `data_dir`, cut to its first (train, test) samples when `limit` is set.
pub fn load_dataset(
    name: DatasetName,
    limit: Option<(usize, usize)>,
    data_dir: Option<&Path>,
) -> Result<Dataset> {
    let data = Dataset::load(name, data_dir)?;
    match limit {
        Some((tr, te)) => data.truncated(tr, te),
        None => Ok(data),
    }
}

/// `n` distinct training ids of `data` (all of them if fewer), chosen from `seed`: the
/// deletion requests of every benchmark.
pub fn pick_ids(data: &Dataset, n: usize, seed: u64) -> Vec<u64> {
    let mut state = mix(seed ^ 0x5eed ^ ((n as u64) << 32));
    let mut out = std::collections::BTreeSet::new();
    while out.len() < n.min(data.train.len()) {
        state = mix(state);
        out.insert(data.train.ids[(state % data.train.len() as u64) as usize]);
    }
    out.into_iter().collect()
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}

/// Folder names whose presence marks a folder as one the engine made (a run, a SISA ensemble).
const MARKERS: [&str; 2] = [
    crate::chain::layout::MANIFEST,
    crate::baselines::sisa::MANIFEST,
];

/// Makes `dir` absent so an experiment can create a run there: removes it only if it is empty
/// or holds a run or SISA ensemble (taking its writer lock first); anything else is refused,
/// so an experiment never deletes files it did not make.
pub fn fresh_folder(dir: &Path) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let engine_made = MARKERS.iter().any(|m| dir.join(m).is_file());
    if !engine_made && entries.next().is_some() {
        return Err(Error::Chain {
            run: dir.to_path_buf(),
            detail: "exists and is neither empty nor a run: refusing to replace it".into(),
        });
    }
    let lock = crate::store::FolderLock::acquire(dir)?;
    std::fs::remove_dir_all(dir).at(dir)?;
    drop(lock);
    Ok(())
}

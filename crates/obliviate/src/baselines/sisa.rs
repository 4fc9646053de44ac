//! SISA training (Bourtoule et al., IEEE S&P 2021): Sharded, Isolated, Sliced, Aggregated.
//!
//! The training set is split (class-stratified, seeded) into S shards and each shard into R
//! slices. Each shard has its own model, trained incrementally: step r trains on slices 1..=r
//! for E epochs, and the model and optimizer state after every step are stored. Forgetting
//! retrains only the shards holding a deleted id, from the checkpoint before their first
//! affected slice, with the same minibatch order minus the ids (keyed-hash order, as in the
//! chain), so the result equals training those shards without the ids: exact unlearning.
//! Prediction aggregates the S models by majority vote (ties to the class with the larger
//! summed probability) or by averaged softmax.
//!
//! Layout: `DIR/sisa.json` (the commit point, sealed with a checksum like a chain manifest) and
//! `DIR/shards/SSS/RRR.{theta,opt}.gG.safetensors` (checkpoint after step RRR, generation G).
//! Commits write new files, then the manifest, then remove unreferenced files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::audit::{Outputs, outputs_of};
use crate::chain::TrainConfig;
use crate::data::split::{mix, stratified};
use crate::data::{Dataset, DatasetRecord, Split};
use crate::error::{Error, IoContext, Result, invalid};
use crate::model::ModelKind;
use crate::params::{FileMeta, ParamSet};
use crate::store::sealed::{read_sealed, write_sealed};
use crate::store::tensors::{copy_referenced, read_tensors, write_tensors};
use crate::store::{FileRef, FolderLock, ReaderLock, ReadersGone};
use crate::train::{BlockTrainer, Progress, backend_name};

/// Manifest file of a SISA folder.
pub const MANIFEST: &str = "sisa.json";
const FORMAT: u32 = 1;

/// How constituent predictions are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Majority vote of the S argmax labels (the paper's default).
    Vote,
    /// Mean of the S softmax outputs.
    MeanSoftmax,
}

impl Aggregate {
    /// Every aggregation.
    pub const ALL: [Aggregate; 2] = [Aggregate::Vote, Aggregate::MeanSoftmax];

    /// The command-line spelling.
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Vote => "vote",
            Aggregate::MeanSoftmax => "softmax",
        }
    }
}

/// Path of shard `s`'s checkpoint after step `r` (`what` = theta or opt), generation `g`: the
/// only place that spells a SISA file name.
fn checkpoint_name(s: usize, r: usize, what: &str, g: u64) -> String {
    format!("shards/{s:03}/{r:03}.{what}.g{g}.safetensors")
}

/// True when `rel` is exactly a name [`checkpoint_name`] produces (or the temporary sibling an
/// atomic write of one leaves) for a shard and step of `m`, of generation at most `newest`.
fn is_checkpoint_name(rel: &str, m: &SisaManifest, newest: u64) -> bool {
    let Some((dir, name)) = rel.rsplit_once('/') else {
        return false;
    };
    let name = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
        .unwrap_or(name);
    let parts: Vec<&str> = name.splitn(3, '.').collect();
    let (Some(shard), [step, what, rest]) = (dir.strip_prefix("shards/"), parts.as_slice()) else {
        return false;
    };
    let number = |t: &str| -> Option<u64> {
        t.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| t.parse().ok())
            .flatten()
    };
    let g = rest
        .strip_suffix(".safetensors")
        .and_then(|t| t.strip_prefix('g'))
        .and_then(number);
    match (number(shard), number(step), g) {
        (Some(s), Some(r), Some(g)) => {
            let (s, r) = (s as usize, r as usize);
            g <= newest
                && s < m.shards.len()
                && r <= m.config.blocks
                && (*what == "theta" || *what == "opt")
                && checkpoint_name(s, r, what, g) == format!("{dir}/{name}")
        }
        _ => false,
    }
}

/// Model and optimizer state after one training step of a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Parameters.
    pub theta: FileRef,
    /// Optimizer state.
    pub opt: FileRef,
    /// Optimizer steps so far.
    pub step: u64,
}

/// One shard: its slices and its checkpoints (index 0 = initial, r = after step r).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based shard index.
    pub index: usize,
    /// Seed of this shard's initial weights and minibatch order.
    pub seed: u64,
    /// Sorted ids of each slice.
    pub slices: Vec<Vec<u64>>,
    /// R + 1 checkpoints.
    pub checkpoints: Vec<Checkpoint>,
}

/// The SISA manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SisaManifest {
    /// Format version.
    pub format: u32,
    /// Bumped by every forget commit.
    pub generation: u64,
    /// The training data.
    pub dataset: DatasetRecord,
    /// Architecture of every constituent model.
    pub model: ModelKind,
    /// Hyper-parameters; `blocks` is R (the learning rate decays over the R steps) and
    /// `epochs_per_block` the epochs of each step.
    pub config: TrainConfig,
    /// Backend that trained it.
    pub backend: String,
    /// The shards.
    pub shards: Vec<Shard>,
    /// Ids forgotten so far, sorted.
    pub deleted: Vec<u64>,
    /// Test accuracy of the aggregate (majority vote) after the last commit.
    pub test_accuracy: f64,
    /// Seconds spent training.
    pub train_seconds: f64,
    /// SHA-256 of the rest of the manifest (written by `store::sealed`).
    #[serde(default, skip_serializing)]
    pub checksum: String,
}

impl SisaManifest {
    fn files(&self) -> impl Iterator<Item = &FileRef> {
        self.shards
            .iter()
            .flat_map(|s| s.checkpoints.iter().flat_map(|c| [&c.theta, &c.opt]))
    }
}

/// An opened SISA folder.
#[derive(Debug)]
pub struct Sisa {
    dir: PathBuf,
    /// The committed manifest.
    pub manifest: SisaManifest,
    _lock: Option<FolderLock>,
    _reading: Option<ReaderLock>,
}

fn err(dir: &Path, detail: impl Into<String>) -> Error {
    Error::Chain {
        run: dir.to_path_buf(),
        detail: detail.into(),
    }
}

/// What `train` and `forget` report.
#[derive(Debug, Clone, Serialize)]
pub struct SisaReport {
    /// Ids removed by this call (empty for training).
    pub ids: Vec<u64>,
    /// Shards (0-based) that were (re)trained.
    pub shards_trained: Vec<usize>,
    /// Training steps run (a step = one shard trained on slices 1..=r).
    pub steps: usize,
    /// Wall-clock seconds, without the accuracy evaluation.
    pub seconds: f64,
    /// Seconds of the accuracy evaluation.
    pub eval_seconds: f64,
    /// Majority-vote test accuracy afterwards.
    pub test_accuracy: f64,
    /// Bytes of the folder's checkpoints and manifest.
    pub bytes_on_disk: u64,
}

impl Sisa {
    /// Opens a SISA folder for reading, checking the manifest's checksum and structure; its
    /// files stay on disk while the value lives (see [`crate::chain::Chain::open`]).
    pub fn open(dir: &Path) -> Result<Sisa> {
        let reading = ReaderLock::acquire(dir, MANIFEST)?;
        let mut s = Sisa::read(dir)?;
        s._reading = Some(reading);
        Ok(s)
    }

    fn read(dir: &Path) -> Result<Sisa> {
        let manifest: SisaManifest = read_sealed(&dir.join(MANIFEST), "SISA manifest JSON")?
            .ok_or_else(|| err(dir, "no sisa.json: not a SISA folder"))?;
        if manifest.format != FORMAT {
            return Err(err(
                dir,
                format!(
                    "SISA format {} (this build reads {FORMAT})",
                    manifest.format
                ),
            ));
        }
        let r = manifest.config.blocks;
        for s in &manifest.shards {
            if s.slices.len() != r || s.checkpoints.len() != r + 1 {
                return Err(err(
                    dir,
                    format!(
                        "shard {} has {} slices and {} checkpoints for R = {r}",
                        s.index,
                        s.slices.len(),
                        s.checkpoints.len()
                    ),
                ));
            }
        }
        Ok(Sisa {
            dir: dir.to_path_buf(),
            manifest,
            _lock: None,
            _reading: None,
        })
    }

    fn open_mut(dir: &Path) -> Result<Sisa> {
        if !dir.join(MANIFEST).is_file() {
            return Err(err(dir, "no sisa.json: not a SISA folder"));
        }
        let lock = FolderLock::acquire(dir)?;
        let mut s = Sisa::read(dir)?;
        s._lock = Some(lock);
        s.collect_garbage()?;
        Ok(s)
    }

    /// The data this ensemble was trained on, rebuilt from the canonical files in `data_dir`
    /// and checked against the recorded fingerprint.
    pub fn load_data(&self, data_dir: Option<&Path>) -> Result<Dataset> {
        self.manifest.dataset.load(data_dir, &self.dir)
    }

    /// Fails unless `data` is the dataset this folder was trained on.
    pub fn check_dataset(&self, data: &Dataset) -> Result<()> {
        self.manifest.dataset.check(data, &self.dir)
    }

    fn read_set(&self, r: &FileRef) -> Result<(ParamSet, FileMeta)> {
        read_tensors(&self.dir, r)
    }

    fn commit(&mut self) -> Result<()> {
        self.manifest.checksum = write_sealed(&self.dir.join(MANIFEST), &self.manifest)?;
        Ok(())
    }

    /// Forks the committed ensemble into `dst` (absent or empty; checkpoints linked, see
    /// [`copy_referenced`]), manifest last.
    pub fn copy_to(&self, dst: &Path) -> Result<Sisa> {
        let lock = copy_referenced(&self.dir, dst, self.manifest.files(), &[])?;
        let mut copy = Sisa {
            dir: dst.to_path_buf(),
            manifest: self.manifest.clone(),
            _lock: Some(lock),
            _reading: None,
        };
        copy.commit()?;
        Ok(copy)
    }

    /// Removes unreferenced checkpoints; only names [`checkpoint_name`] produces are touched.
    fn collect_garbage(&self) -> Result<()> {
        let Some(_readers_gone) = ReadersGone::try_acquire(&self.dir)? else {
            return Ok(());
        };
        let keep: BTreeSet<&str> = self.manifest.files().map(|r| r.file.as_str()).collect();
        let newest = self.manifest.generation.saturating_add(1);
        let Ok(shards) = std::fs::read_dir(self.dir.join("shards")) else {
            return Ok(());
        };
        for shard in shards.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                let rel = format!(
                    "shards/{}/{}",
                    shard.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                );
                if is_checkpoint_name(&rel, &self.manifest, newest)
                    && !keep.contains(rel.as_str())
                    && f.path().is_file()
                {
                    std::fs::remove_file(f.path()).at(f.path())?;
                }
            }
        }
        Ok(())
    }

    /// Bytes of the referenced checkpoints plus the manifest.
    pub fn bytes_on_disk(&self) -> u64 {
        let m = std::fs::metadata(self.dir.join(MANIFEST)).map_or(0, |m| m.len());
        self.manifest.files().map(|r| r.bytes).sum::<u64>() + m
    }

    /// Final parameters of every constituent model.
    pub fn models(&self) -> Result<Vec<ParamSet>> {
        self.manifest
            .shards
            .iter()
            .map(|s| {
                let last = s.checkpoints.last().ok_or_else(|| {
                    err(&self.dir, format!("shard {} has no checkpoint", s.index))
                })?;
                Ok(self.read_set(&last.theta)?.0)
            })
            .collect()
    }

    /// Trains shard `s` from its checkpoint `from` (0 = initial) through step R, on its
    /// current slices, writing checkpoints of generation `generation`.
    fn train_shard<B: AutodiffBackend>(
        &self,
        data: &Dataset,
        s: usize,
        from: usize,
        generation: u64,
        device: &B::Device,
    ) -> Result<Vec<Checkpoint>> {
        let m = &self.manifest;
        let shard = &m.shards[s];
        let cfg = TrainConfig {
            seed: shard.seed,
            ..m.config
        };
        let start = &shard.checkpoints[from];
        let theta = self.read_set(&start.theta)?.0;
        let opt = self.read_set(&start.opt)?.0;
        let mut trainer =
            BlockTrainer::<B>::new(data, m.model, cfg, theta, &opt, start.step, device)?;
        let mut out = Vec::new();
        let mut ids: Vec<u64> = shard.slices[..from].iter().flatten().copied().collect();
        for r in from + 1..=shard.slices.len() {
            ids.extend(&shard.slices[r - 1]);
            ids.sort_unstable();
            let o = trainer.run_block(r, &ids)?;
            out.push(self.checkpoint(s, r, generation, trainer.theta(), &o.opt_state, o.step)?);
        }
        Ok(out)
    }

    fn checkpoint(
        &self,
        s: usize,
        r: usize,
        generation: u64,
        theta: &ParamSet,
        opt: &ParamSet,
        step: u64,
    ) -> Result<Checkpoint> {
        let write = |what: &str, set: &ParamSet| {
            let meta = FileMeta {
                kind: what.into(),
                block: r as u64,
                step,
                ..Default::default()
            };
            write_tensors(
                &self.dir,
                &checkpoint_name(s, r, what, generation),
                set,
                &meta,
            )
        };
        Ok(Checkpoint {
            theta: write("theta", theta)?,
            opt: write("opt", opt)?,
            step,
        })
    }
}

/// Trains a SISA ensemble of `shards` × `cfg.blocks` slices into `dir` (absent or empty).
pub fn train<B: AutodiffBackend>(
    dir: &Path,
    data: &Dataset,
    kind: ModelKind,
    cfg: TrainConfig,
    shards: usize,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<SisaReport> {
    let start = Instant::now();
    if dir.join(MANIFEST).exists() {
        return Err(Error::AlreadyExists {
            dir: dir.to_path_buf(),
            what: "SISA ensemble",
        });
    }
    if shards == 0 || cfg.blocks == 0 {
        return Err(invalid("SISA", "shards and slices must be at least 1"));
    }
    if shards > data.train.len() {
        return Err(invalid(
            "SISA",
            format!("{shards} shards for {} training samples", data.train.len()),
        ));
    }
    cfg.validate_for(kind)?;
    crate::store::require_empty(dir, "a new SISA ensemble")?;
    std::fs::create_dir_all(dir.join("shards")).at(dir)?;
    let lock = FolderLock::acquire(dir)?;
    let parts = stratified(&data.train.ids, &data.train.labels, shards, cfg.seed)?;
    let labels = |ids: &[u64]| -> Vec<u16> {
        ids.iter()
            .map(|&id| data.train.row(id).map_or(0, |r| data.train.labels[r]))
            .collect()
    };
    let mut list = Vec::with_capacity(shards);
    for (s, ids) in parts.iter().enumerate() {
        let seed = mix(cfg.seed ^ mix(s as u64 + 1));
        let slices = stratified(ids, &labels(ids), cfg.blocks, seed)?;
        list.push(Shard {
            index: s,
            seed,
            slices,
            checkpoints: Vec::new(),
        });
    }
    let mut sisa = Sisa {
        dir: dir.to_path_buf(),
        manifest: SisaManifest {
            format: FORMAT,
            generation: 0,
            dataset: DatasetRecord::of(data),
            model: kind,
            config: cfg,
            backend: backend_name::<B>(),
            shards: list,
            deleted: Vec::new(),
            test_accuracy: 0.0,
            train_seconds: 0.0,
            checksum: String::new(),
        },
        _lock: Some(lock),
        _reading: None,
    };
    progress.start("sisa shards", shards as u64);
    for s in 0..shards {
        let shard_cfg = TrainConfig {
            seed: sisa.manifest.shards[s].seed,
            ..cfg
        };
        let (theta, opt) = BlockTrainer::<B>::initial(data, kind, &shard_cfg, device)?;
        let c0 = sisa.checkpoint(s, 0, 0, &theta, &opt, 0)?;
        sisa.manifest.shards[s].checkpoints = vec![c0];
        let rest = sisa.train_shard::<B>(data, s, 0, 0, device)?;
        sisa.manifest.shards[s].checkpoints.extend(rest);
        progress.set(s as u64 + 1);
    }
    progress.finish();
    let seconds = start.elapsed().as_secs_f64();
    let t = Instant::now();
    let acc = accuracy::<B>(&sisa, data, Aggregate::Vote, device)?;
    let eval_seconds = t.elapsed().as_secs_f64();
    sisa.manifest.test_accuracy = acc;
    sisa.manifest.train_seconds = seconds;
    sisa.commit()?;
    Ok(SisaReport {
        ids: Vec::new(),
        shards_trained: (0..shards).collect(),
        steps: shards * cfg.blocks,
        seconds,
        eval_seconds,
        test_accuracy: acc,
        bytes_on_disk: sisa.bytes_on_disk(),
    })
}

/// Forgets `ids`: retrains each shard holding one from its first affected slice, then
/// commits. Unknown or already forgotten ids are an error naming them; nothing changes.
pub fn forget<B: AutodiffBackend>(
    dir: &Path,
    data: &Dataset,
    ids: &[u64],
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<SisaReport> {
    let start = Instant::now();
    let mut sisa = Sisa::open_mut(dir)?;
    sisa.check_dataset(data)?;
    let want: BTreeSet<u64> = ids.iter().copied().collect();
    if want.is_empty() {
        return Err(invalid("ids", "no ids given"));
    }
    let (mut unknown, mut gone) = (Vec::new(), Vec::new());
    let mut place = Vec::new();
    for &id in &want {
        if sisa.manifest.deleted.binary_search(&id).is_ok() {
            gone.push(id);
            continue;
        }
        let found = sisa.manifest.shards.iter().find_map(|s| {
            s.slices
                .iter()
                .position(|sl| sl.binary_search(&id).is_ok())
                .map(|r| (s.index, r + 1))
        });
        match found {
            Some(p) => place.push(p),
            None => unknown.push(id),
        }
    }
    if !unknown.is_empty() || !gone.is_empty() {
        return Err(Error::Ids {
            unknown,
            deleted: gone,
        });
    }
    // First affected slice of each affected shard.
    let mut first: std::collections::BTreeMap<usize, usize> = Default::default();
    for (s, r) in place {
        let e = first.entry(s).or_insert(r);
        *e = (*e).min(r);
    }
    let generation = sisa.manifest.generation + 1;
    for shard in &mut sisa.manifest.shards {
        for sl in &mut shard.slices {
            sl.retain(|id| !want.contains(id));
        }
    }
    progress.start("sisa forget", first.len() as u64);
    let mut steps = 0;
    for (k, (&s, &r)) in first.iter().enumerate() {
        let fresh = sisa.train_shard::<B>(data, s, r - 1, generation, device)?;
        steps += fresh.len();
        let cps = &mut sisa.manifest.shards[s].checkpoints;
        cps.truncate(r);
        cps.extend(fresh);
        progress.set(k as u64 + 1);
    }
    progress.finish();
    let t = Instant::now();
    let acc = accuracy::<B>(&sisa, data, Aggregate::Vote, device)?;
    let eval_seconds = t.elapsed().as_secs_f64();
    sisa.manifest.deleted.extend(&want);
    sisa.manifest.deleted.sort_unstable();
    sisa.manifest.generation = generation;
    sisa.manifest.test_accuracy = acc;
    sisa.commit()?;
    sisa.collect_garbage()?;
    Ok(SisaReport {
        ids: want.into_iter().collect(),
        shards_trained: first.keys().copied().collect(),
        steps,
        seconds: start.elapsed().as_secs_f64() - eval_seconds,
        eval_seconds,
        test_accuracy: acc,
        bytes_on_disk: sisa.bytes_on_disk(),
    })
}

/// Aggregated outputs of the ensemble on `rows` of `split`. For [`Aggregate::Vote`] the
/// "probabilities" are vote shares, nudged by 1e-3 × the mean softmax so ties go to the class
/// the models are jointly surer of.
pub fn outputs<B: AutodiffBackend>(
    sisa: &Sisa,
    data: &Dataset,
    split: Split,
    rows: &[usize],
    how: Aggregate,
    device: &B::Device,
) -> Result<Outputs> {
    let models = sisa.models()?;
    outputs_of_models::<B>(sisa.manifest.model, &models, data, split, rows, how, device)
}

/// [`outputs`] for constituent parameters already in memory.
pub fn outputs_of_models<B: AutodiffBackend>(
    kind: ModelKind,
    models: &[ParamSet],
    data: &Dataset,
    split: Split,
    rows: &[usize],
    how: Aggregate,
    device: &B::Device,
) -> Result<Outputs> {
    let each = models
        .iter()
        .map(|theta| outputs_of::<B>(kind, theta, data, split, rows, device))
        .collect::<Result<Vec<_>>>()?;
    aggregate(&each, how)
}

/// Combines the constituents' outputs on the same samples.
pub fn aggregate(each: &[Outputs], how: Aggregate) -> Result<Outputs> {
    let first = each
        .first()
        .ok_or_else(|| invalid("SISA ensemble", "has no models"))?;
    let (c, n) = (first.classes, first.len());
    if each.iter().any(|o| o.len() != n || o.classes != c) {
        return Err(invalid(
            "SISA ensemble",
            "constituent outputs differ in shape",
        ));
    }
    let k = each.len() as f32;
    let mut mean = vec![0f32; n * c];
    let mut votes = vec![0f32; n * c];
    for o in each {
        for (m, p) in mean.iter_mut().zip(&o.probs) {
            *m += p / k;
        }
        for i in 0..n {
            votes[i * c + o.predicted(i)] += 1.0 / k;
        }
    }
    let probs = match how {
        Aggregate::MeanSoftmax => mean,
        Aggregate::Vote => votes
            .iter()
            .zip(&mean)
            .map(|(v, m)| (v + 1e-3 * m) / (1.0 + 1e-3))
            .collect(),
    };
    Ok(Outputs {
        classes: c,
        probs,
        labels: first.labels.clone(),
    })
}

/// Test accuracy of the aggregate.
pub fn accuracy<B: AutodiffBackend>(
    sisa: &Sisa,
    data: &Dataset,
    how: Aggregate,
    device: &B::Device,
) -> Result<f64> {
    let rows: Vec<usize> = (0..data.test.len()).collect();
    Ok(outputs::<B>(sisa, data, Split::Test, &rows, how, device)?.accuracy())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetName;
    use crate::optim::OptimConfig;
    use crate::train::NoProgress;

    type B = crate::CpuBackend;

    #[test]
    fn forgetting_equals_training_the_shard_without_the_ids() {
        let data = Dataset::load(DatasetName::MnistMini, None)
            .and_then(|d| d.truncated(600, 100))
            .expect("bundled data");
        let dir = std::env::temp_dir().join(format!("obliviate-sisa-exact-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = TrainConfig {
            blocks: 3,
            epochs_per_block: 1,
            batch_size: 16,
            optim: OptimConfig::sgd(0.05, 0.9),
            seed: 9,
            lr_final: 0.5,
            storage: Default::default(),
            micro_batches: 2,
        };
        let dev = Default::default();
        train::<B>(
            &dir,
            &data,
            ModelKind::MlpSmall,
            cfg,
            2,
            &dev,
            &mut NoProgress,
        )
        .expect("train");
        let before = Sisa::open(&dir).expect("open").manifest;
        let ids = [before.shards[0].slices[1][0], before.shards[0].slices[2][5]];
        let r = forget::<B>(&dir, &data, &ids, &dev, &mut NoProgress).expect("forget");
        assert_eq!((r.shards_trained.clone(), r.steps), (vec![0], 2));
        let after = Sisa::open(&dir).expect("open");
        assert_eq!(
            after.manifest.shards[0].checkpoints[..2],
            before.shards[0].checkpoints[..2]
        );
        // Train shard 0 from its initial checkpoint on the slices without the ids.
        let scratch = after
            .train_shard::<B>(&data, 0, 0, 99, &dev)
            .expect("scratch");
        let forgotten = &after.manifest.shards[0].checkpoints[3];
        assert_eq!(scratch[2].theta.sha256, forgotten.theta.sha256);
        assert_eq!(scratch[2].opt.sha256, forgotten.opt.sha256);
        assert_ne!(
            forgotten.theta.sha256,
            before.shards[0].checkpoints[3].theta.sha256
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

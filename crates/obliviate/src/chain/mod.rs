//! The increment chain on disk: θ_0, o_0, δ_i and o_i per block, the served model, and the
//! manifest that ties them together.
//!
//! The folder's file names live in [`layout`] and nowhere else. Files are never modified in
//! place: a commit writes new files named by its generation, then the manifest, then removes
//! what the old manifest alone referenced. Every read checks the file's SHA-256 against the
//! manifest.

pub mod layout;
pub mod ledger;
pub mod manifest;
mod pending;
pub mod receipts;
pub mod shifts;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub use manifest::{BlockFiles, BlockRecord, Manifest, Storage, TrainConfig};
pub use shifts::Shifts;

use crate::data::Dataset;
use crate::error::{Error, IoContext, Result};
use crate::params::{EncodedSet, FileMeta, ParamSet};
use crate::store::sealed::{KeyedSeal, read_sealed_seal, seal};
use crate::store::tensors::{
    Durability, check_present, copy_referenced, read_tensors, write_encoded, write_tensors,
};
use crate::store::{FileRef, FolderLock, ReaderLock, ReadersGone};

/// An opened run folder: a writer ([`Chain::open_mut`], [`Chain::create`]) holds the run's
/// lock; a reader ([`Chain::open`]) holds a shared hold that keeps the writer from collecting
/// the files of the generation it opened, for as long as the value lives.
#[derive(Debug)]
pub struct Chain {
    dir: PathBuf,
    manifest: Manifest,
    _lock: Option<FolderLock>,
    _reading: Option<ReaderLock>,
    seal: KeyedSeal,
    /// Bytes of chain files read through this handle (what a request costs in I/O).
    read: AtomicU64,
    /// Files of the next generation written since the last commit and not yet durable: the
    /// commit fsyncs them before the manifest that references them.
    unsynced: Mutex<pending::Pending>,
}

/// A run's bytes on disk by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Bytes {
    /// The increments δ_i.
    pub increments: u64,
    /// The optimizer states o_i.
    pub optimizer: u64,
    /// The keyframes θ_i.
    pub keyframes: u64,
    /// The keyframe shift tree's nodes (stitch offsets of past requests).
    pub shifts: u64,
    /// θ_0 and o_0.
    pub initial: u64,
    /// The served model.
    pub model: u64,
    /// The manifest.
    pub manifest: u64,
    /// The request ledger.
    pub ledger: u64,
    /// All of the above.
    pub total: u64,
    /// What the same chain takes with f32 increments and optimizer states and no keyframes.
    pub raw_f32: u64,
    /// `total / raw_f32`.
    pub ratio: f64,
}

fn chain_err(dir: &Path, detail: impl Into<String>) -> Error {
    Error::Chain {
        run: dir.to_path_buf(),
        detail: detail.into(),
    }
}

fn not_a_run(dir: &Path) -> Error {
    chain_err(
        dir,
        "no manifest.json: not a run folder, or training never committed a block",
    )
}

impl Chain {
    /// Creates a run folder holding θ_0 and o_0 under `manifest` (whose file references it
    /// fills in) and commits it. `dir` must be absent or empty: a folder holding anything else
    /// is refused, so the engine never mixes its files with a user's.
    pub fn create(
        dir: &Path,
        mut manifest: Manifest,
        theta0: &ParamSet,
        opt0: &ParamSet,
    ) -> Result<Chain> {
        if dir.join(layout::MANIFEST).exists() {
            return Err(Error::AlreadyExists {
                dir: dir.to_path_buf(),
                what: "run",
            });
        }
        crate::store::require_empty(dir, "a new run")?;
        std::fs::create_dir_all(dir.join(layout::BLOCKS)).at(dir)?;
        let lock = FolderLock::acquire(dir)?;
        // The run's (empty) request ledger comes with it, so the first request pays no more
        // than the next (creating it is a few journal commits).
        ledger::Ledger::open(dir)?;
        let meta = |kind: &str| FileMeta {
            kind: kind.into(),
            ..Default::default()
        };
        manifest.theta0 = write_tensors(dir, layout::THETA0, theta0, &meta("theta"))?;
        manifest.opt0 = write_tensors(dir, layout::OPT0, opt0, &meta("opt"))?;
        let mut chain = Chain {
            dir: dir.to_path_buf(),
            manifest,
            _lock: Some(lock),
            _reading: None,
            seal: KeyedSeal::Absent,
            read: AtomicU64::new(0),
            unsynced: Mutex::default(),
        };
        chain.commit()?;
        Ok(chain)
    }

    /// Opens a run for reading: parses and checks the manifest (not the chain files; see
    /// [`Chain::verify`]). Until the value is dropped, the files of the generation it opened
    /// stay on disk whatever a writer commits meanwhile.
    pub fn open(dir: &Path) -> Result<Chain> {
        let reading = ReaderLock::acquire(dir, layout::MANIFEST)?;
        let mut c = Chain::read(dir)?;
        c._reading = Some(reading);
        Ok(c)
    }

    /// The run in `dir` as its manifest describes it, without any lock.
    fn read(dir: &Path) -> Result<Chain> {
        let (manifest, seal): (Manifest, _) =
            read_sealed_seal(&dir.join(layout::MANIFEST), "manifest JSON")?
                .ok_or_else(|| not_a_run(dir))?;
        if !(manifest::OLDEST_FORMAT..=manifest::FORMAT).contains(&manifest.format) {
            return Err(chain_err(
                dir,
                format!(
                    "manifest format {} (this build reads formats {} to {})",
                    manifest.format,
                    manifest::OLDEST_FORMAT,
                    manifest::FORMAT
                ),
            ));
        }
        let c = Chain {
            dir: dir.to_path_buf(),
            manifest,
            _lock: None,
            _reading: None,
            seal,
            read: AtomicU64::new(0),
            unsynced: Mutex::default(),
        };
        c.check_structure()?;
        Ok(c)
    }

    /// Opens a run for changing it: takes the folder's exclusive lock (one writer at a time),
    /// removes files left by an interrupted commit and rolls back an interrupted ledger
    /// transaction.
    pub fn open_mut(dir: &Path) -> Result<Chain> {
        if !dir.join(layout::MANIFEST).is_file() {
            return Err(not_a_run(dir));
        }
        let lock = FolderLock::acquire(dir)?;
        let mut c = Chain::read(dir)?;
        c._lock = Some(lock);
        c.collect_garbage()?;
        ledger::Ledger::recover(dir)?;
        Ok(c)
    }

    fn check_structure(&self) -> Result<()> {
        let m = &self.manifest;
        if m.blocks.len() != m.config.blocks {
            return Err(chain_err(
                &self.dir,
                format!(
                    "{} block records for {} blocks",
                    m.blocks.len(),
                    m.config.blocks
                ),
            ));
        }
        for (i, b) in m.blocks.iter().enumerate() {
            if b.index != i + 1 {
                return Err(chain_err(
                    &self.dir,
                    format!("block record {} has index {}", i + 1, b.index),
                ));
            }
            // A trained block holds a keyframe and an optimizer state exactly where the storage
            // puts them.
            let st = &m.config.storage;
            for (what, has, every, should) in [
                (
                    "keyframe",
                    b.theta.is_some(),
                    st.keyframe_every,
                    st.is_keyframe(b.index),
                ),
                (
                    "optimizer state",
                    b.opt.is_some(),
                    st.opt_every.max(1),
                    st.stores_opt(b.index),
                ),
            ] {
                let should = should && b.delta.is_some();
                if has != should {
                    return Err(chain_err(
                        &self.dir,
                        format!(
                            "block {} {} a {what} where the storage (every {every}) says it has {}",
                            b.index,
                            if has { "has" } else { "lacks" },
                            if should { "one" } else { "none" }
                        ),
                    ));
                }
            }
        }
        let nodes = shifts::nodes(shifts::keyframe_count(
            m.config.storage.keyframe_every,
            m.blocks.len(),
        ));
        if let Some(node) = m.shifts.keys().find(|&&p| p == 0 || p >= nodes) {
            return Err(chain_err(
                &self.dir,
                format!("keyframe shift node {node} lies outside the tree's 1..{nodes}"),
            ));
        }
        let done = m.completed();
        if m.blocks[done..].iter().any(|b| b.delta.is_some()) {
            return Err(chain_err(
                &self.dir,
                "trained blocks are not a prefix of the chain",
            ));
        }
        Ok(())
    }

    /// The manifest, taken out of the opened run.
    pub fn into_manifest(self) -> Manifest {
        self.manifest
    }

    /// True when this handle holds the run's writer lock ([`Chain::open_mut`], [`Chain::create`]).
    pub fn is_writable(&self) -> bool {
        self._lock.is_some()
    }

    /// What became of the manifest's keyed seal when it was read (see `store::sealed`).
    pub fn keyed_seal(&self) -> KeyedSeal {
        self.seal
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Absolute path of a chain file.
    pub fn path(&self, r: &FileRef) -> PathBuf {
        self.dir.join(&r.file)
    }

    /// The committed manifest (change it through [`Chain::set_block`] and the other writers).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The data the chain was trained on, rebuilt from the canonical files in `data_dir` and
    /// checked against the recorded fingerprint.
    pub fn load_data(&self, data_dir: Option<&Path>) -> Result<Dataset> {
        self.manifest.dataset.load(data_dir, &self.dir)
    }

    /// Fails unless `data` is the dataset the chain was trained on.
    pub fn check_dataset(&self, data: &Dataset) -> Result<()> {
        self.manifest.dataset.check(data, &self.dir)
    }

    /// Reads and verifies a file of this run.
    pub fn read_set(&self, r: &FileRef) -> Result<(ParamSet, FileMeta)> {
        self.read.fetch_add(r.bytes, Ordering::Relaxed);
        read_tensors(&self.dir, r)
    }

    /// Bytes of chain files read through this handle so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Writes δ_block and o_block, in the stored form training produced (see
    /// `params::codec`), and on keyframe blocks `theta` = θ_block, as files of generation
    /// `generation` (not yet referenced: record them with [`Chain::set_block`] or
    /// [`Chain::commit_forget`]).
    pub fn write_block(
        &self,
        block: usize,
        generation: u64,
        (delta, opt, step): (&EncodedSet, &EncodedSet, u64),
        theta: &ParamSet,
    ) -> Result<BlockFiles> {
        let storage = self.manifest.config.storage;
        if (delta.precision, opt.precision) != (storage.delta, storage.opt) {
            return Err(chain_err(
                &self.dir,
                format!(
                    "block {block} was encoded as {}/{} for a chain stored as {}/{}",
                    delta.precision.name(),
                    opt.precision.name(),
                    storage.delta.name(),
                    storage.opt.name()
                ),
            ));
        }
        let meta = |kind: &str, step| FileMeta {
            kind: kind.into(),
            block: block as u64,
            step,
            ..Default::default()
        };
        Ok(BlockFiles {
            delta: self.write_next(
                &layout::delta(block, generation, storage.compression),
                delta,
                &meta("delta", 0),
                storage.compression,
            )?,
            opt: match storage.stores_opt(block) {
                true => Some(self.write_next(
                    &layout::opt(block, generation, storage.compression),
                    opt,
                    &meta("opt", step),
                    storage.compression,
                )?),
                false => None,
            },
            keyframe: match storage.is_keyframe(block) {
                true => Some(self.write_keyframe(block, generation, theta)?),
                false => None,
            },
            step,
        })
    }

    /// Writes the keyframe θ_block (f32) as a file of generation `generation` (not yet
    /// referenced), on keyframe blocks.
    pub fn write_keyframe(
        &self,
        block: usize,
        generation: u64,
        theta: &ParamSet,
    ) -> Result<FileRef> {
        self.write_f32(&layout::keyframe(block, generation), "theta", block, theta)
    }

    /// Writes node `node` of the keyframe shift tree (f32) as a file of generation `generation`
    /// (not yet referenced).
    pub fn write_shift(&self, node: usize, generation: u64, value: &ParamSet) -> Result<FileRef> {
        self.write_f32(&layout::shift(node, generation), "shift", node, value)
    }

    /// Writes the served model θ as a file of generation `generation` (not yet referenced).
    pub fn write_model(&self, generation: u64, theta: &ParamSet) -> Result<FileRef> {
        let blocks = self.manifest.blocks.len();
        self.write_f32(&layout::model(generation), "model", blocks, theta)
    }

    /// Writes `set` in plain f32 as `name`, its metadata naming `kind` and `index`.
    fn write_f32(&self, name: &str, kind: &str, index: usize, set: &ParamSet) -> Result<FileRef> {
        let meta = FileMeta {
            kind: kind.into(),
            block: index as u64,
            ..Default::default()
        };
        let set = crate::params::Precision::F32.encode(set);
        self.write_next(name, &set, &meta, crate::store::tensors::Compression::None)
    }

    /// Writes a file of the next generation, to be made durable by the next [`Chain::commit`]
    /// (no committed manifest references its name, so a crash before then leaves garbage, not
    /// a torn chain file).
    fn write_next(
        &self,
        name: &str,
        set: &EncodedSet,
        meta: &FileMeta,
        compression: crate::store::tensors::Compression,
    ) -> Result<FileRef> {
        let r = write_encoded(
            &self.dir,
            name,
            set,
            meta,
            compression,
            Durability::AtCommit,
        )?;
        self.unsynced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.path(&r));
        Ok(r)
    }

    /// Starts making the files written since the last commit durable on a background thread
    /// (the commit waits for it): a request calls it once its training is done.
    pub fn sync_ahead(&self) {
        self.unsynced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync_ahead();
    }

    /// Records block `block`'s files in the in-memory manifest (training; see [`Chain::commit`]).
    pub fn set_block(&mut self, block: usize, files: BlockFiles) {
        self.manifest.set_block(block, files);
    }

    /// Records the served model and its test accuracy in the in-memory manifest (training; see
    /// [`Chain::commit`]).
    pub fn set_model(&mut self, model: FileRef, test_accuracy: f64) {
        self.manifest.model_file = Some(model);
        self.manifest.test_accuracy = Some(test_accuracy);
    }

    /// Sets the recorded training time (all sessions of a resumed run).
    pub fn set_train_seconds(&mut self, seconds: f64) {
        self.manifest.train_seconds = seconds;
    }

    /// Commits the in-memory manifest: makes the files written since the last commit durable,
    /// then seals and writes `manifest.json` atomically. The files are fsynced on a second
    /// thread while this one seals the manifest (waiting on the disk and serialising overlap);
    /// the manifest is written only once both are done.
    pub fn commit(&mut self) -> Result<()> {
        let unsynced = std::mem::take(self.unsynced.get_mut().unwrap_or_else(|p| p.into_inner()));
        let manifest = &self.manifest;
        let (synced, sealed) = std::thread::scope(|s| {
            let sync = (!unsynced.is_empty()).then(|| s.spawn(move || unsynced.sync_all()));
            let sealed = seal(manifest);
            let synced = sync.map_or(Ok(()), |h| {
                h.join()
                    .unwrap_or_else(|_| Err(chain_err(&self.dir, "the fsync thread panicked")))
            });
            (synced, sealed)
        });
        synced?;
        let (bytes, sum) = sealed?;
        crate::store::atomic::write_file(&self.dir.join(layout::MANIFEST), &bytes)?;
        self.manifest.checksum = sum;
        Ok(())
    }

    /// Commits a forget request as generation g + 1: the retrained blocks take their `files`
    /// and the shift tree's changed nodes their `shifts` (written under g + 1), `removed`
    /// leaves every block and joins the forgotten ids, `model` (with its test accuracy)
    /// becomes the served model and `receipt` the latest receipt's SHA-256. Then removes what
    /// only generation g referenced.
    pub fn commit_forget(
        &mut self,
        files: Vec<(usize, BlockFiles)>,
        shifts: Vec<(usize, FileRef)>,
        removed: &BTreeSet<u64>,
        model: (FileRef, Option<f64>),
        receipt: Option<String>,
    ) -> Result<()> {
        let before: Vec<String> = self
            .manifest
            .files()
            .into_iter()
            .map(|r| r.file.clone())
            .collect();
        self.manifest
            .record_forget(files, shifts, removed, model, receipt)?;
        self.commit()?;
        // What the old generation alone held, found without listing the folder (leftovers of
        // interrupted commits are collected when the next writer opens the run).
        self.remove_unreferenced(before)
    }

    /// Rereads the committed manifest (the truth on disk, whatever a failed commit left in
    /// memory) and collects the files it does not reference: a failed request's leftovers.
    pub fn reload_and_collect(&mut self) -> Result<()> {
        // The failed request's files are about to go: the next commit must not wait for them.
        self.unsynced
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.manifest = Chain::read(&self.dir)?.manifest;
        self.collect_garbage()
    }

    /// θ_k: its latest keyframe (θ_0 when none) with the keyframe's shift, plus the increments
    /// after it, folded left to right in f32 (the definition of the chain). Without keyframes,
    /// θ_0 + δ_1 + … + δ_k.
    pub fn theta(&self, k: usize) -> Result<ParamSet> {
        self.theta_in(k, &mut Shifts::new(self))
    }

    /// [`Chain::theta`], reading the shift tree through `shifts` (by the committed chain).
    pub fn theta_in(&self, k: usize, shifts: &mut Shifts) -> Result<ParamSet> {
        let (from, mut theta) = match self.manifest.keyframe_at_or_before(k) {
            Some((from, _)) => (from, shifts.theta_at(from, false)?),
            None => (0, self.read_set(&self.manifest.theta0)?.0),
        };
        self.fold_into(&mut theta, from + 1, k)?;
        Ok(theta)
    }

    /// Adds δ_from ..= δ_to (1-based) to `acc`, in block order.
    pub fn fold_into(&self, acc: &mut ParamSet, from: usize, to: usize) -> Result<()> {
        self.fold_into_all(&mut [acc], from, to)
    }

    /// Adds δ_from ..= δ_to (1-based) to every accumulator, in block order, reading each file
    /// once. Files are read, hashed and decoded in parallel, in batches of bounded size; the
    /// additions stay sequential so the result is bit-identical to a one-by-one fold.
    pub fn fold_into_all(&self, accs: &mut [&mut ParamSet], from: usize, to: usize) -> Result<()> {
        use rayon::prelude::*;
        if from > to {
            return Ok(());
        }
        let refs: Vec<&FileRef> = self.manifest.blocks[from - 1..to]
            .iter()
            .map(|b| {
                b.delta.as_ref().ok_or_else(|| {
                    chain_err(&self.dir, format!("block {} is not trained", b.index))
                })
            })
            .collect::<Result<_>>()?;
        const BATCH_BYTES: u64 = 256 << 20;
        let mut start = 0;
        while start < refs.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < refs.len() && (end == start || bytes + refs[end].bytes <= BATCH_BYTES) {
                bytes += refs[end].bytes;
                end += 1;
            }
            let sets: Vec<Result<ParamSet>> = refs[start..end]
                .par_iter()
                .map(|r| self.read_set(r).map(|s| s.0))
                .collect();
            for (r, set) in refs[start..end].iter().zip(sets) {
                let set = set?;
                for acc in accs.iter_mut() {
                    acc.add_assign(&set)
                        .map_err(|e| chain_err(&self.dir, format!("{}: {e}", r.file)))?;
                }
            }
            start = end;
        }
        Ok(())
    }

    /// o_k and the optimizer step count after block k, where stored (see
    /// [`Manifest::opt_anchor`]).
    pub fn opt_state(&self, k: usize) -> Result<(ParamSet, u64)> {
        let r = if k == 0 {
            &self.manifest.opt0
        } else {
            self.manifest.blocks[k - 1]
                .opt
                .as_ref()
                .ok_or_else(|| {
                    chain_err(
                        &self.dir,
                        format!("block {k} has no stored optimizer state (untrained, or between stored ones)"),
                    )
                })?
        };
        let (set, meta) = self.read_set(r)?;
        Ok((set, meta.step))
    }

    /// The keyframe file of block `block`, without its shift (see [`Shifts::theta_at`]).
    pub fn keyframe(&self, block: usize) -> Result<ParamSet> {
        let r = self
            .manifest
            .blocks
            .get(block.wrapping_sub(1))
            .and_then(|b| b.theta.as_ref())
            .ok_or_else(|| chain_err(&self.dir, format!("block {block} has no keyframe")))?;
        Ok(self.read_set(r)?.0)
    }

    /// The served model, read from its file.
    pub fn served(&self) -> Result<ParamSet> {
        let r = self
            .manifest
            .model_file
            .as_ref()
            .ok_or_else(|| Error::Unfinished {
                run: self.dir.clone(),
            })?;
        Ok(self.read_set(r)?.0)
    }

    /// Largest difference between a keyframe (with its shift) and the fold that leads to it,
    /// relative to the keyframe's largest value, that [`Chain::verify`] accepts. A forget
    /// shifts later keyframes by its stitch offset instead of refolding them, which differs
    /// from the fold by rounding (a few ulps per block); a wrong keyframe differs by far more.
    pub const KEYFRAME_TOLERANCE: f32 = 1e-4;

    /// Checks every file's hash, that each keyframe with its shift matches the fold that leads
    /// to it (within
    /// [`Chain::KEYFRAME_TOLERANCE`]), and that the chain's definition of θ_B equals the served
    /// model bit for bit.
    pub fn verify(&self) -> Result<()> {
        let m = &self.manifest;
        // Each file is read once: θ_0, then block by block its increment and keyframe, so
        // `check` stays I/O-bound at one pass.
        let (mut theta, _) = self.read_set(&m.theta0)?;
        let mut shifts = Shifts::new(self);
        for b in &m.blocks[..m.completed()] {
            if let Some(r) = &b.delta {
                theta.add_assign(&self.read_set(r)?.0)?;
            }
            if let Some(r) = &b.theta {
                let key = shifts.theta_at(b.index, false)?;
                let scale = key.norms_max().max(1.0);
                let off = theta.max_abs_diff(&key)?;
                if off > Self::KEYFRAME_TOLERANCE * scale {
                    return Err(chain_err(
                        &self.dir,
                        format!(
                            "keyframe {} differs from the fold of the increments before it by \
                             {off:e} (at most {:e} is rounding)",
                            r.file,
                            Self::KEYFRAME_TOLERANCE * scale
                        ),
                    ));
                }
                theta = key;
            }
        }
        // Optimizer states, and shift nodes no keyframe's path reaches (none in a sound chain).
        for r in [&m.opt0]
            .into_iter()
            .chain(m.blocks.iter().filter_map(|b| b.opt.as_ref()))
            .chain(m.shifts.values())
        {
            self.read_set(r)?;
        }
        if let Some(model) = &m.model_file {
            let (served, _) = self.read_set(model)?;
            if m.is_complete() && !theta.bit_identical(&served) {
                return Err(chain_err(
                    &self.dir,
                    "the chain's θ_B (latest keyframe + the increments after it) differs from \
                     the served model",
                ));
            }
        }
        Ok(())
    }

    /// Fails unless every file the manifest references is present with its recorded length:
    /// what a request will read, checked before it does any work.
    pub fn check_present(&self) -> Result<()> {
        self.check_all_present(self.manifest.files())
    }

    /// [`Chain::check_present`] for the files a request whose first affected block is `first`
    /// may read ([`Manifest::files_read_from`]).
    pub fn check_present_from(&self, first: usize) -> Result<()> {
        self.check_all_present(self.manifest.files_read_from(first))
    }

    fn check_all_present(&self, files: Vec<&FileRef>) -> Result<()> {
        use rayon::prelude::*;
        files
            .into_par_iter()
            .try_for_each(|r| check_present(&self.dir, r))
    }

    /// Sum of the sizes of all referenced files, the manifest and the ledger.
    pub fn bytes_on_disk(&self) -> u64 {
        self.bytes().total
    }

    /// Where the run's bytes go, by kind, and what the same chain takes in f32.
    pub fn bytes(&self) -> Bytes {
        let m = &self.manifest;
        let size = |name: &str| std::fs::metadata(self.dir.join(name)).map_or(0, |m| m.len());
        let deltas = m.blocks.iter().filter_map(|b| b.delta.as_ref());
        let opts = m.blocks.iter().filter_map(|b| b.opt.as_ref());
        let mut b = Bytes {
            increments: deltas.clone().map(|r| r.bytes).sum(),
            optimizer: opts.map(|r| r.bytes).sum(),
            keyframes: m
                .blocks
                .iter()
                .filter_map(|b| b.theta.as_ref())
                .map(|r| r.bytes)
                .sum(),
            shifts: m.shifts.values().map(|r| r.bytes).sum(),
            initial: m.theta0.bytes + m.opt0.bytes,
            model: m.model_file.as_ref().map_or(0, |r| r.bytes),
            manifest: size(layout::MANIFEST),
            ledger: size(layout::LEDGER),
            ..Bytes::default()
        };
        let fixed = b.initial + b.model + b.manifest + b.ledger;
        b.total = fixed + b.increments + b.optimizer + b.keyframes + b.shifts;
        // The baseline is the layout before compact chains: f32 increments and optimizer
        // states after every trained block, no keyframes. An f32 increment holds θ_0's
        // tensors, an f32 optimizer state o_0's: the same file sizes up to a few header bytes.
        b.raw_f32 = fixed + deltas.count() as u64 * (m.theta0.bytes + m.opt0.bytes);
        b.ratio = b.total as f64 / b.raw_f32.max(1) as f64;
        b
    }

    /// Forks the committed run into `dst`, which must be absent or empty: its files linked
    /// (see [`copy_referenced`]), the ledger copied, the manifest last. The fork is a run of
    /// its own (benchmarks fork a trained run before each request).
    pub fn copy_to(&self, dst: &Path) -> Result<Chain> {
        let lock = copy_referenced(&self.dir, dst, self.manifest.files(), &[layout::LEDGER])?;
        std::fs::create_dir_all(dst.join(layout::BLOCKS)).at(dst)?;
        let mut copy = Chain {
            dir: dst.to_path_buf(),
            manifest: self.manifest.clone(),
            _lock: Some(lock),
            _reading: None,
            seal: self.seal,
            read: AtomicU64::new(0),
            unsynced: Mutex::default(),
        };
        copy.commit()?;
        Ok(copy)
    }

    /// Removes the engine's files no longer referenced by the manifest (left by a commit that
    /// replaced them, or by one interrupted before its manifest was written). Only names that
    /// [`layout::parse`] recognises, of generations this run has produced (up to the next
    /// one) and blocks it has, are candidates: nothing else in the folder is touched. While a
    /// reader holds the run ([`Chain::open`]) nothing is removed: the next writer collects it.
    pub fn collect_garbage(&self) -> Result<()> {
        let newest = self.manifest.generation.saturating_add(1);
        let blocks = self.manifest.blocks.len();
        let mut ours = Vec::new();
        for sub in ["", layout::BLOCKS] {
            let folder = self.dir.join(sub);
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let rel = if sub.is_empty() {
                    name
                } else {
                    format!("{sub}/{name}")
                };
                let engine_named = layout::parse(&rel).is_some_and(|g| {
                    g.generation <= newest && g.block.is_none_or(|b| b >= 1 && b <= blocks)
                });
                if engine_named && e.path().is_file() {
                    ours.push(rel);
                }
            }
        }
        self.remove_unreferenced(ours)
    }

    /// Removes those of `files` (relative names the engine wrote) that the manifest does not
    /// reference; nothing while a reader holds the run.
    fn remove_unreferenced(&self, files: Vec<String>) -> Result<()> {
        let Some(_readers_gone) = ReadersGone::try_acquire(&self.dir)? else {
            return Ok(());
        };
        let keep: std::collections::HashSet<&str> = self
            .manifest
            .files()
            .into_iter()
            .map(|r| r.file.as_str())
            .collect();
        for f in files.iter().filter(|f| !keep.contains(f.as_str())) {
            let path = self.dir.join(f);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::Io { path, cause: e });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

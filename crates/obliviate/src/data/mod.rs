//! Datasets: readers of the canonical files, the bundled `mnist-mini`, and minibatch tensors.
//!
//! Every training sample has a stable id, its index in the canonical training file; ids are what
//! users ask to forget, so they never depend on splits, shuffles or subsets.

pub mod backdoor;
pub mod cache;
pub mod cifar;
pub mod fetch;
mod groups;
pub mod idx;
pub mod mat;
mod origin;
pub mod purchase;
pub mod split;
pub mod svhn;

pub use groups::Groups;
pub use origin::{DataOrigin, DatasetRecord};

use std::path::{Path, PathBuf};

use burn::prelude::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, invalid};
use crate::model::InputShape;

/// The datasets obliviate can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// The bundled 10,000/2,000 MNIST subset (needs no files).
    MnistMini,
    /// MNIST, IDX files.
    Mnist,
    /// Fashion-MNIST, IDX files.
    FashionMnist,
    /// CIFAR-10, binary batches.
    Cifar10,
    /// SVHN cropped digits, format 2 `.mat`.
    Svhn,
    /// Purchase, `dataset_purchase` CSV.
    Purchase,
}

impl DatasetName {
    /// All names.
    pub const ALL: [DatasetName; 6] = [
        DatasetName::MnistMini,
        DatasetName::Mnist,
        DatasetName::FashionMnist,
        DatasetName::Cifar10,
        DatasetName::Svhn,
        DatasetName::Purchase,
    ];
    /// The command-line spelling.
    pub fn name(self) -> &'static str {
        match self {
            DatasetName::MnistMini => "mnist-mini",
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Svhn => "svhn",
            DatasetName::Purchase => "purchase",
        }
    }
    /// Parses a dataset name.
    pub fn parse(s: &str) -> Result<Self> {
        DatasetName::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                invalid(
                    "dataset",
                    format!(
                        "unknown dataset {s:?}; expected one of {}",
                        DatasetName::ALL.map(|d| d.name()).join(", ")
                    ),
                )
            })
    }
    /// Sub-folder conventionally holding this dataset under a data directory (its name).
    pub fn folder(self) -> &'static str {
        self.name()
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One split's samples.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// Canonical ids, ascending.
    pub ids: Vec<u64>,
    /// `n × numel` raw bytes (pixels, or 0/1 features).
    pub pixels: Vec<u8>,
    /// Class of each sample.
    pub labels: Vec<u16>,
}

impl Samples {
    /// Samples with ids 0..n in file order (the canonical numbering).
    pub fn numbered(pixels: Vec<u8>, labels: Vec<u16>) -> Samples {
        Samples {
            ids: (0..labels.len() as u64).collect(),
            pixels,
            labels,
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Row of the sample with canonical id `id`.
    pub fn row(&self, id: u64) -> Option<usize> {
        // Fast path: ids are usually exactly 0..n.
        if let Some(&r) = self.ids.get(id as usize).filter(|&&x| x == id) {
            return Some(r as usize);
        }
        self.ids.binary_search(&id).ok()
    }
}

/// A loaded dataset: train and test samples plus how to turn bytes into network inputs.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Which dataset.
    pub name: DatasetName,
    /// Input geometry.
    pub shape: InputShape,
    /// Number of classes.
    pub classes: usize,
    /// Training samples (these ids can be forgotten).
    pub train: Samples,
    /// Held-out test samples.
    pub test: Samples,
    /// Per channel: byte value → normalised input.
    lut: Vec<[f32; 256]>,
    /// SHA-256 over the decoded samples; runs record it to refuse mismatched data.
    pub fingerprint: String,
    /// How this data derives from the canonical files (recorded by the runs trained on it).
    pub origin: DataOrigin,
}

/// Which split to draw a batch from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training samples.
    Train,
    /// Test samples.
    Test,
}

fn lut(mean: f32, std: f32) -> [f32; 256] {
    let mut t = [0f32; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = (i as f32 / 255.0 - mean) / std;
    }
    t
}

impl Dataset {
    /// Assembles a dataset from decoded samples (readers and tests use this).
    pub fn from_parts(
        name: DatasetName,
        shape: InputShape,
        classes: usize,
        train: Samples,
        test: Samples,
    ) -> Result<Self> {
        for (what, s) in [("train", &train), ("test", &test)] {
            if s.pixels.len() != s.len() * shape.numel() || s.ids.len() != s.len() {
                return Err(invalid(
                    "dataset",
                    format!(
                        "{what} split: {} labels, {} ids, {} bytes for {}-byte samples",
                        s.len(),
                        s.ids.len(),
                        s.pixels.len(),
                        shape.numel()
                    ),
                ));
            }
            if let Some(bad) = s.labels.iter().find(|&&l| l as usize >= classes) {
                return Err(invalid(
                    "dataset",
                    format!("{what} label {bad} ≥ {classes} classes"),
                ));
            }
            if s.ids.windows(2).any(|w| w[0] >= w[1]) {
                return Err(invalid(
                    "dataset",
                    format!("{what} ids are not strictly ascending"),
                ));
            }
        }
        let (mean, std): (&[f32], &[f32]) = match name {
            DatasetName::Mnist | DatasetName::MnistMini => (&[0.1307], &[0.3081]),
            DatasetName::FashionMnist => (&[0.2860], &[0.3530]),
            DatasetName::Cifar10 => (&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616]),
            DatasetName::Svhn => (&[0.4377, 0.4438, 0.4728], &[0.1980, 0.2010, 0.1970]),
            DatasetName::Purchase => (&[0.0], &[1.0 / 255.0]),
        };
        let lut = (0..shape.channels)
            .map(|c| lut(mean[c.min(mean.len() - 1)], std[c.min(std.len() - 1)]))
            .collect();
        let mut h = Sha256::new();
        h.update(name.name().as_bytes());
        for v in [shape.channels, shape.height, shape.width, classes] {
            h.update((v as u64).to_le_bytes());
        }
        for s in [&train, &test] {
            h.update((s.len() as u64).to_le_bytes());
            for id in &s.ids {
                h.update(id.to_le_bytes());
            }
            h.update(&s.pixels);
            for l in &s.labels {
                h.update(l.to_le_bytes());
            }
        }
        let fingerprint = crate::store::hex(&h.finalize());
        Ok(Dataset {
            name,
            shape,
            classes,
            train,
            test,
            lut,
            fingerprint,
            origin: DataOrigin::default(),
        })
    }

    /// Loads `name`; `dir` holds the canonical files (not needed for `mnist-mini`).
    pub fn load(name: DatasetName, dir: Option<&Path>) -> Result<Self> {
        match name {
            DatasetName::MnistMini => idx::load_mnist_mini(),
            DatasetName::Mnist | DatasetName::FashionMnist => {
                idx::load_mnist(name, &require_dir(name, dir)?)
            }
            DatasetName::Cifar10 => cifar::load(&require_dir(name, dir)?),
            DatasetName::Svhn => svhn::load(&require_dir(name, dir)?),
            DatasetName::Purchase => purchase::load(&require_dir(name, dir)?),
        }
    }

    /// The samples of a split.
    pub fn samples(&self, split: Split) -> &Samples {
        match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        }
    }

    /// Normalised inputs `[n, c, h, w]` and labels for the given rows of a split.
    pub fn batch<B: Backend>(
        &self,
        split: Split,
        rows: &[usize],
        device: &B::Device,
    ) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        let s = self.samples(split);
        let numel = self.shape.numel();
        let plane = self.shape.height * self.shape.width;
        let mut x = Vec::with_capacity(rows.len() * numel);
        let mut y = Vec::with_capacity(rows.len());
        for &r in rows {
            let px = &s.pixels[r * numel..(r + 1) * numel];
            for (c, lut) in self.lut.iter().enumerate() {
                x.extend(
                    px[c * plane..(c + 1) * plane]
                        .iter()
                        .map(|&b| lut[b as usize]),
                );
            }
            y.push(i64::from(s.labels[r]));
        }
        let shape = [
            rows.len(),
            self.shape.channels,
            self.shape.height,
            self.shape.width,
        ];
        (
            Tensor::from_data(TensorData::new(x, shape), device),
            Tensor::from_data(TensorData::new(y, [rows.len()]), device),
        )
    }

    /// The data a run was trained on: this (canonical) dataset cut and poisoned as `origin` says.
    pub fn derive(self, origin: &DataOrigin) -> Result<Self> {
        let data = match origin.limit {
            Some((tr, te)) => self.truncated(tr, te)?,
            None => self,
        };
        match &origin.backdoor {
            Some(b) => b.poison(&data),
            None => Ok(data),
        }
    }

    /// Dataset restricted to its first `n_train` training and `n_test` test samples (ids kept);
    /// its origin records the sizes kept.
    pub fn truncated(&self, n_train: usize, n_test: usize) -> Result<Self> {
        let cut = |s: &Samples, n: usize| {
            let n = n.min(s.len());
            Samples {
                ids: s.ids[..n].to_vec(),
                pixels: s.pixels[..n * self.shape.numel()].to_vec(),
                labels: s.labels[..n].to_vec(),
            }
        };
        let mut cut = Dataset::from_parts(
            self.name,
            self.shape,
            self.classes,
            cut(&self.train, n_train),
            cut(&self.test, n_test),
        )?;
        cut.origin = DataOrigin {
            limit: Some((cut.train.len(), cut.test.len())),
            ..self.origin.clone()
        };
        Ok(cut)
    }
}

fn require_dir(name: DatasetName, dir: Option<&Path>) -> Result<PathBuf> {
    dir.map(Path::to_path_buf)
        .ok_or_else(|| Error::MissingData {
            dataset: name.to_string(),
            detail: "needs a folder holding its canonical files".into(),
        })
}

/// Finds the first existing candidate under `dir/<folder>/` or `dir/`.
pub(crate) fn locate(dir: &Path, name: DatasetName, candidates: &[&str]) -> Result<PathBuf> {
    let roots = [dir.join(name.folder()), dir.to_path_buf()];
    for root in &roots {
        for c in candidates {
            let p = root.join(c);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(Error::MissingData {
        dataset: name.to_string(),
        detail: format!(
            "no {} file in {} or {}",
            candidates.join(" / "),
            roots[0].display(),
            roots[1].display()
        ),
    })
}

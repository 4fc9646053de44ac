//! Datasets: readers of the canonical files, the bundled `mnist-mini`, and minibatch tensors.
//!
//! Every training sample has a stable id, its index in the canonical training file; ids are what
//! users ask to forget, so they never depend on splits, shuffles or subsets.

pub mod cifar;
pub mod fetch;
pub mod idx;
pub mod mat;
pub mod purchase;
pub mod split;

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
    /// Sub-folder conventionally holding this dataset under a data directory.
    pub fn folder(self) -> &'static str {
        match self {
            DatasetName::MnistMini => "mnist-mini",
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Svhn => "svhn",
            DatasetName::Purchase => "purchase",
        }
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One split's samples.
#[derive(Debug, Clone)]
pub struct Samples {
    /// Canonical ids, ascending.
    pub ids: Vec<u64>,
    /// `n × numel` raw bytes (pixels, or 0/1 features).
    pub pixels: Vec<u8>,
    /// Class of each sample.
    pub labels: Vec<u16>,
}

impl Samples {
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
        let fingerprint = hex(&h.finalize());
        Ok(Dataset {
            name,
            shape,
            classes,
            train,
            test,
            lut,
            fingerprint,
        })
    }

    /// Loads `name`; `dir` holds the canonical files (not needed for `mnist-mini`).
    pub fn load(name: DatasetName, dir: Option<&Path>) -> Result<Self> {
        match name {
            DatasetName::MnistMini => load_mnist_mini(),
            DatasetName::Mnist | DatasetName::FashionMnist => {
                let dir = require_dir(name, dir)?;
                let find =
                    |stem: &str| locate(&dir, name, &[stem.to_string(), format!("{stem}.gz")]);
                let train = idx_split(
                    &find("train-images-idx3-ubyte")?,
                    &find("train-labels-idx1-ubyte")?,
                )?;
                let test = idx_split(
                    &find("t10k-images-idx3-ubyte")?,
                    &find("t10k-labels-idx1-ubyte")?,
                )?;
                Dataset::from_parts(
                    name,
                    InputShape {
                        channels: 1,
                        height: 28,
                        width: 28,
                    },
                    10,
                    train,
                    test,
                )
            }
            DatasetName::Cifar10 => {
                let dir = require_dir(name, dir)?;
                let base = locate(
                    &dir,
                    name,
                    &[
                        "cifar-10-batches-bin/test_batch.bin".into(),
                        "test_batch.bin".into(),
                    ],
                )?;
                let base = base.parent().map(Path::to_path_buf).unwrap_or(dir);
                let (p, l) = cifar::read_split(&base, true)?;
                let train = Samples {
                    ids: (0..l.len() as u64).collect(),
                    pixels: p,
                    labels: l,
                };
                let (p, l) = cifar::read_split(&base, false)?;
                let test = Samples {
                    ids: (0..l.len() as u64).collect(),
                    pixels: p,
                    labels: l,
                };
                Dataset::from_parts(
                    name,
                    InputShape {
                        channels: 3,
                        height: 32,
                        width: 32,
                    },
                    10,
                    train,
                    test,
                )
            }
            DatasetName::Svhn => {
                let dir = require_dir(name, dir)?;
                let train = svhn_split(&locate(&dir, name, &["train_32x32.mat".into()])?)?;
                let test = svhn_split(&locate(&dir, name, &["test_32x32.mat".into()])?)?;
                Dataset::from_parts(
                    name,
                    InputShape {
                        channels: 3,
                        height: 32,
                        width: 32,
                    },
                    10,
                    train,
                    test,
                )
            }
            DatasetName::Purchase => {
                let dir = require_dir(name, dir)?;
                let path = locate(
                    &dir,
                    name,
                    &["dataset_purchase".into(), "dataset_purchase.csv".into()],
                )?;
                let bytes = idx::read_maybe_gz(&path)?;
                let p = purchase::parse_purchase(&bytes, &path)?;
                // Fixed holdout: every fifth record (index % 5 == 4) is test data.
                let (mut train, mut test) = (empty(), empty());
                for (i, &l) in p.labels.iter().enumerate() {
                    let s = if i % 5 == 4 { &mut test } else { &mut train };
                    s.ids.push(i as u64);
                    s.labels.push(l);
                    s.pixels.extend_from_slice(
                        &p.features[i * purchase::FEATURES..(i + 1) * purchase::FEATURES],
                    );
                }
                Dataset::from_parts(
                    name,
                    InputShape {
                        channels: 1,
                        height: 1,
                        width: purchase::FEATURES,
                    },
                    p.classes,
                    train,
                    test,
                )
            }
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
    pub fn derive(self, origin: &crate::chain::DataOrigin) -> Result<Self> {
        let data = match origin.limit {
            Some((tr, te)) => self.truncated(tr, te)?,
            None => self,
        };
        match &origin.backdoor {
            Some(b) => b.poison(&data),
            None => Ok(data),
        }
    }

    /// Dataset restricted to its first `n_train` training and `n_test` test samples (ids kept).
    pub fn truncated(&self, n_train: usize, n_test: usize) -> Result<Self> {
        let cut = |s: &Samples, n: usize| {
            let n = n.min(s.len());
            Samples {
                ids: s.ids[..n].to_vec(),
                pixels: s.pixels[..n * self.shape.numel()].to_vec(),
                labels: s.labels[..n].to_vec(),
            }
        };
        Dataset::from_parts(
            self.name,
            self.shape,
            self.classes,
            cut(&self.train, n_train),
            cut(&self.test, n_test),
        )
    }
}

fn empty() -> Samples {
    Samples {
        ids: Vec::new(),
        pixels: Vec::new(),
        labels: Vec::new(),
    }
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn require_dir(name: DatasetName, dir: Option<&Path>) -> Result<PathBuf> {
    dir.map(Path::to_path_buf).ok_or_else(|| {
        invalid(
            "data directory",
            format!("dataset {name} needs --data-dir (get the files with `obliviate data fetch {name} --data-dir DIR`)"),
        )
    })
}

/// Finds the first existing candidate under `dir/<folder>/` or `dir/`.
fn locate(dir: &Path, name: DatasetName, candidates: &[String]) -> Result<PathBuf> {
    let roots = [dir.join(name.folder()), dir.to_path_buf()];
    for root in &roots {
        for c in candidates {
            let p = root.join(c);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(Error::Io {
        path: roots[0].join(&candidates[0]),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no {} file for {name} in {} or {} (run `obliviate data fetch {name} --data-dir {}`)",
                candidates.join(" / "),
                roots[0].display(),
                roots[1].display(),
                dir.display()
            ),
        ),
    })
}

fn idx_split(images: &Path, labels: &Path) -> Result<Samples> {
    let im = idx::read_idx(images, 3)?;
    let lb = idx::read_idx(labels, 1)?;
    idx_samples(im, lb, images, labels)
}

fn idx_samples(im: idx::Idx, lb: idx::Idx, images: &Path, labels: &Path) -> Result<Samples> {
    if im.dims[1..] != [28, 28] {
        return Err(Error::Format {
            path: images.to_path_buf(),
            format: "IDX",
            offset: 8,
            detail: format!("images are {}×{}, expected 28×28", im.dims[1], im.dims[2]),
        });
    }
    if im.dims[0] != lb.dims[0] {
        return Err(Error::Format {
            path: labels.to_path_buf(),
            format: "IDX",
            offset: 4,
            detail: format!(
                "{} labels for {} images in {}",
                lb.dims[0],
                im.dims[0],
                images.display()
            ),
        });
    }
    if let Some(pos) = lb.data.iter().position(|&l| l > 9) {
        return Err(Error::Format {
            path: labels.to_path_buf(),
            format: "IDX",
            offset: 8 + pos as u64,
            detail: format!(
                "label {} of sample {pos} is not a digit class 0..=9",
                lb.data[pos]
            ),
        });
    }
    Ok(Samples {
        ids: (0..im.dims[0] as u64).collect(),
        pixels: im.data,
        labels: lb.data.into_iter().map(u16::from).collect(),
    })
}

const MINI: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../../../../data/mnist-mini/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../../../../data/mnist-mini/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../../../../data/mnist-mini/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../../../../data/mnist-mini/t10k-labels-idx1-ubyte.gz"),
    ),
];

fn load_mnist_mini() -> Result<Dataset> {
    let decode = |i: usize, rank: usize| {
        let (name, bytes) = MINI[i];
        let path = Path::new("<bundled mnist-mini>").join(name);
        idx::parse_idx(&idx::maybe_gunzip(bytes.to_vec(), &path)?, rank, &path)
    };
    let p = |i: usize| Path::new("<bundled mnist-mini>").join(MINI[i].0);
    let train = idx_samples(decode(0, 3)?, decode(1, 1)?, &p(0), &p(1))?;
    let test = idx_samples(decode(2, 3)?, decode(3, 1)?, &p(2), &p(3))?;
    Dataset::from_parts(
        DatasetName::MnistMini,
        InputShape {
            channels: 1,
            height: 28,
            width: 28,
        },
        10,
        train,
        test,
    )
}

fn svhn_split(path: &Path) -> Result<Samples> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let vars = mat::parse_mat(&bytes, path)?;
    let fmt = |detail: String| Error::Format {
        path: path.to_path_buf(),
        format: "SVHN .mat",
        offset: 0,
        detail,
    };
    let x = vars
        .iter()
        .find(|v| v.name == "X")
        .ok_or_else(|| fmt("no variable X".into()))?;
    let y = vars
        .iter()
        .find(|v| v.name == "y")
        .ok_or_else(|| fmt("no variable y".into()))?;
    if x.dims.len() != 4 || x.dims[..3] != [32, 32, 3] {
        return Err(fmt(format!(
            "X has dimensions {:?}, expected 32×32×3×N",
            x.dims
        )));
    }
    let n = x.dims[3];
    if y.data.len() != n {
        return Err(fmt(format!("y has {} labels for {n} images", y.data.len())));
    }
    let mat::MatData::U8(xs) = &x.data else {
        return Err(fmt("X is not uint8".into()));
    };
    let mut pixels = vec![0u8; n * 3072];
    for i in 0..n {
        for c in 0..3 {
            for col in 0..32 {
                for row in 0..32 {
                    pixels[i * 3072 + c * 1024 + row * 32 + col] =
                        xs[row + 32 * col + 1024 * c + 3072 * i];
                }
            }
        }
    }
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let v = y.data.get(i);
        if !(1.0..=10.0).contains(&v) || v.fract() != 0.0 {
            return Err(fmt(format!("label {v} of sample {i} is not in 1..=10")));
        }
        labels.push(if v == 10.0 { 0 } else { v as u16 });
    }
    Ok(Samples {
        ids: (0..n as u64).collect(),
        pixels,
        labels,
    })
}

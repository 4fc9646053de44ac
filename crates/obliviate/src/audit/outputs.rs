//! Per-sample softmax outputs of a model: the raw material of every audit.

use burn::module::AutodiffModule;
use burn::prelude::Backend;
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;

use crate::data::{Dataset, Split};
use crate::error::Result;
use crate::model::{ModelKind, Net};
use crate::params::{ParamSet, load_into};

/// Class probabilities of some samples, with their labels.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Number of classes.
    pub classes: usize,
    /// `n × classes` probabilities, row-major.
    pub probs: Vec<f32>,
    /// True label of each sample.
    pub labels: Vec<u16>,
}

impl Outputs {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Probabilities of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.probs[i * self.classes..(i + 1) * self.classes]
    }
    /// Predicted class of sample `i`.
    pub fn predicted(&self, i: usize) -> usize {
        let r = self.row(i);
        (0..self.classes).fold(0, |best, c| if r[c] > r[best] { c } else { best })
    }
    /// Cross-entropy loss of sample `i` (probability floored at 1e-12).
    pub fn loss(&self, i: usize) -> f64 {
        -(f64::from(self.row(i)[self.labels[i] as usize]).max(1e-12)).ln()
    }
    /// Probability given to the true class.
    pub fn confidence(&self, i: usize) -> f64 {
        f64::from(self.row(i)[self.labels[i] as usize])
    }
    /// Share of samples classified correctly.
    pub fn accuracy(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        (0..self.len())
            .filter(|&i| self.predicted(i) == self.labels[i] as usize)
            .count() as f64
            / self.len() as f64
    }
    /// Share of samples predicted as `class`.
    pub fn share_predicted(&self, class: usize) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        (0..self.len())
            .filter(|&i| self.predicted(i) == class)
            .count() as f64
            / self.len() as f64
    }
    /// Mean KL(self ‖ other) over samples (other floored at 1e-12; the mean is clamped at 0
    /// because f32 softmax rows do not sum to exactly 1).
    pub fn mean_kl(&self, other: &Outputs) -> f64 {
        let n = self.len().min(other.len());
        if n == 0 {
            return 0.0;
        }
        let mut total = 0.0;
        for i in 0..n {
            for (p, q) in self.row(i).iter().zip(other.row(i)) {
                let (p, q) = (f64::from(*p), f64::from(*q).max(1e-12));
                if p > 0.0 {
                    total += p * (p / q).ln();
                }
            }
        }
        (total / n as f64).max(0.0)
    }
}

/// Softmax outputs of `model` on `rows` of a split.
pub fn outputs<B: Backend>(
    model: &Net<B>,
    data: &Dataset,
    split: Split,
    rows: &[usize],
    device: &B::Device,
) -> Outputs {
    let mut probs = Vec::with_capacity(rows.len() * data.classes);
    let mut labels = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(1000) {
        let (x, _) = data.batch::<B>(split, chunk, device);
        let p = softmax(model.forward(x), 1);
        probs.extend(
            p.into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap_or_default(),
        );
        labels.extend(chunk.iter().map(|&r| data.samples(split).labels[r]));
    }
    Outputs {
        classes: data.classes,
        probs,
        labels,
    }
}

/// Outputs of parameters `theta` of a `kind` model (evaluated without autodiff).
pub fn outputs_of<B: AutodiffBackend>(
    kind: ModelKind,
    theta: &ParamSet,
    data: &Dataset,
    split: Split,
    rows: &[usize],
    device: &B::Device,
) -> Result<Outputs> {
    let net = Net::<B>::new(kind, data.shape, data.classes, 0, device)?;
    let net = load_into(net, theta, device)?.valid();
    Ok(outputs(&net, data, split, rows, device))
}

/// Seconds to predict `rows` of the test split with an ensemble of `models` (one model for
/// everything but SISA): the nets are built and loaded first, then forward passes and softmax
/// are timed, median of three runs. Measures serving cost, not loading cost.
pub fn prediction_seconds<B: AutodiffBackend>(
    kind: ModelKind,
    models: &[ParamSet],
    data: &Dataset,
    rows: &[usize],
    device: &B::Device,
) -> Result<f64> {
    let nets = models
        .iter()
        .map(|theta| {
            let net = Net::<B>::new(kind, data.shape, data.classes, 0, device)?;
            Ok(load_into(net, theta, device)?.valid())
        })
        .collect::<Result<Vec<_>>>()?;
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        for net in &nets {
            std::hint::black_box(outputs(net, data, Split::Test, rows, device));
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[1])
}

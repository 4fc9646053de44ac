//! Fine-tuning and NegGrad+: a fixed budget of optimizer steps from the trained model.
//!
//! Each step draws a minibatch of retained samples (seeded, with replacement across steps) and,
//! for NegGrad+, a minibatch of the samples to forget; the loss is
//! β·CE(retain) − (1 − β)·CE(forget). Fine-tuning is β = 1. A fresh optimizer is used, with the
//! learning rate the caller gives (typically the last rate of training).

use std::collections::BTreeSet;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;

use crate::data::split::mix;
use crate::data::{Dataset, Split};
use crate::error::{Error, Result, invalid};
use crate::model::{ModelKind, Net};
use crate::optim::{OptimConfig, Optimizer};
use crate::params::{ParamSet, extract, load_into, trainable_mask};

/// A step budget and its loss.
#[derive(Debug, Clone, Copy)]
pub struct StepConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Minibatch size (of each of the two batches for NegGrad+).
    pub batch_size: usize,
    /// Optimizer and learning rate.
    pub optim: OptimConfig,
    /// Weight of the retain loss; 1 = plain fine-tuning.
    pub beta: f64,
    /// Seed of the minibatch draws.
    pub seed: u64,
}

/// Rows of `ids` in the training split; unknown ids are an error naming them.
pub(crate) fn rows_of(data: &Dataset, ids: &[u64]) -> Result<Vec<usize>> {
    let mut unknown = Vec::new();
    let rows: Vec<usize> = ids
        .iter()
        .filter_map(|&id| {
            let r = data.train.row(id);
            if r.is_none() {
                unknown.push(id);
            }
            r
        })
        .collect();
    if unknown.is_empty() {
        Ok(rows)
    } else {
        Err(Error::Ids {
            unknown,
            deleted: Vec::new(),
        })
    }
}

/// Every training id except `forget` (and except `already` deleted ones).
pub fn retained(data: &Dataset, forget: &[u64], already: &[u64]) -> Vec<u64> {
    let gone: BTreeSet<u64> = forget.iter().chain(already).copied().collect();
    data.train
        .ids
        .iter()
        .copied()
        .filter(|id| !gone.contains(id))
        .collect()
}

fn draw(rows: &[usize], n: usize, state: &mut u64) -> Vec<usize> {
    if rows.len() <= n {
        return rows.to_vec();
    }
    (0..n)
        .map(|_| {
            *state = mix(*state);
            rows[(*state % rows.len() as u64) as usize]
        })
        .collect()
}

/// Runs `c.steps` steps from `theta` and returns the new parameters.
pub fn run<B: AutodiffBackend>(
    data: &Dataset,
    kind: ModelKind,
    theta: &ParamSet,
    retain: &[u64],
    forget: &[u64],
    c: &StepConfig,
    device: &B::Device,
) -> Result<ParamSet> {
    c.optim.validate()?;
    if !(0.0..=1.0).contains(&c.beta) {
        return Err(invalid("beta", format!("{} (must be in [0, 1])", c.beta)));
    }
    if c.batch_size == 0 {
        return Err(invalid("batch size", "must be at least 1"));
    }
    let retain_rows = rows_of(data, retain)?;
    let forget_rows = rows_of(data, forget)?;
    if retain_rows.is_empty() {
        return Err(invalid("retain set", "is empty"));
    }
    let negative = c.beta < 1.0 && !forget_rows.is_empty();
    let net = Net::<B>::new(kind, data.shape, data.classes, 0, device)?;
    let mut model = load_into(net, theta, device)?;
    let mut opt =
        Optimizer::<B::InnerBackend>::new(c.optim, theta, &trainable_mask(&model), device);
    let loss_fn = CrossEntropyLossConfig::new().init::<B>(device);
    let mut state = mix(c.seed ^ 0x6e65_6767);
    for _ in 0..c.steps {
        let r = draw(&retain_rows, c.batch_size, &mut state);
        let (x, y) = data.batch::<B>(Split::Train, &r, device);
        let mut loss = loss_fn.forward(model.forward(x), y);
        if negative {
            let f = draw(&forget_rows, c.batch_size, &mut state);
            let (xf, yf) = data.batch::<B>(Split::Train, &f, device);
            let lf = loss_fn.forward(model.forward(xf), yf);
            loss = loss.mul_scalar(c.beta) - lf.mul_scalar(1.0 - c.beta);
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(model, grads)?;
    }
    Ok(extract(&model))
}

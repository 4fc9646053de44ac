//! Block-wise training: the loop over blocks, the canonical increment after each block, and
//! evaluation.
//!
//! Invariant kept here: after block i the model holds exactly θ_{i−1} + Q(δ_i) computed in f32
//! on the host, where δ_i = θ_i^raw − θ_{i−1} and Q rounds to the chain's storage precision,
//! and the optimizer holds Q(o_i). Training continues from those values, so folding the stored
//! increments reproduces every intermediate model and the served model bit for bit.

mod progress;
mod run;
#[cfg(feature = "tch")]
mod torch_grads;
mod workers;

use std::marker::PhantomData;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::GradientsParams;
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

pub use progress::{NoProgress, Progress};
pub use run::{TrainSummary, block_split, resume, retrain, train};

use crate::chain::TrainConfig;
use crate::data::split::epoch_order;
use crate::data::{Dataset, Split};
use crate::error::{Result, invalid};
use crate::model::{ModelKind, Net};
use crate::optim::Optimizer;
use crate::params::{EncodedSet, ParamSet, extract, load_into, trainable_mask};
use workers::Workers;

/// Name of the backend type, recorded in manifests.
pub fn backend_name<B: Backend>() -> String {
    B::name(&B::Device::default())
}

/// Called after every minibatch update with the batch's ids and the updated model.
pub type StepObserver<'f, B> = dyn FnMut(&[u64], &Net<B>) -> Result<()> + 'f;

/// Owns a model and its optimizer state and trains one block at a time.
pub struct BlockTrainer<'a, B: AutodiffBackend> {
    data: &'a Dataset,
    cfg: TrainConfig,
    device: B::Device,
    model: Option<Net<B>>,
    opt: Optimizer<B::InnerBackend>,
    theta: ParamSet,
    /// Where burn's autodiff runs, started at the first minibatch that needs it.
    workers: Option<Workers>,
}

/// What one block produced.
pub struct BlockOutput {
    /// δ_i as stored (decoded from `stored_delta`).
    pub delta: ParamSet,
    /// o_i as stored (decoded from `stored_opt`).
    pub opt_state: ParamSet,
    /// δ_i in its stored form, for the chain file.
    pub stored_delta: EncodedSet,
    /// o_i in its stored form, for the chain file.
    pub stored_opt: EncodedSet,
    /// Optimizer steps so far.
    pub step: u64,
}

impl<'a, B: AutodiffBackend> BlockTrainer<'a, B> {
    /// Starts from parameters `theta` and optimizer state `opt_state` (θ_k, o_k of a chain).
    pub fn new(
        data: &'a Dataset,
        kind: ModelKind,
        cfg: TrainConfig,
        theta: ParamSet,
        opt_state: &ParamSet,
        step: u64,
        device: &B::Device,
    ) -> Result<Self> {
        cfg.validate_for(kind)?;
        let net = Net::<B>::new(kind, data.shape, data.classes, cfg.seed, device)?;
        let net = load_into(net, &theta, device)?;
        let mask = trainable_mask(&net);
        let opt = Optimizer::from_state(cfg.optim, &theta, &mask, opt_state, step, device)?;
        Ok(BlockTrainer {
            data,
            cfg,
            device: device.clone(),
            model: Some(net),
            opt,
            theta,
            workers: None,
        })
    }

    /// Fresh θ_0 and o_0 for `kind` on `data` from the config's seed.
    pub fn initial(
        data: &Dataset,
        kind: ModelKind,
        cfg: &TrainConfig,
        device: &B::Device,
    ) -> Result<(ParamSet, ParamSet)> {
        let net = Net::<B>::new(kind, data.shape, data.classes, cfg.seed, device)?;
        let theta = extract(&net);
        let opt =
            Optimizer::<B::InnerBackend>::zero_state(cfg.optim, &theta, &trainable_mask(&net));
        Ok((theta, opt))
    }

    /// The current canonical parameters θ.
    pub fn theta(&self) -> &ParamSet {
        &self.theta
    }

    /// Sets θ (and the model) to `theta`: a forget sets the live model to a retrained
    /// keyframe's definition in the chain (its file plus its recorded shift).
    pub fn set_theta(&mut self, theta: ParamSet) -> Result<()> {
        let model = self
            .model
            .take()
            .unwrap_or_else(|| unreachable!("model present between blocks"));
        self.model = Some(load_into(model, &theta, &self.device)?);
        self.theta = theta;
        Ok(())
    }

    /// The optimizer state and step count after the last block trained (as stored: Q(o)).
    pub fn opt_state(&self) -> (ParamSet, u64) {
        (self.opt.to_state(), self.opt.step)
    }

    /// The current model, for evaluation.
    pub fn model(&self) -> &Net<B> {
        self.model
            .as_ref()
            .unwrap_or_else(|| unreachable!("model is only taken inside run_block"))
    }

    /// Trains block `block` (1-based) on `ids` for E epochs and returns δ and o.
    pub fn run_block(&mut self, block: usize, ids: &[u64]) -> Result<BlockOutput> {
        self.run_block_observed(block, ids, &mut |_, _| Ok(()))
    }

    /// [`BlockTrainer::run_block`], calling `after_step` with each minibatch's ids and the
    /// model right after that minibatch's update (Amnesiac unlearning records updates this way).
    /// The observer only reads, so the result is identical to `run_block`'s.
    pub fn run_block_observed(
        &mut self,
        block: usize,
        ids: &[u64],
        after_step: &mut StepObserver<'_, B>,
    ) -> Result<BlockOutput> {
        let mut rows = Vec::with_capacity(ids.len());
        let mut order = Vec::with_capacity(ids.len());
        let train = &self.data.train;
        let loss_fn = CrossEntropyLossConfig::new().init::<B>(&self.device);
        self.opt.lr = self.cfg.lr_at(block);
        let mut model = self
            .model
            .take()
            .unwrap_or_else(|| unreachable!("model present between blocks"));
        for epoch in 0..self.cfg.epochs_per_block {
            rows.clear();
            order.clear();
            for id in epoch_order(ids, self.cfg.seed, block, epoch) {
                rows.push(train.row(id).ok_or_else(|| {
                    invalid("sample id", format!("{id} is not in the training set"))
                })?);
                order.push(id);
            }
            let bs = self.cfg.batch_size;
            for (batch, batch_ids) in rows.chunks(bs).zip(order.chunks(bs)) {
                let grads = minibatch_grads(
                    &model,
                    self.data,
                    batch,
                    &loss_fn,
                    self.cfg.micro_batches,
                    &self.device,
                    &mut self.workers,
                )?;
                model = self.opt.step(model, grads)?;
                after_step(batch_ids, &model)?;
            }
        }
        let raw = extract(&model);
        let delta = raw.sub(&self.theta)?;
        delta.check_finite(&format!(
            "training diverged in block {block}: its increment"
        ))?;
        let storage = self.cfg.storage;
        let stored_delta = storage.delta.encode(&delta);
        // f32 stores the values themselves: decoding would copy them unchanged.
        let delta = if storage.delta.is_f32() {
            delta
        } else {
            let decoded = stored_delta.decode();
            decoded.check_finite(&format!(
                "block {block}'s increment at {} precision",
                storage.delta.name()
            ))?;
            decoded
        };
        self.theta.add_assign(&delta)?;
        let model = if raw.bit_identical(&self.theta) {
            model
        } else {
            load_into(model, &self.theta, &self.device)?
        };
        self.model = Some(model);
        let state = self.opt.to_state();
        let stored_opt = storage.opt.encode(&state);
        let opt_state = if storage.opt.is_f32() {
            state
        } else {
            // Training continues from Q(o_i), as a restore from the chain would.
            let decoded = stored_opt.decode();
            let mask = self.opt.trainable().to_vec();
            let step = self.opt.step;
            self.opt = Optimizer::from_state(
                self.cfg.optim,
                &self.theta,
                &mask,
                &decoded,
                step,
                &self.device,
            )?;
            decoded
        };
        Ok(BlockOutput {
            delta,
            opt_state,
            stored_delta,
            stored_opt,
            step: self.opt.step,
        })
    }
}

/// Share of `split` samples that `model` classifies correctly.
pub fn accuracy<B: Backend>(
    model: &Net<B>,
    data: &Dataset,
    split: Split,
    device: &B::Device,
) -> f64 {
    let n = data.samples(split).len();
    if n == 0 {
        return 0.0;
    }
    let rows: Vec<usize> = (0..n).collect();
    let mut correct = 0i64;
    for chunk in rows.chunks(1000) {
        let (x, y) = data.batch::<B>(split, chunk, device);
        let pred = model.forward(x).argmax(1).reshape([chunk.len()]);
        correct += pred.equal(y).int().sum().into_scalar().elem::<i64>();
    }
    correct as f64 / n as f64
}

/// Test accuracy of parameters `theta` for `kind` (evaluated without autodiff).
pub fn test_accuracy<B: AutodiffBackend>(
    data: &Dataset,
    kind: ModelKind,
    theta: &ParamSet,
    device: &B::Device,
) -> Result<f64> {
    let net = Net::<B>::new(kind, data.shape, data.classes, 0, device)?;
    let net = load_into(net, theta, device)?.valid();
    Ok(accuracy(&net, data, Split::Test, device))
}

/// Gradient of the mean loss over `rows` in `slices` parts: by libtorch's autograd when the
/// model lives on libtorch (`torch_grads`), else by burn's ([`burn_minibatch_grads`]).
fn minibatch_grads<B: AutodiffBackend>(
    model: &Net<B>,
    data: &Dataset,
    rows: &[usize],
    loss_fn: &CrossEntropyLoss<B>,
    slices: usize,
    device: &B::Device,
    workers: &mut Option<Workers>,
) -> Result<GradientsParams> {
    #[cfg(feature = "tch")]
    if let Some(grads) = torch_grads::minibatch_grads(model, data, rows, slices, device) {
        return grads;
    }
    let workers = match workers {
        Some(w) => w,
        None => workers.insert(Workers::new(slices)?),
    };
    Ok(burn_minibatch_grads(
        model, data, rows, loss_fn, slices, device, workers,
    ))
}

/// Gradient of the mean loss over `rows`, computed as up to `slices` contiguous micro-batches
/// of ⌈n / slices⌉ rows at once, each on its own one-thread pool of `workers`, and summed in
/// slice order; a whole minibatch on the caller's thread (`train/workers.rs` says why).
///
/// Why: flex spreads a large kernel over the cores but runs small ones (LeNet-5's, the CNN's)
/// no faster on two than on one, so the minibatch's halves fill both. Each slice's loss is
/// scaled by its share of the minibatch, so the sum is the minibatch gradient up to float
/// rounding, and the rounding depends only on `slices`. Slices other than the first run on
/// replicas whose parameters are fresh autodiff leaves over the same values (same `ParamId`s):
/// a leaf shared by two graphs would merge them under one lock and serialise the backward
/// passes.
fn burn_minibatch_grads<B: AutodiffBackend>(
    model: &Net<B>,
    data: &Dataset,
    rows: &[usize],
    loss_fn: &CrossEntropyLoss<B>,
    slices: usize,
    device: &B::Device,
    workers: &Workers,
) -> GradientsParams {
    let n = rows.len();
    let parts = slices_of(rows, slices);
    let slice = |i: usize| {
        let part = parts[i];
        let replica = if i == 0 {
            model.clone()
        } else {
            model.clone().map(&mut FreshLeaves)
        };
        let (x, y) = data.batch::<B>(Split::Train, part, device);
        let loss = replica.forward(x);
        let loss = match parts.len() {
            1 => loss_fn.forward(loss, y),
            _ => loss_fn
                .forward(loss, y)
                .mul_scalar(part.len() as f64 / n as f64),
        };
        GradientsParams::from_grads(loss.backward(), &replica)
    };
    let grads = workers.map(parts.len(), &slice);
    let mut grads = grads.into_iter();
    let mut total = grads.next().unwrap_or_default();
    for other in grads {
        model.visit(&mut AddGrads::<B> {
            total: &mut total,
            other,
            backend: PhantomData,
        });
    }
    total
}

/// The contiguous slices a minibatch is computed in: ⌈n / slices⌉ rows each, or all of them.
fn slices_of(rows: &[usize], slices: usize) -> Vec<&[usize]> {
    if slices <= 1 || rows.len() < 2 {
        vec![rows]
    } else {
        rows.chunks(rows.len().div_ceil(slices)).collect()
    }
}

/// Detaches every parameter into a new leaf (keeping its id and whether it is trained).
struct FreshLeaves;

impl<B: AutodiffBackend> ModuleMapper<B> for FreshLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let trained = tensor.is_require_grad();
        let tensor = tensor.detach();
        let tensor = if trained {
            tensor.require_grad()
        } else {
            tensor
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Adds `other`'s gradient of each parameter to `total`'s.
struct AddGrads<'a, B: AutodiffBackend> {
    total: &'a mut GradientsParams,
    other: GradientsParams,
    backend: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for AddGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(g) = self.other.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let sum = match self.total.remove::<B::InnerBackend, D>(param.id) {
            Some(t) => t + g,
            None => g,
        };
        self.total.register::<B::InnerBackend, D>(param.id, sum);
    }
}

//! SGD with momentum and Adam with PyTorch's semantics, whose state is a plain [`ParamSet`].
//!
//! Why not burn-optim: its state records are keyed by run-random `ParamId`s and typed per
//! backend, while the method needs the optimizer state o_i after every block as a named,
//! backend-independent tensor set that can be stored, hashed, restored bit-exactly and read
//! from Python. The update rules are a few lines; owning them also pins their semantics
//! (PyTorch's `torch.optim.SGD(momentum, dampening=0)` and `torch.optim.Adam`).

use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid};
use crate::params::{NamedTensor, ParamSet};

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Stochastic gradient descent with (heavy-ball) momentum.
    Sgd,
    /// Adam (Kingma & Ba 2015) with bias correction.
    Adam,
}

impl OptimizerKind {
    /// Every update rule.
    pub const ALL: [OptimizerKind; 2] = [OptimizerKind::Sgd, OptimizerKind::Adam];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
        }
    }
    fn slot_names(self) -> &'static [&'static str] {
        match self {
            OptimizerKind::Sgd => &["momentum_buffer"],
            OptimizerKind::Adam => &["exp_avg", "exp_avg_sq"],
        }
    }
}

/// Hyper-parameters of the update rule, recorded in the run manifest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Update rule.
    pub kind: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    /// SGD momentum (0 = plain SGD).
    pub momentum: f64,
    /// L2 penalty added to the gradient (PyTorch's `weight_decay`).
    pub weight_decay: f64,
    /// Adam β1.
    pub beta1: f64,
    /// Adam β2.
    pub beta2: f64,
    /// Adam ε.
    pub eps: f64,
}

impl OptimConfig {
    /// SGD with the given learning rate and momentum.
    pub fn sgd(lr: f64, momentum: f64) -> Self {
        OptimConfig {
            kind: OptimizerKind::Sgd,
            lr,
            momentum,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
    /// Adam with the given learning rate and PyTorch's default betas and ε.
    pub fn adam(lr: f64) -> Self {
        OptimConfig {
            kind: OptimizerKind::Adam,
            ..OptimConfig::sgd(lr, 0.0)
        }
    }
    /// Rejects values that cannot train. Training runs in f32, so the rate must be a finite,
    /// positive f32 too (1e39 is finite in f64 and infinite in f32).
    pub fn validate(&self) -> Result<()> {
        let lr32 = self.lr as f32;
        if !(self.lr.is_finite() && self.lr > 0.0 && lr32.is_finite() && lr32 > 0.0) {
            return Err(invalid(
                "learning rate",
                format!("{} (must be > 0 and finite in f32)", self.lr),
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(invalid(
                "momentum",
                format!("{} (must be in [0, 1))", self.momentum),
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(invalid("weight decay", format!("{}", self.weight_decay)));
        }
        Ok(())
    }
}

/// Optimizer state on the device: per trainable tensor, its slots (flattened), plus the step.
pub struct Optimizer<B: Backend> {
    cfg: OptimConfig,
    /// Steps taken so far (Adam's bias correction needs it).
    pub step: u64,
    /// Learning rate of the next steps (set per block by the schedule).
    pub lr: f64,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    trainable: Vec<bool>,
    slots: Vec<Vec<Tensor<B, 1>>>,
}

impl<B: Backend> Optimizer<B> {
    /// Fresh state (zeros, step 0) for a model with the given tensor layout.
    pub fn new(
        cfg: OptimConfig,
        template: &ParamSet,
        trainable: &[bool],
        device: &B::Device,
    ) -> Self {
        let state = Self::zero_state(cfg, template, trainable);
        // A zero state always matches its own template.
        Self::from_state(cfg, template, trainable, &state, 0, device)
            .unwrap_or_else(|_| unreachable!("zero state matches its template"))
    }

    /// The zero state o_0 as a host tensor set.
    pub fn zero_state(cfg: OptimConfig, template: &ParamSet, trainable: &[bool]) -> ParamSet {
        let mut tensors = Vec::new();
        for (t, &train) in template.tensors.iter().zip(trainable) {
            if !train {
                continue;
            }
            for slot in cfg.kind.slot_names() {
                tensors.push(NamedTensor {
                    name: format!("{}.{slot}", t.name),
                    shape: t.shape.clone(),
                    data: vec![0.0; t.data.len()],
                });
            }
        }
        ParamSet { tensors }
    }

    /// Restores a state saved by [`Optimizer::to_state`].
    pub fn from_state(
        cfg: OptimConfig,
        template: &ParamSet,
        trainable: &[bool],
        state: &ParamSet,
        step: u64,
        device: &B::Device,
    ) -> Result<Self> {
        let expected = Self::zero_state(cfg, template, trainable);
        expected
            .check_same_structure(state)
            .map_err(|e| invalid("optimizer state", e.to_string()))?;
        let mut slots = Vec::with_capacity(template.tensors.len());
        let mut it = state.tensors.iter();
        for &train in trainable {
            let mut s = Vec::new();
            if train {
                for _ in cfg.kind.slot_names() {
                    let t = it
                        .next()
                        .ok_or_else(|| invalid("optimizer state", "too short"))?;
                    s.push(Tensor::<B, 1>::from_data(
                        TensorData::new(t.data.clone(), [t.data.len()]),
                        device,
                    ));
                }
            }
            slots.push(s);
        }
        Ok(Optimizer {
            cfg,
            step,
            lr: cfg.lr,
            names: template.tensors.iter().map(|t| t.name.clone()).collect(),
            shapes: template.tensors.iter().map(|t| t.shape.clone()).collect(),
            trainable: trainable.to_vec(),
            slots,
        })
    }

    /// Copies the state to the host (o_i for the chain).
    pub fn to_state(&self) -> ParamSet {
        let mut tensors = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            for (slot, t) in self.cfg.kind.slot_names().iter().zip(s) {
                let data = t
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .unwrap_or_default();
                tensors.push(NamedTensor {
                    name: format!("{}.{slot}", self.names[i]),
                    shape: self.shapes[i].clone(),
                    data,
                });
            }
        }
        ParamSet { tensors }
    }

    /// Whether each tensor is trained.
    pub fn trainable(&self) -> &[bool] {
        &self.trainable
    }

    /// Applies one update to `model` with the gradients of one minibatch.
    pub fn step<AB, M>(&mut self, model: M, grads: GradientsParams) -> M
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        self.step += 1;
        let mut mapper = StepMapper::<AB> {
            opt: self,
            grads,
            index: 0,
        };
        model.map(&mut mapper)
    }
}

struct StepMapper<'a, AB: AutodiffBackend> {
    opt: &'a mut Optimizer<AB::InnerBackend>,
    grads: GradientsParams,
    index: usize,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for StepMapper<'_, AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let index = self.index;
        self.index += 1;
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<AB::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let cfg = self.opt.cfg;
        let lr = self.opt.lr;
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let p = tensor.inner().reshape([n]);
        let mut g = grad.reshape([n]);
        if cfg.weight_decay != 0.0 {
            g = g + p.clone().mul_scalar(cfg.weight_decay);
        }
        let slots = &mut self.opt.slots[index];
        let p = match cfg.kind {
            OptimizerKind::Sgd => {
                let update = if cfg.momentum != 0.0 {
                    let buf = slots[0].clone().mul_scalar(cfg.momentum) + g;
                    slots[0] = buf.clone();
                    buf
                } else {
                    g
                };
                p - update.mul_scalar(lr)
            }
            OptimizerKind::Adam => {
                let t = self.opt.step as i32;
                let m =
                    slots[0].clone().mul_scalar(cfg.beta1) + g.clone().mul_scalar(1.0 - cfg.beta1);
                let v = slots[1].clone().mul_scalar(cfg.beta2)
                    + g.clone().mul(g).mul_scalar(1.0 - cfg.beta2);
                slots[0] = m.clone();
                slots[1] = v.clone();
                let bc1 = 1.0 - cfg.beta1.powi(t);
                let bc2 = 1.0 - cfg.beta2.powi(t);
                let step_size = lr / bc1;
                let denom = v.div_scalar(bc2).sqrt().add_scalar(cfg.eps);
                p - m.div(denom).mul_scalar(step_size)
            }
        };
        let new = Tensor::<AB, D>::from_inner(p.reshape(dims)).require_grad();
        Param::from_mapped_value(id, new, mapper)
    }
}

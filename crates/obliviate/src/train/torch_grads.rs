//! The minibatch gradient on libtorch, differentiated by libtorch's own autograd.
//!
//! Why (ARCHITECTURE decision 23): burn's autodiff differentiates every layer with generic
//! rules that burn-tch 0.21 maps onto libtorch op by op. A convolution's weight gradient becomes
//! a convolution over the swapped batch and channel axes, which oneDNN runs 1.3–9× slower than
//! its own backward-weights kernel on the cnn's layers; ReLU's backward becomes a comparison and
//! a masked fill; batch norm a dozen separate ops. Here each model's forward pass is written once
//! more with `tch` ops over the very tensors of the burn model (burn-tch tensors are tch
//! tensors, so nothing is copied), and libtorch differentiates it as PyTorch does.
//!
//! The burn model stays the one definition of the network and of its state: parameters are read
//! from it, gradients go back under its `ParamId`s, and batch norm's running statistics are
//! updated with burn's rule (biased variance), so the optimizer, the chain and every caller are
//! unchanged. The two paths agree to float rounding (tested per model); a run on libtorch always
//! takes this one, so a libtorch chain is as deterministic as libtorch's kernels.

use std::any::Any;

use burn::backend::libtorch::{LibTorch, TchTensor};
use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorPrimitive};
use tch::{Kind, Reduction, Tensor as Tt};

use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::model::{BatchNorm, Cnn, LeNet5, Mlp, Net, ResNet18};
use crate::{TchBackend, TchDevice};

type Inner = LibTorch<f32>;

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Backend(format!("libtorch: {e}"))
    }
}

/// The gradient of the mean loss over `rows` (in `slices` parts, as the burn path computes it)
/// when `model` lives on libtorch; `None` for every other backend.
pub(super) fn minibatch_grads<B: AutodiffBackend>(
    model: &Net<B>,
    data: &Dataset,
    rows: &[usize],
    slices: usize,
    device: &B::Device,
) -> Option<Result<GradientsParams>> {
    let model = (model as &dyn Any).downcast_ref::<Net<TchBackend>>()?;
    let device = (device as &dyn Any).downcast_ref::<TchDevice>()?;
    Some(grads(model, data, rows, slices, device))
}

fn grads(
    model: &Net<TchBackend>,
    data: &Dataset,
    rows: &[usize],
    slices: usize,
    device: &TchDevice,
) -> Result<GradientsParams> {
    let n = rows.len();
    let parts = super::slices_of(rows, slices);
    let mut leaves = Leaves::default();
    let mut total: Vec<Tt> = Vec::new();
    for part in &parts {
        let (x, y) = data.batch::<TchBackend>(Split::Train, part, device);
        let x = raw(x.inner());
        let y = y.inner().into_primitive().tensor;
        leaves.cursor = 0;
        let logits = forward(model, &x, &mut leaves)?;
        let mut loss = logits.f_cross_entropy_loss(&y, None::<Tt>, Reduction::Mean, -100, 0.0)?;
        if parts.len() > 1 {
            loss = loss.f_mul_scalar(part.len() as f64 / n as f64)?;
        }
        let grads = Tt::f_run_backward(&[&loss], &leaves.tensors, false, false)?;
        total = if total.is_empty() {
            grads
        } else {
            total
                .iter()
                .zip(&grads)
                .map(|(t, g)| t.f_add(g))
                .collect::<std::result::Result<_, _>>()?
        };
    }
    let mut out = GradientsParams::new();
    for (register, grad) in leaves.registers.into_iter().zip(total) {
        // A convolution's weight gradient comes back channels-last; the optimizer wants it dense.
        register(&mut out, grad.f_contiguous()?);
    }
    Ok(out)
}

/// Files a gradient under its parameter's id, with the parameter's rank.
type Register = Box<dyn FnOnce(&mut GradientsParams, Tt)>;

/// The trained parameters as libtorch autograd leaves, in the order the forward pass reads
/// them (the same order for every slice, so a slice after the first reuses them by position).
#[derive(Default)]
struct Leaves {
    tensors: Vec<Tt>,
    registers: Vec<Register>,
    cursor: usize,
}

impl Leaves {
    fn get<const D: usize>(&mut self, param: &Param<Tensor<TchBackend, D>>) -> Result<Tt> {
        let value = param.val();
        if !value.is_require_grad() {
            return Ok(raw(value.inner()));
        }
        if let Some(leaf) = self.tensors.get(self.cursor) {
            self.cursor += 1;
            return Ok(leaf.shallow_clone());
        }
        let leaf = raw(value.inner()).f_detach()?.f_set_requires_grad(true)?;
        let id = param.id;
        self.registers.push(Box::new(move |grads, grad| {
            grads.register::<Inner, D>(id, wrap(grad));
        }));
        self.tensors.push(leaf.shallow_clone());
        self.cursor += 1;
        Ok(leaf)
    }
}

fn raw<const D: usize>(t: Tensor<Inner, D>) -> Tt {
    t.into_primitive().tensor().tensor
}

fn wrap<const D: usize>(t: Tt) -> Tensor<Inner, D> {
    Tensor::from_primitive(TensorPrimitive::Float(TchTensor::new(t)))
}

/// [`Net::forward`] in tch ops; keep each arm in step with its model's `forward`.
fn forward(net: &Net<TchBackend>, x: &Tt, l: &mut Leaves) -> Result<Tt> {
    match net {
        Net::Mlp(m) => mlp(m, x, l),
        Net::Lenet5(m) => lenet5(m, x, l),
        Net::Cnn(m) => cnn(m, x, l),
        Net::Resnet18(m) => resnet18(m, x, l),
    }
}

fn mlp(m: &Mlp<TchBackend>, x: &Tt, l: &mut Leaves) -> Result<Tt> {
    let mut x = x.f_flatten(1, -1)?;
    let last = m.layers.len().saturating_sub(1);
    for (i, layer) in m.layers.iter().enumerate() {
        x = linear(layer, &x, l)?;
        if i < last {
            x = x.f_tanh()?;
        }
    }
    Ok(x)
}

/// NCHW: channels-last made LeNet-5 0.6–0.9× as fast (its 1- and 6-channel layers).
fn lenet5(m: &LeNet5<TchBackend>, x: &Tt, l: &mut Leaves) -> Result<Tt> {
    let x = pool(&conv(&m.conv1, x, l)?.f_relu()?)?;
    let x = pool(&conv(&m.conv2, &x, l)?.f_relu()?)?.f_flatten(1, -1)?;
    let x = linear(&m.fc1, &x, l)?.f_relu()?;
    let x = linear(&m.fc2, &x, l)?.f_relu()?;
    linear(&m.fc3, &x, l)
}

fn cnn(m: &Cnn<TchBackend>, x: &Tt, l: &mut Leaves) -> Result<Tt> {
    let x = channels_last(x)?;
    let x = conv(&m.conv1, &x, l)?.f_relu()?;
    let x = pool(&conv(&m.conv2, &x, l)?.f_relu()?)?;
    let x = conv(&m.conv3, &x, l)?.f_relu()?;
    let x = pool(&conv(&m.conv4, &x, l)?.f_relu()?)?.f_flatten(1, -1)?;
    let x = linear(&m.fc1, &x, l)?.f_relu()?;
    linear(&m.fc2, &x, l)
}

fn resnet18(m: &ResNet18<TchBackend>, x: &Tt, l: &mut Leaves) -> Result<Tt> {
    let x = channels_last(x)?;
    let mut x = batch_norm(&m.bn, &conv(&m.stem, &x, l)?, l)?.f_relu()?;
    for b in &m.blocks {
        let out = batch_norm(&b.bn1, &conv(&b.conv1, &x, l)?, l)?.f_relu()?;
        let out = batch_norm(&b.bn2, &conv(&b.conv2, &out, l)?, l)?;
        let shortcut = match &b.downsample {
            Some(d) => batch_norm(&d.bn, &conv(&d.conv, &x, l)?, l)?,
            None => x,
        };
        x = out.f_add(&shortcut)?.f_relu()?;
    }
    let x = x.f_mean_dim([2i64, 3].as_slice(), false, Kind::Float)?;
    linear(&m.fc, &x, l)
}

/// burn's `Linear` holds its weight as `[in, out]`.
fn linear(m: &Linear<TchBackend>, x: &Tt, l: &mut Leaves) -> Result<Tt> {
    let w = l.get(&m.weight)?;
    Ok(match &m.bias {
        Some(b) => l.get(b)?.f_addmm(x, &w)?,
        None => x.f_matmul(&w)?,
    })
}

fn conv(m: &Conv2d<TchBackend>, x: &Tt, l: &mut Leaves) -> Result<Tt> {
    let PaddingConfig2d::Explicit(top, left, bottom, right) = m.padding else {
        return Err(Error::Backend(format!(
            "the libtorch gradient path takes explicit padding only, not {:?}",
            m.padding
        )));
    };
    if top != bottom || left != right {
        return Err(Error::Backend(format!(
            "the libtorch gradient path takes symmetric padding only, not {:?}",
            m.padding
        )));
    }
    let w = l.get(&m.weight)?;
    // The weight follows the activations' layout, as in PyTorch's channels-last recipe.
    let w = if x.size().get(1).is_some_and(|&c| c > 1) && x.stride().get(1) == Some(&1) {
        channels_last(&w)?
    } else {
        w
    };
    let b = m.bias.as_ref().map(|b| l.get(b)).transpose()?;
    let ints = |v: [usize; 2]| v.map(|i| i as i64);
    Ok(x.f_conv2d(
        &w,
        b.as_ref(),
        ints(m.stride),
        ints([top, left]),
        ints(m.dilation),
        m.groups as i64,
    )?)
}

/// The same values and shape, laid out channels-last (NHWC in memory), the layout in which
/// oneDNN's convolutions and libtorch's batch norm run fastest on CPU (`bench train`, against
/// NCHW: the CNN 1.17–1.26×, ResNet-18 1.03–1.05×). tch 0.22 binds no `memory_format`, so this is
/// PyTorch's `to(memory_format=torch.channels_last)` spelled as a permuted copy viewed back.
fn channels_last(x: &Tt) -> Result<Tt> {
    Ok(x.f_permute([0i64, 2, 3, 1].as_slice())?
        .f_contiguous()?
        .f_permute([0i64, 3, 1, 2].as_slice())?)
}

fn pool(x: &Tt) -> Result<Tt> {
    Ok(x.f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)?)
}

/// Training-mode batch norm. The running statistics move by burn's rule, which takes the
/// biased batch variance where libtorch's takes the unbiased one: libtorch updates copies in
/// place (no extra pass over the activations), the variance's copy scaled by n / (n − 1) before
/// and by (n − 1) / n after, which turns its rule into burn's.
fn batch_norm(m: &BatchNorm<TchBackend>, x: &Tt, l: &mut Leaves) -> Result<Tt> {
    let gamma = l.get(&m.gamma)?;
    let beta = l.get(&m.beta)?;
    let mean = raw(m.running_mean.value_sync().inner()).f_detach_copy()?;
    let var = raw(m.running_var.value_sync().inner());
    let n = (x.numel() / x.size().get(1).map_or(1, |&c| c.max(1) as usize)) as f64;
    let (out, mean, var) = if n >= 2.0 {
        let var = var.f_mul_scalar(n / (n - 1.0))?;
        let out = x.f_batch_norm(
            Some(&gamma),
            Some(&beta),
            Some(&mean),
            Some(&var),
            true,
            m.momentum,
            m.epsilon,
            true,
        )?;
        (out, mean, var.f_mul_scalar((n - 1.0) / n)?)
    } else {
        // One value per channel: the unbiased variance is undefined, the biased one is 0.
        let batch = tch::no_grad(|| x.f_mean_dim([0i64, 2, 3].as_slice(), false, Kind::Float))?;
        let mean = mean
            .f_mul_scalar(1.0 - m.momentum)?
            .f_add(&batch.f_mul_scalar(m.momentum)?)?;
        let out = x.f_batch_norm(
            Some(&gamma),
            Some(&beta),
            None::<&Tt>,
            None::<&Tt>,
            true,
            m.momentum,
            m.epsilon,
            true,
        )?;
        (out, mean, var.f_mul_scalar(1.0 - m.momentum)?)
    };
    m.running_var.update(Tensor::from_inner(wrap(var)));
    m.running_mean.update(Tensor::from_inner(wrap(mean)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, ModuleVisitor};

    use super::*;
    use crate::experiments::throughput::Workload;
    use crate::model::ModelKind;
    use crate::params::{extract, load_into};

    /// Differences between the two paths' gradients, over all parameters.
    struct Compare {
        fast: GradientsParams,
        reference: GradientsParams,
        /// Largest |a − b| and largest |b|.
        worst: f64,
        scale: f64,
        /// ‖a − b‖² and ‖b‖².
        diff_sq: f64,
        norm_sq: f64,
        count: usize,
    }

    impl ModuleVisitor<TchBackend> for Compare {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<TchBackend, D>>) {
            let fast = self.fast.remove::<Inner, D>(param.id);
            let reference = self.reference.remove::<Inner, D>(param.id);
            let (a, b) = match (fast, reference) {
                (Some(a), Some(b)) => (a, b),
                (None, None) => return,
                (a, _) => panic!(
                    "gradient of {:?} only on the {} path",
                    param.id,
                    if a.is_some() { "libtorch" } else { "burn" }
                ),
            };
            assert_eq!(a.dims(), b.dims());
            let d = a - b.clone();
            self.worst = self.worst.max(d.clone().abs().max().into_scalar() as f64);
            self.scale = self.scale.max(b.clone().abs().max().into_scalar() as f64);
            self.diff_sq += d.powi_scalar(2).sum().into_scalar() as f64;
            self.norm_sq += b.powi_scalar(2).sum().into_scalar() as f64;
            self.count += 1;
        }
    }

    fn agree(kind: ModelKind, slices: usize) {
        agree_on(Workload::of(kind), kind, 8, slices, true);
    }

    /// Compares the gradients (if `grads`) and the state each path leaves behind.
    fn agree_on(w: Workload, kind: ModelKind, batch: usize, slices: usize, grads: bool) {
        let data = w.synthetic().expect("synthetic data");
        let device = TchDevice::Cpu;
        let rows: Vec<usize> = (0..batch).collect();
        // One model (gradients are keyed by its parameter ids), reset between the two paths.
        let net = Net::<TchBackend>::new(kind, w.shape, w.classes, 7, &device).expect("model");
        let initial = extract(&net);
        let fast = minibatch_grads(&net, &data, &rows, slices, &device)
            .expect("libtorch model")
            .expect("gradient");
        let after_fast = extract(&net);
        let net = load_into(net, &initial, &device).expect("reset");
        let loss = burn::nn::loss::CrossEntropyLossConfig::new().init(&device);
        let workers = super::super::Workers::new(slices).expect("training threads");
        let reference = super::super::burn_minibatch_grads(
            &net, &data, &rows, &loss, slices, &device, &workers,
        );
        let after_burn = extract(&net);
        let mut cmp = Compare {
            fast,
            reference,
            worst: 0.0,
            scale: 0.0,
            diff_sq: 0.0,
            norm_sq: 0.0,
            count: 0,
        };
        if grads {
            net.visit(&mut cmp);
            assert_eq!(
                cmp.count,
                trained(&net),
                "{kind}: not every parameter has a gradient"
            );
            // Float rounding: 1e-7..4e-7 relative (measured). In ResNet-18 also one activation
            // of this batch that sits at ReLU's kink on one path and not on the other, which
            // moves its block's first layer by 0.6 % of the largest gradient and every layer
            // before it a little (1.5e-3 in all). A wrong layer moves most values, by far more.
            let bound = if kind == ModelKind::Resnet18 {
                1e-2
            } else {
                1e-5
            };
            let relative = (cmp.diff_sq / cmp.norm_sq).sqrt();
            assert!(
                relative <= bound && cmp.worst <= 1e-2 * cmp.scale,
                "{kind}, {batch} sample(s) in {slices} slice(s): gradients differ by \
                 {relative:e} (relative L2), {} at most (largest {})",
                cmp.worst,
                cmp.scale
            );
            assert!(cmp.fast.is_empty(), "{kind}: gradients the burn path lacks");
        }
        // Both paths moved the batch-norm statistics (and only those) alike.
        let max_diff = after_fast.max_abs_diff(&after_burn).expect("same layout");
        assert!(max_diff <= 1e-4, "{kind}: state differs by {max_diff}");
    }

    fn trained(net: &Net<TchBackend>) -> usize {
        struct Count(usize);
        impl ModuleVisitor<TchBackend> for Count {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<TchBackend, D>>) {
                self.0 += usize::from(p.val().is_require_grad());
            }
        }
        let mut c = Count(0);
        net.visit(&mut c);
        c.0
    }

    #[test]
    fn libtorch_autograd_gradients_equal_burns_for_every_model() {
        for kind in ModelKind::ALL {
            agree(kind, 1);
        }
        agree(ModelKind::Lenet5, 2);
        // One sample of 8×8 leaves one value per channel in the last stage's batch norms: their
        // output is β up to rounding, which lands on ReLU's kink exactly on one path and not
        // on the other, so only the statistics they leave are comparable.
        let tiny = Workload {
            shape: crate::model::InputShape {
                channels: 3,
                height: 8,
                width: 8,
            },
            ..Workload::of(ModelKind::Resnet18)
        };
        agree_on(tiny, ModelKind::Resnet18, 1, 1, false);
    }
}

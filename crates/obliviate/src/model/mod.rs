//! The networks obliviate trains, chosen by name; input shape and class count come from the data.

mod cnn;
mod conv;
mod init;
mod lenet;
mod mlp;
mod norm;
mod pool;
mod resnet;
mod tanh;

use burn::module::Module;
use burn::prelude::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

pub use cnn::Cnn;
pub use lenet::LeNet5;
pub use mlp::Mlp;
pub use norm::BatchNorm;
pub use resnet::ResNet18;

use crate::error::{Result, invalid};

/// `t` as a `U` when it is one, else `t` back: how the models ([`conv`], [`pool`], [`tanh`]) and the
/// optimizer take burn-flex's fast paths while staying generic over the backend.
#[cfg(feature = "flex")]
pub(crate) fn cast<T: 'static, U: 'static>(t: T) -> std::result::Result<U, T> {
    let boxed: Box<dyn std::any::Any> = Box::new(t);
    match boxed.downcast::<U>() {
        Ok(u) => Ok(*u),
        Err(boxed) => match boxed.downcast::<T>() {
            Ok(t) => Err(*t),
            Err(_) => unreachable!("a box holds the type it was made from"),
        },
    }
}

/// The model architectures, by the name users type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Purchase MLP: in-1024-512-256-128-N, tanh.
    Mlp,
    /// SISA's small MLP: in-128-N, tanh.
    MlpSmall,
    /// LeNet-5 (two conv + three fc, ReLU, max-pool).
    Lenet5,
    /// CIFAR CNN: four 3×3 convs (32, 32, 64, 64) with two max-pools, fc 512, fc N.
    Cnn,
    /// ResNet-18, CIFAR variant (3×3 stem, no stem pool), batch norm.
    Resnet18,
}

impl ModelKind {
    /// All kinds, for help texts and benchmarks.
    pub const ALL: [ModelKind; 5] = [
        ModelKind::Mlp,
        ModelKind::MlpSmall,
        ModelKind::Lenet5,
        ModelKind::Cnn,
        ModelKind::Resnet18,
    ];

    /// The name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
            ModelKind::MlpSmall => "mlp-small",
            ModelKind::Lenet5 => "lenet5",
            ModelKind::Cnn => "cnn",
            ModelKind::Resnet18 => "resnet18",
        }
    }

    /// Whether the model normalises over the minibatch (its output for one sample depends on
    /// the others), which rules out computing a minibatch in slices.
    pub fn has_batch_norm(self) -> bool {
        self == ModelKind::Resnet18
    }

    /// Parses a model name.
    pub fn parse(s: &str) -> Result<ModelKind> {
        ModelKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                invalid(
                    "model",
                    format!(
                        "unknown model {s:?}; expected one of {}",
                        ModelKind::ALL.map(|k| k.name()).join(", ")
                    ),
                )
            })
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Input geometry of a dataset: channels, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShape {
    /// Channels (1 for grey images and tabular rows).
    pub channels: usize,
    /// Height (1 for tabular rows).
    pub height: usize,
    /// Width (the feature count for tabular rows).
    pub width: usize,
}

impl InputShape {
    /// Scalars per sample.
    pub fn numel(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Any of the supported networks; one type so the engine stays generic over the backend only.
/// (Variants differ in size; a model is built once per run, so boxing buys nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Net<B: Backend> {
    /// `mlp` and `mlp-small`.
    Mlp(Mlp<B>),
    /// `lenet5`.
    Lenet5(LeNet5<B>),
    /// `cnn`.
    Cnn(Cnn<B>),
    /// `resnet18`.
    Resnet18(ResNet18<B>),
}

impl<B: Backend> Net<B> {
    /// Builds `kind` for `input` and `classes`, with weights drawn deterministically from `seed`
    /// (PyTorch's default layer initialisation, U(±1/√fan_in)), independent of the backend.
    pub fn new(
        kind: ModelKind,
        input: InputShape,
        classes: usize,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self> {
        if classes < 2 {
            return Err(invalid(
                "dataset",
                format!("{classes} class(es); need at least 2"),
            ));
        }
        let net = match kind {
            ModelKind::Mlp => Net::Mlp(Mlp::new(
                input.numel(),
                &[1024, 512, 256, 128],
                classes,
                device,
            )),
            ModelKind::MlpSmall => Net::Mlp(Mlp::new(input.numel(), &[128], classes, device)),
            ModelKind::Lenet5 => Net::Lenet5(LeNet5::new(input, classes, device)?),
            ModelKind::Cnn => Net::Cnn(Cnn::new(input, classes, device)?),
            ModelKind::Resnet18 => Net::Resnet18(ResNet18::new(input, classes, device)?),
        };
        Ok(init::initialize(net, seed, device))
    }

    /// Logits `[batch, classes]` for images `[batch, channels, height, width]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            Net::Mlp(m) => m.forward(x),
            Net::Lenet5(m) => m.forward(x),
            Net::Cnn(m) => m.forward(x),
            Net::Resnet18(m) => m.forward(x),
        }
    }
}

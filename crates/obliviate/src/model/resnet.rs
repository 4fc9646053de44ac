//! ResNet-18 (He et al. 2016), CIFAR variant: 3×3 stem without pooling, four stages of two
//! basic blocks, global average pooling.

use burn::module::Module;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::prelude::Backend;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use super::InputShape;
use super::conv::conv2d;
use super::lenet::conv;
use super::mlp::linear;
use super::norm::BatchNorm;
use crate::error::{Result, invalid};

/// 1×1 strided projection on the shortcut when shape changes.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// Projection.
    pub conv: Conv2d<B>,
    /// Its batch norm.
    pub bn: BatchNorm<B>,
}

/// Two 3×3 convolutions with batch norm and an identity (or projected) shortcut.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    /// First 3×3 (carries the stride).
    pub conv1: Conv2d<B>,
    /// Its batch norm.
    pub bn1: BatchNorm<B>,
    /// Second 3×3.
    pub conv2: Conv2d<B>,
    /// Its batch norm.
    pub bn2: BatchNorm<B>,
    /// Shortcut projection, when the block changes shape.
    pub downsample: Option<Downsample<B>>,
}

impl<B: Backend> BasicBlock<B> {
    fn new(c_in: usize, c_out: usize, stride: usize, device: &B::Device) -> Self {
        let downsample = (stride != 1 || c_in != c_out).then(|| Downsample {
            conv: conv(c_in, c_out, 1, stride, 0, false, device),
            bn: BatchNorm::new(c_out, device),
        });
        BasicBlock {
            conv1: conv(c_in, c_out, 3, stride, 1, false, device),
            bn1: BatchNorm::new(c_out, device),
            conv2: conv(c_out, c_out, 3, 1, 1, false, device),
            bn2: BatchNorm::new(c_out, device),
            downsample,
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let out = relu(self.bn1.forward(conv2d(&self.conv1, x.clone())));
        let out = self.bn2.forward(conv2d(&self.conv2, out));
        let shortcut = match &self.downsample {
            Some(d) => d.bn.forward(conv2d(&d.conv, x)),
            None => x,
        };
        relu(out + shortcut)
    }
}

/// ResNet-18 for small images.
#[derive(Module, Debug)]
pub struct ResNet18<B: Backend> {
    /// 3×3 stem, 64 channels.
    pub stem: Conv2d<B>,
    /// Stem batch norm.
    pub bn: BatchNorm<B>,
    /// Eight basic blocks: 64, 64, 128, 128, 256, 256, 512, 512 channels.
    pub blocks: Vec<BasicBlock<B>>,
    /// 512 → classes.
    pub fc: Linear<B>,
}

impl<B: Backend> ResNet18<B> {
    /// Builds ResNet-18 for images of at least 8×8.
    pub fn new(input: InputShape, classes: usize, device: &B::Device) -> Result<Self> {
        if input.height < 8 || input.width < 8 {
            return Err(invalid(
                "model",
                format!(
                    "resnet18 needs images of at least 8×8, not {}×{}",
                    input.height, input.width
                ),
            ));
        }
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for (stage, c_out) in [64, 128, 256, 512].into_iter().enumerate() {
            let stride = if stage == 0 { 1 } else { 2 };
            blocks.push(BasicBlock::new(c_in, c_out, stride, device));
            blocks.push(BasicBlock::new(c_out, c_out, 1, device));
            c_in = c_out;
        }
        Ok(ResNet18 {
            stem: conv(input.channels, 64, 3, 1, 1, false, device),
            bn: BatchNorm::new(64, device),
            blocks,
            fc: linear(512, classes, device),
        })
    }

    /// Logits for a batch of images.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = relu(self.bn.forward(conv2d(&self.stem, x)));
        for block in &self.blocks {
            x = block.forward(x);
        }
        let [n, c, _, _] = x.dims();
        let x = x.mean_dim(3).mean_dim(2).reshape([n, c]);
        self.fc.forward(x)
    }
}

//! LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, as used for MNIST unlearning.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, PaddingConfig2d};
use burn::prelude::Backend;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use super::InputShape;
use super::conv::conv2d;
use super::mlp::linear;
use super::pool::max_pool_2x2;
use crate::error::{Result, invalid};

/// conv 6@5×5 → pool → conv 16@5×5 → pool → fc 120 → fc 84 → fc N.
#[derive(Module, Debug)]
pub struct LeNet5<B: Backend> {
    /// First convolution (padded so 28×28 inputs behave like the classic 32×32).
    pub conv1: Conv2d<B>,
    /// Second convolution.
    pub conv2: Conv2d<B>,
    /// 16·5·5 → 120.
    pub fc1: Linear<B>,
    /// 120 → 84.
    pub fc2: Linear<B>,
    /// 84 → classes.
    pub fc3: Linear<B>,
}

pub(crate) fn conv<B: Backend>(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    bias: bool,
    device: &B::Device,
) -> Conv2d<B> {
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(bias)
        .with_initializer(Initializer::Zeros)
        .init(device)
}

impl<B: Backend> LeNet5<B> {
    /// Builds LeNet-5 for inputs of at most 32×32 (smaller inputs are zero-padded).
    pub fn new(input: InputShape, classes: usize, device: &B::Device) -> Result<Self> {
        if input.height != input.width || input.height > 32 || input.height < 16 {
            return Err(invalid(
                "model",
                format!(
                    "lenet5 needs square images of 16..=32 pixels, not {}×{}",
                    input.height, input.width
                ),
            ));
        }
        let pad = (32 - input.height) / 2;
        let side = ((input.height + 2 * pad - 4) / 2 - 4) / 2;
        Ok(LeNet5 {
            conv1: conv(input.channels, 6, 5, 1, pad, true, device),
            conv2: conv(6, 16, 5, 1, 0, true, device),
            fc1: linear(16 * side * side, 120, device),
            fc2: linear(120, 84, device),
            fc3: linear(84, classes, device),
        })
    }

    /// Logits for a batch of images.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = relu(conv2d(&self.conv1, x));
        let x = max_pool_2x2(x);
        let x = relu(conv2d(&self.conv2, x));
        let x = max_pool_2x2(x);
        let [n, c, h, w] = x.dims();
        let x = x.reshape([n, c * h * w]);
        let x = relu(self.fc1.forward(x));
        let x = relu(self.fc2.forward(x));
        self.fc3.forward(x)
    }
}

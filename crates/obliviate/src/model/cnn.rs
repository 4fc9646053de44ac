//! The CIFAR CNN of the unlearning literature: four 3×3 convolutions and two dense layers.

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
use super::pool::max_pool_2x2;
use crate::error::{Result, invalid};

/// conv32 → conv32 → pool → conv64 → conv64 → pool → fc 512 → fc N (2,168,362 parameters on
/// CIFAR-10).
#[derive(Module, Debug)]
pub struct Cnn<B: Backend> {
    /// 3×3, 32 channels.
    pub conv1: Conv2d<B>,
    /// 3×3, 32 channels.
    pub conv2: Conv2d<B>,
    /// 3×3, 64 channels.
    pub conv3: Conv2d<B>,
    /// 3×3, 64 channels.
    pub conv4: Conv2d<B>,
    /// Flattened features → 512.
    pub fc1: Linear<B>,
    /// 512 → classes.
    pub fc2: Linear<B>,
}

impl<B: Backend> Cnn<B> {
    /// Builds the CNN for images whose sides are multiples of 4.
    pub fn new(input: InputShape, classes: usize, device: &B::Device) -> Result<Self> {
        if !input.height.is_multiple_of(4) || !input.width.is_multiple_of(4) || input.height < 4 {
            return Err(invalid(
                "model",
                format!(
                    "cnn needs image sides divisible by 4, not {}×{}",
                    input.height, input.width
                ),
            ));
        }
        let flat = 64 * (input.height / 4) * (input.width / 4);
        Ok(Cnn {
            conv1: conv(input.channels, 32, 3, 1, 1, true, device),
            conv2: conv(32, 32, 3, 1, 1, true, device),
            conv3: conv(32, 64, 3, 1, 1, true, device),
            conv4: conv(64, 64, 3, 1, 1, true, device),
            fc1: linear(flat, 512, device),
            fc2: linear(512, classes, device),
        })
    }

    /// Logits for a batch of images.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = relu(conv2d(&self.conv1, x));
        let x = relu(conv2d(&self.conv2, x));
        let x = max_pool_2x2(x);
        let x = relu(conv2d(&self.conv3, x));
        let x = relu(conv2d(&self.conv4, x));
        let x = max_pool_2x2(x);
        let [n, c, h, w] = x.dims();
        let x = x.reshape([n, c * h * w]);
        let x = relu(self.fc1.forward(x));
        self.fc2.forward(x)
    }
}

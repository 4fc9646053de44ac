//! Fully connected tanh networks (Purchase's MLP and SISA's small MLP).

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::Backend;
use burn::tensor::Tensor;

use super::tanh::tanh;

/// in → hidden… → classes, tanh between layers; images are flattened.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Hidden layers, then the output layer.
    pub layers: Vec<Linear<B>>,
}

pub(crate) fn linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Zeros)
        .init(device)
}

impl<B: Backend> Mlp<B> {
    /// Builds an MLP with the given hidden widths.
    pub fn new(inputs: usize, hidden: &[usize], classes: usize, device: &B::Device) -> Self {
        let mut widths = vec![inputs];
        widths.extend_from_slice(hidden);
        widths.push(classes);
        let layers = widths
            .windows(2)
            .map(|w| linear(w[0], w[1], device))
            .collect();
        Mlp { layers }
    }

    /// Logits for a batch of samples of any shape.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, c, h, w] = x.dims();
        let mut x = x.reshape([n, c * h * w]);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = tanh(x);
            }
        }
        x
    }
}

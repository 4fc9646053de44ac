//! 2-D convolution for the models: burn-nn's `Conv2d`, with its weight gradient as patches times
//! output gradient on burn-flex.
//!
//! Why: burn 0.21 computes a convolution's weight gradient generically, as a convolution over the
//! batch and channel axes swapped, which burn-flex runs through its conv3d at twice the forward's
//! cost (profiled: 39 % of a CNN step on flex, more than the forward pass and the input gradient
//! together). With autodiff on flex, a convolution here is an autodiff node of its own: the
//! forward pass and the input gradient are the flex calls burn makes (so their values are
//! burn's), the weight gradient is the input's patches (im2col), a few samples at a time,
//! multiplied by the output gradient in one matrix product each (flex's gemm), and the bias
//! gradient is the output gradient summed per channel. Everywhere else (libtorch, CUDA, no
//! autodiff, grouped convolutions, asymmetric padding) it is `Conv2d::forward` itself.

use burn::nn::conv::Conv2d;
use burn::prelude::Backend;
use burn::tensor::Tensor;

/// `layer` applied to `x`; see the module docs for the flex path.
pub fn conv2d<B: Backend>(layer: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let x = match flex::conv2d(layer, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    layer.forward(x)
}

#[cfg(feature = "flex")]
mod flex {
    use std::any::Any;

    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2d;
    use burn::prelude::Backend;
    use burn::tensor::ops::{ConvOptions, FloatTensor, FloatTensorOps, ModuleOps};
    use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

    use crate::model::cast;

    type Ad = Autodiff<Flex>;

    /// `Ok` when `x` lives on flex with autodiff in f32 and the layer is a plain convolution
    /// (one group, symmetric padding); else `x` back.
    pub(super) fn conv2d<B: Backend>(
        layer: &Conv2d<B>,
        x: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
        let Some(layer) = (layer as &dyn Any).downcast_ref::<Conv2d<Ad>>() else {
            return Err(x);
        };
        let padding = match layer.padding {
            PaddingConfig2d::Valid => [0, 0],
            PaddingConfig2d::Explicit(top, left, bottom, right)
                if top == bottom && left == right =>
            {
                [top, left]
            }
            _ => return Err(x),
        };
        if x.dtype() != DType::F32 || layer.groups != 1 {
            return Err(x);
        }
        let x = cast::<_, Tensor<Ad, 4>>(x)?;
        let options = ConvOptions::new(layer.stride, padding, layer.dilation, 1);
        let y = autodiff_conv2d(
            x.into_primitive().tensor(),
            layer.weight.val().into_primitive().tensor(),
            layer
                .bias
                .as_ref()
                .map(|b| b.val().into_primitive().tensor()),
            options,
        );
        cast(Tensor::<Ad, 4>::from_primitive(TensorPrimitive::Float(y)))
            .map_err(|_| unreachable!("B is Autodiff<Flex>"))
    }

    /// What the backward pass needs: the input, the weight and the options.
    type State = (FlexTensor, FlexTensor, ConvOptions<2>);

    #[derive(Debug)]
    struct WithBias;

    #[derive(Debug)]
    struct NoBias;

    impl Backward<Flex, 3> for WithBias {
        type State = State;

        fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [x, weight, bias] = ops.parents;
            let g = grads.consume::<Flex>(&ops.node);
            if let Some(bias) = bias {
                grads.register::<Flex>(bias.id, bias_grad(&g));
            }
            let ids = [x.map(|n| n.id), weight.map(|n| n.id)];
            register(ids, ops.state, g, grads);
        }
    }

    impl Backward<Flex, 2> for NoBias {
        type State = State;

        fn backward(self, ops: Ops<State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [x, weight] = ops.parents;
            let g = grads.consume::<Flex>(&ops.node);
            let ids = [x.map(|n| n.id), weight.map(|n| n.id)];
            register(ids, ops.state, g, grads);
        }
    }

    /// Registers the input gradient (flex's, as burn computes it) and the weight gradient.
    fn register(
        [x_id, w_id]: [Option<NodeId>; 2],
        (x, weight, options): State,
        g: FlexTensor,
        grads: &mut Gradients,
    ) {
        if let Some(id) = w_id {
            let shape = weight.layout().shape().clone();
            grads.register::<Flex>(id, weight_grad(&x, &g, &shape, &options));
        }
        if let Some(id) = x_id {
            grads.register::<Flex>(id, Flex::conv2d_x_backward(x, weight, g, options));
        }
    }

    fn autodiff_conv2d(
        x: FloatTensor<Ad>,
        weight: FloatTensor<Ad>,
        bias: Option<FloatTensor<Ad>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Ad> {
        let (xn, wn) = (x.node.clone(), weight.node.clone());
        let state: State = (
            x.primitive.clone(),
            weight.primitive.clone(),
            options.clone(),
        );
        let b = bias.as_ref().map(|b| b.primitive.clone());
        let y = Flex::conv2d(x.primitive, weight.primitive, b, options);
        match bias {
            Some(bias) => finish(
                WithBias
                    .prepare::<NoCheckpointing>([xn, wn, bias.node])
                    .compute_bound()
                    .stateful(),
                state,
                y,
            ),
            None => finish(
                NoBias
                    .prepare::<NoCheckpointing>([xn, wn])
                    .compute_bound()
                    .stateful(),
                state,
                y,
            ),
        }
    }

    /// The output as a node of the graph (with `state` for the backward pass when tracked).
    fn finish<O: Backward<Flex, N, State = State>, const N: usize>(
        kind: OpsKind<O, Flex, State, NoCheckpointing, N>,
        state: State,
        y: FlexTensor,
    ) -> FloatTensor<Ad> {
        match kind {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    /// Σ over batch and positions of the output gradient `g` `[N, C_out, OH, OW]`, per channel.
    fn bias_grad(g: &FlexTensor) -> FlexTensor {
        let g = g.to_contiguous();
        let d = g.layout().shape().clone();
        let (n, c, p) = (d[0], d[1], d[2] * d[3]);
        let gs = g.storage::<f32>();
        let mut out = vec![0f32; c];
        for s in 0..n {
            for (o, acc) in out.iter_mut().enumerate() {
                *acc += gs[(s * c + o) * p..][..p].iter().sum::<f32>();
            }
        }
        FlexTensor::from_data(TensorData::new(out, [c]))
    }

    /// Floats of patches gathered per matrix product (4 MiB; measured on the CNN and ResNet-18
    /// against 1, 2 and 16 MiB: the fastest, within noise of 2 MiB).
    const PATCH_FLOATS: usize = 1 << 20;

    /// dL/dW `[C_out, C_in, KH, KW]` = Σ_samples G · colsᵀ, where G is a sample's output
    /// gradient `[C_out, OH·OW]` and cols its input patches `[C_in·KH·KW, OH·OW]`; samples are
    /// taken a chunk at a time (one product per chunk, added in order: deterministic).
    fn weight_grad(
        x: &FlexTensor,
        g: &FlexTensor,
        w_shape: &burn::tensor::Shape,
        options: &ConvOptions<2>,
    ) -> FlexTensor {
        let (x, g) = (x.to_contiguous(), g.to_contiguous());
        let (xd, gd) = (x.layout().shape().clone(), g.layout().shape().clone());
        let (n, ci, h, w) = (xd[0], xd[1], xd[2], xd[3]);
        let (co, oh, ow) = (gd[1], gd[2], gd[3]);
        let (kh, kw) = (w_shape[2], w_shape[3]);
        let (k, p) = (ci * kh * kw, oh * ow);
        let (xs, gs) = (x.storage::<f32>(), g.storage::<f32>());
        let chunk = (PATCH_FLOATS / (k * p).max(1)).clamp(1, n.max(1));
        let mut dw = vec![0f32; co * k];
        for n0 in (0..n).step_by(chunk) {
            let c = chunk.min(n - n0);
            let cols = c * p;
            let mut col = vec![0f32; k * cols];
            for (row, dst) in col.chunks_exact_mut(cols).enumerate() {
                let (ch, i, j) = (row / (kh * kw), row / kw % kh, row % kw);
                for s in 0..c {
                    let plane = &xs[((n0 + s) * ci + ch) * h * w..][..h * w];
                    patches(
                        plane,
                        [h, w],
                        [oh, ow],
                        [i, j],
                        options,
                        &mut dst[s * p..][..p],
                    );
                }
            }
            let mut gm = vec![0f32; co * cols];
            for s in 0..c {
                for o in 0..co {
                    gm[o * cols + s * p..][..p]
                        .copy_from_slice(&gs[((n0 + s) * co + o) * p..][..p]);
                }
            }
            let a = FlexTensor::from_data(TensorData::new(gm, [co, cols]));
            let b =
                Flex::float_swap_dims(FlexTensor::from_data(TensorData::new(col, [k, cols])), 0, 1);
            let part = Flex::float_matmul(a, b).to_contiguous();
            for (d, v) in dw.iter_mut().zip(part.storage::<f32>()) {
                *d += v;
            }
        }
        FlexTensor::from_data(TensorData::new(dw, w_shape.clone()))
    }

    /// One kernel tap's row of im2col for one input plane: out[y·OW + x] is the input at
    /// (y·s + i·d − pad, x·s + j·d − pad), or 0 in the padding.
    fn patches(
        plane: &[f32],
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        [i, j]: [usize; 2],
        o: &ConvOptions<2>,
        out: &mut [f32],
    ) {
        let (sh, sw) = (o.stride[0], o.stride[1]);
        // Input column of output column x: x·sw + j·dw − pw; the valid x are [x0, x1).
        let shift = (j * o.dilation[1]) as isize - o.padding[1] as isize;
        let x0 = (0..ow)
            .find(|&x| (x * sw) as isize + shift >= 0)
            .unwrap_or(ow);
        let x1 = (x0..ow)
            .find(|&x| (x * sw) as isize + shift >= w as isize)
            .unwrap_or(ow);
        for (y, dst) in out.chunks_exact_mut(ow).enumerate().take(oh) {
            let r = (y * sh + i * o.dilation[0]) as isize - o.padding[0] as isize;
            if r < 0 || r >= h as isize || x0 >= x1 {
                continue;
            }
            let src = &plane[r as usize * w..][..w];
            let first = ((x0 * sw) as isize + shift) as usize;
            if sw == 1 {
                dst[x0..x1].copy_from_slice(&src[first..first + (x1 - x0)]);
            } else {
                for (d, s) in dst[x0..x1].iter_mut().zip(src[first..].iter().step_by(sw)) {
                    *d = *s;
                }
            }
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, Tensor};

    use super::conv2d;

    /// Outputs and input gradients equal burn's bit for bit, weight and bias gradients up to
    /// summation order, for the shapes the models use (padding, stride 2, no bias, a 1×1
    /// shortcut, several patch chunks).
    #[test]
    fn gradients_match_burns_convolution() {
        type Ad = Autodiff<Flex>;
        let device = Default::default();
        // (c_in, c_out, kernel, stride, padding, bias, batch, side)
        let cases = [
            (1, 6, 5, 1, 2, true, 3, 12),
            (6, 16, 5, 1, 0, true, 2, 14),
            (8, 8, 3, 2, 1, false, 4, 9),
            (8, 16, 1, 2, 0, false, 2, 8),
            (32, 32, 3, 1, 1, true, 70, 32),
        ];
        for (ci, co, k, s, p, bias, n, side) in cases {
            let layer = Conv2dConfig::new([ci, co], [k, k])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .with_bias(bias)
                .init::<Ad>(&device);
            let x = Tensor::<Ad, 4>::random([n, ci, side, side], Distribution::Default, &device);
            let dims = layer.forward(x.clone()).dims();
            let weights = Tensor::<Ad, 4>::random(dims, Distribution::Default, &device);
            let run = |fast: bool| {
                let x = x.clone().detach().require_grad();
                let y = match fast {
                    true => conv2d(&layer, x.clone()),
                    false => layer.forward(x.clone()),
                };
                let grads = (y.clone() * weights.clone()).sum().backward();
                let vec = |t: Tensor<Flex, 4>| t.into_data().to_vec::<f32>().expect("f32");
                (
                    vec(y.inner()),
                    vec(x.grad(&grads).expect("dx")),
                    vec(layer.weight.grad(&grads).expect("dw")),
                    layer.bias.as_ref().map(|b| {
                        b.grad(&grads)
                            .expect("db")
                            .into_data()
                            .to_vec::<f32>()
                            .expect("f32")
                    }),
                )
            };
            let case = format!("{ci}→{co} k{k} s{s} p{p} n{n} {side}²");
            let (fast, reference) = (run(true), run(false));
            let rel = |a: &[f32], b: &[f32]| {
                let num: f64 = a.iter().zip(b).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
                let den: f64 = b.iter().map(|b| (*b as f64).powi(2)).sum();
                (num / den.max(1e-30)).sqrt()
            };
            assert_eq!(fast.0, reference.0, "{case}: outputs");
            assert_eq!(fast.1, reference.1, "{case}: input gradients");
            assert!(
                rel(&fast.2, &reference.2) < 1e-5,
                "{case}: weight gradients {}",
                rel(&fast.2, &reference.2)
            );
            if let (Some(a), Some(b)) = (&fast.3, &reference.3) {
                assert!(rel(a, b) < 1e-5, "{case}: bias gradients {}", rel(a, b));
            }
            assert_eq!(fast.3.is_some(), bias, "{case}");
            if n == 70 {
                // Summed in another order over 70 × 32 × 32 terms: equal only if not taken.
                assert_ne!(fast.2, reference.2, "{case}: the flex path was not taken");
            }
        }
    }
}

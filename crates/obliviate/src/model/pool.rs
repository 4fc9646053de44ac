//! 2×2 max pooling with stride 2 (LeNet-5's and the CNN's), as one pass each way on burn-flex.
//!
//! Why: burn-flex 0.21 lowers a 2-D max pool to its general 3-D kernel, whose inner loop
//! recomputes and bounds-checks every window position and writes an `i64` index per output
//! (profiled: 24 % of a LeNet-5 training step on flex, 8 % of the CNN's). On flex (with or
//! without autodiff) in f32 this module scans each 2×2 window directly and keeps which of its
//! four elements won, as a byte, for the backward pass. It picks the same element as flex's
//! kernel (the first largest in row order; a NaN first in its window stays, as there), so values
//! and gradients are flex's bit for bit (tested). Every other backend and dtype takes burn's own
//! `max_pool2d`.

use burn::prelude::Backend;
use burn::tensor::Tensor;
use burn::tensor::module::max_pool2d;

/// Max over each 2×2 window, stride 2, no padding (a trailing odd row or column is dropped).
pub fn max_pool_2x2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let x = match flex::max_pool_2x2(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
    use burn::backend::flex::FlexTensor;
    use burn::backend::{Autodiff, Flex};
    use burn::prelude::Backend;
    use burn::tensor::{DType, Shape, Tensor, TensorData, TensorPrimitive};

    use crate::model::cast;

    /// `Ok` when `x` lives on flex (with or without autodiff) in f32; else `x` back.
    pub(super) fn max_pool_2x2<B: Backend>(x: Tensor<B, 4>) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
        if x.dtype() != DType::F32 {
            return Err(x);
        }
        let x = match cast::<_, Tensor<Autodiff<Flex>, 4>>(x) {
            Ok(t) => {
                let y = autodiff_pool(t.into_primitive().tensor());
                return cast(Tensor::<Autodiff<Flex>, 4>::from_primitive(
                    TensorPrimitive::Float(y),
                ))
                .map_err(|_| unreachable!("B is Autodiff<Flex>"));
            }
            Err(x) => x,
        };
        let t = cast::<_, Tensor<Flex, 4>>(x)?;
        let (y, _) = forward(t.into_primitive().tensor());
        cast(Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(y)))
            .map_err(|_| unreachable!("B is Flex"))
    }

    /// What the backward pass needs: the input's shape and, per output, which element of its
    /// window won (0..4 in row order).
    #[derive(Debug, Clone)]
    struct Winners {
        input: [usize; 4],
        winner: Vec<u8>,
    }

    #[derive(Debug)]
    struct MaxPool2x2;

    impl Backward<Flex, 1> for MaxPool2x2 {
        type State = Winners;

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let Winners { input, winner } = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                let grad = grad.to_contiguous();
                let [n, c, h, w] = input;
                let (oh, ow) = (h / 2, w / 2);
                let mut dx = vec![0.0f32; n * c * h * w];
                if oh * ow > 0 {
                    let g = &grad.storage::<f32>()[..n * c * oh * ow];
                    let planes = dx.chunks_exact_mut(h * w).zip(g.chunks_exact(oh * ow));
                    for ((dx, g), win) in planes.zip(winner.chunks_exact(oh * ow)) {
                        for (i, (&g, &k)) in g.iter().zip(win).enumerate() {
                            let (r, col) = (i / ow, i % ow);
                            let at = (2 * r + (k >> 1) as usize) * w + 2 * col + (k & 1) as usize;
                            // As flex accumulates into zeros (0 + −0 is +0).
                            dx[at] += g;
                        }
                    }
                }
                let data = TensorData::new(dx, Shape::new(input));
                FlexTensor::from_data(data)
            });
        }
    }

    type AdTensor = burn::tensor::ops::FloatTensor<Autodiff<Flex>>;

    fn autodiff_pool(x: AdTensor) -> AdTensor {
        match MaxPool2x2
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (y, winners) = forward(x.primitive);
                prep.finish(winners, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive).0),
        }
    }

    /// The pooled tensor and each output's winner.
    fn forward(x: FlexTensor) -> (FlexTensor, Winners) {
        let x = x.to_contiguous();
        let dims = x.layout().shape();
        let input = [dims[0], dims[1], dims[2], dims[3]];
        let [n, c, h, w] = input;
        let (oh, ow) = (h / 2, w / 2);
        let mut y = vec![0.0f32; n * c * oh * ow];
        let mut winner = vec![0u8; y.len()];
        let xs = &x.storage::<f32>()[..n * c * h * w];
        if oh * ow > 0 {
            let planes = xs.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow));
            for ((x, y), win) in planes.zip(winner.chunks_exact_mut(oh * ow)) {
                for r in 0..oh {
                    let (top, bottom) = (&x[2 * r * w..][..w], &x[(2 * r + 1) * w..][..w]);
                    let out = y[r * ow..][..ow].iter_mut().zip(&mut win[r * ow..][..ow]);
                    for (col, (y, win)) in out.enumerate() {
                        let window = [
                            top[2 * col],
                            top[2 * col + 1],
                            bottom[2 * col],
                            bottom[2 * col + 1],
                        ];
                        // flex's rule: the first element, then any strictly larger one.
                        let (mut best, mut k) = (window[0], 0u8);
                        for (i, &v) in window.iter().enumerate().skip(1) {
                            if v > best {
                                (best, k) = (v, i as u8);
                            }
                        }
                        (*y, *win) = (best, k);
                    }
                }
            }
        }
        let y = FlexTensor::from_data(TensorData::new(y, Shape::new([n, c, oh, ow])));
        (y, Winners { input, winner })
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::module::max_pool2d;
    use burn::tensor::{Tensor, TensorData};

    use super::{flex, max_pool_2x2};

    type Ad = Autodiff<Flex>;

    fn bits(t: Vec<f32>) -> Vec<u32> {
        t.iter().map(|v| v.to_bits()).collect()
    }

    /// Values and input gradients equal burn-flex's own max pool bit for bit: odd sizes (a
    /// dropped row and column), ties (small integers repeat), NaN and −0 in the input, a
    /// strided (transposed) input, and −0 in the output gradient; evaluation without autodiff
    /// gives the same values.
    #[test]
    fn equals_flex_max_pool_bit_for_bit() {
        let device = Default::default();
        for (n, c, h, w) in [(2, 3, 7, 9), (3, 2, 8, 8), (1, 1, 1, 5)] {
            let len = n * c * h * w;
            // Four values, hashed over the positions: most windows hold a tie.
            let mut values: Vec<f32> = (0..len)
                .map(|i| ((i as u64 * 2_654_435_761) >> 11) % 4)
                .map(|v| v as f32 - 1.0)
                .collect();
            values[3] = f32::NAN;
            values[len / 2] = -0.0;
            // Built as [n, c, w, h] and transposed: a strided view.
            let data = TensorData::new(values, [n, c, w, h]);
            let (oh, ow) = (h / 2, w / 2);
            let mut weights: Vec<f32> =
                (0..n * c * oh * ow).map(|i| (i % 5) as f32 - 2.0).collect();
            weights.iter_mut().step_by(3).for_each(|v| *v = -0.0);
            let weights = TensorData::new(weights, [n, c, oh, ow]);
            let run = |fast: bool| {
                let leaf = Tensor::<Ad, 4>::from_data(data.clone(), &device).require_grad();
                let x = leaf.clone().swap_dims(2, 3);
                let y = match fast {
                    true => match flex::max_pool_2x2(x) {
                        Ok(y) => y,
                        Err(_) => panic!("flex f32 declined the pool"),
                    },
                    false => max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false),
                };
                let dy = Tensor::<Ad, 4>::from_data(weights.clone(), &device);
                let grads = (y.clone() * dy).sum().backward();
                let dx = leaf.grad(&grads).expect("gradient");
                (
                    bits(y.into_data().to_vec().expect("f32")),
                    bits(dx.into_data().to_vec().expect("f32")),
                )
            };
            let (fast, reference) = (run(true), run(false));
            assert_eq!(fast.0, reference.0, "{n}×{c}×{h}×{w}: values");
            assert_eq!(fast.1, reference.1, "{n}×{c}×{h}×{w}: gradients");
            let x = Tensor::<Flex, 4>::from_data(data.clone(), &device).swap_dims(2, 3);
            let Ok(inner) = flex::max_pool_2x2(x) else {
                panic!("flex f32 declined the pool without autodiff");
            };
            let inner = bits(inner.into_data().to_vec().expect("f32"));
            assert_eq!(inner, fast.0, "{n}×{c}×{h}×{w}: evaluation differs");
            let x = Tensor::<Flex, 4>::from_data(data.clone(), &device).swap_dims(2, 3);
            assert_eq!(
                bits(max_pool_2x2(x).into_data().to_vec().expect("f32")),
                fast.0
            );
        }
    }
}

//! tanh for the MLPs, as one vectorisable pass forward and one backward on burn-flex.
//!
//! Why: burn-flex 0.21 maps `tanh` to libm's scalar `tanhf`, one call per element, and
//! burn-autodiff's backward computes tanh of the input a second time, then 1 − y² in three more
//! passes (profiled: 28 % of an MLP step in `tanhf` and `expm1f`). On flex (with or without
//! autodiff) this module computes tanh as a rational function the compiler vectorises — Eigen's
//! `ptanh_float` coefficients, within 5e-7 of the exact value over all of f32 (tested) — keeps
//! the output for the backward pass, and computes the gradient g·(1 − y²) in one pass. Every
//! other backend (libtorch, CUDA) and every other dtype takes burn's own `tanh`. Training and
//! evaluation on flex both use this function, so a model's outputs do not depend on whether
//! autodiff is on.

use burn::prelude::Backend;
use burn::tensor::Tensor;

/// tanh of every element; on flex in f32, the vectorised pass described in the module docs.
pub fn tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let x = match flex::tanh(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    burn::tensor::activation::tanh(x)
}

/// Largest |x| evaluated; past it the approximation is within rounding of ±1.
const CLAMP: f32 = 7.905_311;
/// Below this |x|, tanh(x) rounds to x.
const TINY: f32 = 0.0004;
/// Odd numerator x·(α₁ + α₃x² + … + α₁₃x¹²), from Eigen's `ptanh_float`.
const ALPHA: [f32; 7] = [
    4.893_524_6e-3,
    6.372_619_3e-4,
    1.485_722_4e-5,
    5.122_297e-8,
    -8.604_672e-11,
    2.000_188e-13,
    -2.760_768_5e-16,
];
/// Even denominator β₀ + β₂x² + β₄x⁴ + β₆x⁶.
const BETA: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347e-4, 1.198_258_4e-6];

/// The rational approximation of tanh for one value (NaN stays NaN).
#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    let c = x.clamp(-CLAMP, CLAMP);
    let x2 = c * c;
    let mut p = ALPHA[6];
    for a in ALPHA[..6].iter().rev() {
        p = p * x2 + a;
    }
    let mut q = BETA[3];
    for b in BETA[..3].iter().rev() {
        q = q * x2 + b;
    }
    let y = c * p / q;
    if x.abs() < TINY { x } else { y }
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
    use burn::tensor::{DType, Tensor, TensorPrimitive};

    use super::tanh_f32;
    use crate::model::cast;

    /// `Ok` when `x` lives on flex (with or without autodiff) in f32; else `x` back. Takes `x`
    /// by value so that a buffer nothing else holds is overwritten in place.
    pub(super) fn tanh<B: Backend, const D: usize>(
        x: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        if x.dtype() != DType::F32 {
            return Err(x);
        }
        let x = match cast::<_, Tensor<Autodiff<Flex>, D>>(x) {
            Ok(t) => {
                let y = autodiff_tanh(t.into_primitive().tensor());
                return cast(Tensor::<Autodiff<Flex>, D>::from_primitive(
                    TensorPrimitive::Float(y),
                ))
                .map_err(|_| unreachable!("B is Autodiff<Flex>"));
            }
            Err(x) => x,
        };
        let t = cast::<_, Tensor<Flex, D>>(x)?;
        let y = forward(t.into_primitive().tensor());
        cast(Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(y)))
            .map_err(|_| unreachable!("B is Flex"))
    }

    type AdTensor = burn::tensor::ops::FloatTensor<Autodiff<Flex>>;

    /// The autodiff node: the output y is the backward pass's state.
    #[derive(Debug)]
    struct FastTanh;

    impl Backward<Flex, 1> for FastTanh {
        type State = FlexTensor;

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let y = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                // g · (1 − y²), into g's buffer when nothing else holds it.
                let mut g = grad.to_contiguous();
                drop(grad);
                let n = y.layout().num_elements();
                let y = &y.storage::<f32>()[..n];
                for (g, &y) in g.storage_mut::<f32>()[..n].iter_mut().zip(y) {
                    *g *= 1.0 - y * y;
                }
                g
            });
        }
    }

    fn autodiff_tanh(x: AdTensor) -> AdTensor {
        match FastTanh
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = forward(x.primitive);
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive)),
        }
    }

    /// tanh of a flex f32 tensor, in its own buffer when nothing else holds it.
    fn forward(x: FlexTensor) -> FlexTensor {
        let mut y = x.to_contiguous();
        drop(x);
        let n = y.layout().num_elements();
        for v in y.storage_mut::<f32>()[..n].iter_mut() {
            *v = tanh_f32(*v);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 5e-7 of tanh (f64) over the whole range, exact where tanh(x) rounds to x,
    /// ±1 within rounding far out, NaN kept.
    #[test]
    fn the_approximation_is_within_5e7_of_tanh() {
        let mut worst = (0.0f64, 0.0f32);
        for i in -1_200_000..=1_200_000 {
            let x = i as f32 * 1e-5;
            let e = (tanh_f32(x) as f64 - (x as f64).tanh()).abs();
            if e > worst.0 {
                worst = (e, x);
            }
        }
        assert!(worst.0 < 5e-7, "max error {:e} at {}", worst.0, worst.1);
        for x in [1e-30f32, -3e-5, 3.9e-4] {
            assert_eq!(tanh_f32(x), x);
        }
        for x in [20.0f32, 1e30, f32::INFINITY] {
            assert!((tanh_f32(x) - 1.0).abs() < 5e-7);
            assert!((tanh_f32(-x) + 1.0).abs() < 5e-7);
        }
        assert!(tanh_f32(f32::NAN).is_nan());
    }

    /// On flex, values and gradients agree with burn's tanh up to the approximation; the
    /// inner backend (evaluation) gives the same values as the autodiff one.
    #[cfg(feature = "flex")]
    #[test]
    fn matches_burn_tanh_forward_and_backward() {
        use burn::backend::{Autodiff, Flex};
        type Ad = Autodiff<Flex>;
        let device = Default::default();
        let values: Vec<f32> = (0..600).map(|i| (i as f32 - 300.0) * 0.031).collect();
        let data = burn::tensor::TensorData::new(values, [20, 30]);
        let weights = Tensor::<Ad, 2>::from_data(
            burn::tensor::TensorData::new(
                (0..600).map(|i| (i % 7) as f32 - 3.0).collect(),
                [20, 30],
            ),
            &device,
        );
        // A transposed view (read in logical order), then a contiguous input that is also used
        // afterwards (must not be overwritten in place), then one used only by tanh (is).
        for case in 0..3 {
            let run = |fast: bool| {
                let leaf = Tensor::<Ad, 2>::from_data(data.clone(), &device).require_grad();
                let x = match case {
                    0 => leaf.clone().transpose().transpose(),
                    _ => leaf.clone() * 1.0,
                };
                let kept = (case == 1).then(|| x.clone());
                let y = match fast {
                    true => tanh(x),
                    false => burn::tensor::activation::tanh(x),
                };
                if let Some(kept) = kept {
                    let kept: Vec<f32> = kept.into_data().to_vec().expect("f32");
                    assert_eq!(
                        kept,
                        data.to_vec::<f32>().expect("f32"),
                        "input overwritten"
                    );
                }
                let grads = (y.clone() * weights.clone()).sum().backward();
                let dx = leaf.grad(&grads).expect("gradient");
                (
                    y.into_data().to_vec::<f32>().expect("f32"),
                    dx.into_data().to_vec::<f32>().expect("f32"),
                )
            };
            let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
            let max = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max)
            };
            assert!(
                max(&y, &y_ref) < 1e-6,
                "case {case}: values {}",
                max(&y, &y_ref)
            );
            assert!(
                max(&dx, &dx_ref) < 1e-5,
                "case {case}: gradients {}",
                max(&dx, &dx_ref)
            );
            assert!(y != y_ref, "case {case}: the fast path was not taken");
            let inner = tanh(Tensor::<Flex, 2>::from_data(data.clone(), &device));
            let inner: Vec<f32> = inner.into_data().to_vec().expect("f32");
            assert_eq!(inner, y, "case {case}: evaluation differs from training");
        }
    }
}

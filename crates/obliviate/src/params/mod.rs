//! Host-side named tensor sets: the currency of the increment chain.
//!
//! A [`ParamSet`] holds every float tensor of a model (parameters and buffers) or of an optimizer
//! state, in the module's visit order, as plain `f32` vectors. Increments, folds, residual norms
//! and file I/O all happen on this type, so the chain is backend-independent and bit-exact.

pub(crate) mod bridge;
mod codec;
mod file;

pub use bridge::{extract, load_into, trainable_mask};
pub use codec::{EncodedSet, EncodedTensor, Precision, Q8_CHUNK, Q8_SCALE_SUFFIX};
pub use file::{FileMeta, decode, encode};

use crate::error::{Result, invalid};

/// One named `f32` tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Dotted module path, e.g. `conv1.weight`.
    pub name: String,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values; `data.len()` equals the product of `shape`.
    pub data: Vec<f32>,
}

/// An ordered set of named tensors: a model's θ, an increment δ, or an optimizer state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParamSet {
    /// Tensors in module visit order.
    pub tensors: Vec<NamedTensor>,
}

impl ParamSet {
    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.tensors.iter().map(|t| t.data.len()).sum()
    }

    /// A set with the same names and shapes, all zeros.
    pub fn zeros_like(&self) -> ParamSet {
        ParamSet {
            tensors: self
                .tensors
                .iter()
                .map(|t| NamedTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    data: vec![0.0; t.data.len()],
                })
                .collect(),
        }
    }

    /// Fails unless `other` has exactly the same names and shapes in the same order.
    pub fn check_same_structure(&self, other: &ParamSet) -> Result<()> {
        if self.tensors.len() != other.tensors.len() {
            return Err(invalid(
                "tensor set",
                format!(
                    "{} tensors where {} were expected",
                    other.tensors.len(),
                    self.tensors.len()
                ),
            ));
        }
        for (a, b) in self.tensors.iter().zip(&other.tensors) {
            if a.name != b.name || a.shape != b.shape {
                return Err(invalid(
                    "tensor set",
                    format!(
                        "tensor {} {:?} where {} {:?} was expected",
                        b.name, b.shape, a.name, a.shape
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `self - other`, element-wise (the increment from `other` to `self`).
    pub fn sub(&self, other: &ParamSet) -> Result<ParamSet> {
        self.check_same_structure(other)?;
        let mut out = self.clone();
        for (o, b) in out.tensors.iter_mut().zip(&other.tensors) {
            for (x, y) in o.data.iter_mut().zip(&b.data) {
                *x -= *y;
            }
        }
        Ok(out)
    }

    /// `self += other`, element-wise: one step of a chain fold.
    pub fn add_assign(&mut self, other: &ParamSet) -> Result<()> {
        self.check_same_structure(other)?;
        for (o, b) in self.tensors.iter_mut().zip(&other.tensors) {
            for (x, y) in o.data.iter_mut().zip(&b.data) {
                *x += *y;
            }
        }
        Ok(())
    }

    /// L1 and L2 norms of `self - other`, accumulated in f64.
    pub fn distance(&self, other: &ParamSet) -> Result<Norms> {
        self.check_same_structure(other)?;
        let mut n = Norms::default();
        for (a, b) in self.tensors.iter().zip(&other.tensors) {
            for (x, y) in a.data.iter().zip(&b.data) {
                let d = (*x as f64) - (*y as f64);
                n.l1 += d.abs();
                n.l2 += d * d;
            }
        }
        n.l2 = n.l2.sqrt();
        Ok(n)
    }

    /// Largest |self − other| over all values (f32; NaN counts as infinite).
    pub fn max_abs_diff(&self, other: &ParamSet) -> Result<f32> {
        self.check_same_structure(other)?;
        let mut m = 0f32;
        for (a, b) in self.tensors.iter().zip(&other.tensors) {
            for (x, y) in a.data.iter().zip(&b.data) {
                let d = (x - y).abs();
                m = if d.is_nan() { f32::INFINITY } else { m.max(d) };
            }
        }
        Ok(m)
    }

    /// Largest |value| in the set.
    pub fn norms_max(&self) -> f32 {
        self.tensors
            .iter()
            .flat_map(|t| &t.data)
            .fold(0f32, |m, x| m.max(x.abs()))
    }

    /// L1 and L2 norms of the whole set.
    pub fn norms(&self) -> Norms {
        let mut n = Norms::default();
        for t in &self.tensors {
            for x in &t.data {
                let d = *x as f64;
                n.l1 += d.abs();
                n.l2 += d * d;
            }
        }
        n.l2 = n.l2.sqrt();
        n
    }

    /// True when every value is bit-identical (stricter than `==`, which treats -0.0 == 0.0).
    pub fn bit_identical(&self, other: &ParamSet) -> bool {
        self.tensors.len() == other.tensors.len()
            && self.tensors.iter().zip(&other.tensors).all(|(a, b)| {
                a.name == b.name
                    && a.shape == b.shape
                    && a.data.len() == b.data.len()
                    && a.data
                        .iter()
                        .zip(&b.data)
                        .all(|(x, y)| x.to_bits() == y.to_bits())
            })
    }

    /// The first tensor holding a NaN or an infinity, if any.
    pub fn first_non_finite(&self) -> Option<&str> {
        self.tensors
            .iter()
            .find(|t| t.data.iter().any(|x| !x.is_finite()))
            .map(|t| t.name.as_str())
    }

    /// Fails, naming `what` and the tensor, unless every value is finite: the chain never
    /// stores NaN or ±∞ (a diverged training or a corrupt file would otherwise pass as a model).
    pub fn check_finite(&self, what: &str) -> Result<()> {
        match self.first_non_finite() {
            None => Ok(()),
            Some(tensor) => Err(crate::Error::NonFinite {
                what: what.to_string(),
                tensor: tensor.to_string(),
            }),
        }
    }

    /// Finds a tensor by name.
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// L1 and L2 norms, the two sizes the method reports for residual memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Norms {
    /// Sum of absolute values.
    pub l1: f64,
    /// Euclidean norm.
    pub l2: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(vals: &[f32]) -> ParamSet {
        ParamSet {
            tensors: vec![NamedTensor {
                name: "w".into(),
                shape: vec![vals.len()],
                data: vals.to_vec(),
            }],
        }
    }

    #[test]
    fn sub_then_add_and_norms() {
        let a = set(&[1.0, -2.0, 3.0]);
        let b = set(&[0.5, 0.5, 0.5]);
        let d = a.sub(&b).unwrap();
        assert_eq!(d.tensors[0].data, vec![0.5, -2.5, 2.5]);
        let mut c = b.clone();
        c.add_assign(&d).unwrap();
        assert_eq!(c, a);
        let n = a.distance(&b).unwrap();
        assert!((n.l1 - 5.5).abs() < 1e-12);
        assert!((n.l2 - (0.25f64 + 6.25 + 6.25).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn structure_mismatch_is_an_error() {
        let a = set(&[1.0, 2.0]);
        let b = set(&[1.0, 2.0, 3.0]);
        assert!(a.sub(&b).is_err());
        let mut c = a.clone();
        c.tensors[0].name = "v".into();
        assert!(a.distance(&c).is_err());
    }

    #[test]
    fn bit_identity_distinguishes_signed_zero() {
        assert!(!set(&[0.0]).bit_identical(&set(&[-0.0])));
        assert!(set(&[1.5]).bit_identical(&set(&[1.5])));
    }
}

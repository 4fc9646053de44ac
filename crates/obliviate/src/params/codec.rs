//! Storage precisions: how a tensor set's values are encoded on disk, and what they decode to.
//!
//! A chain stored below f32 is still exact, because training itself rounds: after block i the
//! live model is set to θ_{i−1} + Q(δ_i) and the optimizer to Q(o_i), where Q is "encode, then
//! decode" (`EncodedSet::decode`). The files hold exactly the encoded form the trainer
//! decoded, so folding them reproduces every θ_i bit for bit. The encoded form is kept and
//! written as is: re-encoding decoded q8 values need not give the same codes.
//!
//! - `f32`, `bf16`, `f16`: the value rounded to nearest (even); f16 overflows above 65504,
//!   which the trainer refuses as non-finite.
//! - `q8`: 8-bit codes with one f32 scale per chunk of [`Q8_CHUNK`] values of the flattened
//!   tensor, stored as two ordinary safetensors tensors: `NAME` (int8 or uint8, the tensor's
//!   shape) and `NAME.q8_scale` (f32, one per chunk). A tensor with a negative value is coded
//!   linearly, `x = code · scale` (int8, −127..=127, scale = max |x| / 127). A tensor without
//!   one (Adam's second moment) is coded as a square, `x = (code · scale)²` (uint8,
//!   scale = max √x / 255), which keeps relative precision where 1/√v is large; a positive
//!   value never rounds to 0, so Adam never divides a moment by ε alone.

use half::{bf16, f16};
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use super::{NamedTensor, ParamSet};

/// Values per q8 scale (recorded in each file's metadata, so it may change between builds).
pub const Q8_CHUNK: usize = 256;

/// Suffix of the tensor holding a q8 tensor's per-chunk scales.
pub const Q8_SCALE_SUFFIX: &str = ".q8_scale";

/// How a stored set's values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// IEEE single precision: the training's own values.
    #[default]
    F32,
    /// bfloat16: f32's range, 8 significant bits.
    Bf16,
    /// IEEE half precision: 11 significant bits, values up to 65504.
    F16,
    /// 8-bit codes with per-chunk f32 scales (see the module docs).
    Q8,
}

impl Precision {
    /// Every precision.
    pub const ALL: [Precision; 4] = [
        Precision::F32,
        Precision::Bf16,
        Precision::F16,
        Precision::Q8,
    ];

    /// The name used in flags, manifests and file metadata.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
            Precision::Q8 => "q8",
        }
    }

    /// True for f32 (the default, omitted from file metadata).
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    /// The stored form of `set` at this precision.
    pub fn encode(self, set: &ParamSet) -> EncodedSet {
        let tensors = set
            .tensors
            .iter()
            .map(|t| {
                let (dtype, bytes, scales) = match self {
                    Precision::F32 => (Dtype::F32, bytemuck::cast_slice(&t.data).to_vec(), None),
                    Precision::Bf16 => (
                        Dtype::BF16,
                        halves(&t.data, |x| bf16::from_f32(x).to_bits()),
                        None,
                    ),
                    Precision::F16 => (
                        Dtype::F16,
                        halves(&t.data, |x| f16::from_f32(x).to_bits()),
                        None,
                    ),
                    Precision::Q8 => q8_encode(&t.data),
                };
                EncodedTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    dtype,
                    bytes,
                    scales,
                }
            })
            .collect();
        EncodedSet {
            precision: self,
            chunk: if self == Precision::Q8 { Q8_CHUNK } else { 0 },
            tensors,
        }
    }
}

/// One tensor in its stored form.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedTensor {
    /// Dotted module path.
    pub name: String,
    /// Dimensions of the decoded tensor.
    pub shape: Vec<usize>,
    /// Element type of `bytes`.
    pub dtype: Dtype,
    /// Little-endian values or codes.
    pub bytes: Vec<u8>,
    /// q8 only: one scale per chunk.
    pub scales: Option<Vec<f32>>,
}

/// A tensor set in its stored form: what a chain file holds, and (decoded) what the trainer
/// continues from.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedSet {
    /// How the values are encoded.
    pub precision: Precision,
    /// Values per q8 scale (0 for other precisions).
    pub chunk: usize,
    /// Tensors in module visit order.
    pub tensors: Vec<EncodedTensor>,
}

impl EncodedSet {
    /// The values a reader of the stored form gets: Q(set).
    pub fn decode(&self) -> ParamSet {
        ParamSet {
            tensors: self
                .tensors
                .iter()
                .map(|t| NamedTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    data: decode_values(
                        t.dtype,
                        &t.bytes,
                        t.scales.as_deref(),
                        self.chunk,
                        t.shape.iter().product(),
                    )
                    .unwrap_or_else(|e| unreachable!("an encoded set decodes: {e}")),
                })
                .collect(),
        }
    }

    /// Bytes of the encoded values and scales (without any file header).
    pub fn payload_bytes(&self) -> usize {
        self.tensors
            .iter()
            .map(|t| t.bytes.len() + 4 * t.scales.as_ref().map_or(0, Vec::len))
            .sum()
    }
}

fn halves(data: &[f32], bits: impl Fn(f32) -> u16) -> Vec<u8> {
    data.iter().flat_map(|&x| bits(x).to_le_bytes()).collect()
}

/// q8 codes and scales of `data` (module docs).
fn q8_encode(data: &[f32]) -> (Dtype, Vec<u8>, Option<Vec<f32>>) {
    let squares = data.iter().all(|&x| x >= 0.0);
    let mut codes = Vec::with_capacity(data.len());
    let mut scales = Vec::with_capacity(data.len().div_ceil(Q8_CHUNK));
    for chunk in data.chunks(Q8_CHUNK) {
        if squares {
            let amax = chunk.iter().fold(0f32, |m, &x| m.max(x.sqrt()));
            let scale = amax / 255.0;
            scales.push(scale);
            codes.extend(chunk.iter().map(|&x| {
                let code = if scale > 0.0 {
                    (x.sqrt() / scale).round().clamp(0.0, 255.0) as u8
                } else {
                    0
                };
                if code == 0 && x > 0.0 && scale > 0.0 {
                    1
                } else {
                    code
                }
            }));
        } else {
            let amax = chunk.iter().fold(0f32, |m, &x| m.max(x.abs()));
            let scale = amax / 127.0;
            scales.push(scale);
            codes.extend(chunk.iter().map(|&x| {
                let code = if scale > 0.0 {
                    (x / scale).round().clamp(-127.0, 127.0) as i8
                } else {
                    0
                };
                code as u8
            }));
        }
    }
    let dtype = if squares { Dtype::U8 } else { Dtype::I8 };
    (dtype, codes, Some(scales))
}

/// Decodes `n` values stored as `dtype` (q8 codes with their `scales` per `chunk`); the error
/// says what is malformed.
pub(super) fn decode_values(
    dtype: Dtype,
    bytes: &[u8],
    scales: Option<&[f32]>,
    chunk: usize,
    n: usize,
) -> Result<Vec<f32>, String> {
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::BF16 | Dtype::F16 => 2,
        Dtype::I8 | Dtype::U8 => 1,
        other => {
            return Err(format!(
                "element type {other:?} is not one obliviate writes"
            ));
        }
    };
    if bytes.len() != n * width {
        return Err(format!("{} bytes for {n} values of {dtype:?}", bytes.len()));
    }
    let two = |c: &[u8]| u16::from_le_bytes([c[0], c[1]]);
    Ok(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_bits(two(c)).to_f32())
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_bits(two(c)).to_f32())
            .collect(),
        _ => {
            let scales = scales.ok_or("q8 codes without their scales")?;
            if chunk == 0 || scales.len() != n.div_ceil(chunk) {
                return Err(format!(
                    "{} q8 scales for {n} values in chunks of {chunk}",
                    scales.len()
                ));
            }
            let mut out = Vec::with_capacity(n);
            for (codes, &scale) in bytes.chunks(chunk).zip(scales) {
                for &c in codes {
                    out.push(if dtype == Dtype::U8 {
                        let y = c as f32 * scale;
                        y * y
                    } else {
                        let c = c as i8;
                        if c == i8::MIN {
                            return Err("q8 code −128 (never written)".into());
                        }
                        c as f32 * scale
                    });
                }
            }
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(data: Vec<f32>) -> ParamSet {
        ParamSet {
            tensors: vec![NamedTensor {
                name: "w".into(),
                shape: vec![data.len()],
                data,
            }],
        }
    }

    fn ramp(n: usize, f: impl Fn(f32) -> f32) -> Vec<f32> {
        (0..n).map(|i| f(i as f32 / n as f32)).collect()
    }

    #[test]
    fn each_precision_rounds_within_its_resolution() {
        let signed = ramp(1000, |t| (t * 37.0).sin() * 1e-3 * (1.0 + t));
        // Relative half-ulp; f16 below its smallest normal (6.1e-5) keeps an absolute step of 2^-24.
        for (p, rel, abs) in [
            (Precision::F32, 0.0, 0.0),
            (Precision::Bf16, 1.0 / 256.0, 0.0),
            (Precision::F16, 1.0 / 2048.0, 2f32.powi(-25)),
        ] {
            let q = p.encode(&set(signed.clone())).decode();
            for (a, b) in signed.iter().zip(&q.tensors[0].data) {
                assert!(
                    (a - b).abs() <= (rel * a.abs()).max(abs),
                    "{p:?}: {a} → {b}"
                );
            }
        }
        let q8 = Precision::Q8.encode(&set(signed.clone()));
        assert_eq!(q8.tensors[0].dtype, Dtype::I8);
        assert_eq!(q8.tensors[0].scales.as_ref().unwrap().len(), 4);
        let q = q8.decode();
        for (chunk, qc) in signed
            .chunks(Q8_CHUNK)
            .zip(q.tensors[0].data.chunks(Q8_CHUNK))
        {
            let amax = chunk.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (a, b) in chunk.iter().zip(qc) {
                assert!((a - b).abs() <= amax / 254.0 * 1.0001, "{a} → {b}");
            }
        }
    }

    #[test]
    fn q8_codes_a_second_moment_as_a_square_and_never_rounds_it_to_zero() {
        let v = ramp(600, |t| 1e-12 + 1e-6 * t * t * t);
        let enc = Precision::Q8.encode(&set(v.clone()));
        assert_eq!(enc.tensors[0].dtype, Dtype::U8);
        let q = enc.decode();
        for (a, b) in v.iter().zip(&q.tensors[0].data) {
            assert!(*b > 0.0, "{a} decoded to 0");
            // √ is coded linearly: its error is at most half a step of the chunk's max √.
            assert!((a.sqrt() - b.sqrt()).abs() <= 1e-3f32.sqrt() / 510.0 * 1.001 + 1e-9);
        }
        // Zeros stay zeros; an all-zero chunk has scale 0.
        let z = Precision::Q8.encode(&set(vec![0.0; 10])).decode();
        assert!(z.tensors[0].data.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn f16_overflow_decodes_as_infinity_for_the_trainer_to_refuse() {
        let q = Precision::F16.encode(&set(vec![1e5, -1.0])).decode();
        assert!(q.first_non_finite().is_some());
    }

    #[test]
    fn malformed_q8_is_named() {
        let ok = |bytes: &[u8], scales: &[f32]| decode_values(Dtype::I8, bytes, Some(scales), 2, 3);
        assert!(ok(&[1, 2, 3], &[0.5, 0.5]).is_ok());
        assert!(ok(&[1, 2, 3], &[0.5]).unwrap_err().contains("scales"));
        assert!(ok(&[1, 0x80, 3], &[0.5, 0.5]).unwrap_err().contains("−128"));
        assert!(ok(&[1, 2], &[0.5, 0.5]).unwrap_err().contains("bytes"));
        assert!(
            decode_values(Dtype::I8, &[1, 2, 3], None, 2, 3)
                .unwrap_err()
                .contains("without")
        );
        assert!(decode_values(Dtype::F64, &[0; 8], None, 0, 1).is_err());
    }
}

//! Safetensors encoding of tensor sets at any [`Precision`], byte-deterministic so equal sets
//! give equal files.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use super::codec::{EncodedSet, Precision, Q8_SCALE_SUFFIX, decode_values};
use super::{NamedTensor, ParamSet};
use crate::error::{Error, Result};

/// The single metadata key obliviate writes (one key keeps the header byte-deterministic).
const META_KEY: &str = "obliviate";

/// What a tensor file is, stored in its safetensors header so a stray file explains itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// `theta`, `delta`, `opt` or `model`.
    pub kind: String,
    /// Block index for increments and optimizer states (0 for θ_0 / o_0).
    pub block: u64,
    /// Optimizer step count (optimizer states only).
    #[serde(default)]
    pub step: u64,
    /// Tensor names in module visit order (safetensors itself sorts by name).
    pub order: Vec<String>,
    /// How the values are encoded (absent = f32, the format before precisions existed).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// Values per q8 scale (absent unless q8).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Encodes a set as safetensors bytes at its precision, with `meta` in the header.
pub fn encode(set: &EncodedSet, meta: &FileMeta) -> Result<Vec<u8>> {
    let mut meta = meta.clone();
    meta.order = set.tensors.iter().map(|t| t.name.clone()).collect();
    meta.precision = set.precision;
    meta.chunk = set.chunk;
    let json = serde_json::to_string(&meta)
        .map_err(|e| crate::error::invalid("metadata", e.to_string()))?;
    fn view<'a>(
        name: &str,
        dtype: Dtype,
        shape: Vec<usize>,
        bytes: &'a [u8],
    ) -> Result<TensorView<'a>> {
        TensorView::new(dtype, shape, bytes)
            .map_err(|e| crate::error::invalid("tensor", format!("{name}: {e}")))
    }
    let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
    for t in &set.tensors {
        if t.name.ends_with(Q8_SCALE_SUFFIX) {
            return Err(crate::error::invalid(
                "tensor",
                format!("{}: names ending in {Q8_SCALE_SUFFIX} are reserved", t.name),
            ));
        }
        views.push((
            t.name.clone(),
            view(&t.name, t.dtype, t.shape.clone(), &t.bytes)?,
        ));
        if let Some(scales) = &t.scales {
            let name = format!("{}{Q8_SCALE_SUFFIX}", t.name);
            let v = view(
                &name,
                Dtype::F32,
                vec![scales.len()],
                bytemuck::cast_slice(scales),
            )?;
            views.push((name, v));
        }
    }
    let mut info = HashMap::new();
    info.insert(META_KEY.to_string(), json);
    safetensors::serialize(views, Some(info))
        .map_err(|e| crate::error::invalid("tensor set", e.to_string()))
}

/// Decodes safetensors bytes written by [`encode`]; `path` only names the file in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<(ParamSet, FileMeta)> {
    let fmt = |offset: u64, detail: String| Error::Format {
        path: path.to_path_buf(),
        format: "safetensors",
        offset,
        detail,
    };
    // The first 8 bytes give the header's length; everything else that can be wrong with the
    // layout is in the JSON header that follows them.
    let at = |e: safetensors::SafeTensorError| {
        if bytes.len() < 8 {
            fmt(0, format!("{e} (only {} bytes)", bytes.len()))
        } else {
            fmt(8, e.to_string())
        }
    };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(at)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(at)?;
    let meta: FileMeta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| fmt(8, format!("header has no `{META_KEY}` metadata entry")))
        .and_then(|s| serde_json::from_str(s).map_err(|e| fmt(8, format!("bad metadata: {e}"))))?;
    let q8 = meta.precision == Precision::Q8;
    let stored = meta.order.len() * if q8 { 2 } else { 1 };
    if stored != st.len() {
        return Err(fmt(
            8,
            format!(
                "metadata lists {} {} tensors ({stored} stored), file holds {}",
                meta.order.len(),
                meta.precision.name(),
                st.len()
            ),
        ));
    }
    let mut tensors = Vec::with_capacity(meta.order.len());
    for name in &meta.order {
        let view = st
            .tensor(name)
            .map_err(|e| fmt(8, format!("tensor {name}: {e}")))?;
        let expected: &[Dtype] = match meta.precision {
            Precision::F32 => &[Dtype::F32],
            Precision::Bf16 => &[Dtype::BF16],
            Precision::F16 => &[Dtype::F16],
            Precision::Q8 => &[Dtype::I8, Dtype::U8],
        };
        if !expected.contains(&view.dtype()) {
            return Err(fmt(
                8,
                format!(
                    "tensor {name} is {:?} in a {} file",
                    view.dtype(),
                    meta.precision.name()
                ),
            ));
        }
        let scales = if q8 {
            let scale_name = format!("{name}{Q8_SCALE_SUFFIX}");
            let s = st
                .tensor(&scale_name)
                .map_err(|e| fmt(8, format!("tensor {scale_name}: {e}")))?;
            if s.dtype() != Dtype::F32 {
                return Err(fmt(
                    8,
                    format!("tensor {scale_name} is {:?}, expected F32", s.dtype()),
                ));
            }
            let scales = decode_values(Dtype::F32, s.data(), None, 0, s.data().len() / 4)
                .map_err(|e| fmt(8, format!("tensor {scale_name}: {e}")))?;
            if let Some(bad) = scales.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
                return Err(fmt(
                    8,
                    format!("tensor {scale_name}: scale {bad} (must be finite and ≥ 0)"),
                ));
            }
            Some(scales)
        } else {
            None
        };
        let n = view.shape().iter().product();
        let data = decode_values(view.dtype(), view.data(), scales.as_deref(), meta.chunk, n)
            .map_err(|e| fmt(8, format!("tensor {name}: {e}")))?;
        tensors.push(NamedTensor {
            name: name.clone(),
            shape: view.shape().to_vec(),
            data,
        });
    }
    Ok((ParamSet { tensors }, meta))
}

// safetensors stores little-endian values; `cast_slice` views f32s in native order.
#[cfg(not(target_endian = "little"))]
compile_error!(
    "obliviate writes safetensors from native f32 slices; big-endian targets are not supported"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ParamSet {
        ParamSet {
            tensors: vec![
                NamedTensor {
                    name: "z.weight".into(),
                    shape: vec![2, 3],
                    data: vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5],
                },
                NamedTensor {
                    name: "a.bias".into(),
                    shape: vec![2],
                    data: vec![f32::MIN_POSITIVE, -0.0],
                },
            ],
        }
    }

    #[test]
    fn round_trip_keeps_order_and_bits() {
        let meta = FileMeta {
            kind: "delta".into(),
            block: 7,
            step: 3,
            ..Default::default()
        };
        for p in Precision::ALL {
            let enc = p.encode(&sample());
            let bytes = encode(&enc, &meta).unwrap();
            let (set, m) = decode(&bytes, Path::new("x")).unwrap();
            assert!(set.bit_identical(&enc.decode()), "{p:?}");
            assert_eq!((m.block, m.precision), (7, p));
            assert_eq!(m.order, vec!["z.weight", "a.bias"]);
            // Deterministic bytes.
            assert_eq!(bytes, encode(&p.encode(&sample()), &meta).unwrap());
        }
        let f32_bytes = encode(&Precision::F32.encode(&sample()), &meta).unwrap();
        assert!(
            decode(&f32_bytes, Path::new("x"))
                .unwrap()
                .0
                .bit_identical(&sample())
        );
        // f32 files carry no precision key: files written before precisions existed read back.
        assert!(!String::from_utf8_lossy(&f32_bytes).contains("precision"));
    }

    #[test]
    fn truncated_file_is_named() {
        let bytes = encode(&Precision::F32.encode(&sample()), &FileMeta::default()).unwrap();
        let err = decode(&bytes[..bytes.len() - 3], Path::new("blocks/x.safetensors")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("blocks/x.safetensors"), "{msg}");
        assert!(msg.contains("safetensors"), "{msg}");
    }
}

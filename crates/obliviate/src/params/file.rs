//! Safetensors encoding of [`ParamSet`]s, byte-deterministic so equal sets give equal files.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

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
}

/// Encodes a set as safetensors bytes (f32, little-endian) with `meta` in the header.
pub fn encode(set: &ParamSet, meta: &FileMeta) -> Result<Vec<u8>> {
    let mut meta = meta.clone();
    meta.order = set.tensors.iter().map(|t| t.name.clone()).collect();
    let json = serde_json::to_string(&meta)
        .map_err(|e| crate::error::invalid("metadata", e.to_string()))?;
    let views: Vec<(String, TensorView<'_>)> = set
        .tensors
        .iter()
        .map(|t| {
            let bytes: &[u8] = bytemuck::cast_slice(&t.data);
            TensorView::new(Dtype::F32, t.shape.clone(), bytes)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| crate::error::invalid("tensor", format!("{}: {e}", t.name)))
        })
        .collect::<Result<_>>()?;
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
    if meta.order.len() != st.len() {
        return Err(fmt(
            8,
            format!(
                "metadata lists {} tensors, file holds {}",
                meta.order.len(),
                st.len()
            ),
        ));
    }
    let mut tensors = Vec::with_capacity(meta.order.len());
    for name in &meta.order {
        let view = st
            .tensor(name)
            .map_err(|e| fmt(8, format!("tensor {name}: {e}")))?;
        if view.dtype() != Dtype::F32 {
            return Err(fmt(
                8,
                format!("tensor {name} is {:?}, expected F32", view.dtype()),
            ));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
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
            order: vec![],
        };
        let bytes = encode(&sample(), &meta).unwrap();
        let (set, m) = decode(&bytes, Path::new("x")).unwrap();
        assert!(set.bit_identical(&sample()));
        assert_eq!(m.block, 7);
        assert_eq!(m.order, vec!["z.weight", "a.bias"]);
        // Deterministic bytes.
        assert_eq!(bytes, encode(&sample(), &meta).unwrap());
    }

    #[test]
    fn truncated_file_is_named() {
        let bytes = encode(&sample(), &FileMeta::default()).unwrap();
        let err = decode(&bytes[..bytes.len() - 3], Path::new("blocks/x.safetensors")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("blocks/x.safetensors"), "{msg}");
        assert!(msg.contains("safetensors"), "{msg}");
    }
}

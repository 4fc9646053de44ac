//! Sealed JSON: a document whose `checksum` member is the SHA-256 of the rest of it.
//!
//! The checksum is taken over the key-sorted compact form of the JSON *value* as written, minus
//! `checksum`, so documents written by older builds (lacking fields added since) still verify.
//! It catches accidents and truncation, not a writer who can recompute it.

use std::path::Path;

use super::{atomic, sha256};
use crate::error::{Error, Result, invalid};

/// SHA-256 of a document's JSON value without its `checksum` member.
pub(crate) fn body_checksum(v: &serde_json::Value) -> Result<String> {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("checksum");
    }
    let body = serde_json::to_vec(&v).map_err(|e| invalid("sealed document", e.to_string()))?;
    Ok(sha256(&body))
}

/// Serialises `doc` as pretty JSON with a `checksum` member over the rest.
pub fn seal<T: serde::Serialize>(doc: &T) -> Result<Vec<u8>> {
    let mut v = serde_json::to_value(doc).map_err(|e| invalid("sealed document", e.to_string()))?;
    let sum = body_checksum(&v)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("checksum".into(), serde_json::Value::String(sum));
    }
    let mut out =
        serde_json::to_vec_pretty(&v).map_err(|e| invalid("sealed document", e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// Seals `doc` and writes it to `path` atomically; returns the checksum written.
pub fn write_sealed<T: serde::Serialize>(path: &Path, doc: &T) -> Result<String> {
    let bytes = seal(doc)?;
    atomic::write_file(path, &bytes)?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid("sealed document", e.to_string()))?;
    Ok(v["checksum"].as_str().unwrap_or_default().to_string())
}

/// Reads `path` as sealed JSON of type `T`, checking its checksum. `None` when the file does
/// not exist (the caller knows what that means).
pub fn read_sealed<T: serde::de::DeserializeOwned>(
    path: &Path,
    format: &'static str,
) -> Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let format_err = |e: serde_json::Error| Error::Format {
        path: path.to_path_buf(),
        format,
        offset: 0,
        detail: e.to_string(),
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(format_err)?;
    let expected = value
        .get("checksum")
        .and_then(|c| c.as_str())
        .unwrap_or_default()
        .to_string();
    let actual = body_checksum(&value)?;
    if actual != expected {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            algo: "sha256 (document body)",
            expected,
            actual,
        });
    }
    serde_json::from_value(value).map(Some).map_err(format_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sealed JSON must verify after parsing, whatever floats it holds (serde_json's default
    /// float parser is not correctly rounded; the `float_roundtrip` feature makes it so).
    #[test]
    fn sealed_floats_survive_the_round_trip() {
        let mut state = 7u64;
        for _ in 0..20_000 {
            state = crate::data::split::mix(state);
            let x = (state >> 11) as f64 / (1u64 << 53) as f64 * 1000.0;
            let bytes = seal(&serde_json::json!({ "seconds": x, "n": state })).expect("seal");
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("parse");
            let sum = v["checksum"].as_str().expect("checksum").to_string();
            assert_eq!(body_checksum(&v).expect("sum"), sum, "{x:?}");
            assert_eq!(v["seconds"].as_f64(), Some(x));
        }
    }
}

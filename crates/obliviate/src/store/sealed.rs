//! Sealed JSON: a document whose `checksum` member is the SHA-256 of the rest of it.
//!
//! The checksum is taken over the key-sorted compact form of the JSON *value* as written, minus
//! `checksum` and `hmac`, so documents written by older builds (lacking fields added since)
//! still verify. It catches accidents and truncation, not a writer who can recompute it.
//!
//! Where tampering matters, a key seals documents too: with `OBLIVIATE_SEAL_KEY_FILE` naming a
//! file of at least 16 bytes, every document written carries `hmac`, HMAC-SHA256 of the same
//! body under that key, and every document read must carry a valid one. A writer without the
//! key cannot forge it; readers without the key still check the plain checksum.

use std::io::Read;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{atomic, hex, sha256};
use crate::error::{Error, IoContext, Result, invalid};

/// Environment variable naming the file whose bytes are the sealing key.
pub const KEY_FILE_ENV: &str = "OBLIVIATE_SEAL_KEY_FILE";

/// The configured sealing key, if any (read at each use: commands are short-lived).
fn key() -> Result<Option<Vec<u8>>> {
    let Some(path) = std::env::var_os(KEY_FILE_ENV) else {
        return Ok(None);
    };
    let path = Path::new(&path);
    let mut key = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut key))
        .at(path)?;
    if key.len() < 16 {
        return Err(invalid(
            "sealing key",
            format!(
                "{} holds {} bytes; at least 16 are needed",
                path.display(),
                key.len()
            ),
        ));
    }
    Ok(Some(key))
}

/// The bytes both seals cover: the JSON value without `checksum` and `hmac`, compact. Takes
/// the value by ownership (documents run to megabytes: no copy) and gives back what it removed.
fn body(v: &mut serde_json::Value) -> Result<(Vec<u8>, Removed)> {
    let removed = match v.as_object_mut() {
        Some(o) => (o.remove("checksum"), o.remove("hmac")),
        None => (None, None),
    };
    let bytes = serde_json::to_vec(v).map_err(|e| invalid("sealed document", e.to_string()))?;
    Ok((bytes, removed))
}

/// The `checksum` and `hmac` members [`body`] took out.
type Removed = (Option<serde_json::Value>, Option<serde_json::Value>);

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// Whether a document read carried a keyed seal, and whether it was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyedSeal {
    /// No `hmac` member (and no key configured).
    Absent,
    /// Verified against the configured key.
    Verified,
    /// Present, but no key is configured to verify it.
    Unverified,
}

/// Serialises `doc` as compact JSON with a `checksum` member over the rest (and `hmac` when a
/// key is configured); returns the bytes and the checksum.
///
/// Compact, not pretty: a manifest is mostly sample ids, one per line when pretty-printed,
/// and every request rewrites it (pretty doubled the bytes and the time). `jq .` shows it.
pub fn seal<T: serde::Serialize>(doc: &T) -> Result<(Vec<u8>, String)> {
    let mut v = serde_json::to_value(doc).map_err(|e| invalid("sealed document", e.to_string()))?;
    let (body, _) = body(&mut v)?;
    let sum = sha256(&body);
    let keyed = match key()? {
        Some(k) => {
            let mut m = mac(&k);
            m.update(&body);
            Some(hex(&m.finalize().into_bytes()))
        }
        None => None,
    };
    // The seals go first, then the body's members: the body is already the compact form of
    // the rest, so it is not serialised twice (readers sort members anyway).
    let mut out = format!("{{\"checksum\":\"{sum}\"");
    if let Some(h) = keyed {
        out.push_str(&format!(",\"hmac\":\"{h}\""));
    }
    let mut out = out.into_bytes();
    match body.as_slice() {
        [b'{', b'}'] => out.push(b'}'),
        [b'{', rest @ ..] => {
            out.push(b',');
            out.extend_from_slice(rest);
        }
        _ => return Err(invalid("sealed document", "not a JSON object")),
    }
    out.push(b'\n');
    Ok((out, sum))
}

/// Seals `doc` and writes it to `path` atomically; returns the checksum written.
pub fn write_sealed<T: serde::Serialize>(path: &Path, doc: &T) -> Result<String> {
    let (bytes, sum) = seal(doc)?;
    atomic::write_file(path, &bytes)?;
    Ok(sum)
}

/// Reads `path` as sealed JSON of type `T`, checking its checksum (and keyed seal). `None`
/// when the file does not exist (the caller knows what that means).
pub fn read_sealed<T: serde::de::DeserializeOwned>(
    path: &Path,
    format: &'static str,
) -> Result<Option<T>> {
    Ok(read_sealed_seal(path, format)?.map(|(doc, _)| doc))
}

/// [`read_sealed`], also saying what became of the keyed seal.
pub fn read_sealed_seal<T: serde::de::DeserializeOwned>(
    path: &Path,
    format: &'static str,
) -> Result<Option<(T, KeyedSeal)>> {
    // A manifest of a million blocks is tens of MB; anything past this is not one.
    const MAX_DOCUMENT: u64 = 1 << 30;
    let read = std::fs::File::open(path).and_then(|f| {
        let mut b = Vec::new();
        f.take(MAX_DOCUMENT + 1).read_to_end(&mut b).map(|_| b)
    });
    let bytes = match read {
        Ok(b) if b.len() as u64 > MAX_DOCUMENT => {
            return Err(Error::Format {
                path: path.to_path_buf(),
                format,
                offset: MAX_DOCUMENT,
                detail: format!("longer than {MAX_DOCUMENT} bytes: not a document obliviate wrote"),
            });
        }
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(cause) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                cause,
            });
        }
    };
    let format_err = |e: serde_json::Error| Error::Format {
        path: path.to_path_buf(),
        format,
        offset: json_offset(&bytes, &e),
        detail: e.to_string(),
    };
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).map_err(format_err)?;
    let (body, (checksum, claimed)) = body(&mut value)?;
    let expected = checksum
        .as_ref()
        .and_then(|c| c.as_str())
        .unwrap_or_default()
        .to_string();
    let actual = sha256(&body);
    if actual != expected {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            algo: "sha256 (document body)",
            expected,
            actual,
        });
    }
    let claimed = claimed
        .as_ref()
        .and_then(|h| h.as_str())
        .map(str::to_string);
    let seal = match (key()?, claimed) {
        (None, None) => KeyedSeal::Absent,
        (None, Some(_)) => KeyedSeal::Unverified,
        (Some(_), None) => {
            return Err(Error::Chain {
                run: path.to_path_buf(),
                detail: format!("carries no keyed seal, but {KEY_FILE_ENV} names a key"),
            });
        }
        (Some(k), Some(h)) => {
            let mut m = mac(&k);
            m.update(&body);
            // Constant-time comparison of the MAC.
            let bytes: Option<Vec<u8>> = (0..h.len())
                .step_by(2)
                .map(|i| h.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect();
            if bytes.is_none_or(|b| m.clone().verify_slice(&b).is_err()) {
                return Err(Error::Checksum {
                    path: path.to_path_buf(),
                    algo: "hmac-sha256 (keyed seal)",
                    expected: h,
                    // The right MAC would be a forgery kit: never print it.
                    actual: "a different value under the configured key".into(),
                });
            }
            KeyedSeal::Verified
        }
    };
    // The document type reads its checksum back (the member was taken out for the body).
    if let (Some(o), Some(c)) = (value.as_object_mut(), checksum) {
        o.insert("checksum".into(), c);
    }
    let doc = serde_json::from_value(value).map_err(format_err)?;
    Ok(Some((doc, seal)))
}

/// The byte offset of a JSON error's line and column (0 when the error has no position, as
/// for a type error found after parsing).
pub(crate) fn json_offset(bytes: &[u8], e: &serde_json::Error) -> u64 {
    if e.line() == 0 {
        return 0;
    }
    let line_start: usize = bytes
        .split_inclusive(|&b| b == b'\n')
        .take(e.line() - 1)
        .map(<[u8]>::len)
        .sum();
    (line_start + e.column().saturating_sub(1)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_byte() {
        let bytes = b"{\n  \"a\": 1,\n  \"b\": tru\n}";
        let e = serde_json::from_slice::<serde_json::Value>(bytes).unwrap_err();
        let at = json_offset(bytes, &e) as usize;
        assert!((19..=23).contains(&at), "{at}: {e}");
    }

    /// Sealed JSON must verify after parsing, whatever floats it holds (serde_json's default
    /// float parser is not correctly rounded; the `float_roundtrip` feature makes it so).
    #[test]
    fn sealed_floats_survive_the_round_trip() {
        let mut state = 7u64;
        for _ in 0..20_000 {
            state = crate::data::split::mix(state);
            let x = (state >> 11) as f64 / (1u64 << 53) as f64 * 1000.0;
            let (bytes, sum) =
                seal(&serde_json::json!({ "seconds": x, "n": state })).expect("seal");
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("parse");
            assert_eq!(v["checksum"].as_str(), Some(sum.as_str()));
            assert_eq!(v["seconds"].as_f64(), Some(x));
            assert_eq!(sha256(&body(&mut v).expect("body").0), sum, "{x:?}");
        }
    }

    /// The seal is spliced in front of the body's members: an empty object stays valid JSON,
    /// and a document that is not an object is refused rather than written unsealed.
    #[test]
    fn seals_splice_into_any_object() {
        let (bytes, sum) = seal(&serde_json::json!({})).expect("seal");
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("parse");
        assert_eq!(v["checksum"].as_str(), Some(sum.as_str()));
        assert_eq!(sha256(&body(&mut v).expect("body").0), sum);
        assert_eq!(v, serde_json::json!({}));
        assert!(seal(&serde_json::json!([1, 2])).is_err());
    }
}

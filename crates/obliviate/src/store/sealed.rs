//! Sealed JSON: a document whose `checksum` member is the SHA-256 of the rest of it.
//!
//! Documents are written as `{"seal":"sha256-bytes","checksum":"<hex>",` followed by the
//! document's other members as compact JSON, and the checksum is taken over exactly those
//! bytes (from the comma after the seals to the final newline): writing and checking need no
//! canonical form, only one serialisation and one hash. Older builds sealed the key-sorted
//! compact form of the JSON *value* minus `checksum` and `hmac`; documents without the `seal`
//! marker are still checked that way. Either way a document written before a field was added
//! still verifies. It catches accidents and truncation, not a writer who can recompute it.
//!
//! Where tampering matters, a key seals documents too: with `OBLIVIATE_SEAL_KEY_FILE` naming a
//! file of at least 16 bytes, every document written carries `hmac`, HMAC-SHA256 of the same
//! bytes under that key, and every document read must carry a valid one. A writer without the
//! key cannot forge it; readers without the key still check the plain checksum.
//!
//! A sealed type must not serialise `checksum` or `hmac` members itself (its checksum field is
//! `skip_serializing`: the seal supplies it, and a duplicate would fail every read).

use std::io::Read;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{atomic, hex, sha256};
use crate::error::{Error, IoContext, Result, invalid};

/// Environment variable naming the file whose bytes are the sealing key.
pub const KEY_FILE_ENV: &str = "OBLIVIATE_SEAL_KEY_FILE";

/// How a document sealed over its bytes begins (the checksum's hex digits follow).
const BYTES_SEAL: &[u8] = br#"{"seal":"sha256-bytes","checksum":""#;

/// The `hmac` member between the checksum and the sealed bytes (its hex digits follow).
const HMAC_MEMBER: &[u8] = br#","hmac":""#;

/// Hex digits of a SHA-256 or HMAC-SHA256.
const DIGEST_HEX: usize = 64;

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

/// The bytes an older build's seals cover: the JSON value without `checksum` and `hmac`,
/// compact (key-sorted, as `serde_json::Value` keeps its members). Gives back what it removed.
fn canonical_body(v: &mut serde_json::Value) -> Result<(Vec<u8>, Removed)> {
    let removed = match v.as_object_mut() {
        Some(o) => (o.remove("checksum"), o.remove("hmac")),
        None => (None, None),
    };
    let bytes = serde_json::to_vec(v).map_err(|e| invalid("sealed document", e.to_string()))?;
    Ok((bytes, removed))
}

/// The `checksum` and `hmac` members [`canonical_body`] took out.
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

/// Serialises `doc` as compact JSON behind its seals (`checksum`, and `hmac` when a key is
/// configured); returns the bytes and the checksum.
///
/// Compact, not pretty: a manifest is mostly sample ids, one per line when pretty-printed,
/// and every request rewrites it (pretty doubled the bytes and the time). `jq .` shows it.
pub fn seal<T: serde::Serialize>(doc: &T) -> Result<(Vec<u8>, String)> {
    let json = serde_json::to_vec(doc).map_err(|e| invalid("sealed document", e.to_string()))?;
    let Some(members) = json.strip_prefix(b"{") else {
        return Err(invalid("sealed document", "not a JSON object"));
    };
    let mut out = Vec::with_capacity(json.len() + 200);
    out.extend_from_slice(BYTES_SEAL);
    let digests = out.len();
    out.extend_from_slice(&[b'0'; DIGEST_HEX]);
    out.push(b'"');
    let keyed = key()?;
    if keyed.is_some() {
        out.extend_from_slice(HMAC_MEMBER);
        out.extend_from_slice(&[b'0'; DIGEST_HEX]);
        out.push(b'"');
    }
    // The sealed bytes: the members after a comma (none for an empty object), the newline.
    let sealed = out.len();
    if members != b"}" {
        out.push(b',');
    }
    out.extend_from_slice(members);
    out.push(b'\n');
    let sum = sha256(&out[sealed..]);
    out[digests..digests + DIGEST_HEX].copy_from_slice(sum.as_bytes());
    if let Some(k) = keyed {
        let mut m = mac(&k);
        m.update(&out[sealed..]);
        let h = hex(&m.finalize().into_bytes());
        let at = digests + DIGEST_HEX + 1 + HMAC_MEMBER.len();
        out[at..at + DIGEST_HEX].copy_from_slice(h.as_bytes());
    }
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
    unseal(&bytes, path, format).map(Some)
}

/// Checks and parses the bytes of a sealed document read from `path`.
fn unseal<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    path: &Path,
    format: &'static str,
) -> Result<(T, KeyedSeal)> {
    let format_err = |e: serde_json::Error| Error::Format {
        path: path.to_path_buf(),
        format,
        offset: json_offset(bytes, &e),
        detail: e.to_string(),
    };
    let Some(seals) = sealed_over_bytes(bytes) else {
        // An older build's seal, over the canonical value.
        let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(format_err)?;
        let (body, (checksum, claimed)) = canonical_body(&mut value)?;
        let expected = checksum
            .as_ref()
            .and_then(|c| c.as_str())
            .unwrap_or_default();
        let claimed = claimed.as_ref().and_then(|h| h.as_str());
        let seal = check(path, &body, expected, claimed)?;
        // The document type reads its checksum back (the member was taken out for the body).
        if let (Some(o), Some(c)) = (value.as_object_mut(), checksum) {
            o.insert("checksum".into(), c);
        }
        return Ok((serde_json::from_value(value).map_err(format_err)?, seal));
    };
    let seal = check(path, &bytes[seals.sealed..], seals.checksum, seals.hmac)?;
    Ok((serde_json::from_slice(bytes).map_err(format_err)?, seal))
}

/// Where the seals of a document sealed over its bytes lie.
struct BytesSeals<'a> {
    checksum: &'a str,
    hmac: Option<&'a str>,
    /// Offset of the sealed bytes.
    sealed: usize,
}

/// The seals of a document written by [`seal`]; `None` for an older build's document (or
/// bytes that are neither, which the canonical check then refuses).
fn sealed_over_bytes(bytes: &[u8]) -> Option<BytesSeals<'_>> {
    let digest = |at: usize| {
        let d = bytes.get(at..at + DIGEST_HEX)?;
        (bytes.get(at + DIGEST_HEX) == Some(&b'"')).then_some(())?;
        std::str::from_utf8(d).ok()
    };
    let at = BYTES_SEAL.len();
    bytes.starts_with(BYTES_SEAL).then_some(())?;
    let checksum = digest(at)?;
    let after = at + DIGEST_HEX + 1;
    match bytes[after..].starts_with(HMAC_MEMBER) {
        true => Some(BytesSeals {
            checksum,
            hmac: Some(digest(after + HMAC_MEMBER.len())?),
            sealed: after + HMAC_MEMBER.len() + DIGEST_HEX + 1,
        }),
        false => Some(BytesSeals {
            checksum,
            hmac: None,
            sealed: after,
        }),
    }
}

/// Checks the checksum `expected` and the keyed seal `claimed` of the sealed bytes `body`.
fn check(path: &Path, body: &[u8], expected: &str, claimed: Option<&str>) -> Result<KeyedSeal> {
    let actual = sha256(body);
    if actual != expected {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            algo: "sha256 (document body)",
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(match (key()?, claimed) {
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
            m.update(body);
            // Constant-time comparison of the MAC.
            let bytes: Option<Vec<u8>> = (0..h.len())
                .step_by(2)
                .map(|i| h.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect();
            if bytes.is_none_or(|b| m.clone().verify_slice(&b).is_err()) {
                return Err(Error::Checksum {
                    path: path.to_path_buf(),
                    algo: "hmac-sha256 (keyed seal)",
                    expected: h.to_string(),
                    // The right MAC would be a forgery kit: never print it.
                    actual: "a different value under the configured key".into(),
                });
            }
            KeyedSeal::Verified
        }
    })
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

    /// An older build's seal: the document's canonical value with `checksum` spliced in.
    fn seal_canonical(doc: &serde_json::Value) -> Vec<u8> {
        let mut v = doc.clone();
        let (body, _) = canonical_body(&mut v).expect("body");
        v["checksum"] = serde_json::Value::String(sha256(&body));
        serde_json::to_vec_pretty(&v).expect("json")
    }

    fn unseal_value(bytes: &[u8]) -> Result<serde_json::Value> {
        unseal(bytes, Path::new("doc.json"), "test JSON").map(|(v, _)| v)
    }

    /// Sealed JSON must verify after parsing, whatever floats it holds: sealed over its bytes,
    /// and sealed over its value by an older build (serde_json's default float parser is not
    /// correctly rounded; the `float_roundtrip` feature makes the second work).
    #[test]
    fn sealed_floats_survive_the_round_trip() {
        let mut state = 7u64;
        for _ in 0..20_000 {
            state = crate::data::split::mix(state);
            let x = (state >> 11) as f64 / (1u64 << 53) as f64 * 1000.0;
            let doc = serde_json::json!({ "seconds": x, "n": state });
            let (bytes, sum) = seal(&doc).expect("seal");
            let v = unseal_value(&bytes).expect("unseal");
            assert_eq!(v["checksum"].as_str(), Some(sum.as_str()));
            assert_eq!(v["seconds"].as_f64(), Some(x));
            let old = unseal_value(&seal_canonical(&doc)).expect("an older build's seal");
            assert_eq!(old["seconds"].as_f64(), Some(x), "{x:?}");
        }
    }

    /// The seals precede the members: an empty object stays valid JSON, and a document that is
    /// not an object is refused rather than written unsealed.
    #[test]
    fn seals_splice_into_any_object() {
        for doc in [serde_json::json!({}), serde_json::json!({"a": [1, 2]})] {
            let (bytes, sum) = seal(&doc).expect("seal");
            let mut v = unseal_value(&bytes).expect("unseal");
            assert_eq!(v["checksum"].as_str(), Some(sum.as_str()));
            let o = v.as_object_mut().expect("object");
            o.remove("checksum");
            o.remove("seal");
            assert_eq!(v, doc);
        }
        assert!(seal(&serde_json::json!([1, 2])).is_err());
    }

    /// Any changed byte fails the check, in the members, in the checksum or in the marker
    /// (which sends the document to the older check, which refuses it too); so do reformatting
    /// and a truncated document.
    #[test]
    fn every_changed_byte_fails_the_check() {
        let doc = serde_json::json!({"blocks": [[1, 2, 3], [4, 5]], "name": "run", "x": 0.25});
        let (bytes, _) = seal(&doc).expect("seal");
        for at in 0..bytes.len() - 1 {
            let mut b = bytes.clone();
            b[at] = if b[at] == b'1' { b'2' } else { b'1' };
            assert!(
                unseal_value(&b).is_err(),
                "byte {at} changed and still verified"
            );
        }
        let pretty =
            serde_json::to_vec_pretty(&unseal_value(&bytes).expect("unseal")).expect("json");
        assert!(unseal_value(&pretty).is_err());
        assert!(unseal_value(&bytes[..bytes.len() - 2]).is_err());
        let e = unseal_value(&bytes[..bytes.len() / 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("doc.json"), "{e}");
    }
}

//! IDX reader (MNIST, Fashion-MNIST): big-endian header, unsigned bytes, gzip or raw.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone)]
pub struct Idx {
    /// Dimensions from the header (first = item count).
    pub dims: Vec<usize>,
    /// Row-major bytes.
    pub data: Vec<u8>,
}

/// Reads a whole file, decompressing it when it starts with the gzip magic.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).at(path)?;
    maybe_gunzip(raw, path)
}

pub(crate) fn maybe_gunzip(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::Format {
                path: path.to_path_buf(),
                format: "gzip",
                offset: out.len() as u64,
                detail: format!("decompression failed after {} bytes: {e}", out.len()),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses IDX bytes (already decompressed) holding unsigned bytes, expecting `rank` dimensions.
pub fn parse_idx(bytes: &[u8], rank: usize, path: &Path) -> Result<Idx> {
    let err = |offset: u64, detail: String| Error::Format {
        path: path.to_path_buf(),
        format: "IDX",
        offset,
        detail,
    };
    if bytes.len() < 4 {
        return Err(err(
            0,
            format!(
                "file is {} bytes, shorter than the 4-byte magic",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(err(
            0,
            format!(
                "magic must start with two zero bytes, found {:02x}{:02x}",
                bytes[0], bytes[1]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(err(
            2,
            format!(
                "element type 0x{:02x}; only unsigned bytes (0x08) are supported",
                bytes[2]
            ),
        ));
    }
    let found_rank = bytes[3] as usize;
    if found_rank != rank {
        return Err(err(3, format!("{found_rank} dimensions, expected {rank}")));
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(err(
            bytes.len() as u64,
            format!("truncated header: {} bytes, need {header}", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let want = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err(4, format!("dimensions {dims:?} overflow")))?;
    let have = bytes.len() - header;
    if have != want {
        return Err(err(
            bytes.len() as u64,
            format!(
                "header says {dims:?} = {want} data bytes, file has {have}{}",
                if have < want {
                    " (truncated)"
                } else {
                    " (trailing bytes)"
                }
            ),
        ));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads an IDX file (gzip or raw) from disk.
pub fn read_idx(path: &Path, rank: usize) -> Result<Idx> {
    let bytes = read_maybe_gz(path)?;
    parse_idx(&bytes, rank, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: u32) -> Vec<u8> {
        let mut v = vec![0, 0, 8, 1];
        v.extend(n.to_be_bytes());
        v.extend((0..n).map(|i| (i % 10) as u8));
        v
    }

    #[test]
    fn parses_labels() {
        let idx = parse_idx(&labels(5), 1, Path::new("l")).unwrap();
        assert_eq!(idx.dims, vec![5]);
        assert_eq!(idx.data, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn rejects_truncation_with_offset() {
        let b = labels(5);
        let e = parse_idx(&b[..b.len() - 1], 1, Path::new("lab.idx"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("lab.idx") && e.contains("truncated") && e.contains("byte 12"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_magic_and_rank() {
        let mut b = labels(3);
        b[2] = 0x0d;
        assert!(
            parse_idx(&b, 1, Path::new("x"))
                .unwrap_err()
                .to_string()
                .contains("element type")
        );
        assert!(
            parse_idx(&labels(3), 3, Path::new("x"))
                .unwrap_err()
                .to_string()
                .contains("dimensions")
        );
    }
}

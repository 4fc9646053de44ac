//! CIFAR-10 binary batches: records of one label byte and 3×32×32 channel-planar pixels.

use std::path::Path;

use super::{Dataset, DatasetName, Samples, locate};
use crate::error::{Error, IoContext, Result};
use crate::model::InputShape;

/// Bytes per CIFAR-10 record.
pub const RECORD: usize = 1 + 3 * 32 * 32;

/// Parses one batch file into (pixels, labels).
pub fn parse_batch(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u16>)> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(Error::Format {
            path: path.to_path_buf(),
            format: "CIFAR-10 binary",
            offset: (bytes.len() / RECORD * RECORD) as u64,
            detail: format!(
                "{} bytes is not a whole number of {RECORD}-byte records",
                bytes.len()
            ),
        });
    }
    let n = bytes.len() / RECORD;
    let mut pixels = Vec::with_capacity(n * (RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] > 9 {
            return Err(Error::Format {
                path: path.to_path_buf(),
                format: "CIFAR-10 binary",
                offset: (i * RECORD) as u64,
                detail: format!("record {i} has label {}, expected 0..=9", rec[0]),
            });
        }
        labels.push(u16::from(rec[0]));
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok((pixels, labels))
}

/// Reads `data_batch_1..5.bin` (train) or `test_batch.bin` (test) from `dir`.
pub fn read_split(dir: &Path, train: bool) -> Result<(Vec<u8>, Vec<u16>)> {
    let names: Vec<String> = if train {
        (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
    } else {
        vec!["test_batch.bin".to_string()]
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for name in names {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).at(&path)?;
        let (p, l) = parse_batch(&bytes, &path)?;
        pixels.extend(p);
        labels.extend(l);
    }
    Ok((pixels, labels))
}

/// CIFAR-10 from its binary batches under `dir` (or `dir/cifar10/`, or `cifar-10-batches-bin/`).
pub(crate) fn load(dir: &Path) -> Result<Dataset> {
    let name = DatasetName::Cifar10;
    let test_batch = locate(
        dir,
        name,
        &["cifar-10-batches-bin/test_batch.bin", "test_batch.bin"],
    )?;
    let base = test_batch.parent().unwrap_or(dir);
    let (p, l) = read_split(base, true)?;
    let train = Samples::numbered(p, l);
    let (p, l) = read_split(base, false)?;
    let test = Samples::numbered(p, l);
    let shape = InputShape {
        channels: 3,
        height: 32,
        width: 32,
    };
    Dataset::from_parts(name, shape, 10, train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let mut b = vec![0u8; 2 * RECORD];
        b[0] = 3;
        b[RECORD] = 9;
        b[1] = 200;
        let (p, l) = parse_batch(&b, Path::new("x")).unwrap();
        assert_eq!(l, vec![3, 9]);
        assert_eq!(p[0], 200);
        assert_eq!(p.len(), 2 * 3072);
        assert!(parse_batch(&b[..RECORD + 5], Path::new("x")).is_err());
        b[RECORD] = 10;
        let e = parse_batch(&b, Path::new("x")).unwrap_err().to_string();
        assert!(e.contains("record 1") && e.contains("byte 3073"), "{e}");
    }
}

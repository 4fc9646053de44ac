//! Purchase (Shokri et al. 2017) `dataset_purchase` CSV: a label, then 600 binary features.

use std::path::Path;

use super::{Dataset, DatasetName, Samples, idx, locate};
use crate::error::{Error, Result};
use crate::model::InputShape;

/// Features per record.
pub const FEATURES: usize = 600;

/// Parsed records: features (0/1 bytes, row-major) and labels shifted to start at 0.
#[derive(Debug, Clone)]
pub struct Purchase {
    /// `n × 600` feature bytes.
    pub features: Vec<u8>,
    /// Labels, 0-based.
    pub labels: Vec<u16>,
    /// Distinct label range: max label + 1 after shifting.
    pub classes: usize,
}

/// Parses the CSV. Labels may be 1-based (the canonical file: 1..=100) or 0-based; the class
/// count is what the labels span (2-class and 100-class variants both work).
pub fn parse_purchase(text: &[u8], path: &Path) -> Result<Purchase> {
    let mut features = Vec::new();
    let mut raw_labels: Vec<u32> = Vec::new();
    let mut offset = 0usize;
    for (lineno, line) in text.split(|&c| c == b'\n').enumerate() {
        let here = offset;
        offset += line.len() + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|c| c.is_ascii_whitespace()) {
            continue;
        }
        let err = |detail: String| Error::Format {
            path: path.to_path_buf(),
            format: "Purchase CSV",
            offset: here as u64,
            detail: format!("line {}: {detail}", lineno + 1),
        };
        let mut fields = line.split(|&c| c == b',');
        let label = fields
            .next()
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(|f| f.trim().parse::<u32>().ok())
            .ok_or_else(|| err("first field is not a non-negative integer label".into()))?;
        let mut count = 0;
        for f in fields {
            let v = match f.trim_ascii() {
                b"0" => 0u8,
                b"1" => 1u8,
                other => {
                    return Err(err(format!(
                        "feature {} is {:?}, expected 0 or 1",
                        count + 1,
                        String::from_utf8_lossy(other)
                    )));
                }
            };
            features.push(v);
            count += 1;
        }
        if count != FEATURES {
            return Err(err(format!("{count} features, expected {FEATURES}")));
        }
        raw_labels.push(label);
    }
    if raw_labels.is_empty() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            format: "Purchase CSV",
            offset: 0,
            detail: "no records".into(),
        });
    }
    let min = raw_labels.iter().copied().min().unwrap_or(0);
    let shift = if min >= 1 { 1 } else { 0 };
    let labels: Vec<u16> = raw_labels.iter().map(|&l| (l - shift) as u16).collect();
    let classes = labels.iter().copied().max().unwrap_or(0) as usize + 1;
    Ok(Purchase {
        features,
        labels,
        classes,
    })
}

/// Purchase from `dataset_purchase` (or `.csv`, optionally gzip) under `dir`, with a fixed
/// holdout: every fifth record (index % 5 == 4) is test data.
pub(crate) fn load(dir: &Path) -> Result<Dataset> {
    let name = DatasetName::Purchase;
    let path = locate(dir, name, &["dataset_purchase", "dataset_purchase.csv"])?;
    let bytes = idx::read_maybe_gz(&path)?;
    let p = parse_purchase(&bytes, &path)?;
    let (mut train, mut test) = (Samples::default(), Samples::default());
    for (i, &l) in p.labels.iter().enumerate() {
        let s = if i % 5 == 4 { &mut test } else { &mut train };
        s.ids.push(i as u64);
        s.labels.push(l);
        s.pixels
            .extend_from_slice(&p.features[i * FEATURES..(i + 1) * FEATURES]);
    }
    let shape = InputShape {
        channels: 1,
        height: 1,
        width: FEATURES,
    };
    Dataset::from_parts(name, shape, p.classes, train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: u32, ones: usize) -> String {
        let mut s = label.to_string();
        for i in 0..FEATURES {
            s.push_str(if i < ones { ",1" } else { ",0" });
        }
        s
    }

    #[test]
    fn parses_one_based_labels() {
        let text = format!("{}\n{}\r\n{}\n", row(1, 3), row(100, 0), row(2, 600));
        let p = parse_purchase(text.as_bytes(), Path::new("p")).unwrap();
        assert_eq!(p.labels, vec![0, 99, 1]);
        assert_eq!(p.classes, 100);
        assert_eq!(p.features.len(), 3 * FEATURES);
        assert_eq!(&p.features[..4], &[1, 1, 1, 0]);
    }

    #[test]
    fn reports_line_of_bad_record() {
        let text = format!("{}\n{}\n", row(1, 3), &row(2, 0)[..50]);
        let e = parse_purchase(text.as_bytes(), Path::new("dataset_purchase"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("feature 25"), "{e}");
        let text = format!("{}\n", row(1, 3).replacen(",1", ",7", 1));
        let e = parse_purchase(text.as_bytes(), Path::new("p"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected 0 or 1"), "{e}");
    }
}

//! IDX reader (MNIST, Fashion-MNIST): big-endian header, unsigned bytes, gzip or raw.

use std::io::Read;
use std::path::Path;

use super::{Dataset, DatasetName, Samples, cache, locate};
use crate::error::{Error, IoContext, Result};
use crate::model::InputShape;

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone)]
pub struct Idx {
    /// Dimensions from the header (first = item count).
    pub dims: Vec<usize>,
    /// Row-major bytes.
    pub data: Vec<u8>,
}

/// Largest decompressed dataset file accepted (the largest canonical one, Purchase's CSV, is
/// about 0.3 GB): a small archive that inflates without end is refused, not read into memory.
const MAX_INFLATED: usize = 1 << 30;

fn is_gzip(raw: &[u8]) -> bool {
    raw.starts_with(&[0x1f, 0x8b])
}

/// Inflates at most `max` bytes of gzip data.
fn gunzip_upto(raw: &[u8], path: &Path, max: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity((raw.len() * 4).min(max));
    flate2::read::GzDecoder::new(raw)
        .take(max as u64)
        .read_to_end(&mut out)
        .map_err(|e| Error::Format {
            path: path.to_path_buf(),
            format: "gzip",
            offset: out.len() as u64,
            detail: format!("decompression failed after {} bytes: {e}", out.len()),
        })?;
    Ok(out)
}

/// Reads a whole file, decompressing it when it starts with the gzip magic.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).at(path)?;
    maybe_gunzip(raw, path)
}

/// `raw` itself, or its decompression when it has the gzip magic (at most [`MAX_INFLATED`]
/// bytes).
pub(crate) fn maybe_gunzip(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if !is_gzip(&raw) {
        return Ok(raw);
    }
    let out = gunzip_upto(&raw, path, MAX_INFLATED + 1)?;
    if out.len() > MAX_INFLATED {
        return Err(Error::Format {
            path: path.to_path_buf(),
            format: "gzip",
            offset: MAX_INFLATED as u64,
            detail: format!("decompresses to more than {MAX_INFLATED} bytes"),
        });
    }
    Ok(out)
}

/// The dimensions an IDX header (`bytes` starting at the magic) declares for `rank`
/// dimensions of unsigned bytes, and the file size they imply.
fn header(bytes: &[u8], rank: usize, path: &Path) -> Result<(Vec<usize>, usize)> {
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
        .and_then(|n| n.checked_add(header))
        .filter(|&n| n <= MAX_INFLATED)
        .ok_or_else(|| {
            err(
                4,
                format!("dimensions {dims:?} exceed {MAX_INFLATED} bytes"),
            )
        })?;
    Ok((dims, want))
}

/// Parses IDX bytes (already decompressed) holding unsigned bytes, expecting `rank` dimensions.
pub fn parse_idx(bytes: &[u8], rank: usize, path: &Path) -> Result<Idx> {
    let (dims, size) = header(bytes, rank, path)?;
    let head = 4 + 4 * rank;
    let (want, have) = (size - head, bytes.len() - head);
    if have != want {
        return Err(Error::Format {
            path: path.to_path_buf(),
            format: "IDX",
            offset: bytes.len() as u64,
            detail: format!(
                "header says {dims:?} = {want} data bytes, file has {have}{}",
                if have < want {
                    " (truncated)"
                } else {
                    " (trailing bytes)"
                }
            ),
        });
    }
    Ok(Idx {
        dims,
        data: bytes[head..].to_vec(),
    })
}

/// Reads an IDX file (gzip or raw) from disk. A compressed file is inflated only as far as
/// its header says it holds, and one byte more to detect trailing data: a small file that
/// inflates without end costs no more than the header claims.
pub fn read_idx(path: &Path, rank: usize) -> Result<Idx> {
    let raw = std::fs::read(path).at(path)?;
    if !is_gzip(&raw) {
        return parse_idx(&raw, rank, path);
    }
    let head = gunzip_upto(&raw, path, 4 + 4 * rank)?;
    let (_, size) = header(&head, rank, path)?;
    parse_idx(&gunzip_upto(&raw, path, size + 1)?, rank, path)
}

const MNIST_SHAPE: InputShape = InputShape {
    channels: 1,
    height: 28,
    width: 28,
};

/// MNIST or Fashion-MNIST from the four canonical IDX files (raw or gzip) under `dir`.
pub(crate) fn load_mnist(name: DatasetName, dir: &Path) -> Result<Dataset> {
    let find = |stem: &str| locate(dir, name, &[stem, &format!("{stem}.gz")]);
    let sources = [
        find("train-images-idx3-ubyte")?,
        find("train-labels-idx1-ubyte")?,
        find("t10k-images-idx3-ubyte")?,
        find("t10k-labels-idx1-ubyte")?,
    ];
    let split = |images: &Path, labels: &Path| {
        mnist_samples(read_idx(images, 3)?, read_idx(labels, 1)?, images, labels)
    };
    let folder = cache::folder_for(&sources);
    cache::load(name, &sources, folder.as_deref(), || {
        let train = split(&sources[0], &sources[1])?;
        let test = split(&sources[2], &sources[3])?;
        Dataset::from_parts(name, MNIST_SHAPE, 10, train, test)
    })
}

/// The bundled `mnist-mini`: the first 10,000 training and 2,000 test samples of MNIST,
/// compiled into the library (see `data/mnist-mini/README.md` for provenance).
const MINI: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../../data/mnist-mini/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../../data/mnist-mini/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../../data/mnist-mini/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../../data/mnist-mini/t10k-labels-idx1-ubyte.gz"),
    ),
];

pub(crate) fn load_mnist_mini() -> Result<Dataset> {
    let path = |i: usize| Path::new("<bundled mnist-mini>").join(MINI[i].0);
    let decode = |i: usize, rank: usize| {
        parse_idx(&maybe_gunzip(MINI[i].1.to_vec(), &path(i))?, rank, &path(i))
    };
    let train = mnist_samples(decode(0, 3)?, decode(1, 1)?, &path(0), &path(1))?;
    let test = mnist_samples(decode(2, 3)?, decode(3, 1)?, &path(2), &path(3))?;
    Dataset::from_parts(DatasetName::MnistMini, MNIST_SHAPE, 10, train, test)
}

fn mnist_samples(im: Idx, lb: Idx, images: &Path, labels: &Path) -> Result<Samples> {
    if im.dims[1..] != [28, 28] {
        return Err(Error::Format {
            path: images.to_path_buf(),
            format: "IDX",
            offset: 8,
            detail: format!("images are {}×{}, expected 28×28", im.dims[1], im.dims[2]),
        });
    }
    if im.dims[0] != lb.dims[0] {
        return Err(Error::Format {
            path: labels.to_path_buf(),
            format: "IDX",
            offset: 4,
            detail: format!(
                "{} labels for {} images in {}",
                lb.dims[0],
                im.dims[0],
                images.display()
            ),
        });
    }
    if let Some(pos) = lb.data.iter().position(|&l| l > 9) {
        return Err(Error::Format {
            path: labels.to_path_buf(),
            format: "IDX",
            offset: 8 + pos as u64,
            detail: format!(
                "label {} of sample {pos} is not a digit class 0..=9",
                lb.data[pos]
            ),
        });
    }
    Ok(Samples::numbered(
        im.data,
        lb.data.into_iter().map(u16::from).collect(),
    ))
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

    /// A small gzip whose header announces 10 labels but that inflates to 8 MB is read only as
    /// far as the header says (plus one byte), then refused.
    #[test]
    fn a_gzip_that_inflates_past_its_header_is_not_read_whole() {
        use std::io::Write;
        let mut body = labels(10);
        body.extend(vec![0u8; 8 << 20]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&body).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 100_000);
        let dir = std::env::temp_dir().join(format!("obliviate-idx-bomb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("labels.gz");
        std::fs::write(&p, &gz).unwrap();
        let e = read_idx(&p, 1).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("file has 11 (trailing bytes)"), "{e}");
    }
}

//! SVHN cropped digits, format 2: `train_32x32.mat` and `test_32x32.mat` (MAT v5, read by
//! [`super::mat`]); label 10 is the digit 0.

use std::path::Path;

use super::{Dataset, DatasetName, Samples, locate, mat};
use crate::error::{Error, IoContext, Result};
use crate::model::InputShape;

/// SVHN from its two `.mat` files under `dir`.
pub(crate) fn load(dir: &Path) -> Result<Dataset> {
    let name = DatasetName::Svhn;
    let train = split(&locate(dir, name, &["train_32x32.mat"])?)?;
    let test = split(&locate(dir, name, &["test_32x32.mat"])?)?;
    let shape = InputShape {
        channels: 3,
        height: 32,
        width: 32,
    };
    Dataset::from_parts(name, shape, 10, train, test)
}

/// One `.mat` file: X is 32×32×3×N column-major uint8, y the labels 1..=10.
fn split(path: &Path) -> Result<Samples> {
    let bytes = std::fs::read(path).at(path)?;
    let vars = mat::parse_mat(&bytes, path)?;
    let fmt = |detail: String| Error::Format {
        path: path.to_path_buf(),
        format: "SVHN .mat",
        offset: 0,
        detail,
    };
    let x = vars
        .iter()
        .find(|v| v.name == "X")
        .ok_or_else(|| fmt("no variable X".into()))?;
    let y = vars
        .iter()
        .find(|v| v.name == "y")
        .ok_or_else(|| fmt("no variable y".into()))?;
    if x.dims.len() != 4 || x.dims[..3] != [32, 32, 3] {
        return Err(fmt(format!(
            "X has dimensions {:?}, expected 32×32×3×N",
            x.dims
        )));
    }
    let n = x.dims[3];
    if y.data.len() != n {
        return Err(fmt(format!("y has {} labels for {n} images", y.data.len())));
    }
    let mat::MatData::U8(xs) = &x.data else {
        return Err(fmt("X is not uint8".into()));
    };
    let mut pixels = vec![0u8; n * 3072];
    for i in 0..n {
        for c in 0..3 {
            for col in 0..32 {
                for row in 0..32 {
                    pixels[i * 3072 + c * 1024 + row * 32 + col] =
                        xs[row + 32 * col + 1024 * c + 3072 * i];
                }
            }
        }
    }
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let v = y.data.get(i);
        if !(1.0..=10.0).contains(&v) || v.fract() != 0.0 {
            return Err(fmt(format!("label {v} of sample {i} is not in 1..=10")));
        }
        labels.push(if v == 10.0 { 0 } else { v as u16 });
    }
    Ok(Samples::numbered(pixels, labels))
}

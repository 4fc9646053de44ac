//! MATLAB Level 5 MAT-file reader (and a minimal writer), enough for SVHN format 2.
//!
//! Supports numeric matrices (any integer or float class), little- and big-endian files, and
//! `miCOMPRESSED` (zlib) elements. Cell arrays, structs and sparse matrices are skipped.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, Result};

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// Values of a numeric matrix: bytes kept as bytes (SVHN's images), everything else as f64.
#[derive(Debug, Clone, PartialEq)]
pub enum MatData {
    /// `uint8` data, column-major.
    U8(Vec<u8>),
    /// Any other numeric type, converted, column-major.
    F64(Vec<f64>),
}

/// One named numeric variable.
#[derive(Debug, Clone, PartialEq)]
pub struct MatVar {
    /// Variable name.
    pub name: String,
    /// MATLAB dimensions (column-major, first index fastest).
    pub dims: Vec<usize>,
    /// Real part.
    pub data: MatData,
}

impl MatData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            MatData::U8(v) => v.len(),
            MatData::F64(v) => v.len(),
        }
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Element `i` as f64.
    pub fn get(&self, i: usize) -> f64 {
        match self {
            MatData::U8(v) => f64::from(v[i]),
            MatData::F64(v) => v[i],
        }
    }
}

struct Reader<'a> {
    path: &'a Path,
    big: bool,
    /// Offset of `buf[0]` in the file (for messages); compressed payloads report their element.
    base: u64,
}

impl Reader<'_> {
    fn err(&self, offset: usize, detail: impl Into<String>) -> Error {
        Error::Format {
            path: self.path.to_path_buf(),
            format: "MAT v5",
            offset: self.base + offset as u64,
            detail: detail.into(),
        }
    }
    fn u32(&self, b: &[u8], o: usize) -> Result<u32> {
        let s: [u8; 4] = b
            .get(o..o + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| self.err(o, "unexpected end of data reading a 32-bit field"))?;
        Ok(if self.big {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        })
    }

    /// Parses a tag at `o`: (type, size, data offset, next element offset).
    fn tag(&self, b: &[u8], o: usize) -> Result<(u32, usize, usize, usize)> {
        let t = self.u32(b, o)?;
        if t >> 16 != 0 {
            let size = (t >> 16) as usize;
            if size > 4 {
                return Err(self.err(o, format!("small data element claims {size} bytes (max 4)")));
            }
            return Ok((t & 0xffff, size, o + 4, o + 8));
        }
        let size = self.u32(b, o + 4)? as usize;
        let start = o + 8;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= b.len())
            .ok_or_else(|| {
                self.err(
                    o,
                    format!(
                        "element of type {t} claims {size} bytes, only {} remain (truncated file)",
                        b.len().saturating_sub(start)
                    ),
                )
            })?;
        let next = if t == MI_COMPRESSED {
            end
        } else {
            end.next_multiple_of(8).min(b.len())
        };
        Ok((t, size, start, next))
    }

    fn numbers(&self, b: &[u8], ty: u32, o: usize, size: usize) -> Result<MatData> {
        let d = &b[o..o + size];
        let width = match ty {
            MI_INT8 | MI_UINT8 => 1,
            MI_INT16 | MI_UINT16 => 2,
            MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
            MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
            _ => return Err(self.err(o, format!("unsupported numeric data type {ty}"))),
        };
        if !size.is_multiple_of(width) {
            return Err(self.err(
                o,
                format!("{size} bytes is not a multiple of the {width}-byte element"),
            ));
        }
        if ty == MI_UINT8 {
            return Ok(MatData::U8(d.to_vec()));
        }
        let big = self.big;
        let v = d
            .chunks_exact(width)
            .map(|c| {
                let mut a = [0u8; 8];
                a[..width].copy_from_slice(c);
                if big {
                    a[..width].reverse();
                }
                match ty {
                    MI_INT8 => f64::from(a[0] as i8),
                    MI_INT16 => f64::from(i16::from_le_bytes([a[0], a[1]])),
                    MI_UINT16 => f64::from(u16::from_le_bytes([a[0], a[1]])),
                    MI_INT32 => f64::from(i32::from_le_bytes([a[0], a[1], a[2], a[3]])),
                    MI_UINT32 => f64::from(u32::from_le_bytes([a[0], a[1], a[2], a[3]])),
                    MI_SINGLE => f64::from(f32::from_le_bytes([a[0], a[1], a[2], a[3]])),
                    MI_INT64 => i64::from_le_bytes(a) as f64,
                    MI_UINT64 => u64::from_le_bytes(a) as f64,
                    _ => f64::from_le_bytes(a),
                }
            })
            .collect();
        Ok(MatData::F64(v))
    }

    /// Parses the payload of a miMATRIX element spanning `b[start..end]`.
    fn matrix(&self, b: &[u8], start: usize, end: usize) -> Result<Option<MatVar>> {
        let m = &b[..end];
        let (ty, size, o, next) = self.tag(m, start)?;
        if ty != MI_UINT32 || size != 8 {
            return Err(self.err(start, "matrix does not start with array flags"));
        }
        let class = self.u32(m, o)? & 0xff;
        let complex = self.u32(m, o)? & 0x800 != 0;
        if !(6..=15).contains(&class) {
            return Ok(None); // cell, struct, char, sparse, ...: not needed.
        }
        let (ty, size, o, next2) = self.tag(m, next)?;
        if ty != MI_INT32 {
            return Err(self.err(next, "matrix dimensions are not int32"));
        }
        let dims: Vec<usize> = (0..size / 4)
            .map(|i| self.u32(m, o + 4 * i).map(|v| v as usize))
            .collect::<Result<_>>()?;
        let (ty, size, o, next3) = self.tag(m, next2)?;
        if ty != MI_INT8 {
            return Err(self.err(next2, "matrix name is not int8"));
        }
        let name = String::from_utf8_lossy(&m[o..o + size]).into_owned();
        let (ty, size, o, _) = self.tag(m, next3)?;
        let data = self.numbers(m, ty, o, size)?;
        let want: usize = dims.iter().product();
        if data.len() != want {
            return Err(self.err(
                next3,
                format!(
                    "{name}: dimensions {dims:?} need {want} values, found {}",
                    data.len()
                ),
            ));
        }
        let _ = complex; // Only the real part is used.
        Ok(Some(MatVar { name, dims, data }))
    }

    fn elements(&self, b: &[u8], mut o: usize, out: &mut Vec<MatVar>) -> Result<()> {
        while o < b.len() {
            if b.len() - o < 8 {
                return Err(self.err(
                    o,
                    format!("{} stray bytes after the last element", b.len() - o),
                ));
            }
            let (ty, size, start, next) = self.tag(b, o)?;
            match ty {
                MI_COMPRESSED => {
                    let mut inner = Vec::new();
                    flate2::read::ZlibDecoder::new(&b[start..start + size])
                        .read_to_end(&mut inner)
                        .map_err(|e| self.err(o, format!("corrupt compressed element: {e}")))?;
                    let sub = Reader {
                        path: self.path,
                        big: self.big,
                        base: self.base + o as u64,
                    };
                    sub.elements(&inner, 0, out)?;
                }
                MI_MATRIX => {
                    if let Some(v) = self.matrix(b, start, start + size)? {
                        out.push(v);
                    }
                }
                _ => {}
            }
            o = next;
        }
        Ok(())
    }
}

/// Parses a whole MAT v5 file into its numeric variables.
pub fn parse_mat(bytes: &[u8], path: &Path) -> Result<Vec<MatVar>> {
    let r = Reader {
        path,
        big: false,
        base: 0,
    };
    if bytes.len() < 128 {
        return Err(r.err(
            0,
            format!("{} bytes is shorter than the 128-byte header", bytes.len()),
        ));
    }
    if bytes.starts_with(b"\x89HDF") || bytes[..128].windows(4).any(|w| w == b"7.3 ") {
        return Err(r.err(
            0,
            "MAT v7.3 (HDF5) files are not supported; save with -v7 or -v6",
        ));
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        other => {
            return Err(r.err(
                126,
                format!("endian indicator {other:?}, expected \"IM\" or \"MI\""),
            ));
        }
    };
    let r = Reader { big, ..r };
    let mut out = Vec::new();
    r.elements(bytes, 128, &mut out)?;
    Ok(out)
}

/// Writes numeric variables as a little-endian MAT v5 file (optionally zlib-compressed);
/// used to build fixtures and small exports.
pub fn encode_mat(vars: &[MatVar], compress: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut text = b"MATLAB 5.0 MAT-file, written by obliviate".to_vec();
    text.resize(116, b' ');
    out.extend(text);
    out.extend([0u8; 8]);
    out.extend(0x0100u16.to_le_bytes());
    out.extend(b"IM");
    for v in vars {
        let m = matrix_element(v);
        if compress {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            // Writing to a Vec cannot fail.
            let _ = z.write_all(&m);
            let c = z.finish().unwrap_or_default();
            out.extend(MI_COMPRESSED.to_le_bytes());
            out.extend((c.len() as u32).to_le_bytes());
            out.extend(c);
        } else {
            out.extend(m);
        }
    }
    out
}

fn push_elem(out: &mut Vec<u8>, ty: u32, data: &[u8]) {
    out.extend(ty.to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out.extend(data);
    out.resize(out.len().next_multiple_of(8), 0);
}

fn matrix_element(v: &MatVar) -> Vec<u8> {
    let mut body = Vec::new();
    let class: u32 = match v.data {
        MatData::U8(_) => 9,
        MatData::F64(_) => 6,
    };
    let mut flags = class.to_le_bytes().to_vec();
    flags.extend([0u8; 4]);
    push_elem(&mut body, MI_UINT32, &flags);
    let dims: Vec<u8> = v
        .dims
        .iter()
        .flat_map(|&d| (d as i32).to_le_bytes())
        .collect();
    push_elem(&mut body, MI_INT32, &dims);
    push_elem(&mut body, MI_INT8, v.name.as_bytes());
    match &v.data {
        MatData::U8(d) => push_elem(&mut body, MI_UINT8, d),
        MatData::F64(d) => {
            let b: Vec<u8> = d.iter().flat_map(|x| x.to_le_bytes()).collect();
            push_elem(&mut body, MI_DOUBLE, &b)
        }
    }
    let mut out = Vec::new();
    push_elem(&mut out, MI_MATRIX, &body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<MatVar> {
        vec![
            MatVar {
                name: "X".into(),
                dims: vec![2, 3],
                data: MatData::U8(vec![1, 2, 3, 4, 5, 6]),
            },
            MatVar {
                name: "y".into(),
                dims: vec![3, 1],
                data: MatData::F64(vec![10.0, 1.0, 7.0]),
            },
        ]
    }

    #[test]
    fn round_trips_plain_and_compressed() {
        for compress in [false, true] {
            let b = encode_mat(&vars(), compress);
            assert_eq!(parse_mat(&b, Path::new("f.mat")).unwrap(), vars());
        }
    }

    #[test]
    fn truncated_and_bad_header_are_named() {
        let b = encode_mat(&vars(), false);
        let e = parse_mat(&b[..b.len() - 20], Path::new("t.mat"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.mat") && e.contains("truncated"), "{e}");
        let mut h = b.clone();
        h[126] = b'X';
        assert!(
            parse_mat(&h, Path::new("t.mat"))
                .unwrap_err()
                .to_string()
                .contains("endian")
        );
        let c = encode_mat(&vars(), true);
        let mut bad = c.clone();
        let n = bad.len();
        bad[n - 5] ^= 0xff;
        bad[n - 6] ^= 0xff;
        assert!(parse_mat(&bad, Path::new("c.mat")).is_err());
    }
}

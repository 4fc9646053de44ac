//! A decoded copy of a dataset beside its canonical files, so a request does not pay for
//! decompressing them again (full MNIST: 0.22 s to gunzip and decode, against a forget that
//! retrains 5 blocks in under a second).
//!
//! The cache is only ever a shortcut, never a source of truth:
//! - its name carries a key over the canonical files' bytes (SHA-256), so edited or replaced
//!   files miss the cache instead of reading stale samples;
//! - it records the dataset fingerprint computed from the decoded canonical files, and a hit
//!   recomputes the fingerprint from the cached samples: a flipped byte is a miss, not data;
//! - a miss decodes the canonical files as if there were no cache, and writing the cache is
//!   best-effort (a read-only data folder or a full disk only costs the shortcut);
//! - a cache file over 2 GiB is a miss, never read into memory;
//! - a file the cache cannot read is left alone (the engine never overwrites a file it cannot
//!   prove it wrote); delete the `.obliviate-cache` folder to rebuild.
//!
//! Where: `$OBLIVIATE_CACHE_DIR` when set (`off` disables the cache), else
//! `.obliviate-cache/` beside the first canonical file.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};
use sha2::{Digest, Sha256};

use super::{Dataset, DatasetName, Samples};
use crate::error::{IoContext, Result, invalid};
use crate::model::InputShape;

/// Identifies the cache layout; a different layout is a different key.
const FORMAT: &str = "obliviate-data-cache/1";

/// Largest cache file read (full MNIST's is 56 MB): a larger file is a miss, never read.
const MAX_FILE: u64 = 2 << 30;

/// Folder name of the cache beside the canonical files.
pub const FOLDER: &str = ".obliviate-cache";

/// The cache folder for `sources`: `$OBLIVIATE_CACHE_DIR` (`off`: none), else beside them.
pub fn folder_for(sources: &[PathBuf]) -> Option<PathBuf> {
    match std::env::var_os("OBLIVIATE_CACHE_DIR") {
        Some(v) if v == "off" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => sources.first()?.parent().map(|p| p.join(FOLDER)),
    }
}

/// `name` decoded from `sources` by `decode`, read from the cache in `folder` when it holds an
/// intact copy of exactly these files' decoding, and stored there after a miss.
pub fn load(
    name: DatasetName,
    sources: &[PathBuf],
    folder: Option<&Path>,
    decode: impl FnOnce() -> Result<Dataset>,
) -> Result<Dataset> {
    let (Some(folder), Some(key)) = (folder, key(name, sources)) else {
        return decode();
    };
    let path = folder.join(format!("{name}-{}.safetensors", &key[..32]));
    if path.exists() {
        if let Some(data) = read(&path, name, &key) {
            return Ok(data);
        }
        return decode();
    }
    let data = decode()?;
    // Best-effort: the data is right whether or not the shortcut could be stored.
    let _ = write(&path, &key, &data);
    Ok(data)
}

/// SHA-256 over the layout, the dataset and every source file's name and bytes; `None` when a
/// source cannot be read (the decoder then reports it).
fn key(name: DatasetName, sources: &[PathBuf]) -> Option<String> {
    let mut h = Sha256::new();
    h.update(FORMAT.as_bytes());
    h.update(name.name().as_bytes());
    for p in sources {
        let bytes = std::fs::read(p).ok()?;
        h.update(p.file_name()?.as_encoded_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Some(crate::store::hex(&h.finalize()))
}

fn le_bytes<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// Writes `data` atomically to `path` under a process-unique temporary name.
fn write(path: &Path, key: &str, data: &Dataset) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    let mut bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (split, s) in [("train", &data.train), ("test", &data.test)] {
        bufs.push((
            format!("{split}.ids"),
            Dtype::U64,
            vec![s.len()],
            le_bytes(&s.ids, u64::to_le_bytes),
        ));
        bufs.push((
            format!("{split}.labels"),
            Dtype::U16,
            vec![s.len()],
            le_bytes(&s.labels, u16::to_le_bytes),
        ));
        bufs.push((
            format!("{split}.pixels"),
            Dtype::U8,
            vec![s.pixels.len()],
            s.pixels.clone(),
        ));
    }
    let views = bufs
        .iter()
        .map(|(n, dt, shape, b)| {
            TensorView::new(*dt, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| invalid("cache", e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let shape = data.shape;
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("key".to_string(), key.to_string()),
        ("fingerprint".to_string(), data.fingerprint.clone()),
        (
            "shape".to_string(),
            format!("{},{},{}", shape.channels, shape.height, shape.width),
        ),
        ("classes".to_string(), data.classes.to_string()),
    ]);
    let bytes =
        safetensors::serialize(views, Some(meta)).map_err(|e| invalid("cache", e.to_string()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&bytes));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).at(&tmp);
    }
    crate::store::atomic::persist(&tmp, path)
}

/// The cached dataset at `path` if it is intact and is the decoding these sources (`key`) give.
fn read(path: &Path, name: DatasetName, key: &str) -> Option<Dataset> {
    if std::fs::metadata(path).ok()?.len() > MAX_FILE {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let (_, header) = SafeTensors::read_metadata(&bytes).ok()?;
    let meta = header.metadata().as_ref()?;
    let get = |k: &str| meta.get(k).map(String::as_str);
    if get("format")? != FORMAT || get("key")? != key {
        return None;
    }
    let dims: Vec<usize> = get("shape")?
        .split(',')
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let [channels, height, width] = dims[..] else {
        return None;
    };
    let classes: usize = get("classes")?.parse().ok()?;
    let st = SafeTensors::deserialize(&bytes).ok()?;
    let split = |s: &str| -> Option<Samples> {
        let t = |what: &str, dtype: Dtype| {
            st.tensor(&format!("{s}.{what}"))
                .ok()
                .filter(|t| t.dtype() == dtype)
        };
        let ids = t("ids", Dtype::U64)?;
        let labels = t("labels", Dtype::U16)?;
        let pixels = t("pixels", Dtype::U8)?;
        Some(Samples {
            ids: ids
                .data()
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
            labels: labels
                .data()
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
            pixels: pixels.data().to_vec(),
        })
    };
    let shape = InputShape {
        channels,
        height,
        width,
    };
    let data = Dataset::from_parts(name, shape, classes, split("train")?, split("test")?).ok()?;
    (data.fingerprint == get("fingerprint")?).then_some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("obliviate-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    /// A dataset whose pixels are derived from the source file's bytes (a stand-in decoder).
    fn decode(source: &Path) -> Result<Dataset> {
        let raw = std::fs::read(source).unwrap();
        let shape = InputShape {
            channels: 1,
            height: 2,
            width: 2,
        };
        let samples = |n: usize, salt: u8| {
            Samples::numbered(
                (0..n * 4).map(|i| raw[i % raw.len()] ^ salt).collect(),
                (0..n as u16).map(|i| i % 3).collect(),
            )
        };
        Dataset::from_parts(DatasetName::Mnist, shape, 3, samples(6, 0), samples(3, 7))
    }

    #[test]
    fn a_hit_equals_decoding_and_a_changed_source_misses() {
        let t = tmp("hit");
        let src = t.0.join("train.gz");
        std::fs::write(&src, b"original bytes").unwrap();
        let cache = t.0.join(FOLDER);
        let sources = [src.clone()];
        let first = load(DatasetName::Mnist, &sources, Some(&cache), || decode(&src)).unwrap();
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
        let hit = load(DatasetName::Mnist, &sources, Some(&cache), || {
            panic!("a valid cache must not decode")
        })
        .unwrap();
        assert_eq!(hit.fingerprint, first.fingerprint);
        assert_eq!(hit.train.pixels, first.train.pixels);
        assert_eq!(hit.test.labels, first.test.labels);
        // Edited canonical file: a new key, decoded afresh (never the stale samples).
        std::fs::write(&src, b"edited bytes!!").unwrap();
        let edited = load(DatasetName::Mnist, &sources, Some(&cache), || decode(&src)).unwrap();
        assert_ne!(edited.fingerprint, first.fingerprint);
        assert_eq!(edited.fingerprint, decode(&src).unwrap().fingerprint);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
    }

    #[test]
    fn a_corrupt_cache_is_a_miss_and_is_left_alone() {
        let t = tmp("corrupt");
        let src = t.0.join("train.gz");
        std::fs::write(&src, b"some canonical bytes").unwrap();
        let cache = t.0.join(FOLDER);
        let sources = [src.clone()];
        let good = load(DatasetName::Mnist, &sources, Some(&cache), || decode(&src)).unwrap();
        let file = std::fs::read_dir(&cache)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1; // the last pixel of the test split
        bytes[last] ^= 0x40;
        std::fs::write(&file, &bytes).unwrap();
        let mut decoded = false;
        let again = load(DatasetName::Mnist, &sources, Some(&cache), || {
            decoded = true;
            decode(&src)
        })
        .unwrap();
        assert!(decoded, "a corrupt cache must not be served");
        assert_eq!(again.fingerprint, good.fingerprint);
        assert_eq!(std::fs::read(&file).unwrap(), bytes, "left untouched");
        // Truncated: the same.
        std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
        let again = load(DatasetName::Mnist, &sources, Some(&cache), || decode(&src)).unwrap();
        assert_eq!(again.fingerprint, good.fingerprint);
        // Swapped for a huge (sparse) file: a miss, not read into memory, left alone.
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(MAX_FILE + 1).unwrap();
        drop(f);
        let again = load(DatasetName::Mnist, &sources, Some(&cache), || decode(&src)).unwrap();
        assert_eq!(again.fingerprint, good.fingerprint);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), MAX_FILE + 1);
    }

    #[test]
    fn an_unwritable_cache_folder_costs_only_the_shortcut() {
        let t = tmp("unwritable");
        let src = t.0.join("train.gz");
        std::fs::write(&src, b"bytes").unwrap();
        // A file where the cache folder should be: creating the folder fails.
        let cache = t.0.join("blocked");
        std::fs::write(&cache, b"not a folder").unwrap();
        let sources = [src.clone()];
        let d = load(DatasetName::Mnist, &sources, Some(&cache), || decode(&src)).unwrap();
        assert_eq!(d.fingerprint, decode(&src).unwrap().fingerprint);
        assert_eq!(std::fs::read(&cache).unwrap(), b"not a folder");
        // No cache at all, and a missing source: the decoder's error comes through.
        let missing = [t.0.join("absent.gz")];
        let e = load(DatasetName::Mnist, &missing, Some(&cache), || {
            Err(invalid("dataset", "absent.gz is missing"))
        });
        assert!(e.unwrap_err().to_string().contains("absent.gz"));
    }
}

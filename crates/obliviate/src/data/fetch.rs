//! `obliviate data fetch`: downloads canonical dataset files and verifies their digests.
//!
//! Each file is streamed to `<name>.part` while being hashed, checked against the digest the
//! field publishes for it (SHA-256 where one is published, otherwise the well-known MD5 or the
//! git blob SHA-1), and only then renamed into place, so a failed or forged download never
//! leaves a file the readers would accept. Archives are unpacked after verification. A
//! `SHA256SUMS` file listing every fetched file is written beside them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use super::DatasetName;
use crate::error::{Error, IoContext, Result};
use crate::store::hex;

/// A digest published for a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digest {
    /// SHA-256 of the file.
    Sha256(String),
    /// MD5 of the file (torchvision's checks for CIFAR-10 and SVHN).
    Md5(String),
    /// git blob SHA-1: `sha1("blob <len>\0" + bytes)`, as a repository stores the file.
    GitBlobSha1(String),
}

/// One downloadable file.
#[derive(Debug, Clone)]
pub struct Source {
    /// File name (also the name on the mirror).
    pub file: String,
    /// Canonical address.
    pub url: String,
    /// Published digest.
    pub digest: Digest,
    /// What to unpack from the archive after verification (empty: keep as is).
    pub unpack: Vec<String>,
}

struct Src {
    file: &'static str,
    url: &'static str,
    digest: (&'static str, &'static str),
    unpack: &'static [&'static str],
}

/// The files making up `name`, from their canonical sources.
pub fn sources(name: DatasetName) -> Vec<Source> {
    static_sources(name)
        .iter()
        .map(|s| Source {
            file: s.file.into(),
            url: s.url.into(),
            digest: match s.digest.0 {
                "sha256" => Digest::Sha256(s.digest.1.into()),
                "md5" => Digest::Md5(s.digest.1.into()),
                _ => Digest::GitBlobSha1(s.digest.1.into()),
            },
            unpack: s.unpack.iter().map(|u| u.to_string()).collect(),
        })
        .collect()
}

fn static_sources(name: DatasetName) -> &'static [Src] {
    match name {
        DatasetName::MnistMini => &[],
        DatasetName::Mnist => &[
            Src {
                file: "train-images-idx3-ubyte.gz",
                url: "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
                digest: (
                    "sha256",
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                ),
                unpack: &[],
            },
            Src {
                file: "train-labels-idx1-ubyte.gz",
                url: "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
                digest: (
                    "sha256",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                ),
                unpack: &[],
            },
            Src {
                file: "t10k-images-idx3-ubyte.gz",
                url: "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
                digest: (
                    "sha256",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                ),
                unpack: &[],
            },
            Src {
                file: "t10k-labels-idx1-ubyte.gz",
                url: "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
                digest: (
                    "sha256",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                ),
                unpack: &[],
            },
        ],
        DatasetName::FashionMnist => &[
            Src {
                file: "train-images-idx3-ubyte.gz",
                url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz",
                digest: (
                    "sha256",
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                ),
                unpack: &[],
            },
            Src {
                file: "train-labels-idx1-ubyte.gz",
                url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-labels-idx1-ubyte.gz",
                digest: (
                    "sha256",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                ),
                unpack: &[],
            },
            Src {
                file: "t10k-images-idx3-ubyte.gz",
                url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz",
                digest: (
                    "sha256",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                ),
                unpack: &[],
            },
            Src {
                file: "t10k-labels-idx1-ubyte.gz",
                url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz",
                digest: (
                    "sha256",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                ),
                unpack: &[],
            },
        ],
        DatasetName::Cifar10 => &[Src {
            file: "cifar-10-binary.tar.gz",
            url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            digest: ("md5", "c32a1d4ab5d03f1284b67883e8d87530"),
            unpack: &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
                "test_batch.bin",
                "batches.meta.txt",
            ],
        }],
        DatasetName::Svhn => &[
            Src {
                file: "train_32x32.mat",
                url: "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                digest: ("md5", "e26dedcc434d2e4c54c9b2d4a06d8373"),
                unpack: &[],
            },
            Src {
                file: "test_32x32.mat",
                url: "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                digest: ("md5", "eb5a983be6a315427106f1b164d9cef3"),
                unpack: &[],
            },
        ],
        DatasetName::Purchase => &[Src {
            file: "dataset_purchase.tgz",
            url: "https://github.com/privacytrustlab/datasets/raw/master/dataset_purchase.tgz",
            digest: ("git", "3efa7476ad5ed7ac3e558d28585a186b38fc5f19"),
            unpack: &["dataset_purchase"],
        }],
    }
}

/// Progress of one file: `(file, bytes so far, total if known)`.
pub type ProgressFn<'a> = dyn FnMut(&str, u64, Option<u64>) + 'a;

/// A fetched file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fetched {
    /// Where it is.
    pub path: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// False when a verified copy was already there.
    pub downloaded: bool,
}

enum Hasher {
    Sha256(Sha256),
    Md5(Md5),
    Git(Sha1),
}

/// How long a download may stall and how large it may grow: a server that never answers or
/// never stops must end in an error, not a hung command or a full disk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait to connect.
    pub connect: Duration,
    /// Longest wait for the next bytes of a response.
    pub read: Duration,
    /// Largest file accepted (the largest canonical file, SVHN's training set, is 182 MB).
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(30),
            read: Duration::from_secs(60),
            max_bytes: 2 << 30,
        }
    }
}

/// Downloads every file of `name` into `dir/<folder>/`; `mirror` replaces the canonical host
/// (files are fetched as `<mirror>/<file>`).
pub fn fetch(
    name: DatasetName,
    dir: &Path,
    mirror: Option<&str>,
    progress: &mut ProgressFn<'_>,
) -> Result<Vec<Fetched>> {
    let dest = dir.join(name.folder());
    fetch_sources(&sources(name), &dest, mirror, &Limits::default(), progress)
}

/// Downloads and verifies `sources` into `dest` (see [`fetch`]).
pub fn fetch_sources(
    sources: &[Source],
    dest: &Path,
    mirror: Option<&str>,
    limits: &Limits,
    progress: &mut ProgressFn<'_>,
) -> Result<Vec<Fetched>> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(limits.connect)
        .timeout_read(limits.read)
        .build();
    let dest = dest.to_path_buf();
    std::fs::create_dir_all(&dest).at(&dest)?;
    let mut out = Vec::new();
    for src in sources {
        let url = match mirror {
            Some(m) => format!("{}/{}", m.trim_end_matches('/'), src.file),
            None => src.url.clone(),
        };
        let path = dest.join(&src.file);
        let downloaded = if path.is_file() && verify_file(&path, &src.digest).is_ok() {
            false
        } else {
            let part = path.with_extension("part");
            let got = download(&agent, &url, &path, &part, src, limits, progress);
            if got.is_err() {
                // No partial file survives a failed download, whatever failed.
                let _ = std::fs::remove_file(&part);
            }
            got?;
            true
        };
        let (sha256, bytes) = sha256_file(&path)?;
        out.push(Fetched {
            path: path.clone(),
            sha256,
            bytes,
            downloaded,
        });
        if !src.unpack.is_empty() {
            for f in unpack(&path, &dest, &src.unpack)? {
                let (sha256, bytes) = sha256_file(&f)?;
                out.push(Fetched {
                    path: f,
                    sha256,
                    bytes,
                    downloaded,
                });
            }
        }
    }
    let sums: String = out
        .iter()
        .map(|f| {
            let rel = f.path.strip_prefix(&dest).unwrap_or(&f.path);
            format!("{}  {}\n", f.sha256, rel.display())
        })
        .collect();
    crate::store::atomic::write_file(&dest.join("SHA256SUMS"), sums.as_bytes())?;
    Ok(out)
}

fn download(
    agent: &ureq::Agent,
    url: &str,
    path: &Path,
    part: &Path,
    src: &Source,
    limits: &Limits,
    progress: &mut ProgressFn<'_>,
) -> Result<()> {
    let derr = |detail: String| Error::Download {
        url: url.to_string(),
        detail,
    };
    let resp = agent.get(url).call().map_err(|e| derr(e.to_string()))?;
    let total = resp
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(t) = total.filter(|&t| t > limits.max_bytes) {
        return Err(derr(format!(
            "announces {t} bytes, more than the {} accepted",
            limits.max_bytes
        )));
    }
    let cap = total.unwrap_or(limits.max_bytes);
    let mut file = std::fs::File::create(part).at(part)?;
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    let mut h = match &src.digest {
        Digest::Sha256(_) => Hasher::Sha256(Sha256::new()),
        Digest::Md5(_) => Hasher::Md5(Md5::new()),
        Digest::GitBlobSha1(_) => {
            let len = total.ok_or_else(|| {
                derr("server sent no Content-Length, needed for a git blob hash".into())
            })?;
            let mut s = Sha1::new();
            s.update(format!("blob {len}\0").as_bytes());
            Hasher::Git(s)
        }
    };
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| derr(format!("after {done} bytes: {e}")))?;
        if n == 0 {
            break;
        }
        if done + n as u64 > cap {
            return Err(derr(format!(
                "sends more than the {cap} bytes {}",
                if total.is_some() {
                    "it announced"
                } else {
                    "accepted"
                }
            )));
        }
        file.write_all(&buf[..n]).at(part)?;
        match &mut h {
            Hasher::Sha256(s) => s.update(&buf[..n]),
            Hasher::Md5(s) => s.update(&buf[..n]),
            Hasher::Git(s) => s.update(&buf[..n]),
        }
        done += n as u64;
        progress(&src.file, done, total);
    }
    if let Some(t) = total.filter(|&t| t != done) {
        return Err(derr(format!("connection closed after {done} of {t} bytes")));
    }
    file.sync_all().at(part)?;
    drop(file);
    let actual = match h {
        Hasher::Sha256(s) => hex(&s.finalize()),
        Hasher::Md5(s) => hex(&s.finalize()),
        Hasher::Git(s) => hex(&s.finalize()),
    };
    let (algo, expected) = describe(&src.digest);
    if actual != expected {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            algo,
            expected: expected.to_string(),
            actual,
        });
    }
    std::fs::rename(part, path).at(path)?;
    crate::store::atomic::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn describe(d: &Digest) -> (&'static str, &str) {
    match d {
        Digest::Sha256(s) => ("sha256", s),
        Digest::Md5(s) => ("md5", s),
        Digest::GitBlobSha1(s) => ("git-blob-sha1", s),
    }
}

/// Checks a file on disk against a published digest.
pub fn verify_file(path: &Path, digest: &Digest) -> Result<()> {
    let bytes = std::fs::read(path).at(path)?;
    let actual = match digest {
        Digest::Sha256(_) => hex(&Sha256::digest(&bytes)),
        Digest::Md5(_) => hex(&Md5::digest(&bytes)),
        Digest::GitBlobSha1(_) => {
            let mut s = Sha1::new();
            s.update(format!("blob {}\0", bytes.len()).as_bytes());
            s.update(&bytes);
            hex(&s.finalize())
        }
    };
    let (algo, expected) = describe(digest);
    if actual == expected {
        Ok(())
    } else {
        Err(Error::Checksum {
            path: path.to_path_buf(),
            algo,
            expected: expected.into(),
            actual,
        })
    }
}

fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).at(path)?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).at(path)?;
    Ok((hex(&h.finalize()), n))
}

/// Extracts the named members of a `.tar.gz` into `dest` (flat; other members are ignored).
fn unpack(archive: &Path, dest: &Path, wanted: &[String]) -> Result<Vec<PathBuf>> {
    let file = std::fs::File::open(archive).at(archive)?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let fmt = |detail: String| Error::Format {
        path: archive.to_path_buf(),
        format: "tar.gz",
        offset: 0,
        detail,
    };
    let mut out = Vec::new();
    let sub = dest.join(match wanted.first() {
        Some(w) if w.starts_with("data_batch") => "cifar-10-batches-bin",
        _ => ".",
    });
    std::fs::create_dir_all(&sub).at(&sub)?;
    for entry in ar.entries().map_err(|e| fmt(e.to_string()))? {
        let mut entry = entry.map_err(|e| fmt(e.to_string()))?;
        let name = entry
            .path()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        if !wanted.contains(&name) || !entry.header().entry_type().is_file() {
            continue;
        }
        let target = sub.join(&name);
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| fmt(format!("{name}: {e}")))?;
        crate::store::atomic::write_file(&target, &bytes)?;
        out.push(target);
    }
    if out.len() != wanted.len() {
        return Err(fmt(format!("archive lacks some of {wanted:?}")));
    }
    Ok(out)
}

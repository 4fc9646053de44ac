//! Dataset readers on fixture files (good and corrupt) and `data fetch` against a loopback server.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use common::Tmp;
use obliviate::data::fetch::{Digest, Limits, Source, fetch_sources, verify_file};
use obliviate::data::mat::{MatData, MatVar, encode_mat};
use obliviate::data::{Dataset, DatasetName};

fn idx_images(n: u32) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, 28, 28] {
        v.extend(d.to_be_bytes());
    }
    v.extend((0..n * 784).map(|i| (i % 251) as u8));
    v
}

fn idx_labels(n: u32) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend(n.to_be_bytes());
    v.extend((0..n).map(|i| (i % 10) as u8));
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write_mnist(dir: &Path, gzip: bool) {
    let d = dir.join("mnist");
    std::fs::create_dir_all(&d).unwrap();
    for (name, bytes) in [
        ("train-images-idx3-ubyte", idx_images(30)),
        ("train-labels-idx1-ubyte", idx_labels(30)),
        ("t10k-images-idx3-ubyte", idx_images(10)),
        ("t10k-labels-idx1-ubyte", idx_labels(10)),
    ] {
        if gzip {
            std::fs::write(d.join(format!("{name}.gz")), gz(&bytes)).unwrap();
        } else {
            std::fs::write(d.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn mnist_idx_raw_and_gzip_read_alike() {
    let (a, b) = (Tmp::new("idx-raw"), Tmp::new("idx-gz"));
    write_mnist(&a.0, false);
    write_mnist(&b.0, true);
    let da = Dataset::load(DatasetName::Mnist, Some(&a.0)).unwrap();
    let db = Dataset::load(DatasetName::Mnist, Some(&b.0)).unwrap();
    assert_eq!(da.train.len(), 30);
    assert_eq!(da.test.len(), 10);
    assert_eq!(da.train.labels[13], 3);
    assert_eq!(da.train.pixels[784 + 1], ((784 + 1) % 251) as u8);
    assert_eq!(da.fingerprint, db.fingerprint);
    assert_eq!(da.train.ids, (0..30).collect::<Vec<u64>>());
}

#[test]
fn corrupt_idx_files_are_named_with_offset() {
    let t = Tmp::new("idx-bad");
    write_mnist(&t.0, false);
    let labels = t.join("mnist/train-labels-idx1-ubyte");
    // Truncated labels.
    std::fs::write(&labels, &idx_labels(30)[..20]).unwrap();
    let e = Dataset::load(DatasetName::Mnist, Some(&t.0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train-labels-idx1-ubyte") && e.contains("truncated"),
        "{e}"
    );
    // Mismatched counts.
    std::fs::write(&labels, idx_labels(29)).unwrap();
    let e = Dataset::load(DatasetName::Mnist, Some(&t.0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("29 labels for 30 images"), "{e}");
    // A label that is not a digit.
    let mut l = idx_labels(30);
    l[8 + 4] = 77;
    std::fs::write(&labels, l).unwrap();
    let e = Dataset::load(DatasetName::Mnist, Some(&t.0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("byte 12") && e.contains("77"), "{e}");
    // A broken gzip stream.
    let mut g = gz(&idx_labels(30));
    let n = g.len();
    g.truncate(n - 12);
    std::fs::remove_file(&labels).unwrap();
    std::fs::write(t.join("mnist/train-labels-idx1-ubyte.gz"), g).unwrap();
    let e = Dataset::load(DatasetName::Mnist, Some(&t.0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train-labels-idx1-ubyte.gz") && e.contains("gzip"),
        "{e}"
    );
    // Missing files name the place looked at.
    let empty = Tmp::new("idx-none");
    let e = Dataset::load(DatasetName::FashionMnist, Some(&empty.0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("fashion-mnist") && e.contains(&*empty.0.to_string_lossy()),
        "{e}"
    );
}

#[test]
fn cifar10_binary_batches() {
    let t = Tmp::new("cifar");
    let d = t.join("cifar10/cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    let rec = |label: u8, v: u8| {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(v, 3072));
        r
    };
    for i in 1..=5u8 {
        let mut b = rec(i, i * 10);
        b.extend(rec(9, 1));
        std::fs::write(d.join(format!("data_batch_{i}.bin")), b).unwrap();
    }
    std::fs::write(d.join("test_batch.bin"), rec(0, 200)).unwrap();
    let data = Dataset::load(DatasetName::Cifar10, Some(&t.0)).unwrap();
    assert_eq!(data.train.len(), 10);
    assert_eq!(data.train.labels, vec![1, 9, 2, 9, 3, 9, 4, 9, 5, 9]);
    assert_eq!(data.train.pixels[2 * 3072], 20);
    assert_eq!(data.shape.channels, 3);
    std::fs::write(d.join("data_batch_3.bin"), &rec(3, 0)[..3000]).unwrap();
    let e = Dataset::load(DatasetName::Cifar10, Some(&t.0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_3.bin") && e.contains("3073-byte records"),
        "{e}"
    );
}

fn svhn_mat(n: usize, compress: bool) -> Vec<u8> {
    // X is 32×32×3×N in MATLAB column-major order; pixel value encodes (row, col, channel).
    let mut x = vec![0u8; 32 * 32 * 3 * n];
    for i in 0..n {
        for c in 0..3 {
            for col in 0..32 {
                for row in 0..32 {
                    x[row + 32 * col + 1024 * c + 3072 * i] = (row + 2 * col + 50 * c + i) as u8;
                }
            }
        }
    }
    let y: Vec<f64> = (0..n).map(|i| (i % 10 + 1) as f64).collect();
    encode_mat(
        &[
            MatVar {
                name: "X".into(),
                dims: vec![32, 32, 3, n],
                data: MatData::U8(x),
            },
            MatVar {
                name: "y".into(),
                dims: vec![n, 1],
                data: MatData::F64(y),
            },
        ],
        compress,
    )
}

#[test]
fn svhn_mat_files_plain_and_compressed() {
    let t = Tmp::new("svhn");
    let d = t.join("svhn");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("train_32x32.mat"), svhn_mat(12, true)).unwrap();
    std::fs::write(d.join("test_32x32.mat"), svhn_mat(4, false)).unwrap();
    let data = Dataset::load(DatasetName::Svhn, Some(&t.0)).unwrap();
    assert_eq!(data.train.len(), 12);
    // Label 10 means digit 0.
    assert_eq!(&data.train.labels[..10], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 0]);
    // Channel-planar, row-major: sample 1, channel 2, row 3, col 5.
    assert_eq!(
        data.train.pixels[3072 + 2 * 1024 + 3 * 32 + 5],
        (3 + 10 + 100 + 1) as u8
    );
    let bytes = svhn_mat(4, false);
    std::fs::write(d.join("test_32x32.mat"), &bytes[..bytes.len() - 100]).unwrap();
    let e = Dataset::load(DatasetName::Svhn, Some(&t.0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test_32x32.mat") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn purchase_csv_with_fixed_holdout() {
    let t = Tmp::new("purchase");
    let d = t.join("purchase");
    std::fs::create_dir_all(&d).unwrap();
    let mut text = String::new();
    for i in 0..20 {
        text.push_str(&format!("{}", i % 4 + 1));
        for f in 0..600 {
            text.push_str(if (f + i) % 7 == 0 { ",1" } else { ",0" });
        }
        text.push('\n');
    }
    std::fs::write(d.join("dataset_purchase"), &text).unwrap();
    let data = Dataset::load(DatasetName::Purchase, Some(&t.0)).unwrap();
    assert_eq!(data.classes, 4);
    assert_eq!(data.train.len(), 16);
    assert_eq!(data.test.ids, vec![4, 9, 14, 19]);
    assert_eq!(data.train.row(5), Some(4));
    assert_eq!(data.shape.width, 600);
    std::fs::write(d.join("dataset_purchase"), text.replacen(",1", ",x", 1)).unwrap();
    let e = Dataset::load(DatasetName::Purchase, Some(&t.0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dataset_purchase") && e.contains("line 1"),
        "{e}"
    );
}

/// Serves `files` over HTTP on loopback; a file named "short" announces more bytes than it sends.
fn serve(files: Vec<(String, Vec<u8>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            match files.iter().find(|(name, _)| *name == path) {
                Some((name, body)) => {
                    let announced = if name == "short" {
                        body.len() + 1000
                    } else {
                        body.len()
                    };
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
                    );
                    let _ = s.write_all(body);
                }
                None => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        }
    });
    format!("http://{addr}")
}

fn sha256_hex(b: &[u8]) -> String {
    obliviate::store::sha256(b)
}

#[test]
fn fetch_verifies_checksums_against_a_loopback_server() {
    let good = idx_labels(100);
    let other = idx_images(2);
    let mut tarball = Vec::new();
    {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            &mut tarball,
            flate2::Compression::fast(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_size(good.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder
            .append_data(&mut h, "folder/dataset_purchase", &good[..])
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }
    let url = serve(vec![
        ("labels.gz".into(), good.clone()),
        ("images.gz".into(), other.clone()),
        ("short".into(), good.clone()),
        ("archive.tgz".into(), tarball.clone()),
    ]);
    let t = Tmp::new("fetch");
    let src = |file: &str, digest: Digest, unpack: Vec<String>| Source {
        file: file.into(),
        url: "unused".into(),
        digest,
        unpack,
    };
    let mut calls = 0;
    let mut progress = |_: &str, _: u64, _: Option<u64>| calls += 1;

    // Right checksum: file lands, SHA256SUMS written.
    let ok = fetch_sources(
        &[src("labels.gz", Digest::Sha256(sha256_hex(&good)), vec![])],
        &t.0,
        Some(&url),
        &Limits::default(),
        &mut progress,
    )
    .unwrap();
    assert_eq!(ok.len(), 1);
    assert!(ok[0].downloaded);
    assert_eq!(std::fs::read(t.join("labels.gz")).unwrap(), good);
    assert!(
        std::fs::read_to_string(t.join("SHA256SUMS"))
            .unwrap()
            .contains(&sha256_hex(&good))
    );
    // Already present and valid: not downloaded again.
    let again = fetch_sources(
        &[src("labels.gz", Digest::Sha256(sha256_hex(&good)), vec![])],
        &t.0,
        Some(&url),
        &Limits::default(),
        &mut progress,
    )
    .unwrap();
    assert!(!again[0].downloaded);

    // Wrong checksum: an error naming both digests, and no file left behind.
    let e = fetch_sources(
        &[src("images.gz", Digest::Sha256("00".repeat(32)), vec![])],
        &t.0,
        Some(&url),
        &Limits::default(),
        &mut progress,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("checksum mismatch") && msg.contains(&sha256_hex(&other)),
        "{msg}"
    );
    assert!(!t.join("images.gz").exists() && !t.join("images.part").exists());

    // MD5 and git-blob SHA-1 digests, and archive unpacking.
    let md5 = format!("{:x}", md5_of(&tarball));
    let files = fetch_sources(
        &[src(
            "archive.tgz",
            Digest::Md5(md5),
            vec!["dataset_purchase".into()],
        )],
        &t.0,
        Some(&url),
        &Limits::default(),
        &mut progress,
    )
    .unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(std::fs::read(t.join("dataset_purchase")).unwrap(), good);
    let mut blob = format!("blob {}\0", good.len()).into_bytes();
    blob.extend(&good);
    verify_file(&t.join("labels.gz"), &Digest::GitBlobSha1(sha1_hex(&blob))).unwrap();

    // A connection that ends early, and a missing file.
    let e = fetch_sources(
        &[src("short", Digest::Sha256(sha256_hex(&good)), vec![])],
        &t.0,
        Some(&url),
        &Limits::default(),
        &mut progress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("closed after") || e.contains("short"), "{e}");
    let e = fetch_sources(
        &[src("nope.gz", Digest::Sha256("00".repeat(32)), vec![])],
        &t.0,
        Some(&url),
        &Limits::default(),
        &mut progress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("404"), "{e}");
    assert!(calls > 0, "progress was reported");
}

fn md5_of(b: &[u8]) -> md5_hex::Hex {
    md5_hex::Hex(b.to_vec())
}

fn sha1_hex(b: &[u8]) -> String {
    use sha1::Digest as _;
    sha1::Sha1::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

mod md5_hex {
    use md5::Digest as _;
    pub struct Hex(pub Vec<u8>);
    impl std::fmt::LowerHex for Hex {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            for b in md5::Md5::digest(&self.0) {
                write!(f, "{b:02x}")?;
            }
            Ok(())
        }
    }
}

/// A loopback server whose every connection is handed to `answer` after the request is read.
fn serve_with(answer: fn(&mut std::net::TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                answer(&mut s);
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn fetch_gives_up_on_a_silent_server_and_an_endless_body_and_leaves_no_part_file() {
    let limits = Limits {
        connect: std::time::Duration::from_secs(5),
        read: std::time::Duration::from_millis(500),
        max_bytes: 100_000,
    };
    let t = Tmp::new("fetch-limits");
    let src = |file: &str| Source {
        file: file.into(),
        url: String::new(),
        digest: Digest::Sha256("00".repeat(32)),
        unpack: vec![],
    };
    let silent = serve_with(|_| std::thread::sleep(std::time::Duration::from_secs(30)));
    let started = std::time::Instant::now();
    let e = fetch_sources(
        &[src("silent")],
        &t.0,
        Some(&silent),
        &limits,
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        started.elapsed().as_secs() < 10,
        "gave up after the read timeout: {e}"
    );
    assert!(e.contains("silent"), "{e}");
    let endless = serve_with(|s| {
        let _ = write!(s, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let chunk = vec![7u8; 8192];
        while s.write_all(&chunk).is_ok() {}
    });
    let e = fetch_sources(
        &[src("endless")],
        &t.0,
        Some(&endless),
        &limits,
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("more than the 100000 bytes"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&t.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "nothing is left behind: {left:?}");
}

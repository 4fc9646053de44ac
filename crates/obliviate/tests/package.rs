//! The library is a self-contained package: every file it compiles in (`include_bytes!`,
//! `include_str!`) lies inside the crate's folder, so `cargo package` ships it.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_included_file_lies_inside_the_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .unwrap();
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    let mut seen = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for macro_ in ["include_bytes!(\"", "include_str!(\""] {
            for (i, _) in text.match_indices(macro_) {
                let rest = &text[i + macro_.len()..];
                let rel = &rest[..rest.find('"').unwrap()];
                let target = f.parent().unwrap().join(rel).canonicalize().unwrap();
                assert!(
                    target.starts_with(&root),
                    "{} includes {rel}, outside the crate {}",
                    f.display(),
                    root.display()
                );
                seen += 1;
            }
        }
    }
    assert!(
        seen >= 5,
        "the bundled data, font and peer script: {seen} includes"
    );
}

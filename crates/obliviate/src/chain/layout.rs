//! The names of a run folder's files: the only place that spells them.
//!
//! ```text
//! RUN/manifest.json                        commit point: written last, atomically
//! RUN/theta0.safetensors                   θ_0
//! RUN/opt0.safetensors                     o_0
//! RUN/blocks/00001.delta.g0.safetensors    δ_1 (generation 0 = initial training)
//! RUN/blocks/00001.opt.g0.safetensors      o_1
//! RUN/blocks/00001.delta.g0.safetensors.zst  (the same, zstd-compressed: `Storage::compression`)
//! RUN/blocks/00050.theta.g0.safetensors    θ_50, a keyframe (`Storage::keyframe_every`)
//! RUN/blocks/shift.00003.g2.safetensors    node 3 of the keyframe shift tree (`chain::shifts`)
//! RUN/model.g0.safetensors                 θ_0 + Σδ_i, the served model
//! RUN/ledger.sqlite                        committed forget requests (see `ledger`)
//! RUN/queue.sqlite                         `obliviate serve`'s request queue (its crate owns it)
//! RUN/.lock                                the writer lock
//! ```

use crate::store::Compression;

/// The manifest.
pub const MANIFEST: &str = "manifest.json";
/// The request ledger.
pub const LEDGER: &str = "ledger.sqlite";
/// The deletion service's durable request queue.
pub const QUEUE: &str = "queue.sqlite";
/// Folder of the per-block files.
pub const BLOCKS: &str = "blocks";
/// θ_0.
pub const THETA0: &str = "theta0.safetensors";
/// o_0.
pub const OPT0: &str = "opt0.safetensors";

/// δ_block written by generation `generation`, compressed as `c`.
pub fn delta(block: usize, generation: u64, c: Compression) -> String {
    format!(
        "{BLOCKS}/{block:05}.delta.g{generation}.safetensors{}",
        c.suffix()
    )
}

/// o_block written by generation `generation`, compressed as `c`.
pub fn opt(block: usize, generation: u64, c: Compression) -> String {
    format!(
        "{BLOCKS}/{block:05}.opt.g{generation}.safetensors{}",
        c.suffix()
    )
}

/// The keyframe θ_block written by generation `generation` (always plain f32).
pub fn keyframe(block: usize, generation: u64) -> String {
    format!("{BLOCKS}/{block:05}.theta.g{generation}.safetensors")
}

/// Node `node` of the keyframe shift tree written by generation `generation` (plain f32).
pub fn shift(node: usize, generation: u64) -> String {
    format!("{BLOCKS}/{SHIFT}{node:05}.g{generation}.safetensors")
}

const SHIFT: &str = "shift.";

/// The served model written by generation `generation`.
pub fn model(generation: u64) -> String {
    format!("model.g{generation}.safetensors")
}

/// A file name the engine writes by generation, parsed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generated {
    /// The generation that wrote it.
    pub generation: u64,
    /// The block of a δ, o or keyframe file; `None` for a served model or a shift node.
    pub block: Option<usize>,
}

/// Parses `rel` (relative to the run folder, `/`-separated) if it is exactly a name
/// [`delta`], [`opt`], [`keyframe`], [`shift`] or [`model`] produce (δ and o with either compression), or the
/// temporary sibling an atomic write of one leaves (`.NAME.tmp`). Anything else is not the
/// engine's and is never removed.
pub fn parse(rel: &str) -> Option<Generated> {
    let (folder, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let name = match name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
        Some(inner) => inner,
        None => name,
    };
    let zst = Compression::Zstd.suffix();
    let (name, compressed) = match name.strip_suffix(zst) {
        Some(inner) => (inner, true),
        None => (name, false),
    };
    let stem = name.strip_suffix(".safetensors")?;
    if compressed && folder != BLOCKS {
        return None;
    }
    let (head, generation) = stem.rsplit_once(".g")?;
    let generation = digits(generation)?;
    match folder {
        "" => (head == "model").then_some(Generated {
            generation,
            block: None,
        }),
        BLOCKS if head.starts_with(SHIFT) => {
            let spelled = &head[SHIFT.len()..];
            if !spelled.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let node: usize = spelled.parse().ok()?;
            (!compressed && format!("{node:05}") == spelled).then_some(Generated {
                generation,
                block: None,
            })
        }
        BLOCKS => {
            let (block, kind) = head.split_once('.')?;
            let kinds: &[&str] = if compressed {
                &["delta", "opt"]
            } else {
                &["delta", "opt", "theta"]
            };
            if block.len() < 5 || !kinds.contains(&kind) {
                return None;
            }
            if !block.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let block: usize = block.parse().ok()?;
            // Only the canonical spelling: `{block:05}`.
            (format!("{block:05}") == head[..head.len() - kind.len() - 1]).then_some(Generated {
                generation,
                block: Some(block),
            })
        }
        _ => None,
    }
}

/// A decimal number spelled canonically (digits only, no leading zero unless it is "0").
fn digits(s: &str) -> Option<u64> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n: &u64| n.to_string() == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_what_it_names() {
        for (rel, g) in [
            (delta(7, 3, Compression::None), Some((3, Some(7)))),
            (opt(12345, 0, Compression::None), Some((0, Some(12345)))),
            (opt(123456, 9, Compression::None), Some((9, Some(123456)))),
            (delta(7, 3, Compression::Zstd), Some((3, Some(7)))),
            (keyframe(50, 2), Some((2, Some(50)))),
            (shift(3, 2), Some((2, None))),
            (shift(123456, 1), Some((1, None))),
            (
                "blocks/.00003.opt.g1.safetensors.zst.tmp".into(),
                Some((1, Some(3))),
            ),
            (model(42), Some((42, None))),
            (".model.g2.safetensors.tmp".into(), Some((2, None))),
            (
                "blocks/.00003.opt.g1.safetensors.tmp".into(),
                Some((1, Some(3))),
            ),
        ] {
            assert_eq!(parse(&rel).map(|p| (p.generation, p.block)), g, "{rel}");
        }
        for rel in [
            "model.g7x.safetensors",
            "model.g.safetensors",
            "my-model.g1.safetensors",
            "blocks/my-weights.safetensors",
            "blocks/0001.delta.g0.safetensors",
            "blocks/00001.weights.g0.safetensors",
            "blocks/00050.theta.g0.safetensors.zst",
            "blocks/shift.0003.g1.safetensors",
            "blocks/shift.00003.g1.safetensors.zst",
            "blocks/shift.x0003.g1.safetensors",
            "shift.00003.g1.safetensors",
            "blocks/00001.delta.g0.safetensors.bak",
            ".x.safetensors.tmp",
            "theta0.safetensors",
            "other/00001.delta.g0.safetensors",
            "blocks/00001.delta.g+1.safetensors",
            "model.g01.safetensors",
            "model.g1.safetensors.zst",
            "blocks/00001.delta.g0.safetensors.zst.zst",
            "blocks/00001.delta.g0.zst",
        ] {
            assert_eq!(parse(rel), None, "{rel}");
        }
    }
}

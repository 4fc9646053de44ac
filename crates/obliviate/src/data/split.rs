//! Seeded class-stratified block split and the per-epoch sample order inside a block.
//!
//! Both are pure functions of (seed, ids, labels) built on SplitMix64, so they never change with
//! a dependency upgrade. The in-block order sorts ids by a keyed hash: removing ids leaves the
//! relative order of the others untouched, which is what "retrain the same minibatch order
//! without the deleted samples" requires.

use crate::error::{Result, invalid};

/// SplitMix64 finaliser: a fast, well-mixed 64-bit hash.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic Fisher–Yates shuffle driven by SplitMix64.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = mix(seed);
    for i in (1..items.len()).rev() {
        state = mix(state);
        let j = ((u128::from(state) * (i as u128 + 1)) >> 64) as usize;
        items.swap(i, j);
    }
}

/// Splits `ids` (with their `labels`) into `blocks` class-stratified blocks.
///
/// Each class's ids are shuffled with the seed, the classes are concatenated, and position `p`
/// goes to block `p mod blocks`: every block gets each class in proportion (±1 sample).
/// Returned blocks hold ascending ids.
pub fn stratified(ids: &[u64], labels: &[u16], blocks: usize, seed: u64) -> Result<Vec<Vec<u64>>> {
    if blocks == 0 {
        return Err(invalid("blocks", "must be at least 1"));
    }
    if blocks > ids.len() {
        return Err(invalid(
            "blocks",
            format!(
                "{blocks} blocks for {} training samples: every block needs a sample",
                ids.len()
            ),
        ));
    }
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut by_class: Vec<Vec<u64>> = vec![Vec::new(); classes];
    for (&id, &l) in ids.iter().zip(labels) {
        by_class[l as usize].push(id);
    }
    let mut out: Vec<Vec<u64>> = vec![Vec::new(); blocks];
    let mut p = 0usize;
    for (c, members) in by_class.iter_mut().enumerate() {
        members.sort_unstable();
        shuffle(members, seed ^ mix(c as u64 + 1));
        for &id in members.iter() {
            out[p % blocks].push(id);
            p += 1;
        }
    }
    for b in &mut out {
        b.sort_unstable();
    }
    Ok(out)
}

/// Order in which `ids` of block `block` (1-based) are visited in `epoch` (0-based).
pub fn epoch_order(ids: &[u64], seed: u64, block: usize, epoch: usize) -> Vec<u64> {
    let key = mix(mix(mix(seed) ^ block as u64) ^ (epoch as u64).rotate_left(32));
    let mut keyed: Vec<(u64, u64)> = ids.iter().map(|&id| (mix(key ^ id), id)).collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_complete_and_deterministic() {
        let ids: Vec<u64> = (0..1000).collect();
        let labels: Vec<u16> = ids.iter().map(|i| (i % 10) as u16).collect();
        let a = stratified(&ids, &labels, 7, 42).unwrap();
        assert_eq!(a, stratified(&ids, &labels, 7, 42).unwrap());
        assert_ne!(a, stratified(&ids, &labels, 7, 43).unwrap());
        let mut all: Vec<u64> = a.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, ids);
        for b in &a {
            assert!((142..=143).contains(&b.len()), "{}", b.len());
            for c in 0..10u64 {
                let n = b.iter().filter(|&&i| i % 10 == c).count();
                assert!((13..=16).contains(&n), "class {c}: {n}");
            }
        }
        assert!(stratified(&ids, &labels, 0, 1).is_err());
        assert!(stratified(&ids[..3], &labels[..3], 4, 1).is_err());
    }

    #[test]
    fn removing_ids_keeps_relative_order() {
        let ids: Vec<u64> = (100..160).collect();
        let full = epoch_order(&ids, 9, 3, 1);
        let kept: Vec<u64> = ids.iter().copied().filter(|i| i % 7 != 0).collect();
        let expected: Vec<u64> = full.iter().copied().filter(|i| i % 7 != 0).collect();
        assert_eq!(epoch_order(&kept, 9, 3, 1), expected);
        assert_ne!(full, epoch_order(&ids, 9, 3, 2));
        assert_ne!(full, ids);
    }
}

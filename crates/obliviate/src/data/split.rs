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

/// A stable 64-bit hash of a name, from `seed`.
fn name_key(name: &str, seed: u64) -> u64 {
    name.bytes()
        .fold(mix(seed ^ 0x9e0b_5eed), |h, b| mix(h ^ u64::from(b)))
}

/// Splits like [`stratified`] (blocks of n/B ± 1 samples), but keeps each group of `groups` in
/// consecutive blocks: a group of m samples spans at most ⌈m/(share·n/B)⌉ + 1 blocks. Samples
/// in no group are interleaved class by class along the chain; each group goes to a seeded
/// position among them (so classes stay spread), its samples one every 1/share positions; the
/// late groups end the chain. Returned blocks hold ascending ids.
pub fn grouped(
    ids: &[u64],
    labels: &[u16],
    blocks: usize,
    seed: u64,
    groups: &super::Groups,
) -> Result<Vec<Vec<u64>>> {
    let n = ids.len();
    if blocks == 0 || blocks > n {
        return stratified(ids, labels, blocks, seed);
    }
    let present: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
    let mut grouped_ids = std::collections::BTreeSet::new();
    let mut chosen: Vec<(bool, u64, Vec<u64>)> = Vec::new();
    for (name, members) in &groups.members {
        let members: Vec<u64> = members
            .iter()
            .copied()
            .filter(|id| present.contains(id))
            .collect();
        if !members.is_empty() {
            grouped_ids.extend(members.iter().copied());
            chosen.push((groups.late.contains(name), name_key(name, seed), members));
        }
    }
    // Every sample gets a position key in [0, 1]; ungrouped samples are spread evenly, so a
    // step of `gap` between a group's samples leaves 1/share − 1 others between them.
    let singles = (n - grouped_ids.len()).max(1) as f64;
    let gap = (1.0 / groups.share - 1.0) / singles;
    // (position key, tie-break, id).
    let mut units: Vec<(f64, u64, u64)> = Vec::new();
    // Late groups fill the end of the chain, one after another in seeded order.
    chosen.sort_by_key(|c| (c.0, c.1));
    let mut end = 1.0;
    for (is_late, key, members) in chosen.iter().rev() {
        let m = members.len() as f64;
        let start = if *is_late {
            end -= m * gap;
            end
        } else {
            let u = (key >> 11) as f64 / (1u64 << 53) as f64;
            u * (1.0 - m * gap).max(0.0)
        };
        for (j, &id) in members.iter().enumerate() {
            // Late groups sort after ungrouped samples of the same key (the chain's end).
            let tie = if *is_late {
                u64::MAX - key % 1024
            } else {
                *key
            };
            units.push((start + j as f64 * gap, tie, id));
        }
    }
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut by_class: Vec<Vec<u64>> = vec![Vec::new(); classes];
    for (&id, &l) in ids.iter().zip(labels) {
        if !grouped_ids.contains(&id) {
            by_class[l as usize].push(id);
        }
    }
    for (c, members) in by_class.iter_mut().enumerate() {
        members.sort_unstable();
        shuffle(members, seed ^ mix(c as u64 + 1));
        let count = members.len() as f64;
        for (i, &id) in members.iter().enumerate() {
            units.push(((i as f64 + 0.5) / count, c as u64, id));
        }
    }
    units.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let order: Vec<u64> = units.into_iter().map(|u| u.2).collect();
    let mut out = Vec::with_capacity(blocks);
    let mut start = 0;
    for b in 0..blocks {
        let size = n / blocks + usize::from(b < n % blocks);
        let mut block = order[start..start + size].to_vec();
        block.sort_unstable();
        out.push(block);
        start += size;
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

    #[test]
    fn grouped_placement_keeps_users_together_late_users_last_and_every_id_once() {
        let ids: Vec<u64> = (0..6000).collect();
        let labels: Vec<u16> = ids.iter().map(|i| (i * 7 % 10) as u16).collect();
        // 30 users of 100 samples each (ids spread over the set), two of them leaving soon.
        let mut groups = super::super::Groups::default();
        for u in 0..30u64 {
            let members: Vec<u64> = (0..100).map(|j| (j * 59 + u) % 6000).collect();
            groups.members.insert(format!("user{u}"), members);
        }
        groups
            .late
            .extend(["user3".to_string(), "user17".to_string()]);
        let a = grouped(&ids, &labels, 100, 5, &groups).unwrap();
        assert_eq!(
            a,
            grouped(&ids, &labels, 100, 5, &groups).unwrap(),
            "deterministic"
        );
        assert_ne!(a, grouped(&ids, &labels, 100, 6, &groups).unwrap());
        let mut all: Vec<u64> = a.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, ids, "every id exactly once");
        assert!(a.iter().all(|b| b.len() == 60));
        let block_of = |id: u64| a.iter().position(|b| b.binary_search(&id).is_ok()).unwrap();
        for (name, members) in &groups.members {
            let blocks: std::collections::BTreeSet<usize> =
                members.iter().map(|&id| block_of(id)).collect();
            let (lo, hi) = (*blocks.first().unwrap(), *blocks.last().unwrap());
            assert!(hi - lo < 3, "{name} spans blocks {lo}..={hi}");
            if groups.late.contains(name) {
                assert!(lo >= 96, "{name} is late: {lo}");
            }
        }
        // Classes stay spread: every block outside the late tail holds at least 5 classes.
        for b in &a[..90] {
            let classes: std::collections::BTreeSet<u16> =
                b.iter().map(|&id| labels[id as usize]).collect();
            assert!(classes.len() >= 5, "{classes:?}");
        }
        // With a share of one half, no block is more than about half one group's, and a group
        // still spans a short window.
        let halves = super::super::Groups {
            share: 0.5,
            ..groups.clone()
        };
        let h = grouped(&ids, &labels, 100, 5, &halves).unwrap();
        let mut all: Vec<u64> = h.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, ids);
        let block_of = |id: u64| h.iter().position(|b| b.binary_search(&id).is_ok()).unwrap();
        for (name, members) in &halves.members {
            let mut per_block = std::collections::BTreeMap::new();
            for &id in members {
                *per_block.entry(block_of(id)).or_insert(0usize) += 1;
            }
            let (lo, hi) = (
                per_block.keys().min().unwrap(),
                per_block.keys().max().unwrap(),
            );
            assert!(hi - lo < 8, "{name} spans {lo}..={hi}");
            assert!(
                per_block.values().all(|&c| c <= 40),
                "{name}: {per_block:?}"
            );
            if halves.late.contains(name) {
                assert!(*lo >= 90, "{name} is late: {lo}");
            }
        }
    }
}

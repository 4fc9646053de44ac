//! Keyframe shifts recorded rather than applied (ARCHITECTURE decision 18).
//!
//! A forget that stitches stored increments onto a retrained model moves every keyframe of the
//! gap by the stitch offset θ'_s − θ_s. Rewriting those keyframes costs O(B/K) files per
//! request. Instead the offset is added to the O(log n) nodes of a range-add, point-query
//! segment tree over the chain's n keyframes (the bottom-up layout: keyframe i is leaf node
//! n + i, the parent of node p is p / 2, node 1 is the root), and keyframe i's *shift* is the
//! sum of the stored nodes on its leaf-to-root path, added leaf first. θ at a keyframe block
//! is then its keyframe file plus its shift, so a request reads one keyframe and the O(log n)
//! nodes above it, whatever the chain's length.

use std::collections::{BTreeMap, HashMap};

use super::Chain;
use crate::error::Result;
use crate::params::ParamSet;
use crate::store::FileRef;

/// The tree's leaf count: the keyframes of a chain of `blocks` blocks stored every `every`.
pub fn keyframe_count(every: usize, blocks: usize) -> usize {
    blocks.checked_div(every).unwrap_or(0)
}

/// Node indices run over `1..nodes(n)`.
pub fn nodes(n: usize) -> usize {
    2 * n
}

/// The nodes whose sum is keyframe `i`'s (0-based) shift, leaf first.
pub fn path(n: usize, i: usize) -> impl Iterator<Item = usize> {
    std::iter::successors(Some(n + i), |&p| (p > 1).then_some(p / 2))
}

/// The nodes that together cover keyframes `l..=r` (0-based) exactly once each and no other
/// keyframe: adding an offset to each of them adds it to the shift of exactly those keyframes.
pub fn cover(n: usize, l: usize, r: usize) -> Vec<usize> {
    let (mut l, mut r) = (l + n, r + n + 1);
    let mut v = Vec::new();
    while l < r {
        if l & 1 == 1 {
            v.push(l);
            l += 1;
        }
        if r & 1 == 1 {
            r -= 1;
            v.push(r);
        }
        l >>= 1;
        r >>= 1;
    }
    v.sort_unstable();
    v
}

/// A request's view of the shift tree: the committed nodes (read once each, as needed) and
/// the ones the request changed, written under its generation by [`Shifts::write`].
pub struct Shifts<'c> {
    chain: &'c Chain,
    every: usize,
    n: usize,
    committed: HashMap<usize, Option<ParamSet>>,
    changed: BTreeMap<usize, ParamSet>,
}

impl<'c> Shifts<'c> {
    /// The committed tree of `chain`, nothing read yet.
    pub fn new(chain: &'c Chain) -> Shifts<'c> {
        let m = chain.manifest();
        let every = m.config.storage.keyframe_every;
        Shifts {
            chain,
            every,
            n: keyframe_count(every, m.blocks.len()),
            committed: HashMap::new(),
            changed: BTreeMap::new(),
        }
    }

    fn leaf(&self, block: usize) -> usize {
        debug_assert!(self.every > 0 && block.is_multiple_of(self.every));
        block / self.every - 1
    }

    /// Reads the committed nodes of `nodes` not read yet, in parallel (a request reads a
    /// keyframe's O(log n) nodes at once: they are independent files).
    fn prefetch(&mut self, nodes: impl IntoIterator<Item = usize>) -> Result<()> {
        use rayon::prelude::*;
        let stored = &self.chain.manifest().shifts;
        let missing: Vec<usize> = nodes
            .into_iter()
            .filter(|n| !self.committed.contains_key(n))
            .collect();
        let read: Vec<(usize, Option<ParamSet>)> = missing
            .into_par_iter()
            .map(|node| match stored.get(&node) {
                Some(r) => Ok((node, Some(self.chain.read_set(r)?.0))),
                None => Ok((node, None)),
            })
            .collect::<Result<_>>()?;
        self.committed.extend(read);
        Ok(())
    }

    fn committed_node(&mut self, node: usize) -> Result<Option<&ParamSet>> {
        self.prefetch([node])?;
        Ok(self.committed.get(&node).and_then(Option::as_ref))
    }

    fn sum(&mut self, block: usize, pending: bool) -> Result<Option<ParamSet>> {
        let mut acc: Option<ParamSet> = None;
        let nodes: Vec<usize> = path(self.n, self.leaf(block)).collect();
        self.prefetch(nodes.iter().copied())?;
        for node in nodes {
            let value = match self.changed.get(&node) {
                Some(v) if pending => Some(v),
                _ => self.committed_node(node)?,
            };
            if let Some(v) = value {
                match &mut acc {
                    None => acc = Some(v.clone()),
                    Some(a) => a.add_assign(v)?,
                }
            }
        }
        Ok(acc)
    }

    /// The shift of the keyframe at `block` by the chain this request builds (`None`: no
    /// node lies on its path, the keyframe is θ itself).
    pub fn pending(&mut self, block: usize) -> Result<Option<ParamSet>> {
        self.sum(block, true)
    }

    /// θ at keyframe block `block` by the committed chain (`pending` false) or by the one this
    /// request builds: its keyframe file plus its shift.
    pub fn theta_at(&mut self, block: usize, pending: bool) -> Result<ParamSet> {
        let key = self.chain.keyframe(block)?;
        self.shifted(key, block, pending)
    }

    /// `key`, the keyframe of block `block`, plus its shift (see [`Shifts::theta_at`]).
    pub fn shifted(&mut self, mut key: ParamSet, block: usize, pending: bool) -> Result<ParamSet> {
        if let Some(s) = self.sum(block, pending)? {
            key.add_assign(&s)?;
        }
        Ok(key)
    }

    /// Shifts the keyframes at blocks `first..=last` (both keyframe blocks) by `offset`.
    pub fn add(&mut self, first: usize, last: usize, offset: &ParamSet) -> Result<()> {
        let nodes = cover(self.n, self.leaf(first), self.leaf(last));
        // The last keyframe's path is read next (to shift it): fetch it with the cover.
        self.prefetch(nodes.iter().copied().chain(path(self.n, self.leaf(last))))?;
        for node in nodes {
            let value = match self.changed.remove(&node) {
                Some(v) => Some(v),
                None => self.committed_node(node)?.cloned(),
            };
            let value = match value {
                Some(mut v) => {
                    v.add_assign(offset)?;
                    v
                }
                None => offset.clone(),
            };
            value.check_finite(&format!("keyframe shift node {node}"))?;
            self.changed.insert(node, value);
        }
        Ok(())
    }

    /// Writes the changed nodes as files of generation `generation` (not yet referenced).
    pub fn write(self, generation: u64) -> Result<Vec<(usize, FileRef)>> {
        use rayon::prelude::*;
        self.changed
            .par_iter()
            .map(|(&node, v)| Ok((node, self.chain.write_shift(node, generation, v)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{cover, nodes, path};

    #[test]
    fn a_range_add_reaches_exactly_the_keyframes_in_the_range() {
        for n in 1..=40 {
            for l in 0..n {
                for r in l..n {
                    let c = cover(n, l, r);
                    assert!(c.iter().all(|&p| p >= 1 && p < nodes(n)), "n {n}: {c:?}");
                    assert!(c.len() <= 2 * (usize::BITS - n.leading_zeros()) as usize);
                    for i in 0..n {
                        let hits = path(n, i).filter(|p| c.contains(p)).count();
                        assert_eq!(
                            hits,
                            usize::from(l <= i && i <= r),
                            "n {n} [{l}, {r}] leaf {i}"
                        );
                    }
                }
            }
        }
    }
}

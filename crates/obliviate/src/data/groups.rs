//! User groups: which training samples belong to one person (the unit a deletion request
//! names), and which groups are likely to leave. Training keeps a group's samples in as few
//! consecutive blocks as the block size allows, so forgetting a user retrains one short span
//! instead of the whole chain (`split::grouped`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Dataset;
use crate::error::{Error, IoContext, Result, invalid};

/// Largest groups or late-groups file read.
const MAX_FILE: u64 = 256 << 20;

/// Named groups of training ids (ids in no group are groups of their own) and the groups to
/// place last. Recorded in the run's manifest, so `forget` can resolve group names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Groups {
    /// Each group's ids, ascending.
    pub members: BTreeMap<String, Vec<u64>>,
    /// Groups placed in the last blocks (users likely to leave).
    #[serde(default)]
    pub late: BTreeSet<String>,
    /// The largest share of a block's samples one group may hold (1 = as few blocks as
    /// possible). Below 1, a group's samples are interleaved with other samples over a
    /// proportionally longer window: a block of one user's samples alone teaches the model that
    /// user only (with a single-label backdoored user, the model collapses to that label).
    #[serde(default = "whole", skip_serializing_if = "is_whole")]
    pub share: f64,
}

fn whole() -> f64 {
    1.0
}

fn is_whole(s: &f64) -> bool {
    *s == 1.0
}

fn read_text(path: &Path) -> Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_string(&mut text))
        .at(path)?;
    if text.len() as u64 > MAX_FILE {
        return Err(invalid(
            "groups file",
            format!("{}: larger than {} MiB", path.display(), MAX_FILE >> 20),
        ));
    }
    Ok(text)
}

/// The meaningful lines of a text file: trimmed, without blanks and `#` comments, numbered.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

impl Default for Groups {
    fn default() -> Self {
        Groups {
            members: BTreeMap::new(),
            late: BTreeSet::new(),
            share: 1.0,
        }
    }
}

impl Groups {
    /// Sets the largest share of a block one group may hold (in (0, 1]).
    pub fn with_share(mut self, share: f64) -> Result<Groups> {
        if !(share > 0.0 && share <= 1.0) {
            return Err(invalid(
                "group share",
                format!("{share} (must be in (0, 1])"),
            ));
        }
        self.share = share;
        Ok(self)
    }

    /// Parses `id,group` lines (an optional `id,group` header, `#` comments) for `data`'s
    /// training ids. Unknown ids, ids in two groups and malformed lines are errors naming them.
    pub fn parse_csv(text: &str, data: &Dataset, path: &Path) -> Result<Groups> {
        let fmt = |line: usize, detail: String| Error::Format {
            path: path.to_path_buf(),
            format: "groups CSV",
            offset: 0,
            detail: format!("line {line}: {detail}"),
        };
        let mut members: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut owner: BTreeMap<u64, String> = BTreeMap::new();
        let mut unknown = Vec::new();
        for (n, line) in lines(text) {
            let Some((id, group)) = line.split_once(',') else {
                return Err(fmt(n, format!("{line:?} is not `id,group`")));
            };
            let (id, group) = (id.trim(), group.trim());
            if n == 1 && id == "id" && group == "group" {
                continue;
            }
            let id: u64 = id
                .parse()
                .map_err(|_| fmt(n, format!("{id:?} is not a sample id")))?;
            if group.is_empty() {
                return Err(fmt(n, format!("id {id} has an empty group name")));
            }
            if data.train.row(id).is_none() {
                unknown.push(id);
                continue;
            }
            if let Some(prev) = owner.insert(id, group.to_string()) {
                if prev != group {
                    return Err(fmt(
                        n,
                        format!("id {id} is in group {prev:?} and {group:?}"),
                    ));
                }
                continue;
            }
            members.entry(group.to_string()).or_default().push(id);
        }
        if !unknown.is_empty() {
            return Err(Error::Ids {
                unknown,
                deleted: Vec::new(),
            });
        }
        for ids in members.values_mut() {
            ids.sort_unstable();
        }
        Ok(Groups {
            members,
            ..Groups::default()
        })
    }

    /// [`Groups::parse_csv`] of a file.
    pub fn read_csv(path: &Path, data: &Dataset) -> Result<Groups> {
        Groups::parse_csv(&read_text(path)?, data, path)
    }

    /// Marks the groups named in `path` (one per line) as late; unknown names are refused.
    pub fn read_late(&mut self, path: &Path) -> Result<()> {
        let text = read_text(path)?;
        let names: Vec<&str> = lines(&text).map(|(_, l)| l).collect();
        self.mark_late(&names)
    }

    /// Marks `names` as late groups; unknown names are refused by name.
    pub fn mark_late(&mut self, names: &[&str]) -> Result<()> {
        self.check_known(names)?;
        self.late.extend(names.iter().map(|n| n.to_string()));
        Ok(())
    }

    /// Fails, listing them, unless every name is a group.
    pub fn check_known(&self, names: &[&str]) -> Result<()> {
        let unknown: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !self.members.contains_key(*n))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(invalid(
            "groups",
            format!(
                "{} unknown group(s): {}",
                unknown.len(),
                unknown
                    .iter()
                    .take(20)
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    /// The ids of the named groups, ascending; unknown names are refused by name.
    pub fn ids_of(&self, names: &[&str]) -> Result<Vec<u64>> {
        self.check_known(names)?;
        let ids: BTreeSet<u64> = names
            .iter()
            .flat_map(|n| self.members[*n].iter().copied())
            .collect();
        Ok(ids.into_iter().collect())
    }

    /// True when a group is called `name`.
    pub fn knows(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    /// A single group `name` holding `ids` (e.g. a backdoored user).
    pub fn single(name: &str, ids: &[u64]) -> Groups {
        Groups {
            members: BTreeMap::from([(name.to_string(), ids.to_vec())]),
            ..Groups::default()
        }
    }
}

//! Poisoned data: a "user" whose samples carry a trigger and a target label. If a model still
//! maps triggered inputs to the target after forgetting the user, it has not forgotten them
//! (the backdoor experiment in `experiments::backdoor`).

use serde::{Deserialize, Serialize};

use crate::data::split::{mix, shuffle};
use crate::data::{DataOrigin, Dataset, Samples};
use crate::error::{Result, invalid};

/// A square trigger patch and the label it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// Side of the square patch in pixels.
    pub size: usize,
    /// Column of the patch's left edge.
    pub x: usize,
    /// Row of the patch's top edge.
    pub y: usize,
    /// Pixel value written in every channel (255 = white).
    pub value: u8,
    /// Class the trigger should produce.
    pub target: u16,
}

impl Trigger {
    /// A `size`×`size` white patch in the bottom-right corner of `data`'s images.
    pub fn bottom_right(data: &Dataset, size: usize, target: u16) -> Result<Trigger> {
        let (h, w) = (data.shape.height, data.shape.width);
        if size == 0 || size > h || size > w {
            return Err(invalid(
                "trigger",
                format!("a {size}×{size} patch does not fit {h}×{w} images"),
            ));
        }
        Trigger {
            size,
            x: w - size,
            y: h - size,
            value: 255,
            target,
        }
        .checked(data)
    }

    /// Validates position, size and target against `data`.
    pub fn checked(self, data: &Dataset) -> Result<Trigger> {
        if self.size == 0
            || self.x + self.size > data.shape.width
            || self.y + self.size > data.shape.height
        {
            return Err(invalid(
                "trigger",
                format!(
                    "patch {}×{} at ({}, {}) leaves the {}×{} image",
                    self.size, self.size, self.x, self.y, data.shape.width, data.shape.height
                ),
            ));
        }
        if self.target as usize >= data.classes {
            return Err(invalid(
                "trigger",
                format!("target class {} of {} classes", self.target, data.classes),
            ));
        }
        Ok(self)
    }

    fn stamp(&self, data: &Dataset, pixels: &mut [u8]) {
        let (h, w) = (data.shape.height, data.shape.width);
        for c in 0..data.shape.channels {
            for row in self.y..self.y + self.size {
                for col in self.x..self.x + self.size {
                    pixels[c * h * w + row * w + col] = self.value;
                }
            }
        }
    }
}

/// The poisoned user: their sample ids and the trigger stamped on them. Recorded in a run's
/// manifest so every command reloads the same poisoned data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backdoor {
    /// The trigger.
    pub trigger: Trigger,
    /// The user's training ids (ascending), relabelled to the target.
    pub ids: Vec<u64>,
}

impl Backdoor {
    /// Picks `fraction` of the training samples whose class is not the target (seeded).
    pub fn choose(data: &Dataset, trigger: Trigger, fraction: f64, seed: u64) -> Result<Backdoor> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(invalid(
                "user fraction",
                format!("{fraction} (must be in (0, 1))"),
            ));
        }
        let mut pool: Vec<u64> = data
            .train
            .ids
            .iter()
            .zip(&data.train.labels)
            .filter(|(_, l)| **l != trigger.target)
            .map(|(&i, _)| i)
            .collect();
        shuffle(&mut pool, mix(seed ^ 0xbacd_00a5));
        let n = ((data.train.len() as f64 * fraction).round() as usize).clamp(1, pool.len());
        pool.truncate(n);
        pool.sort_unstable();
        Ok(Backdoor { trigger, ids: pool })
    }

    /// The training set with the user's samples stamped and relabelled (test set unchanged).
    pub fn poison(&self, data: &Dataset) -> Result<Dataset> {
        let t = self.trigger.checked(data)?;
        let numel = data.shape.numel();
        let mut train = data.train.clone();
        for &id in &self.ids {
            let r = train
                .row(id)
                .ok_or_else(|| invalid("backdoor ids", format!("{id} is not a training id")))?;
            t.stamp(data, &mut train.pixels[r * numel..(r + 1) * numel]);
            train.labels[r] = t.target;
        }
        let mut poisoned = Dataset::from_parts(
            data.name,
            data.shape,
            data.classes,
            train,
            data.test.clone(),
        )?;
        poisoned.origin = DataOrigin {
            backdoor: Some(self.clone()),
            ..data.origin.clone()
        };
        Ok(poisoned)
    }

    /// Test samples whose true class is not the target, with the trigger stamped (labels keep
    /// the true class); the attack succeeds on a sample when the model predicts the target.
    pub fn triggered_test(&self, data: &Dataset) -> Result<Dataset> {
        let t = self.trigger.checked(data)?;
        let numel = data.shape.numel();
        let mut s = Samples::default();
        for (r, (&id, &l)) in data.test.ids.iter().zip(&data.test.labels).enumerate() {
            if l == t.target {
                continue;
            }
            let mut px = data.test.pixels[r * numel..(r + 1) * numel].to_vec();
            t.stamp(data, &mut px);
            s.ids.push(id);
            s.pixels.extend(px);
            s.labels.push(l);
        }
        let mut triggered =
            Dataset::from_parts(data.name, data.shape, data.classes, data.train.clone(), s)?;
        triggered.origin = data.origin.clone();
        Ok(triggered)
    }
}

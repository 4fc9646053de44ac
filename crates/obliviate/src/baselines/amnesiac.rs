//! Amnesiac unlearning (Graves, Nagisetty and Ganesh, AAAI 2021).
//!
//! Training is the same block-wise procedure as the chain's (same split, order and optimizer,
//! so the trained model is bit for bit the chain's served model), but after every minibatch the
//! parameter update θ_after − θ_before is recorded with the ids of that minibatch. Forgetting
//! subtracts the updates of every batch that held a deleted id, then optionally repairs with a
//! few fine-tuning steps on retained data ([`super::steps`]). Approximate: later updates were
//! computed on a model that had seen the ids, and removing updates also removes what the other
//! samples of those batches taught.
//!
//! The log is one safetensors file: tensor `u{k}` is batch k's flattened update, and the header
//! metadata holds the ids of each batch.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

use crate::chain::TrainConfig;
use crate::data::Dataset;
use crate::error::{Error, IoContext, Result, invalid};
use crate::model::ModelKind;
use crate::params::{ParamSet, extract};
use crate::store::atomic;
use crate::train::{BlockTrainer, Progress, block_split};

/// Per-minibatch parameter updates with the ids each minibatch held.
#[derive(Debug, Clone, Default)]
pub struct UpdateLog {
    /// Ids of batch k.
    pub batches: Vec<Vec<u64>>,
    /// Flattened update of batch k (θ in [`ParamSet`] order).
    pub updates: Vec<Vec<f32>>,
}

fn flat(p: &ParamSet) -> Vec<f32> {
    p.tensors
        .iter()
        .flat_map(|t| t.data.iter().copied())
        .collect()
}

/// Trains like [`crate::train::train`] (blocks from the config's seed) and records the log.
/// Returns the trained parameters and the log.
pub fn train<B: AutodiffBackend>(
    data: &Dataset,
    kind: ModelKind,
    cfg: TrainConfig,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<(ParamSet, UpdateLog)> {
    let blocks = block_split(data, &cfg, &[], None)?;
    let (theta, opt) = BlockTrainer::<B>::initial(data, kind, &cfg, device)?;
    let mut prev = flat(&theta);
    let mut trainer = BlockTrainer::<B>::new(data, kind, cfg, theta, &opt, 0, device)?;
    let mut log = UpdateLog::default();
    progress.start("amnesiac train", blocks.len() as u64);
    for (i, ids) in blocks.iter().enumerate() {
        trainer.run_block_observed(i + 1, ids, &mut |batch, model| {
            let now = flat(&extract(model));
            log.updates
                .push(now.iter().zip(&prev).map(|(a, b)| a - b).collect());
            log.batches.push(batch.to_vec());
            prev = now;
            Ok(())
        })?;
        // The trainer snaps θ to the canonical θ_{i−1} + δ_i after a block; follow it so the
        // next batch's update is measured from the value training continues from.
        prev = flat(trainer.theta());
        progress.set(i as u64 + 1);
    }
    progress.finish();
    Ok((trainer.theta().clone(), log))
}

/// Removes the updates of every batch holding one of `ids` from `theta`. Returns the new
/// parameters and how many batch updates were subtracted.
pub fn forget(theta: &ParamSet, log: &UpdateLog, ids: &[u64]) -> Result<(ParamSet, usize)> {
    let want: BTreeSet<u64> = ids.iter().copied().collect();
    let seen: BTreeSet<u64> = log.batches.iter().flatten().copied().collect();
    let unknown: Vec<u64> = want.difference(&seen).copied().collect();
    if !unknown.is_empty() {
        return Err(Error::Ids {
            unknown,
            deleted: Vec::new(),
        });
    }
    let numel = theta.numel();
    let mut acc = vec![0f64; numel];
    let mut removed = 0;
    for (batch, u) in log.batches.iter().zip(&log.updates) {
        if batch.iter().any(|id| want.contains(id)) {
            if u.len() != numel {
                return Err(invalid(
                    "update log",
                    format!("an update has {} values, the model {numel}", u.len()),
                ));
            }
            for (a, &x) in acc.iter_mut().zip(u) {
                *a += f64::from(x);
            }
            removed += 1;
        }
    }
    let mut out = theta.clone();
    let mut k = 0;
    for t in &mut out.tensors {
        for v in &mut t.data {
            *v = (f64::from(*v) - acc[k]) as f32;
            k += 1;
        }
    }
    Ok((out, removed))
}

/// Writes the log atomically to `path`; returns its size in bytes.
pub fn save(log: &UpdateLog, path: &Path) -> Result<u64> {
    let bytes: Vec<Vec<u8>> = log
        .updates
        .iter()
        .map(|u| u.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .enumerate()
        .map(|(k, b)| {
            TensorView::new(Dtype::F32, vec![b.len() / 4], b)
                .map(|v| (format!("u{k:08}"), v))
                .map_err(|e| invalid("update log", e.to_string()))
        })
        .collect::<Result<_>>()?;
    let ids =
        serde_json::to_string(&log.batches).map_err(|e| invalid("update log", e.to_string()))?;
    let meta = HashMap::from([("batches".to_string(), ids)]);
    let out = safetensors::serialize(views, Some(meta))
        .map_err(|e| invalid("update log", e.to_string()))?;
    atomic::write_file(path, &out)?;
    Ok(out.len() as u64)
}

/// Reads a log written by [`save`].
pub fn load(path: &Path) -> Result<UpdateLog> {
    let bytes = std::fs::read(path).at(path)?;
    let corrupt = |detail: String| Error::Format {
        path: path.to_path_buf(),
        format: "amnesiac update log",
        offset: 0,
        detail,
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let batches: Vec<Vec<u64>> = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("batches"))
        .ok_or_else(|| corrupt("no `batches` metadata".into()))
        .and_then(|s| serde_json::from_str(s).map_err(|e| corrupt(e.to_string())))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut updates = Vec::with_capacity(batches.len());
    for k in 0..batches.len() {
        let t = st
            .tensor(&format!("u{k:08}"))
            .map_err(|e| corrupt(format!("update {k}: {e}")))?;
        updates.push(
            t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
    }
    if st.len() != batches.len() {
        return Err(corrupt(format!(
            "{} updates for {} batches",
            st.len(),
            batches.len()
        )));
    }
    Ok(UpdateLog { batches, updates })
}

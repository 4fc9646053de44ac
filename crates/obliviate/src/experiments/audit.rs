//! `bench audit`: backdoor verification, membership inference and distances to the retrained
//! model, per dataset over seeds.

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::backdoor::{BackdoorSettings, Criteria, Placement, verify_backdoor_models};
use super::{FLOOR_SEED, Say, Setup, fresh_folder, load_dataset};
use crate::audit::mia::mia;
use crate::audit::outputs_of;
use crate::chain::Chain;
use crate::data::backdoor::Trigger;
use crate::data::{DatasetName, Split};
use crate::error::{IoContext, Result};
use crate::params::ParamSet;
use crate::train::{NoProgress, retrain};

/// Side of the trigger patch (pixels, bottom-right corner) and its target class.
pub const PATCH: (usize, u16) = (4, 0);

/// Settings of `bench audit`.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Datasets, model, training, seeds, forgetting, scratch folder.
    pub setup: Setup,
    /// The backdoored user's share of the training set.
    pub fraction: f64,
    /// Pass thresholds of the backdoor verification.
    pub criteria: Criteria,
    /// Where the user's samples go.
    pub placement: Placement,
}

/// Membership inference against one model.
#[derive(Debug, Clone, Serialize)]
pub struct MiaRow {
    /// `original`, `unlearned`, `retrained` or `retrained-other-seed`.
    pub model: &'static str,
    /// Loss attack AUC.
    pub loss_auc: f64,
    /// Loss attack cross-validated accuracy.
    pub loss_acc: f64,
    /// Confidence attack AUC.
    pub conf_auc: f64,
    /// Confidence attack cross-validated accuracy.
    pub conf_acc: f64,
}

/// One seed's verification and audits.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRun {
    /// Seed.
    pub seed: u64,
    /// Samples of the backdoored user.
    pub user_samples: usize,
    /// Whether the backdoor verification passed.
    pub pass: bool,
    /// Attack success: original, unlearned, retrained.
    pub asr: [f64; 3],
    /// Clean accuracy: original, unlearned, retrained.
    pub clean: [f64; 3],
    /// Blocks retrained to forget the user.
    pub blocks_retrained: usize,
    /// Seconds of the forget request.
    pub forget_seconds: f64,
    /// Seconds of the retraining.
    pub retrain_seconds: f64,
    /// Membership inference against the four models (the last: a retrain with another seed).
    pub mia: Vec<MiaRow>,
    /// Weight L2 distance, unlearned vs retrained.
    pub weight_l2: f64,
    /// Weight L2 distance, retrained vs retrained with another seed.
    pub floor_weight_l2: f64,
    /// Mean test KL(retrained ‖ unlearned).
    pub mean_kl: f64,
    /// Mean test KL(retrained ‖ retrained with another seed).
    pub floor_mean_kl: f64,
}

/// The results on one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct AuditResult {
    /// The dataset.
    pub dataset: DatasetName,
    /// One per seed.
    pub runs: Vec<AuditRun>,
}

/// Runs the audits.
pub fn run<B: AutodiffBackend>(
    settings: &AuditSettings,
    data_dir: Option<&Path>,
    device: &B::Device,
    say: &mut Say<'_>,
) -> Result<Vec<AuditResult>> {
    let s = &settings.setup;
    let mut all = Vec::new();
    for &name in &s.datasets {
        let data = load_dataset(name, s.limit, data_dir)?;
        let mut runs = Vec::new();
        for seed in 0..s.seeds as u64 {
            let cfg = s.cfg_for(seed);
            let work = s.work.join(format!("audit-{name}-s{seed}"));
            let settings = BackdoorSettings {
                kind: s.kind,
                cfg,
                fraction: settings.fraction,
                trigger: Trigger::bottom_right(&data, PATCH.0, PATCH.1)?,
                opts: s.opts,
                work: work.clone(),
                criteria: settings.criteria,
                placement: settings.placement,
            };
            let (r, models) =
                verify_backdoor_models::<B>(&data, &settings, device, &mut NoProgress)?;
            let run = work.join("backdoor-run");
            let chain = Chain::open(&run)?;
            let poisoned = data.clone().derive(&chain.manifest().dataset.origin())?;
            chain.check_dataset(&poisoned)?;
            let floor_dir = work.join("backdoor-floor");
            fresh_folder(&floor_dir)?;
            retrain::<B>(
                &run,
                &floor_dir,
                &poisoned,
                Some(seed + FLOOR_SEED),
                device,
                &mut NoProgress,
            )?;
            let floor = Chain::open(&floor_dir)?.served()?;
            let user: Vec<usize> = chain
                .manifest()
                .deleted
                .iter()
                .filter_map(|&id| poisoned.train.row(id))
                .collect();
            drop(chain);
            let test: Vec<usize> = (0..poisoned.test.len()).collect();
            let outs = |theta: &ParamSet, split: Split, rows: &[usize]| {
                outputs_of::<B>(s.kind, theta, &poisoned, split, rows, device)
            };
            let mut mias = Vec::new();
            let mut test_outs = Vec::new();
            for (label, theta) in [
                ("original", &models.original),
                ("unlearned", &models.unlearned),
                ("retrained", &models.retrained),
                ("retrained-other-seed", &floor),
            ] {
                let f = outs(theta, Split::Train, &user)?;
                let t = outs(theta, Split::Test, &test)?;
                let m = mia(&f, &t, seed);
                mias.push(MiaRow {
                    model: label,
                    loss_auc: m.loss.auc,
                    loss_acc: m.loss.accuracy,
                    conf_auc: m.confidence.auc,
                    conf_acc: m.confidence.accuracy,
                });
                test_outs.push(t);
            }
            let a = AuditRun {
                seed,
                user_samples: r.user_samples,
                pass: r.pass,
                asr: [
                    r.original.attack_success_rate,
                    r.unlearned.attack_success_rate,
                    r.retrained.attack_success_rate,
                ],
                clean: [
                    r.original.clean_accuracy,
                    r.unlearned.clean_accuracy,
                    r.retrained.clean_accuracy,
                ],
                blocks_retrained: r.forget.blocks_retrained,
                forget_seconds: r.forget.seconds,
                retrain_seconds: r.retrain_seconds,
                weight_l2: models.unlearned.distance(&models.retrained)?.l2,
                floor_weight_l2: models.retrained.distance(&floor)?.l2,
                mean_kl: test_outs[2].mean_kl(&test_outs[1]),
                floor_mean_kl: test_outs[2].mean_kl(&test_outs[3]),
                mia: mias,
            };
            say(&format!(
                "{name} seed {seed}: ASR {:.2}/{:.2}/{:.2} %, clean {:.2}/{:.2}/{:.2} %, loss-MIA AUC {}, {} ({} blocks retrained, forget {:.1} s, retrain {:.1} s)",
                100.0 * a.asr[0],
                100.0 * a.asr[1],
                100.0 * a.asr[2],
                100.0 * a.clean[0],
                100.0 * a.clean[1],
                100.0 * a.clean[2],
                a.mia
                    .iter()
                    .map(|m| format!("{:.3}", m.loss_auc))
                    .collect::<Vec<_>>()
                    .join("/"),
                if a.pass { "PASS" } else { "FAIL" },
                a.blocks_retrained,
                a.forget_seconds,
                a.retrain_seconds
            ));
            runs.push(a);
            for sub in ["backdoor-run", "backdoor-retrain", "backdoor-floor"] {
                fresh_folder(&work.join(sub))?;
            }
            std::fs::remove_dir(&work).at(&work)?;
        }
        all.push(AuditResult {
            dataset: name,
            runs,
        });
    }
    Ok(all)
}

//! `bench calibrate`: the stop rule's default chosen from what forgetting must achieve, not by
//! hand.
//!
//! One run per seed keeps two users together (grouped placement, half of each block at most):
//! a backdoored user (a share of the training set, trigger → target class) and a clean user of
//! a few hundred samples. Three requests are forgotten on copies of that run, at every point
//! of a grid of thresholds ε × minimum points: the backdoored user, the clean user and one
//! random id. Each request is judged against the model retrained from scratch without it and
//! against a second retrain with another seed (the seed-to-seed floor):
//! - test accuracy within the criteria's tolerance of the retrained model;
//! - attack success (backdoored user) within the criteria's tolerance of the retrained model;
//! - the forgotten samples' mean loss within the seed-to-seed spread |retrained − floor|;
//! - the loss attack's AUC on the forgotten samples (requests of at least
//!   [`MIA_MIN_MEMBERS`]) within the floor's spread or one standard error of a null AUC;
//!
//! and the weight L2 / mean test KL to the retrained model are reported beside the original
//! model's (how much of the original → retrained distance forgetting closes) and the floor's.
//! The chosen setting is the cheapest grid point (blocks retrained over the three requests,
//! mean over seeds) that passes every check for every seed.

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::audit::PATCH;
use super::backdoor::{Criteria, USER, USER_SHARE};
use super::unlearn::{Reference, retrain_reference};
use super::{Say, Setup, fresh_folder, load_dataset};
use crate::audit::mia::mia;
use crate::audit::{Outputs, outputs_of};
use crate::chain::Chain;
use crate::data::backdoor::{Backdoor, Trigger};
use crate::data::split::{mix, shuffle};
use crate::data::{Dataset, DatasetName, Groups, Split};
use crate::error::{IoContext, Result, invalid};
use crate::params::ParamSet;
use crate::train::{NoProgress, train};
use crate::unlearn::{ForgetOptions, ForgetReport, StopReason, StopRule, forget};

/// Fewest forgotten samples for which the membership attack is scored.
pub const MIA_MIN_MEMBERS: usize = 50;

/// Group name of the clean user.
const CLEAN_USER: &str = "calibration-user";

/// Settings of `bench calibrate`.
#[derive(Debug, Clone)]
pub struct CalibrateSettings {
    /// Datasets, model, training, seeds, scratch folder; `opts` gives the segmentation.
    pub setup: Setup,
    /// Thresholds ε of the fit rule to try.
    pub epsilons: Vec<f64>,
    /// Minimum points to try.
    pub min_points: Vec<usize>,
    /// The fit rule's negligible share, the same at every point.
    pub negligible: f64,
    /// Share of the training set owned by the backdoored user.
    pub fraction: f64,
    /// Samples of the clean user.
    pub user_size: usize,
    /// Accuracy and attack-success tolerances.
    pub criteria: Criteria,
}

impl CalibrateSettings {
    /// Rejects an empty or meaningless grid before any training.
    pub fn validate(&self) -> Result<()> {
        if self.epsilons.is_empty() || self.min_points.is_empty() {
            return Err(invalid("grid", "needs at least one ε and one minimum"));
        }
        for &e in &self.epsilons {
            ForgetOptions {
                stop: StopRule::Fit {
                    epsilon: e,
                    negligible: self.negligible,
                },
                ..self.setup.opts
            }
            .validate()?;
        }
        if !(self.fraction > 0.0 && self.fraction < 0.5) || self.user_size == 0 {
            return Err(invalid(
                "users",
                format!(
                    "backdoored share {} must be in (0, 0.5) and the clean user non-empty",
                    self.fraction
                ),
            ));
        }
        Ok(())
    }
}

/// What a request forgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Probe {
    /// The backdoored user (grouped).
    BackdoorUser,
    /// The clean user (grouped).
    User,
    /// One random id outside both users.
    RandomId,
}

impl Probe {
    /// Every probe, in report order.
    pub const ALL: [Probe; 3] = [Probe::BackdoorUser, Probe::User, Probe::RandomId];

    /// A label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Probe::BackdoorUser => "backdoored user",
            Probe::User => "clean user",
            Probe::RandomId => "random id",
        }
    }
}

/// How one model treats a request's samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Quality {
    /// Test accuracy.
    pub accuracy: f64,
    /// Attack success on the triggered test set (backdoored user only).
    pub attack_success: Option<f64>,
    /// Mean loss of the forgotten samples.
    pub loss: f64,
    /// Loss-attack AUC of the forgotten samples against as many test samples (requests of at
    /// least [`MIA_MIN_MEMBERS`]).
    pub mia_auc: Option<f64>,
}

/// One request's reference models on one seed.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// Seed.
    pub seed: u64,
    /// The request.
    pub probe: Probe,
    /// Ids in it.
    pub samples: usize,
    /// Blocks holding at least one of them.
    pub affected_blocks: usize,
    /// First block holding one of them.
    pub first_block: usize,
    /// Seconds of retraining without them (no evaluation).
    pub retrain_seconds: f64,
    /// The model trained with them.
    pub original: Quality,
    /// Retrained without them.
    pub retrained: Quality,
    /// Retrained without them with another seed.
    pub floor: Quality,
    /// Weight L2 original ↔ retrained.
    pub l2_original: f64,
    /// Weight L2 retrained ↔ floor.
    pub l2_floor: f64,
    /// Mean test KL(retrained ‖ original).
    pub kl_original: f64,
    /// Mean test KL(retrained ‖ floor).
    pub kl_floor: f64,
}

/// One request forgotten at one grid point on one seed.
#[derive(Debug, Clone, Serialize)]
pub struct GridRow {
    /// Seed.
    pub seed: u64,
    /// The request.
    pub probe: Probe,
    /// ε of the fit rule.
    pub epsilon: f64,
    /// Minimum points.
    pub min_points: usize,
    /// Blocks retrained.
    pub blocks_retrained: usize,
    /// (first block, stop block) of each segment.
    pub segments: Vec<(usize, usize)>,
    /// Why the last segment stopped.
    pub stop_reason: StopReason,
    /// Engine seconds of the request.
    pub seconds: f64,
    /// The unlearned model.
    pub unlearned: Quality,
    /// Weight L2 unlearned ↔ retrained.
    pub l2: f64,
    /// Mean test KL(retrained ‖ unlearned).
    pub kl: f64,
    /// Share of the original → retrained weight distance that forgetting closed.
    pub l2_closed: f64,
    /// The checks that failed (empty: passed).
    pub failures: Vec<String>,
}

/// One grid point over every request and seed.
#[derive(Debug, Clone, Serialize)]
pub struct GridPoint {
    /// ε.
    pub epsilon: f64,
    /// Minimum points.
    pub min_points: usize,
    /// Blocks retrained by the three requests together, mean over seeds.
    pub blocks: f64,
    /// Every check of every request and seed held.
    pub pass: bool,
}

/// The calibration on one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrateResult {
    /// The dataset.
    pub dataset: DatasetName,
    /// Per seed and request, the reference models.
    pub baselines: Vec<Baseline>,
    /// Every (seed, request, grid point).
    pub rows: Vec<GridRow>,
    /// Every grid point, in grid order.
    pub grid: Vec<GridPoint>,
    /// The cheapest passing point, if any passed.
    pub choice: Option<GridPoint>,
}

/// Everything needed to score a model on one request.
struct Scorer<'a, B: AutodiffBackend> {
    setup: &'a Setup,
    data: &'a Dataset,
    triggered: &'a Dataset,
    target: usize,
    device: &'a B::Device,
    seed: u64,
}

/// A model's outputs on the test set and its quality on a request.
struct Scored {
    test: Outputs,
    quality: Quality,
}

impl<B: AutodiffBackend> Scorer<'_, B> {
    fn outputs(
        &self,
        theta: &ParamSet,
        data: &Dataset,
        split: Split,
        rows: &[usize],
    ) -> Result<Outputs> {
        outputs_of::<B>(self.setup.kind, theta, data, split, rows, self.device)
    }

    fn score(&self, theta: &ParamSet, probe: Probe, ids: &[u64]) -> Result<Scored> {
        let all_test: Vec<usize> = (0..self.data.test.len()).collect();
        let test = self.outputs(theta, self.data, Split::Test, &all_test)?;
        let rows: Vec<usize> = ids
            .iter()
            .filter_map(|&id| self.data.train.row(id))
            .collect();
        let members = self.outputs(theta, self.data, Split::Train, &rows)?;
        let loss =
            (0..members.len()).map(|i| members.loss(i)).sum::<f64>() / members.len().max(1) as f64;
        let attack_success = match probe {
            Probe::BackdoorUser => {
                let t: Vec<usize> = (0..self.triggered.test.len()).collect();
                Some(
                    self.outputs(theta, self.triggered, Split::Test, &t)?
                        .share_predicted(self.target),
                )
            }
            _ => None,
        };
        let mia_auc =
            (members.len() >= MIA_MIN_MEMBERS).then(|| mia(&members, &test, self.seed).loss.auc);
        Ok(Scored {
            quality: Quality {
                accuracy: test.accuracy(),
                attack_success,
                loss,
                mia_auc,
            },
            test,
        })
    }
}

/// The checks `u` fails against `b` (criteria in `c`).
fn failures(u: &Quality, b: &Baseline, c: &Criteria) -> Vec<String> {
    let (r, f) = (&b.retrained, &b.floor);
    let mut out = Vec::new();
    let gap = (u.accuracy - r.accuracy).abs();
    if gap > c.accuracy_tolerance {
        out.push(format!("accuracy gap {:.2} pt", 100.0 * gap));
    }
    if let (Some(ua), Some(ra)) = (u.attack_success, r.attack_success)
        && (ua - ra).abs() > c.asr_tolerance
    {
        out.push(format!(
            "attack success {:.2} % vs {:.2} %",
            100.0 * ua,
            100.0 * ra
        ));
    }
    let spread = (r.loss - f.loss).abs();
    if (u.loss - r.loss).abs() > spread {
        out.push(format!(
            "loss {:.4} vs {:.4} (spread {spread:.4})",
            u.loss, r.loss
        ));
    }
    if let (Some(ua), Some(ra), Some(fa)) = (u.mia_auc, r.mia_auc, f.mia_auc) {
        // The standard error of a null AUC with m members and m non-members: √(1/(6m)).
        let se = (1.0 / (6.0 * b.samples as f64)).sqrt();
        let tol = (ra - fa).abs().max(se);
        if (ua - ra).abs() > tol {
            out.push(format!("MIA AUC {ua:.3} vs {ra:.3} (tolerance {tol:.3})"));
        }
    }
    out
}

/// The probes' ids for `seed`: the backdoored user's, then a clean user and one random id
/// drawn from the other samples.
fn probe_ids(data: &Dataset, bd: &Backdoor, user_size: usize, seed: u64) -> Result<[Vec<u64>; 3]> {
    let mut rest: Vec<u64> = data
        .train
        .ids
        .iter()
        .copied()
        .filter(|id| bd.ids.binary_search(id).is_err())
        .collect();
    if rest.len() <= user_size {
        return Err(invalid(
            "users",
            format!(
                "a clean user of {user_size} needs more than {} other samples",
                rest.len()
            ),
        ));
    }
    shuffle(&mut rest, mix(seed ^ 0xca1b));
    let mut user = rest[..user_size].to_vec();
    user.sort_unstable();
    Ok([bd.ids.clone(), user, vec![rest[user_size]]])
}

/// A request's reference models, kept while its grid is judged.
struct Judged {
    baseline: Baseline,
    reference: Reference,
    /// The retrained model's test outputs (for the KL of each unlearned model).
    retrained_test: Outputs,
}

impl<B: AutodiffBackend> Scorer<'_, B> {
    /// Retrains `run` (a copy of the base run with `ids` forgotten) from scratch and with
    /// another seed, and scores the original, retrained and floor models on the request.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &self,
        run: &Path,
        work: &Path,
        original: &ParamSet,
        probe: Probe,
        ids: &[u64],
        blocks: &[usize],
    ) -> Result<Judged> {
        let g = retrain_reference::<B>(run, work, self.data, self.seed, self.device)?;
        let o = self.score(original, probe, ids)?;
        let r = self.score(&g.theta, probe, ids)?;
        let fl = self.score(&g.floor, probe, ids)?;
        let baseline = Baseline {
            seed: self.seed,
            probe,
            samples: ids.len(),
            affected_blocks: blocks.len(),
            first_block: blocks.first().copied().unwrap_or(0),
            retrain_seconds: g.retrained.train_seconds(),
            original: o.quality,
            retrained: r.quality,
            floor: fl.quality,
            l2_original: original.distance(&g.theta)?.l2,
            l2_floor: g.theta.distance(&g.floor)?.l2,
            kl_original: r.test.mean_kl(&o.test),
            kl_floor: r.test.mean_kl(&fl.test),
        };
        Ok(Judged {
            baseline,
            reference: g,
            retrained_test: r.test,
        })
    }

    /// The grid row of `unlearned`, which forgot `ids` as `f` reports, against `j`.
    fn row(
        &self,
        j: &Judged,
        ids: &[u64],
        f: &ForgetReport,
        unlearned: &ParamSet,
        (epsilon, min_points): (f64, usize),
        criteria: &Criteria,
    ) -> Result<GridRow> {
        let b = &j.baseline;
        let u = self.score(unlearned, b.probe, ids)?;
        let l2 = unlearned.distance(&j.reference.theta)?.l2;
        Ok(GridRow {
            seed: self.seed,
            probe: b.probe,
            epsilon,
            min_points,
            blocks_retrained: f.blocks_retrained,
            segments: f
                .segments
                .iter()
                .map(|x| (x.first_block, x.stop_block))
                .collect(),
            stop_reason: f.stop_rule,
            seconds: f.seconds,
            failures: failures(&u.quality, b, criteria),
            unlearned: u.quality,
            l2,
            kl: j.retrained_test.mean_kl(&u.test),
            l2_closed: if b.l2_original > 0.0 {
                1.0 - l2 / b.l2_original
            } else {
                0.0
            },
        })
    }
}

/// Runs the calibration.
pub fn run<B: AutodiffBackend>(
    settings: &CalibrateSettings,
    data_dir: Option<&Path>,
    device: &B::Device,
    say: &mut Say<'_>,
) -> Result<Vec<CalibrateResult>> {
    settings.validate()?;
    let s = &settings.setup;
    std::fs::create_dir_all(&s.work).at(&s.work)?;
    let mut all = Vec::new();
    for &name in &s.datasets {
        let data = load_dataset(name, s.limit, data_dir)?;
        let work = s.work.join(format!("calibrate-{name}"));
        std::fs::create_dir_all(&work).at(&work)?;
        let (mut baselines, mut rows) = (Vec::new(), Vec::new());
        for seed in 0..s.seeds as u64 {
            let (b, r) = one_seed::<B>(settings, &data, &work, seed, device, say)?;
            baselines.extend(b);
            rows.extend(r);
        }
        std::fs::remove_dir(&work).at(&work)?;
        let grid = points(settings, &rows);
        let choice = cheapest(&grid);
        all.push(CalibrateResult {
            dataset: name,
            baselines,
            rows,
            grid,
            choice,
        });
    }
    Ok(all)
}

/// Trains seed `seed`'s run with both users kept together in `work`, forgets every request at
/// every grid point on copies of it, and removes what it made.
fn one_seed<B: AutodiffBackend>(
    settings: &CalibrateSettings,
    data: &Dataset,
    work: &Path,
    seed: u64,
    device: &B::Device,
    say: &mut Say<'_>,
) -> Result<(Vec<Baseline>, Vec<GridRow>)> {
    let s = &settings.setup;
    let trigger = Trigger::bottom_right(data, PATCH.0, PATCH.1)?.checked(data)?;
    let bd = Backdoor::choose(data, trigger, settings.fraction, seed)?;
    let poisoned = bd.poison(data)?;
    let triggered = bd.triggered_test(&poisoned)?;
    let ids = probe_ids(&poisoned, &bd, settings.user_size, seed)?;
    let mut groups = Groups::single(USER, &ids[0]);
    groups
        .members
        .insert(CLEAN_USER.to_string(), ids[1].clone());
    let groups = groups.with_share(USER_SHARE)?;
    let base = work.join("base");
    fresh_folder(&base)?;
    let trained = train::<B>(
        &base,
        &poisoned,
        s.kind,
        s.cfg_for(seed),
        Some(&groups),
        device,
        &mut NoProgress,
    )?;
    say(&format!(
        "{} seed {seed}: trained with both users kept together in {:.1} s, accuracy {:.2} %",
        data.name,
        trained.train_seconds(),
        100.0 * trained.test_accuracy
    ));
    let base_chain = Chain::open(&base)?;
    let original = base_chain.served()?;
    let scorer = Scorer::<B> {
        setup: s,
        data: &poisoned,
        triggered: &triggered,
        target: usize::from(trigger.target),
        device,
        seed,
    };
    let (mut baselines, mut rows) = (Vec::new(), Vec::new());
    let run = work.join("request");
    for (probe, ids) in Probe::ALL.into_iter().zip(&ids) {
        let blocks = base_chain.manifest().blocks_holding(ids);
        let mut judged: Option<Judged> = None;
        for &min_points in &settings.min_points {
            for &epsilon in &settings.epsilons {
                let opts = ForgetOptions {
                    stop: StopRule::Fit {
                        epsilon,
                        negligible: settings.negligible,
                    },
                    min_points,
                    evaluate: false,
                    ..s.opts
                };
                fresh_folder(&run)?;
                let mut chain = base_chain.copy_to(&run)?;
                let f = forget::<B>(&mut chain, &poisoned, ids, &opts, device, &mut NoProgress)?;
                let unlearned = chain.served()?;
                drop(chain);
                let j = match judged.take() {
                    Some(j) => j,
                    None => {
                        let j = scorer.judge(&run, work, &original, probe, ids, &blocks)?;
                        say(&format!(
                            "  {}: {} samples in {} blocks from block {}; retrained in {:.1} s, accuracy {:.2} %",
                            probe.label(),
                            j.baseline.samples,
                            j.baseline.affected_blocks,
                            j.baseline.first_block,
                            j.baseline.retrain_seconds,
                            100.0 * j.baseline.retrained.accuracy
                        ));
                        j
                    }
                };
                fresh_folder(&run)?;
                let row = scorer.row(
                    &j,
                    ids,
                    &f,
                    &unlearned,
                    (epsilon, min_points),
                    &settings.criteria,
                )?;
                say(&format!(
                    "    ε {epsilon} min {min_points}: {} blocks, {:.2} s, accuracy {:.2} %, loss {:.4}, {}",
                    row.blocks_retrained,
                    row.seconds,
                    100.0 * row.unlearned.accuracy,
                    row.unlearned.loss,
                    if row.failures.is_empty() {
                        "pass".to_string()
                    } else {
                        row.failures.join("; ")
                    }
                ));
                rows.push(row);
                judged = Some(j);
            }
        }
        baselines.extend(judged.map(|j| j.baseline));
    }
    drop(base_chain);
    fresh_folder(&base)?;
    Ok((baselines, rows))
}

/// Every grid point's cost and verdict over `rows`.
fn points(settings: &CalibrateSettings, rows: &[GridRow]) -> Vec<GridPoint> {
    let seeds = settings.setup.seeds.max(1) as f64;
    let mut out = Vec::new();
    for &min_points in &settings.min_points {
        for &epsilon in &settings.epsilons {
            let mine: Vec<&GridRow> = rows
                .iter()
                .filter(|r| r.epsilon == epsilon && r.min_points == min_points)
                .collect();
            out.push(GridPoint {
                epsilon,
                min_points,
                blocks: mine.iter().map(|r| r.blocks_retrained as f64).sum::<f64>() / seeds,
                pass: !mine.is_empty() && mine.iter().all(|r| r.failures.is_empty()),
            });
        }
    }
    out
}

/// The passing point with the fewest blocks. Points that cost the same here passed the same
/// checks on the same models, so a tie goes to the larger ε (it stops earlier on requests the
/// calibration did not try), then to more points (the cautious side of a tie).
pub fn cheapest(grid: &[GridPoint]) -> Option<GridPoint> {
    grid.iter()
        .filter(|p| p.pass)
        .min_by(|a, b| {
            a.blocks
                .total_cmp(&b.blocks)
                .then(b.epsilon.total_cmp(&a.epsilon))
                .then(b.min_points.cmp(&a.min_points))
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(epsilon: f64, min_points: usize, blocks: f64, pass: bool) -> GridPoint {
        GridPoint {
            epsilon,
            min_points,
            blocks,
            pass,
        }
    }

    #[test]
    fn the_cheapest_passing_point_wins_and_ties_go_to_the_larger_epsilon() {
        let grid = [
            point(0.4, 1, 10.0, false),
            point(0.1, 4, 20.0, true),
            point(0.2, 2, 20.0, true),
            point(0.2, 4, 20.0, true),
            point(0.05, 8, 40.0, true),
        ];
        let c = cheapest(&grid).unwrap();
        assert_eq!((c.epsilon, c.min_points), (0.2, 4));
        assert!(cheapest(&[point(0.2, 4, 5.0, false)]).is_none());
    }

    fn quality(accuracy: f64, loss: f64, asr: Option<f64>, auc: Option<f64>) -> Quality {
        Quality {
            accuracy,
            attack_success: asr,
            loss,
            mia_auc: auc,
        }
    }

    #[test]
    fn each_check_fails_on_its_own_signal() {
        let b = Baseline {
            seed: 0,
            probe: Probe::BackdoorUser,
            samples: 600,
            affected_blocks: 20,
            first_block: 400,
            retrain_seconds: 100.0,
            original: quality(0.98, 0.01, Some(0.99), Some(0.8)),
            retrained: quality(0.98, 5.0, Some(0.01), Some(0.02)),
            floor: quality(0.981, 5.5, Some(0.012), Some(0.03)),
            l2_original: 10.0,
            l2_floor: 20.0,
            kl_original: 0.01,
            kl_floor: 0.04,
        };
        let c = Criteria::default();
        assert!(failures(&quality(0.981, 5.2, Some(0.015), Some(0.025)), &b, &c).is_empty());
        let f = failures(&quality(0.97, 5.2, Some(0.015), Some(0.025)), &b, &c);
        assert!(f.len() == 1 && f[0].contains("accuracy"), "{f:?}");
        let f = failures(&quality(0.98, 5.2, Some(0.05), Some(0.025)), &b, &c);
        assert!(f.len() == 1 && f[0].contains("attack"), "{f:?}");
        let f = failures(&quality(0.98, 4.0, Some(0.015), Some(0.025)), &b, &c);
        assert!(f.len() == 1 && f[0].contains("loss"), "{f:?}");
        let f = failures(&quality(0.98, 5.2, Some(0.015), Some(0.3)), &b, &c);
        assert!(f.len() == 1 && f[0].contains("MIA"), "{f:?}");
        // A random id: no attack success, no MIA; only accuracy and loss are judged.
        let id = Baseline {
            probe: Probe::RandomId,
            samples: 1,
            original: quality(0.98, 0.01, None, None),
            retrained: quality(0.98, 0.02, None, None),
            floor: quality(0.98, 0.05, None, None),
            ..b
        };
        assert!(failures(&quality(0.98, 0.04, None, None), &id, &c).is_empty());
        assert!(!failures(&quality(0.98, 0.06, None, None), &id, &c).is_empty());
    }
}

//! `bench unlearn`: DeepObliviate against retraining from scratch, on the requests people make:
//! random ids (1, 10, 100) forgotten in segments and as one span, and whole users (synthetic,
//! seeded) placed together or spread; plus successive requests of each kind (drift).

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::{FLOOR_SEED, Say, Setup, fresh_folder, load_dataset, pick_ids};
use crate::audit::outputs_of;
use crate::chain::Chain;
use crate::data::split::{mix, shuffle};
use crate::data::{Dataset, DatasetName, Groups, Split};
use crate::error::{IoContext, Result};
use crate::model::ModelKind;
use crate::params::ParamSet;
use crate::train::{NoProgress, TrainSummary, retrain, train};
use crate::unlearn::{ForgetOptions, Phases, Segmentation, StopReason, forget};

/// Settings of `bench unlearn`.
#[derive(Debug, Clone)]
pub struct UnlearnSettings {
    /// Datasets, model, training, seeds, forgetting, scratch folder.
    pub setup: Setup,
    /// Random ids per request.
    pub requests: Vec<usize>,
    /// How random-id requests are retrained (each mode on the same ids).
    pub modes: Vec<Segmentation>,
    /// Samples per synthetic user (0: no user requests). Users partition the training set
    /// (seeded); one user per seed is forgotten, placed together and spread.
    pub user_size: usize,
    /// Successive requests of each kind on seed 0 (0 = none): of every size in `requests`
    /// on the random placement, and of whole users on the grouped one.
    pub sequence: usize,
}

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Random training ids.
    Random,
    /// One synthetic user's samples.
    User,
}

/// One request against one seed's run.
#[derive(Debug, Clone, Serialize)]
pub struct UnlearnRow {
    /// Seed of the run.
    pub seed: u64,
    /// Random ids or a user.
    pub kind: Kind,
    /// Ids in the request.
    pub ids: usize,
    /// `grouped` when the run kept users together, else `random`.
    pub placement: &'static str,
    /// Segments, or one span.
    pub mode: &'static str,
    /// Test accuracy before forgetting.
    pub original: f64,
    /// After forgetting.
    pub unlearned: f64,
    /// Of the model retrained without the ids.
    pub retrained: f64,
    /// Blocks retrained by the request.
    pub blocks_retrained: usize,
    /// Segments of the request.
    pub segments: usize,
    /// Blocks holding at least one of the ids.
    pub affected_blocks: usize,
    /// Seconds of the request (engine time, without evaluation).
    pub forget_seconds: f64,
    /// Seconds of the retraining (without evaluation).
    pub retrain_seconds: f64,
    /// `retrain_seconds / forget_seconds`.
    pub speedup: f64,
    /// Mean loss of the forgotten samples under the original model.
    pub loss_original: f64,
    /// ... under the unlearned model.
    pub loss_unlearned: f64,
    /// ... under the retrained model.
    pub loss_retrained: f64,
    /// ... under a model retrained with another seed (the seed-to-seed spread is
    /// |loss_retrained − loss_floor|).
    pub loss_floor: f64,
    /// Weight L2 distance unlearned ↔ retrained.
    pub l2_unlearned: f64,
    /// Weight L2 distance original ↔ retrained.
    pub l2_original: f64,
    /// Weight L2 distance retrained ↔ retrained with another seed (the noise floor).
    pub l2_floor: f64,
    /// Bytes of the unlearned run.
    pub bytes_on_disk: u64,
    /// Why the last segment stopped.
    pub stop_rule: StopReason,
    /// Where the forget seconds went.
    pub phases: Phases,
}

/// One of the successive requests of a kind.
#[derive(Debug, Clone, Serialize)]
pub struct SequenceStep {
    /// Random ids or a user.
    pub kind: Kind,
    /// Ids in the request.
    pub ids: usize,
    /// Seconds of the request.
    pub seconds: f64,
    /// Test accuracy afterwards.
    pub accuracy: f64,
    /// Blocks retrained.
    pub blocks_retrained: usize,
}

/// Test accuracy of the run trained with users kept together, beside the random placement's.
#[derive(Debug, Clone, Serialize)]
pub struct PlacementCost {
    /// Seed.
    pub seed: u64,
    /// Stratified placement.
    pub random: f64,
    /// Users kept together.
    pub grouped: f64,
}

/// The results on one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct UnlearnResult {
    /// The dataset.
    pub dataset: DatasetName,
    /// Every (seed, request).
    pub rows: Vec<UnlearnRow>,
    /// The successive requests on seed 0, kind after kind.
    pub sequence: Vec<SequenceStep>,
    /// What keeping users together costs, per seed.
    pub placement: Vec<PlacementCost>,
}

/// Seeded synthetic users of `size` samples partitioning `data`'s training ids.
pub fn synthetic_users(data: &Dataset, size: usize, seed: u64) -> Groups {
    let mut ids = data.train.ids.clone();
    shuffle(&mut ids, mix(seed ^ 0x05e2_5eed));
    let mut g = Groups::default();
    for (u, chunk) in ids.chunks(size.max(1)).enumerate() {
        let mut members = chunk.to_vec();
        members.sort_unstable();
        g.members.insert(format!("user{u:05}"), members);
    }
    g
}

/// The models and data one request is judged with.
struct Judge<'a, B: AutodiffBackend> {
    data: &'a Dataset,
    kind: ModelKind,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> Judge<'_, B> {
    fn loss(&self, theta: &ParamSet, ids: &[u64]) -> Result<f64> {
        let rows: Vec<usize> = ids
            .iter()
            .filter_map(|&id| self.data.train.row(id))
            .collect();
        let o = outputs_of::<B>(
            self.kind,
            theta,
            self.data,
            Split::Train,
            &rows,
            self.device,
        )?;
        Ok((0..o.len()).map(|i| o.loss(i)).sum::<f64>() / o.len().max(1) as f64)
    }
}

/// A trained base run (and what it served) that requests fork.
struct Base {
    chain: Chain,
    trained: TrainSummary,
    theta: ParamSet,
    placement: &'static str,
}

/// Everything one request's row needs that is not the request itself.
pub(super) struct Reference {
    /// Retraining without the request's ids.
    pub(super) retrained: TrainSummary,
    /// Its served model.
    pub(super) theta: ParamSet,
    /// The served model of a retrain with another seed.
    pub(super) floor: ParamSet,
}

/// Retrains `run` without its forgotten ids (the reference) and with another seed (the floor).
pub(super) fn retrain_reference<B: AutodiffBackend>(
    run: &Path,
    work: &Path,
    data: &Dataset,
    seed: u64,
    device: &B::Device,
) -> Result<Reference> {
    let (gold, floor) = (work.join("retrain"), work.join("floor"));
    fresh_folder(&gold)?;
    fresh_folder(&floor)?;
    let retrained = retrain::<B>(run, &gold, data, None, device, &mut NoProgress)?;
    retrain::<B>(
        run,
        &floor,
        data,
        Some(seed + FLOOR_SEED),
        device,
        &mut NoProgress,
    )?;
    let r = Reference {
        retrained,
        theta: Chain::open(&gold)?.served()?,
        floor: Chain::open(&floor)?.served()?,
    };
    fresh_folder(&gold)?;
    fresh_folder(&floor)?;
    Ok(r)
}

/// Forks `base`, forgets `ids` there with `opts`, and judges the result against `reference`
/// (computed on the first call for these ids and reused by the next mode).
#[allow(clippy::too_many_arguments)]
fn request<B: AutodiffBackend>(
    base: &Base,
    ids: &[u64],
    group: Option<&str>,
    kind: Kind,
    opts: &ForgetOptions,
    reference: &mut Option<Reference>,
    judge: &Judge<'_, B>,
    seed: u64,
    work: &Path,
) -> Result<UnlearnRow> {
    let run = work.join("request");
    fresh_folder(&run)?;
    let mut chain = base.chain.copy_to(&run)?;
    let ids = match group {
        Some(g) => chain
            .manifest()
            .groups
            .as_ref()
            .map_or(Ok(ids.to_vec()), |gs| gs.ids_of(&[g]))?,
        None => ids.to_vec(),
    };
    let affected_blocks = chain.manifest().blocks_holding(&ids).len();
    let r = forget::<B>(
        &mut chain,
        judge.data,
        &ids,
        opts,
        judge.device,
        &mut NoProgress,
    )?;
    let unlearned = chain.served()?;
    let bytes_on_disk = chain.bytes_on_disk();
    drop(chain);
    if reference.is_none() {
        *reference = Some(retrain_reference::<B>(
            &run,
            work,
            judge.data,
            seed,
            judge.device,
        )?);
    }
    fresh_folder(&run)?;
    let Some(g) = reference.as_ref() else {
        unreachable!("set above")
    };
    let retrain_seconds = g.retrained.train_seconds();
    Ok(UnlearnRow {
        seed,
        kind,
        ids: ids.len(),
        placement: base.placement,
        mode: match opts.segments {
            Segmentation::Segmented => "segmented",
            Segmentation::Single => "single",
        },
        original: base.trained.test_accuracy,
        unlearned: r.test_accuracy.unwrap_or(f64::NAN),
        retrained: g.retrained.test_accuracy,
        blocks_retrained: r.blocks_retrained,
        segments: r.segments.len(),
        affected_blocks,
        forget_seconds: r.seconds,
        retrain_seconds,
        speedup: retrain_seconds / r.seconds,
        loss_original: judge.loss(&base.theta, &ids)?,
        loss_unlearned: judge.loss(&unlearned, &ids)?,
        loss_retrained: judge.loss(&g.theta, &ids)?,
        loss_floor: judge.loss(&g.floor, &ids)?,
        l2_unlearned: unlearned.distance(&g.theta)?.l2,
        l2_original: base.theta.distance(&g.theta)?.l2,
        l2_floor: g.theta.distance(&g.floor)?.l2,
        bytes_on_disk,
        stop_rule: r.stop_rule,
        phases: r.phases,
    })
}

/// Trains a base run in `dir` (with `groups` placed together, if given).
#[allow(clippy::too_many_arguments)]
fn base<B: AutodiffBackend>(
    dir: &Path,
    data: &Dataset,
    s: &Setup,
    seed: u64,
    groups: Option<&Groups>,
    device: &B::Device,
    say: &mut Say<'_>,
) -> Result<Base> {
    fresh_folder(dir)?;
    let trained = train::<B>(
        dir,
        data,
        s.kind,
        s.cfg_for(seed),
        groups,
        device,
        &mut NoProgress,
    )?;
    let placement = if groups.is_some() {
        "grouped"
    } else {
        "random"
    };
    say(&format!(
        "seed {seed}: trained ({placement} placement) in {:.1} s, accuracy {:.2} %",
        trained.train_seconds(),
        100.0 * trained.test_accuracy
    ));
    let chain = Chain::open(dir)?;
    let theta = chain.served()?;
    Ok(Base {
        chain,
        trained,
        theta,
        placement,
    })
}

/// Forgets `requests` one after the other on a copy of `base` (each building on the last),
/// recording what each cost and left.
fn successive<B: AutodiffBackend>(
    base: &Base,
    requests: &[Vec<u64>],
    kind: Kind,
    judge: &Judge<'_, B>,
    opts: &ForgetOptions,
    work: &Path,
) -> Result<Vec<SequenceStep>> {
    let run = work.join("sequence");
    fresh_folder(&run)?;
    let mut chain = base.chain.copy_to(&run)?;
    let mut steps = Vec::with_capacity(requests.len());
    for ids in requests {
        let r = forget::<B>(
            &mut chain,
            judge.data,
            ids,
            opts,
            judge.device,
            &mut NoProgress,
        )?;
        steps.push(SequenceStep {
            kind,
            ids: ids.len(),
            seconds: r.seconds,
            accuracy: r.test_accuracy.unwrap_or(f64::NAN),
            blocks_retrained: r.blocks_retrained,
        });
    }
    drop(chain);
    fresh_folder(&run)?;
    Ok(steps)
}

/// `count` disjoint requests of `size` random training ids, seeded.
fn disjoint_requests(data: &Dataset, size: usize, count: usize) -> Vec<Vec<u64>> {
    let mut pool = pick_ids(data, size * count, 99);
    shuffle(&mut pool, mix(0x05e9_0e4c ^ size as u64));
    pool.chunks(size.max(1)).map(<[u64]>::to_vec).collect()
}

fn line(r: &UnlearnRow) -> String {
    format!(
        "  {:?} {:>4} id(s) {} {}: {} segment(s), {} of the blocks retrained ({} affected), forget {:.3} s (open {:.1}, restore {:.1}, retrain {:.1}, stitch {:.1}, commit {:.1} ms), retrain {:.1} s, {:.1}×, acc {:.2} / {:.2} %, loss {:.3} / {:.3} (floor {:.3})",
        r.kind,
        r.ids,
        r.placement,
        r.mode,
        r.segments,
        r.blocks_retrained,
        r.affected_blocks,
        r.forget_seconds,
        1e3 * r.phases.open,
        1e3 * r.phases.restore,
        1e3 * r.phases.retrain,
        1e3 * r.phases.stitch,
        1e3 * r.phases.commit,
        r.retrain_seconds,
        r.speedup,
        100.0 * r.unlearned,
        100.0 * r.retrained,
        r.loss_unlearned,
        r.loss_retrained,
        r.loss_floor
    )
}

/// Runs the benchmark.
pub fn run<B: AutodiffBackend>(
    settings: &UnlearnSettings,
    data_dir: Option<&Path>,
    device: &B::Device,
    say: &mut Say<'_>,
) -> Result<Vec<UnlearnResult>> {
    let s = &settings.setup;
    std::fs::create_dir_all(&s.work).at(&s.work)?;
    let mut all = Vec::new();
    for &name in &s.datasets {
        let data = load_dataset(name, s.limit, data_dir)?;
        let judge = Judge::<B> {
            data: &data,
            kind: s.kind,
            device,
        };
        let (mut rows, mut sequence, mut placement) = (Vec::new(), Vec::new(), Vec::new());
        let work = s.work.join(format!("{name}"));
        std::fs::create_dir_all(&work).at(&work)?;
        for seed in 0..s.seeds as u64 {
            let random = base::<B>(&work.join("base"), &data, s, seed, None, device, say)?;
            for &n in &settings.requests {
                let ids = pick_ids(&data, n, seed);
                let mut reference = None;
                for &mode in &settings.modes {
                    let opts = ForgetOptions {
                        segments: mode,
                        ..s.opts
                    };
                    let r = request::<B>(
                        &random,
                        &ids,
                        None,
                        Kind::Random,
                        &opts,
                        &mut reference,
                        &judge,
                        seed,
                        &work,
                    )?;
                    say(&line(&r));
                    rows.push(r);
                }
            }
            if settings.user_size > 0 {
                let users = synthetic_users(&data, settings.user_size, seed);
                let names: Vec<&String> = users.members.keys().collect();
                let user = names[(mix(seed ^ 0xbeef) % names.len() as u64) as usize].clone();
                let ids = users.members[&user].clone();
                let grouped = base::<B>(
                    &work.join("grouped"),
                    &data,
                    s,
                    seed,
                    Some(&users),
                    device,
                    say,
                )?;
                placement.push(PlacementCost {
                    seed,
                    random: random.trained.test_accuracy,
                    grouped: grouped.trained.test_accuracy,
                });
                for (b, group) in [(&grouped, Some(user.as_str())), (&random, None)] {
                    let r = request::<B>(
                        b,
                        &ids,
                        group,
                        Kind::User,
                        &s.opts,
                        &mut None,
                        &judge,
                        seed,
                        &work,
                    )?;
                    say(&line(&r));
                    rows.push(r);
                }
                if seed == 0 && settings.sequence > 0 {
                    let mut order = names.clone();
                    shuffle(&mut order, mix(0x05e9_05e2));
                    let requests: Vec<Vec<u64>> = order
                        .iter()
                        .take(settings.sequence)
                        .map(|u| users.members[*u].clone())
                        .collect();
                    sequence.extend(successive::<B>(
                        &grouped,
                        &requests,
                        Kind::User,
                        &judge,
                        &s.opts,
                        &work,
                    )?);
                }
                drop(grouped);
                fresh_folder(&work.join("grouped"))?;
            }
            if seed == 0 && settings.sequence > 0 {
                for &n in &settings.requests {
                    let requests = disjoint_requests(&data, n, settings.sequence);
                    sequence.extend(successive::<B>(
                        &random,
                        &requests,
                        Kind::Random,
                        &judge,
                        &s.opts,
                        &work,
                    )?);
                }
            }
            drop(random);
            fresh_folder(&work.join("base"))?;
        }
        std::fs::remove_dir(&work).at(&work)?;
        all.push(UnlearnResult {
            dataset: name,
            rows,
            sequence,
            placement,
        });
    }
    Ok(all)
}

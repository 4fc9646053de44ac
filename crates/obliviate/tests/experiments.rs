//! Protocol facts of the experiments, asserted on a small scale: what must hold whatever the
//! timings (Retrain is the reference; ε = 0 makes DeepObliviate a retrain).

mod common;

use common::*;
use obliviate::data::DatasetName;
use obliviate::experiments::Setup;
use obliviate::experiments::backdoor::Criteria;
use obliviate::experiments::calibrate::{CalibrateSettings, Probe};
use obliviate::experiments::compare::{Baselines, CompareSettings, Method};
use obliviate::experiments::unlearn::{Kind, UnlearnSettings};
use obliviate::model::ModelKind;
use obliviate::unlearn::{ForgetOptions, Segmentation, StopReason, StopRule};

/// ε = 0, with the stop rule consulted from the third residual on (never stops early).
fn exact() -> ForgetOptions {
    ForgetOptions {
        stop: StopRule::fit(0.0),
        min_points: 3,
        ..ForgetOptions::default()
    }
}

/// MLP-small on the first 600/200 bundled samples, exact forgetting, `seeds` seeds.
fn setup(work: &Tmp, seeds: usize) -> Setup {
    Setup {
        datasets: vec![DatasetName::MnistMini],
        limit: Some((600, 200)),
        kind: ModelKind::MlpSmall,
        cfg: tiny_cfg(0),
        seeds,
        opts: exact(),
        work: work.0.clone(),
    }
}

#[test]
fn compare_protocol_retrain_is_the_reference_and_exact_forgetting_is_a_retrain() {
    let work = Tmp::new("compare");
    let s = CompareSettings {
        setup: setup(&work, 1),
        requests: vec![3],
        baselines: Baselines {
            shards: vec![2],
            slices: 2,
            sisa_epochs: None,
            finetune_steps: 3,
            neggrad_steps: 3,
            neggrad_beta: 0.95,
            repair_steps: 2,
        },
    };
    let results =
        obliviate::experiments::compare::run::<B>(&s, None, &Default::default(), &mut |_: &str| {})
            .unwrap();
    let rows = &results[0].rows;
    let methods: Vec<Method> = rows.iter().map(|r| r.method).collect();
    assert_eq!(
        methods,
        [
            Method::Retrain,
            Method::DeepObliviate,
            Method::Sisa(2),
            Method::Amnesiac,
            Method::FineTune,
            Method::NegGradPlus
        ]
    );
    let (retrain, deep) = (&rows[0], &rows[1]);
    assert_eq!(retrain.gap, 0.0);
    assert_eq!(retrain.speedup, 1.0);
    assert!(retrain.model_sha256.is_some());
    assert_eq!(
        deep.model_sha256, retrain.model_sha256,
        "ε = 0 is retraining"
    );
    assert_eq!((deep.gap, deep.test_accuracy), (0.0, retrain.test_accuracy));
    assert_eq!(deep.mia_auc, retrain.mia_auc);
    assert!(
        rows[2].model_sha256.is_none(),
        "an ensemble has no single model"
    );
    // The scratch folder is left empty: every run the protocol made is removed.
    assert_eq!(std::fs::read_dir(&work.0).unwrap().count(), 0);
}

#[test]
fn unlearn_protocol_with_exact_forgetting_matches_the_retrained_accuracy() {
    let work = Tmp::new("unlearn");
    let s = UnlearnSettings {
        setup: setup(&work, 2),
        requests: vec![1, 4],
        modes: vec![Segmentation::Segmented, Segmentation::Single],
        user_size: 50,
        sequence: 2,
    };
    let mut lines = 0;
    let results =
        obliviate::experiments::unlearn::run::<B>(&s, None, &Default::default(), &mut |_: &str| {
            lines += 1
        })
        .unwrap();
    let r = &results[0];
    // Per seed: 2 sizes × 2 modes of random ids, and one user grouped and spread.
    assert_eq!(r.rows.len(), 2 * (4 + 2));
    // Successive requests on seed 0: two users, then two of each random size.
    let kinds: Vec<(Kind, usize)> = r.sequence.iter().map(|v| (v.kind, v.ids)).collect();
    assert_eq!(
        kinds,
        [
            (Kind::User, 50),
            (Kind::User, 50),
            (Kind::Random, 1),
            (Kind::Random, 1),
            (Kind::Random, 4),
            (Kind::Random, 4)
        ]
    );
    assert!(
        r.sequence
            .iter()
            .all(|v| v.blocks_retrained > 0 && v.accuracy.is_finite())
    );
    assert_eq!(r.placement.len(), 2);
    for row in &r.rows {
        // ε = 0: every mode and placement is a retrain.
        assert_eq!(row.unlearned, row.retrained, "{row:?}");
        assert_eq!(row.loss_unlearned, row.loss_retrained, "{row:?}");
        assert_eq!(row.l2_unlearned, 0.0);
        assert_eq!(row.stop_rule, StopReason::End);
        assert!(row.l2_floor > 0.0 && row.loss_floor.is_finite());
    }
    let users: Vec<_> = r.rows.iter().filter(|x| x.kind == Kind::User).collect();
    assert_eq!(users.len(), 4);
    assert!(users.iter().all(|u| u.ids == 50));
    let grouped = users.iter().find(|u| u.placement == "grouped").unwrap();
    let spread = users.iter().find(|u| u.placement == "random").unwrap();
    assert!(
        grouped.affected_blocks < spread.affected_blocks,
        "a user kept together touches fewer blocks: {} vs {}",
        grouped.affected_blocks,
        spread.affected_blocks
    );
    // A line per trained base (random and grouped) and per request.
    assert_eq!(lines, 2 * (2 + 6));
    assert_eq!(std::fs::read_dir(&work.0).unwrap().count(), 0);
}

#[test]
fn calibration_judges_every_request_and_exact_forgetting_passes_with_zero_distance() {
    let work = Tmp::new("calibrate");
    let s = CalibrateSettings {
        setup: setup(&work, 1),
        epsilons: vec![0.0, 0.5],
        min_points: vec![1],
        negligible: obliviate::unlearn::NEGLIGIBLE,
        fraction: 0.03,
        user_size: 30,
        criteria: Criteria::default(),
    };
    let results = obliviate::experiments::calibrate::run::<B>(
        &s,
        None,
        &Default::default(),
        &mut |_: &str| {},
    )
    .unwrap();
    let r = &results[0];
    assert_eq!(r.baselines.len(), 3);
    assert_eq!(r.rows.len(), 3 * 2);
    assert_eq!(r.grid.len(), 2);
    for b in &r.baselines {
        assert_eq!(
            b.original.attack_success.is_some(),
            b.probe == Probe::BackdoorUser
        );
        assert!(b.l2_floor > 0.0 && b.l2_original > 0.0, "{b:?}");
        let samples = match b.probe {
            Probe::BackdoorUser => 18,
            Probe::User => 30,
            Probe::RandomId => 1,
        };
        assert_eq!(b.samples, samples);
    }
    // ε = 0 retrains every block after the first affected one: the retrained model itself.
    for row in r.rows.iter().filter(|x| x.epsilon == 0.0) {
        assert_eq!(row.l2, 0.0, "{row:?}");
        assert_eq!(row.l2_closed, 1.0);
        assert!(row.failures.is_empty(), "{row:?}");
        assert_eq!(row.stop_reason, StopReason::End);
    }
    let exact_point = &r.grid[0];
    assert!(exact_point.pass && exact_point.epsilon == 0.0);
    let choice = r.choice.as_ref().expect("ε = 0 passes");
    assert!(choice.blocks <= exact_point.blocks);
    assert_eq!(std::fs::read_dir(&work.0).unwrap().count(), 0);
}

#[test]
fn backdoor_thresholds_are_the_documented_ones() {
    // ARCHITECTURE.md and the `verify backdoor` help: ≥ 90 % original attack success, and the
    // unlearned model within 2 pt of attack success and 0.3 pt of clean accuracy of the
    // retrained one.
    let c = Criteria::default();
    assert_eq!(
        (c.min_original_asr, c.asr_tolerance, c.accuracy_tolerance),
        (0.9, 0.02, 0.003)
    );
}

#[test]
fn experiments_never_replace_a_folder_they_did_not_make() {
    let t = Tmp::new("fresh");
    let user = t.join("mine");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(user.join("notes.txt"), b"precious").unwrap();
    let e = obliviate::experiments::fresh_folder(&user).unwrap_err();
    assert!(e.to_string().contains("neither empty nor a run"), "{e}");
    assert_eq!(std::fs::read(user.join("notes.txt")).unwrap(), b"precious");
    // A run the engine made is replaced.
    let run = t.join("run");
    train_tiny(&run, &tiny_data(), ModelKind::MlpSmall, tiny_cfg(1));
    obliviate::experiments::fresh_folder(&run).unwrap();
    assert!(!run.exists());
}

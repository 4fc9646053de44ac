//! Backdoor verification and membership inference on a small run.

mod common;

use common::*;
use obliviate::audit::mia::mia;
use obliviate::audit::outputs_of;
use obliviate::chain::Chain;
use obliviate::data::Split;
use obliviate::data::backdoor::{Backdoor, Trigger};
use obliviate::experiments::backdoor::{BackdoorSettings, Criteria, Placement, verify_backdoor};
use obliviate::model::ModelKind;
use obliviate::train::NoProgress;
use obliviate::unlearn::{ForgetOptions, StopRule};

#[test]
fn trigger_stamps_only_the_user_and_keeps_test_labels() {
    let data = tiny_data();
    let t = Trigger::bottom_right(&data, 4, 0).unwrap();
    assert_eq!((t.x, t.y), (24, 24));
    let b = Backdoor::choose(&data, t, 0.05, 1).unwrap();
    assert_eq!(b.ids.len(), 30);
    let p = b.poison(&data).unwrap();
    for (r, id) in data.train.ids.iter().enumerate() {
        let user = b.ids.binary_search(id).is_ok();
        assert_eq!(p.train.labels[r] == 0, user || data.train.labels[r] == 0);
        let corner = p.train.pixels[r * 784 + 27 * 28 + 27];
        if user {
            assert_eq!(corner, 255);
            assert_ne!(
                data.train.labels[r], 0,
                "users are chosen outside the target class"
            );
        } else {
            assert_eq!(corner, data.train.pixels[r * 784 + 27 * 28 + 27]);
        }
    }
    assert_ne!(p.fingerprint, data.fingerprint);
    let trig = b.triggered_test(&p).unwrap();
    assert!(trig.test.labels.iter().all(|&l| l != 0));
    assert!((0..trig.test.len()).all(|r| trig.test.pixels[r * 784 + 24 * 28 + 24] == 255));
    assert!(Trigger::bottom_right(&data, 29, 0).is_err());
    assert!(Trigger::bottom_right(&data, 4, 10).is_err());
}

#[test]
fn backdoor_is_learned_and_exact_forgetting_matches_retraining() {
    let data = tiny_data();
    let work = Tmp::new("backdoor");
    let mut cfg = tiny_cfg(3);
    cfg.epochs_per_block = 2;
    let s = BackdoorSettings {
        kind: ModelKind::Lenet5,
        cfg,
        fraction: 0.1,
        trigger: Trigger::bottom_right(&data, 4, 0).unwrap(),
        // ε = 0 with the stop rule running from the third residual: it must never stop early.
        opts: ForgetOptions {
            stop: StopRule::fit(0.0),
            min_points: 3,
            ..ForgetOptions::default()
        },
        work: work.0.clone(),
        placement: Placement::Random,
        criteria: Criteria {
            min_original_asr: 0.5,
            ..Criteria::default()
        },
    };
    let r = verify_backdoor::<B>(&data, &s, &Default::default(), &mut NoProgress).unwrap();
    assert_eq!(r.user_samples, 60);
    assert!(
        r.original.attack_success_rate > r.retrained.attack_success_rate + 0.3,
        "{r:#?}"
    );
    assert_eq!(
        r.unlearned.attack_success_rate,
        r.retrained.attack_success_rate
    );
    assert_eq!(r.unlearned.clean_accuracy, r.retrained.clean_accuracy);
    assert!(r.pass, "{:?}", r.criteria);
    // The run records the backdoor, so its data can be rebuilt for later commands.
    let c = Chain::open(&work.join("backdoor-run")).unwrap();
    let rebuilt = data.clone().derive(&c.manifest().dataset.origin()).unwrap();
    c.check_dataset(&rebuilt).unwrap();
    assert!(c.check_dataset(&data).is_err());
}

#[test]
fn membership_signal_of_training_samples_exceeds_that_of_unseen_ones() {
    let data = tiny_data();
    let run = Tmp::new("mia");
    let mut cfg = tiny_cfg(5);
    cfg.epochs_per_block = 4;
    train_tiny(&run.0, &data, ModelKind::MlpSmall, cfg);
    let theta = Chain::open(&run.0).unwrap().served().unwrap();
    let device = Default::default();
    let members: Vec<usize> = (0..200).collect();
    let test: Vec<usize> = (0..200).collect();
    let m = outputs_of::<B>(
        ModelKind::MlpSmall,
        &theta,
        &data,
        Split::Train,
        &members,
        &device,
    )
    .unwrap();
    let t = outputs_of::<B>(
        ModelKind::MlpSmall,
        &theta,
        &data,
        Split::Test,
        &test,
        &device,
    )
    .unwrap();
    let r = mia(&m, &t, 0);
    assert_eq!(r.members, 200);
    assert!(
        r.loss.auc > 0.5,
        "training samples should have lower loss: {}",
        r.loss.auc
    );
    let same = mia(&t, &t, 0);
    assert!((same.loss.auc - 0.5).abs() < 0.1, "{}", same.loss.auc);
    assert!(m.mean_kl(&m).abs() < 1e-12 && t.mean_kl(&m) > 0.0);
}

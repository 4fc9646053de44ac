//! Every model builds for its dataset shapes, trains a block, and rejects shapes it cannot take.

mod common;

use common::*;
use obliviate::chain::TrainConfig;
use obliviate::data::{Dataset, DatasetName, Samples};
use obliviate::model::{InputShape, ModelKind, Net};
use obliviate::optim::OptimConfig;
use obliviate::params::extract;
use obliviate::train::BlockTrainer;

fn synthetic(name: DatasetName, shape: InputShape, classes: usize) -> Dataset {
    let n = 8;
    let mk = |n: usize| Samples {
        ids: (0..n as u64).collect(),
        pixels: (0..n * shape.numel()).map(|i| (i * 7 % 2) as u8).collect(),
        labels: (0..n).map(|i| (i % classes) as u16).collect(),
    };
    Dataset::from_parts(name, shape, classes, mk(n), mk(4)).unwrap()
}

#[test]
fn every_model_trains_one_block_and_changes_its_weights() {
    let img = |c, s| InputShape {
        channels: c,
        height: s,
        width: s,
    };
    let cases = [
        (
            ModelKind::Mlp,
            DatasetName::Purchase,
            InputShape {
                channels: 1,
                height: 1,
                width: 600,
            },
            100,
            600 * 1024
                + 1024
                + 1024 * 512
                + 512
                + 512 * 256
                + 256
                + 256 * 128
                + 128
                + 128 * 100
                + 100,
        ),
        (
            ModelKind::MlpSmall,
            DatasetName::Purchase,
            InputShape {
                channels: 1,
                height: 1,
                width: 600,
            },
            2,
            600 * 128 + 128 + 128 * 2 + 2,
        ),
        (
            ModelKind::Lenet5,
            DatasetName::Mnist,
            img(1, 28),
            10,
            61_706,
        ),
        (
            ModelKind::Cnn,
            DatasetName::Cifar10,
            img(3, 32),
            10,
            2_168_362,
        ),
        (ModelKind::Resnet18, DatasetName::Cifar10, img(3, 32), 10, 0),
    ];
    let device = Default::default();
    for (kind, name, shape, classes, params) in cases {
        let data = synthetic(name, shape, classes);
        let cfg = TrainConfig {
            blocks: 1,
            epochs_per_block: 1,
            batch_size: 4,
            optim: OptimConfig::adam(1e-3),
            seed: 1,
            lr_final: 1.0,
            storage: Default::default(),
            micro_batches: if kind.has_batch_norm() { 1 } else { 2 },
        };
        let (theta, opt) = BlockTrainer::<B>::initial(&data, kind, &cfg, &device).unwrap();
        let trainable: usize = {
            let net = Net::<B>::new(kind, shape, classes, 1, &device).unwrap();
            let mask = obliviate::params::trainable_mask(&net);
            extract(&net)
                .tensors
                .iter()
                .zip(&mask)
                .filter(|(_, m)| **m)
                .map(|(t, _)| t.data.len())
                .sum()
        };
        if params > 0 {
            assert_eq!(trainable, params, "{kind} parameter count");
        } else {
            // ResNet-18 (CIFAR): 11.17 M trainable parameters plus batch-norm running statistics.
            assert!(
                (11_100_000..11_300_000).contains(&trainable),
                "{kind}: {trainable}"
            );
            assert!(
                theta.numel() > trainable,
                "running statistics are part of θ"
            );
        }
        let mut t =
            BlockTrainer::<B>::new(&data, kind, cfg, theta.clone(), &opt, 0, &device).unwrap();
        let out = t.run_block(1, &data.train.ids).unwrap();
        assert!(out.delta.norms().l1 > 0.0, "{kind} did not train");
        assert_eq!(out.step, 2);
        assert!(
            out.delta
                .tensors
                .iter()
                .all(|t| t.data.iter().all(|v| v.is_finite()))
        );
    }
}

#[test]
fn initial_weights_depend_only_on_the_seed() {
    let data = tiny_data();
    let device = Default::default();
    let a = Net::<B>::new(ModelKind::Lenet5, data.shape, 10, 5, &device).unwrap();
    let b = Net::<B>::new(ModelKind::Lenet5, data.shape, 10, 5, &device).unwrap();
    let c = Net::<B>::new(ModelKind::Lenet5, data.shape, 10, 6, &device).unwrap();
    assert!(extract(&a).bit_identical(&extract(&b)));
    assert!(!extract(&a).bit_identical(&extract(&c)));
    // PyTorch's default bound 1/sqrt(fan_in): conv1 has fan_in 25.
    let w = &extract(&a).tensors[0];
    assert_eq!(w.name, "conv1.weight");
    assert!(w.data.iter().all(|v| v.abs() <= 0.2) && w.data.iter().any(|v| v.abs() > 0.15));
}

#[test]
fn models_reject_shapes_they_cannot_take() {
    let device = Default::default();
    let tab = InputShape {
        channels: 1,
        height: 1,
        width: 600,
    };
    for kind in [ModelKind::Lenet5, ModelKind::Cnn, ModelKind::Resnet18] {
        let e = Net::<B>::new(kind, tab, 10, 0, &device)
            .unwrap_err()
            .to_string();
        assert!(e.contains(kind.name()), "{e}");
    }
    assert!(Net::<B>::new(ModelKind::Mlp, tab, 1, 0, &device).is_err());
    assert!(
        ModelKind::parse("vgg")
            .unwrap_err()
            .to_string()
            .contains("lenet5")
    );
}

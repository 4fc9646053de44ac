//! Python with numpy alone decodes the chain files at every storage precision to the engine's
//! numbers, as the README documents. Needs `python3 -m pip install safetensors numpy zstandard`
//! (CI's `.ci/run` installs them); without them this test fails rather than pretending to pass.

mod common;

use common::*;
use obliviate::chain::{Chain, Storage, TrainConfig};
use obliviate::model::ModelKind;
use obliviate::optim::OptimConfig;
use obliviate::params::{ParamSet, Precision};
use obliviate::store::Compression;

fn digests(set: &ParamSet) -> serde_json::Value {
    set.tensors
        .iter()
        .map(|t| {
            let bytes: &[u8] = bytemuck::cast_slice(&t.data);
            (t.name.clone(), obliviate::store::sha256(bytes).into())
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[test]
fn python_decodes_every_precision_to_the_engines_numbers() {
    let data = tiny_data();
    let plain = Compression::None;
    for (delta, opt, compression) in [
        (Precision::F32, Precision::F32, plain),
        (Precision::Bf16, Precision::Bf16, plain),
        (Precision::F16, Precision::F32, plain),
        (Precision::Q8, Precision::Q8, plain),
        (Precision::Q8, Precision::Bf16, Compression::Zstd),
    ] {
        let storage = Storage {
            delta,
            opt,
            compression,
            keyframe_every: 0,
            opt_every: 0,
        };
        let what = storage.to_string();
        let run = Tmp::new("interop");
        // Adam, so that q8 codes a second moment as a square (uint8) as well as signed values.
        let cfg = TrainConfig {
            storage,
            optim: OptimConfig::adam(0.002),
            ..tiny_cfg(12)
        };
        train_tiny(&run.0, &data, ModelKind::Lenet5, cfg);
        let v = python_json(
            "interop.py",
            &run.0,
            "install with `python3 -m pip install safetensors numpy zstandard`",
        );
        assert_eq!(
            v["fold_equals_model"], true,
            "{what}: numpy's float32 fold must reproduce the served model"
        );
        let chain = Chain::open(&run.0).unwrap();
        let first = &chain.manifest().blocks[0];
        let (delta1, _) = chain.read_set(first.delta.as_ref().unwrap()).unwrap();
        let (opt1, _) = chain.read_set(first.opt.as_ref().unwrap()).unwrap();
        assert_eq!(
            v["delta1"],
            digests(&delta1),
            "{what}: δ_1 decoded differently"
        );
        assert_eq!(v["opt1"], digests(&opt1), "{what}: o_1 decoded differently");
        let shapes = v["delta1_shapes"].as_object().unwrap();
        assert_eq!(shapes["conv1.weight"], serde_json::json!([6, 1, 5, 5]));
        assert_eq!(shapes["fc1.weight"], serde_json::json!([400, 120]));
        if opt == Precision::Q8 && compression == plain {
            let bytes = std::fs::read(chain.path(first.opt.as_ref().unwrap())).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let dtypes: Vec<_> = st.tensors().iter().map(|(_, t)| t.dtype()).collect();
            assert!(
                dtypes.contains(&safetensors::Dtype::U8)
                    && dtypes.contains(&safetensors::Dtype::I8),
                "{dtypes:?}"
            );
        }
        if delta == Precision::F32 {
            assert_eq!(v["safetensors_reads_the_same"], true, "{what}");
        }
    }
}

/// The README's definition of θ at a keyframe (its file plus the shift-tree nodes on its path,
/// leaf first) and of θ_B, computed by numpy after a forget recorded shifts, is the served model.
#[test]
fn python_folds_keyframes_with_their_shifts_to_the_served_model() {
    let data = tiny_data();
    let run = Tmp::new("interop-shifts");
    let mut cfg = tiny_cfg(12);
    cfg.storage.keyframe_every = 2;
    train_tiny(&run.0, &data, ModelKind::MlpSmall, cfg);
    let id = Chain::open(&run.0).unwrap().manifest().blocks[1].ids[0];
    let r = forget_in(&run.0, &data, &[id], &eager()).unwrap();
    assert!(r.stop_block < 10, "{:?}", r.segments);
    assert!(!Chain::open(&run.0).unwrap().manifest().shifts.is_empty());
    let v = python_json(
        "interop.py",
        &run.0,
        "install with `python3 -m pip install safetensors numpy zstandard`",
    );
    assert_eq!(v["keyframe_fold_equals_model"], true, "{v}");
}

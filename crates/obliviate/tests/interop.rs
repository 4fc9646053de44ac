//! Python's `safetensors` + `numpy` read the chain files and get the same numbers.
//! Needs `python3 -m pip install safetensors numpy` (CI's `.ci/run` installs them); without
//! them this test fails rather than pretending to pass.

mod common;

use common::*;
use obliviate::chain::Chain;
use obliviate::model::ModelKind;
use obliviate::params::ParamSet;

fn sums(set: &ParamSet) -> Vec<(String, f64)> {
    set.tensors
        .iter()
        .map(|t| (t.name.clone(), t.data.iter().map(|&x| x as f64).sum()))
        .collect()
}

#[test]
fn python_reads_increments_and_model_with_the_same_numbers() {
    let data = tiny_data();
    let run = Tmp::new("interop");
    train_tiny(&run.0, &data, ModelKind::Lenet5, tiny_cfg(12));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&run.0)
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "python3 interop.py failed (install with `python3 -m pip install safetensors numpy`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json from python");
    assert_eq!(
        v["fold_equals_model"], true,
        "numpy's float32 fold must reproduce the served model"
    );
    let chain = Chain::open(&run.0).unwrap();
    let (delta1, _) = chain
        .read_set(chain.manifest().blocks[0].delta.as_ref().unwrap())
        .unwrap();
    let model = chain.served().unwrap();
    for (set, key) in [(&delta1, "delta1_sums"), (&model, "model_sums")] {
        let py = v[key].as_object().unwrap();
        assert_eq!(py.len(), set.tensors.len());
        for (name, sum) in sums(set) {
            let p = py[&name].as_f64().unwrap();
            assert!(
                (p - sum).abs() <= 1e-9 * sum.abs().max(1.0),
                "{key} {name}: python {p} vs rust {sum}"
            );
        }
    }
    let shapes = v["delta1_shapes"].as_object().unwrap();
    assert_eq!(shapes["conv1.weight"], serde_json::json!([6, 1, 5, 5]));
    assert_eq!(shapes["fc1.weight"], serde_json::json!([400, 120]));
}

//! The `obliviate` binary end to end: JSON outputs, kill-and-resume, bad input, plots.

mod common;

use std::path::Path;

use common::{TRAIN, Tmp, bin, json, run, train};

fn safetensors_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for sub in [dir.to_path_buf(), dir.join("blocks")] {
        for e in std::fs::read_dir(&sub).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".safetensors") {
                v.push((name, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn train_info_eval_check_print_the_promised_json() {
    let t = Tmp::new("json");
    let r = t.0.join("run");
    let v = json(&train(&r, &[]));
    for key in [
        "blocks",
        "test_accuracy",
        "seconds",
        "bytes_on_disk",
        "model_sha256",
    ] {
        assert!(!v[key].is_null(), "train --json lacks {key}: {v}");
    }
    assert_eq!(v["blocks"], 12);
    let acc = v["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.3, "{acc}");
    let e = json(&run(bin().arg("eval").arg(&r).arg("--json")));
    assert_eq!(e["test_accuracy"].as_f64().unwrap(), acc);
    assert_eq!(
        e["model_sha256"], v["model_sha256"],
        "eval names the model it scored"
    );
    let i = json(&run(bin().arg("info").arg(&r).arg("--json")));
    assert_eq!(i["ids"], 600);
    assert_eq!(i["blocks"], 12);
    assert_eq!(i["config"]["epochs_per_block"], 1);
    assert_eq!(
        i["config"]["micro_batches"], 2,
        "mlp-small on flex trains each minibatch in two slices by default"
    );
    assert!(i["bytes_on_disk"].as_u64().unwrap() > 100_000);
    assert_eq!(
        json(&run(bin().arg("check").arg(&r).arg("--json")))["ok"],
        true
    );
    // Batch norm needs whole minibatches: refused before the folder exists.
    let bn = t.0.join("bn");
    let o = run(bin()
        .args([
            "train",
            "--model",
            "resnet18",
            "--micro-batches",
            "2",
            "--out",
        ])
        .arg(&bn));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("batch norm"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!bn.exists());
    // Training into an existing run is refused with a clear message.
    let again = train(&r, &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
}

#[test]
fn a_killed_training_resumes_to_the_same_chain() {
    let t = Tmp::new("kill");
    let (whole, killed) = (t.0.join("whole"), t.0.join("killed"));
    json(&train(&whole, &[]));
    let out = run(bin()
        .args(TRAIN)
        .arg("--out")
        .arg(&killed)
        .arg("--json")
        .env("OBLIVIATE_FAILPOINT", "train:block-written:6"));
    assert!(!out.status.success(), "the failpoint must kill the process");
    assert!(String::from_utf8_lossy(&out.stderr).contains("failpoint"));
    let v = json(&run(bin()
        .args(["train", "--resume", "--json", "--out"])
        .arg(&killed)));
    let resumed = v["resumed_from"].as_u64().unwrap();
    assert!(resumed < 12, "{v}");
    assert_eq!(safetensors_files(&whole), safetensors_files(&killed));
}

#[test]
fn forget_retrain_and_bad_ids() {
    let t = Tmp::new("forget");
    let r = t.0.join("run");
    json(&train(&r, &[]));
    let manifest = std::fs::read(r.join("manifest.json")).unwrap();
    let bad = run(bin()
        .arg("forget")
        .arg(&r)
        .args(["--ids", "4,70000,600", "--json"]));
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("70000") && err.contains("600") && err.contains("unknown"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(r.join("manifest.json")).unwrap(),
        manifest,
        "a refused request changes nothing"
    );

    let ids = t.0.join("ids.txt");
    std::fs::write(&ids, "# user 17\n4\n\n9\n").unwrap();
    let plot = t.0.join("residuals.png");
    let v = json(&run(bin()
        .arg("forget")
        .arg(&r)
        .arg("--ids-file")
        .arg(&ids)
        .args(["--min-points", "4", "--json", "--plot"])
        .arg(&plot)));
    for key in [
        "first_block",
        "last_block",
        "stop_block",
        "blocks_retrained",
        "residuals",
        "seconds",
        "test_accuracy",
        "model_sha256",
    ] {
        assert!(!v[key].is_null(), "forget --json lacks {key}: {v}");
    }
    assert_eq!(v["ids"], serde_json::json!([4, 9]));
    assert!(v["residuals"].as_array().unwrap().len() >= 4);
    let png = std::fs::read(&plot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 5_000, "a real image");

    let json_ids = t.0.join("ids.json");
    std::fs::write(&json_ids, "[4, 11]").unwrap();
    let again = run(bin()
        .arg("forget")
        .arg(&r)
        .arg("--ids-file")
        .arg(&json_ids)
        .arg("--json"));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already forgotten: 4"));
    let skip = json(&run(bin()
        .arg("forget")
        .arg(&r)
        .arg("--ids-file")
        .arg(&json_ids)
        .args(["--skip-missing", "--stop", "relative", "--json"])));
    assert_eq!(skip["ids"], serde_json::json!([11]));

    let g = json(&run(bin()
        .arg("retrain")
        .arg(&r)
        .arg("--out")
        .arg(t.0.join("gold"))
        .arg("--json")));
    assert_eq!(g["blocks"], 12);
    let info = json(&run(bin().arg("info").arg(t.0.join("gold")).arg("--json")));
    assert_eq!(info["ids"], 597);
    assert_eq!(
        json(&run(bin().arg("info").arg(&r).arg("--json")))["requests"],
        2
    );
}

#[test]
fn demo_runs_the_whole_method() {
    let t = Tmp::new("demo");
    let v = json(&run(bin()
        .args(["demo", "--requests", "1", "--json", "--dir"])
        .arg(&t.0)));
    for key in [
        "original_accuracy",
        "unlearned_accuracy",
        "retrained_accuracy",
        "speedup",
        "retrain_seconds",
    ] {
        assert!(v[key].as_f64().is_some(), "demo --json lacks {key}: {v}");
    }
    assert!(v["original_accuracy"].as_f64().unwrap() > 0.8);
    // Forgetting one id retrains only part of the chain (timings are for benchmarks, not tests).
    assert!(v["blocks_retrained_mean"].as_f64().unwrap() < v["blocks"].as_f64().unwrap());
}

fn copy_run(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst.join("blocks")).unwrap();
    for sub in ["", "blocks"] {
        for e in std::fs::read_dir(src.join(sub)).unwrap().flatten() {
            if e.path().is_file() && e.file_name() != ".lock" {
                std::fs::copy(e.path(), dst.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
}

#[test]
fn audits_report_and_backdoor_verification() {
    let t = Tmp::new("audit");
    let (r, orig, gold, floor) = (
        t.0.join("run"),
        t.0.join("orig"),
        t.0.join("gold"),
        t.0.join("floor"),
    );
    json(&train(&r, &[]));
    copy_run(&r, &orig);
    json(&run(bin().arg("forget").arg(&r).args([
        "--ids",
        "4,9,33,120,301,555",
        "--epsilon",
        "0",
        "--min-points",
        "1000",
        "--json",
    ])));
    json(&run(bin()
        .arg("retrain")
        .arg(&r)
        .arg("--out")
        .arg(&gold)
        .arg("--json")));
    json(&run(bin()
        .arg("retrain")
        .arg(&r)
        .arg("--out")
        .arg(&floor)
        .args(["--seed", "99", "--json"])));

    let m = json(&run(bin()
        .args(["audit", "mia"])
        .arg(&r)
        .arg("--against")
        .arg(&gold)
        .arg("--original")
        .arg(&orig)
        .arg("--floor")
        .arg(&floor)
        .arg("--json")));
    let models = m["models"].as_array().unwrap();
    assert_eq!(models.len(), 4);
    assert_eq!(m["forgotten"], 6);
    for x in models {
        let auc = x["loss"]["auc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc), "{x}");
    }
    // Exact forgetting (ε = 0) equals retraining, so the attacks see identical models.
    assert_eq!(models[1]["loss"]["auc"], models[2]["loss"]["auc"]);

    let d = json(&run(bin()
        .args(["audit", "distance"])
        .arg(&r)
        .arg("--against")
        .arg(&gold)
        .arg("--floor")
        .arg(&floor)
        .arg("--json")));
    assert_eq!(d["weight_l2"].as_f64().unwrap(), 0.0);
    assert_eq!(d["mean_kl"].as_f64().unwrap(), 0.0);
    assert!(d["floor"]["weight_l2"].as_f64().unwrap() > 0.0);

    let out = t.0.join("report");
    let rep = json(&run(bin()
        .arg("report")
        .arg(&r)
        .arg("--against")
        .arg(&gold)
        .arg("--original")
        .arg(&orig)
        .arg("--floor")
        .arg(&floor)
        .arg("--out")
        .arg(&out)
        .arg("--json")));
    let html = std::fs::read_to_string(rep["html"].as_str().unwrap()).unwrap();
    assert!(
        html.contains("<svg")
            && html.contains("Membership inference")
            && html.contains("noise floor")
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("![") && md.contains("| 1 | 6 |"), "{md}");
    assert!(
        md.contains("## Receipts")
            && md.contains("1 receipt(s); the hash chain")
            && md.contains("| 1 | request-1 | 6 |"),
        "{md}"
    );
    for f in ["accuracy.svg", "mia-roc.svg", "residuals-1.svg"] {
        assert!(std::fs::metadata(out.join(f)).unwrap().len() > 2_000, "{f}");
    }

    let work = t.0.join("bd");
    let b = run(bin()
        .args([
            "verify",
            "backdoor",
            "--model",
            "lenet5",
            "--blocks",
            "12",
            "--epochs-per-block",
            "2",
            "--batch-size",
            "16",
            "--lr",
            "0.05",
            "--lr-final",
            "0.3",
            "--train-limit",
            "600",
            "--test-limit",
            "200",
            "--fraction",
            "0.1",
            "--epsilon",
            "0",
            "--min-points",
            "1000",
            "--json",
            "--work",
        ])
        .arg(&work));
    let code = b.status.code();
    assert!(
        code == Some(0) || code == Some(2),
        "verify backdoor exited with {:?}\nstdout: {}\nstderr: {}",
        b.status,
        String::from_utf8_lossy(&b.stdout),
        String::from_utf8_lossy(&b.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    assert_eq!(v["pass"].as_bool().unwrap(), code == Some(0));
    assert_eq!(
        v["unlearned"]["attack_success_rate"],
        v["retrained"]["attack_success_rate"]
    );
    assert_eq!(v["user_samples"], 60);
}

#[test]
fn sisa_train_forget_eval_and_bench_compare() {
    let t = Tmp::new("sisa");
    let dir = t.0.join("sisa");
    let mut args: Vec<&str> = TRAIN[1..].iter().copied().filter(|a| *a != "12").collect();
    args.retain(|a| *a != "--blocks");
    let out = run(bin()
        .arg("sisa")
        .arg("train")
        .args(&args)
        .args(["--shards", "3", "--slices", "2", "--json", "--out"])
        .arg(&dir));
    let v = json(&out);
    assert_eq!(v["steps"], 6);
    assert!(v["test_accuracy"].as_f64().unwrap() > 0.3, "{v}");
    let v = json(&run(bin()
        .args(["sisa", "forget", "--ids", "3,40", "--json"])
        .arg(&dir)));
    assert_eq!(v["ids"], serde_json::json!([3, 40]));
    let v = json(&run(bin()
        .args(["sisa", "eval", "--aggregate", "softmax", "--json"])
        .arg(&dir)));
    assert_eq!(v["deleted"], 2);
    assert_eq!(v["constituents"].as_array().unwrap().len(), 3);
    let out = run(bin().args(["sisa", "forget", "--ids", "3"]).arg(&dir));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already forgotten: 3"));
    let out = run(bin()
        .arg("sisa")
        .arg("train")
        .args(&args)
        .args(["--blocks", "7", "--out"])
        .arg(t.0.join("other")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shards and --slices"));

    // The head-to-head table, on a tiny scale: every method appears with finite figures.
    let md = t.0.join("BENCH.md");
    let out = run(bin()
        .args([
            "bench",
            "compare",
            "--datasets",
            "mnist-mini",
            "--seeds",
            "1",
            "--requests",
            "2",
            "--model",
            "mlp-small",
            "--blocks",
            "10",
            "--epochs-per-block",
            "1",
            "--train-limit",
            "500",
            "--test-limit",
            "100",
            "--min-points",
            "3",
            "--shards",
            "2,4",
            "--slices",
            "2",
            "--finetune-steps",
            "5",
            "--neggrad-steps",
            "5",
            "--repair-steps",
            "2",
            "--json",
            "--work",
        ])
        .arg(t.0.join("work"))
        .arg("--write")
        .arg(&md));
    let v = json(&out);
    let rows = v["datasets"][0]["rows"].as_array().unwrap();
    let methods: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(
        methods,
        [
            "Retrain",
            "DeepObliviate",
            "SISA S=2",
            "SISA S=4",
            "Amnesiac",
            "Fine-tune",
            "NegGrad+"
        ]
    );
    for r in rows {
        for k in ["test_accuracy", "seconds", "latency_per_1000", "mia_auc"] {
            let x = r[k].as_f64().unwrap();
            assert!(x.is_finite() && x >= 0.0, "{k} of {r}");
        }
        assert!(r["bytes"].as_u64().unwrap() > 0);
    }
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.contains("<!-- bench-compare:begin -->") && text.contains("| NegGrad+ |"));
}

#[test]
fn a_lost_or_corrupt_ledger_is_reported_not_read_as_empty() {
    let t = Tmp::new("ledger");
    let r = t.0.join("run");
    json(&train(&r, &[]));
    json(&run(bin()
        .arg("forget")
        .arg(&r)
        .args(["--ids", "7", "--json"])));
    assert_eq!(
        json(&run(bin().arg("check").arg(&r).arg("--json")))["requests"],
        1
    );
    let ledger = r.join("ledger.sqlite");
    let saved = std::fs::read(&ledger).unwrap();
    std::fs::remove_file(&ledger).unwrap();
    for cmd in ["check", "info"] {
        let out = run(bin().arg(cmd).arg(&r));
        assert!(!out.status.success(), "{cmd} with the ledger gone");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("ledger.sqlite") && err.contains("1 committed"),
            "{err}"
        );
        assert!(!ledger.exists(), "{cmd} must not create a ledger");
    }
    std::fs::write(&ledger, b"not a database, just bytes that are long enough").unwrap();
    let out = run(bin().arg("info").arg(&r));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ledger"));
    std::fs::write(&ledger, saved).unwrap();
    json(&run(bin().arg("info").arg(&r).arg("--json")));
}

#[test]
fn missing_dataset_files_get_a_fetch_hint_and_create_nothing() {
    let t = Tmp::new("nodata");
    let out_dir = t.0.join("run");
    let out = run(bin()
        .args(["train", "--dataset", "fashion-mnist", "--data-dir"])
        .arg(&t.0)
        .arg("--out")
        .arg(&out_dir));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fashion-mnist") && err.contains("obliviate data fetch fashion-mnist"),
        "{err}"
    );
    assert!(!out_dir.exists());
    // Invalid settings are refused before the run folder exists.
    let out = run(bin()
        .args(["train", "--epochs-per-block", "0", "--out"])
        .arg(&out_dir));
    assert!(!out.status.success());
    assert!(!out_dir.exists());
}

#[test]
fn runs_never_mix_with_or_delete_a_users_files() {
    let t = Tmp::new("userfiles");
    // A non-empty folder that is not a run is refused.
    let theirs = t.0.join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("model.g7.safetensors"), b"user data").unwrap();
    let out = train(&theirs, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    assert_eq!(
        std::fs::read(theirs.join("model.g7.safetensors")).unwrap(),
        b"user data"
    );
    // Files a user drops into a run survive the garbage collection of a commit, unless their
    // names are exactly the engine's.
    let r = t.0.join("run");
    json(&train(&r, &[]));
    let keep = [
        "model.g7x.safetensors",
        "notes.txt",
        "blocks/my-weights.safetensors",
        "blocks/.x.safetensors.tmp",
        "blocks/00001.delta.g0.safetensors.bak",
    ];
    for f in keep {
        std::fs::write(r.join(f), b"mine").unwrap();
    }
    json(&run(bin()
        .arg("forget")
        .arg(&r)
        .args(["--ids", "4", "--json"])));
    for f in keep {
        assert_eq!(std::fs::read(r.join(f)).unwrap(), b"mine", "{f}");
    }
    json(&run(bin().arg("check").arg(&r).arg("--json")));
}

#[test]
fn a_plot_path_is_checked_before_anything_is_forgotten() {
    let t = Tmp::new("plot");
    let r = t.0.join("run");
    json(&train(&r, &[]));
    let manifest = std::fs::read(r.join("manifest.json")).unwrap();
    let existing = t.0.join("exists.png");
    std::fs::write(&existing, b"keep").unwrap();
    for (plot, why) in [
        (r.join("manifest.json"), "png or .svg"),
        (r.join("figure.svg"), "inside the run folder"),
        (t.0.join("out.txt"), ".png or .svg"),
        (t.0.join("missing/x.png"), "does not exist"),
        (existing.clone(), "exists"),
    ] {
        let out = run(bin()
            .arg("forget")
            .arg(&r)
            .args(["--ids", "32", "--json", "--plot"])
            .arg(&plot));
        assert!(!out.status.success(), "{}", plot.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{}: {err}", plot.display());
        assert_eq!(std::fs::read(r.join("manifest.json")).unwrap(), manifest);
    }
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep");
    let svg = t.0.join("r.svg");
    json(&run(bin()
        .arg("forget")
        .arg(&r)
        .args(["--ids", "32", "--json", "--plot"])
        .arg(&svg)));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}

/// The command's defaults are a setting that plants the backdoor on the bundled data, so a
/// newcomer running it bare sees the experiment pass (it failed before: 2.5 % attack success).
#[test]
fn verify_backdoor_passes_with_its_defaults_on_the_bundled_data() {
    let t = Tmp::new("bd-default");
    let out = run(bin()
        .args(["verify", "backdoor", "--json", "--work"])
        .arg(t.0.join("work")));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{v}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["pass"], true);
    assert!(
        v["original"]["attack_success_rate"].as_f64().unwrap() >= 0.9,
        "{v}"
    );
}

#[test]
fn hostile_inputs_are_refused_by_name_without_reading_them_whole() {
    let t = Tmp::new("hostile");
    let r = t.0.join("run");
    // A rate that is finite in f64 but infinite in f32 never trains.
    let out = run(bin()
        .args(["train", "--lr", "1e39", "--out"])
        .arg(t.0.join("nan")));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("learning rate"));
    assert!(!t.0.join("nan").exists());
    json(&train(&r, &[]));
    for bad in ["--epsilon=NaN", "--epsilon=-1", "--epsilon=inf"] {
        let out = run(bin().arg("forget").arg(&r).args(["--ids", "3", bad]));
        assert!(!out.status.success(), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("epsilon"));
    }
    let out = run(bin()
        .arg("forget")
        .arg(&r)
        .args(["--ids-file", "/dev/zero"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an id list"));
    // A chain file replaced by an endless device is refused by its size, before any read.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.join("manifest.json")).unwrap()).unwrap();
    let delta = r.join(m["blocks"][3]["delta"]["file"].as_str().unwrap());
    let saved = std::fs::read(&delta).unwrap();
    std::fs::remove_file(&delta).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &delta).unwrap();
    let out = run(bin().arg("check").arg(&r));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a regular file") && err.contains("00004.delta"),
        "{err}"
    );
    // `train --resume` on a finished run says whether it is sound.
    let out = run(bin().args(["train", "--resume", "--out"]).arg(&r));
    assert!(!out.status.success());
    std::fs::remove_file(&delta).unwrap();
    std::fs::write(&delta, saved).unwrap();
    json(&run(bin()
        .args(["train", "--resume", "--json", "--out"])
        .arg(&r)));
}

#[test]
fn a_closed_stdout_ends_the_command_normally() {
    let t = Tmp::new("pipe");
    let r = t.0.join("run");
    json(&train(&r, &[]));
    for args in [
        vec!["info", "--ids"],
        vec!["forget", "--ids", "5", "--json"],
    ] {
        let mut child = bin()
            .arg(args[0])
            .arg(&r)
            .args(&args[1..])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The forget above committed: the ledger says so.
    assert_eq!(
        json(&run(bin().arg("info").arg(&r).arg("--json")))["requests"],
        1
    );
}

/// Recomputes a manifest's plain checksum after an edit, as any writer can.
fn reseal_plain(path: &Path, edit: impl Fn(&mut serde_json::Value)) {
    use sha2::Digest as _;
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    let mut body = v.clone();
    let o = body.as_object_mut().unwrap();
    o.remove("checksum");
    o.remove("hmac");
    let sum: String = sha2::Sha256::digest(serde_json::to_vec(&body).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    v["checksum"] = serde_json::Value::String(sum);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn a_keyed_seal_catches_what_a_recomputed_checksum_hides() {
    let t = Tmp::new("keyed");
    let (key, other) = (t.0.join("seal.key"), t.0.join("other.key"));
    std::fs::write(&key, b"0123456789abcdef0123456789abcdef").unwrap();
    std::fs::write(&other, b"fedcba9876543210fedcba9876543210").unwrap();
    let r = t.0.join("run");
    let keyed = |k: &Path, args: &[&str]| run(bin().args(args).env("OBLIVIATE_SEAL_KEY_FILE", k));
    json(&run(bin()
        .args(TRAIN)
        .arg("--out")
        .arg(&r)
        .arg("--json")
        .env("OBLIVIATE_SEAL_KEY_FILE", &key)));
    let rs = r.to_str().unwrap();
    assert_eq!(
        json(&keyed(&key, &["check", rs, "--json"]))["keyed_seal"],
        "verified"
    );
    assert_eq!(
        json(&run(bin().args(["check", rs, "--json"])))["keyed_seal"],
        "unverified"
    );
    let wrong = keyed(&other, &["check", rs]);
    assert!(!wrong.status.success());
    // A forger who recomputes the plain checksum passes it, but not the keyed seal.
    let manifest = r.join("manifest.json");
    reseal_plain(&manifest, |v| v["test_accuracy"] = serde_json::json!(0.999));
    json(&run(bin().args(["info", rs, "--json"])));
    let out = keyed(&key, &["check", rs]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("keyed seal"));
    reseal_plain(&manifest, |v| {
        v.as_object_mut().unwrap().remove("hmac");
    });
    let out = keyed(&key, &["info", rs]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("carries no keyed seal"));
}

#[test]
fn messages_say_what_is_wrong_once_and_only_what_is_true() {
    let t = Tmp::new("messages");
    let out = run(bin()
        .args(["train", "--test-limit", "0", "--out"])
        .arg(t.0.join("x")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--test-limit"));
    let out = run(bin()
        .args([
            "sisa",
            "train",
            "--model",
            "mlp-small",
            "--train-limit",
            "600",
        ])
        .args(["--shards", "20000", "--out"])
        .arg(t.0.join("s")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("20000 shards for 600 training samples"));
    // A run killed mid-training: `check` must not claim a served model matches.
    let r = t.0.join("run");
    let out = run(bin()
        .args(TRAIN)
        .arg("--out")
        .arg(&r)
        .env("OBLIVIATE_FAILPOINT", "train:block-written:9"));
    assert!(!out.status.success());
    let c = run(bin().arg("check").arg(&r));
    let text = String::from_utf8_lossy(&c.stdout);
    assert!(
        c.status.success() && text.contains("unfinished") && !text.contains("equals"),
        "{text}"
    );
    json(&run(bin()
        .args(["train", "--resume", "--json", "--out"])
        .arg(&r)));
    // Audits refuse ids the run never forgot and peers that are not its retrain.
    json(&run(bin()
        .arg("forget")
        .arg(&r)
        .args(["--ids", "4", "--json"])));
    let gold = t.0.join("gold");
    json(&run(bin()
        .arg("retrain")
        .arg(&r)
        .arg("--out")
        .arg(&gold)
        .arg("--json")));
    let out = run(bin()
        .args(["audit", "mia"])
        .arg(&r)
        .args(["--ids", "5", "--against"])
        .arg(&gold));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never forgotten"));
    let other = t.0.join("other");
    json(&train(&other, &[]));
    let out = run(bin()
        .args(["audit", "distance"])
        .arg(&r)
        .arg("--against")
        .arg(&other));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a retrain of that run"));
    // An operating-system error is said once.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.join("manifest.json")).unwrap()).unwrap();
    std::fs::remove_file(r.join(m["blocks"][0]["opt"]["file"].as_str().unwrap())).unwrap();
    let out = run(bin().arg("check").arg(&r));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn users_are_placed_together_and_forgotten_by_name() {
    let t = Tmp::new("groups");
    let groups = t.0.join("groups.csv");
    let mut csv = String::from("id,group\n");
    for id in 0..30 {
        csv.push_str(&format!("{},alice\n", id * 13));
    }
    for id in 0..40 {
        csv.push_str(&format!("{},bob\n", id * 4 + 401));
    }
    std::fs::write(&groups, csv).unwrap();
    let late = t.0.join("late.txt");
    std::fs::write(&late, "bob\n").unwrap();
    let r = t.0.join("run");
    let v = json(&train(
        &r,
        &[
            "--groups",
            groups.to_str().unwrap(),
            "--late-groups",
            late.to_str().unwrap(),
        ],
    ));
    assert_eq!(v["blocks"], 12);
    let info = json(&run(bin().arg("info").arg(&r).args(["--ids", "--json"])));
    assert_eq!(info["groups"], 2);
    let blocks = info["block_ids"].as_array().unwrap();
    let block_of = |id: u64| {
        blocks
            .iter()
            .position(|b| b.as_array().unwrap().iter().any(|x| x == id))
            .unwrap()
    };
    let alice: std::collections::BTreeSet<usize> = (0..30).map(|i| block_of(i * 13)).collect();
    assert!(alice.len() <= 2, "alice spans {alice:?}");
    let bob: std::collections::BTreeSet<usize> = (0..40).map(|i| block_of(i * 4 + 401)).collect();
    assert!(bob.iter().all(|&b| b >= 10), "bob is late: {bob:?}");
    // Unknown groups are refused by name and change nothing.
    let manifest = std::fs::read(r.join("manifest.json")).unwrap();
    let out = run(bin().arg("forget").arg(&r).args(["--group", "alice,carol"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"carol\""));
    assert_eq!(std::fs::read(r.join("manifest.json")).unwrap(), manifest);
    let f = json(&run(bin().arg("forget").arg(&r).args([
        "--group",
        "alice",
        "--no-eval",
        "--json",
    ])));
    let ids: Vec<u64> = f["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(ids, (0..30).map(|i| i * 13).collect::<Vec<_>>());
    assert!(f["test_accuracy"].is_null(), "--no-eval measures nothing");
    assert!(f["wall_seconds"].as_f64().unwrap() >= f["seconds"].as_f64().unwrap());
    assert!(f["units"]["residuals"].as_str().unwrap().contains("L1"));
    assert_eq!(f["receipts"][0]["groups"], serde_json::json!(["alice"]));
    assert_eq!(f["receipts"][0]["ids"], f["ids"]);
    let c = json(&run(bin().arg("check").arg(&r).arg("--json")));
    assert_eq!(c["receipts"], 1);
    let v = json(&run(bin()
        .args(["receipts", "verify"])
        .arg(&r)
        .arg("--json")));
    assert_eq!(v["problems"], serde_json::json!([]));
    let listed = run(bin().args(["receipts", "list"]).arg(&r));
    assert!(
        String::from_utf8_lossy(&listed.stdout)
            .contains("receipt 1: request-1 — 30 id(s) of alice")
    );
    // A batch of requests: one forget, a receipt each; a malformed file changes nothing.
    let requests = t.0.join("requests.json");
    std::fs::write(
        &requests,
        r#"[{"name": "p-1", "groups": ["bob"]}, {"name": "p-1", "ids": [1]}]"#,
    )
    .unwrap();
    let out = run(bin()
        .arg("forget")
        .arg(&r)
        .arg("--requests-file")
        .arg(&requests));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the name is used twice"));
    std::fs::write(
        &requests,
        r#"[{"name": "p-1", "groups": ["bob"]}, {"name": "p-2", "ids": [1, 2], "requested_unix": 1764288000}]"#,
    )
    .unwrap();
    let b = json(&run(bin()
        .arg("forget")
        .arg(&r)
        .arg("--requests-file")
        .arg(&requests)
        .args(["--no-eval", "--json"])));
    assert_eq!(b["ids"].as_array().unwrap().len(), 42);
    let rc = b["receipts"].as_array().unwrap();
    assert_eq!(
        (rc.len(), &rc[0]["seq"], &rc[1]["seq"]),
        (2, &serde_json::json!(2), &serde_json::json!(3))
    );
    assert_eq!(
        (&rc[0]["request"], &rc[0]["groups"]),
        (&serde_json::json!("p-1"), &serde_json::json!(["bob"]))
    );
    assert_eq!(
        (&rc[1]["ids"], &rc[1]["requested_unix"]),
        (&serde_json::json!([1, 2]), &serde_json::json!(1764288000))
    );
    assert_eq!(rc[0]["batch"], rc[1]["batch"]);
    let v = json(&run(bin()
        .args(["receipts", "verify"])
        .arg(&r)
        .arg("--json")));
    assert_eq!(v["receipts"].as_array().unwrap().len(), 3);
    // An edited receipt fails verification (exit code 2) and `check`, naming the receipt.
    let db = rusqlite::Connection::open(r.join("ledger.sqlite")).unwrap();
    db.execute(
        "UPDATE receipts SET body = replace(body, 'alice', 'carol')",
        [],
    )
    .unwrap();
    drop(db);
    let out = bin().args(["receipts", "verify"]).arg(&r).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL receipt 1: its body does not match")
    );
    let out = bin().arg("check").arg(&r).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("receipt 1"));
    // A run trained without groups has none to forget.
    let plain = t.0.join("plain");
    json(&train(&plain, &[]));
    let out = run(bin().arg("forget").arg(&plain).args(["--group", "alice"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without --groups"));
}

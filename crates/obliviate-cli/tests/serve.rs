//! `obliviate serve` against a real server on a loopback port: the API contract, auth,
//! idempotency, coalescing, acknowledgements, SIGTERM, and kill -9 at random moments.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Tmp, bin, json, run, train};
use serde_json::{Value, json};

const TOKEN: &str = "s3cret-test-token";

/// A running `obliviate serve`.
struct Service {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

impl Service {
    /// Starts `serve RUN` on a free loopback port with the test token and waits for its
    /// address line.
    fn start(dir: &Path, run_dir: &Path, extra: &[&str]) -> Service {
        let token = dir.join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let mut child = bin()
            .arg("serve")
            .arg(run_dir)
            .args(["--listen", "127.0.0.1:0", "--token-file"])
            .arg(&token)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn obliviate serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("serve did not start: {line:?}"))
            .to_string();
        Service {
            child,
            base,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        }
    }

    fn call(&self, req: ureq::Request, body: Option<&str>) -> (u16, Value) {
        let r = match body {
            Some(b) => req.send_string(b),
            None => req.call(),
        };
        let resp = match r {
            Ok(resp) => resp,
            Err(ureq::Error::Status(_, resp)) => resp,
            Err(e) => panic!("request failed: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn req(&self, method: &str, path: &str, token: Option<&str>) -> ureq::Request {
        let r = self.agent.request(method, &format!("{}{path}", self.base));
        match token {
            Some(t) => r.set("Authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call(self.req("GET", path, Some(TOKEN)), None)
    }

    fn post(&self, body: &str, key: Option<&str>) -> (u16, Value) {
        let mut r = self.req("POST", "/v1/requests", Some(TOKEN));
        if let Some(k) = key {
            r = r.set("Idempotency-Key", k);
        }
        self.call(r, Some(body))
    }

    /// Polls until request `id` is done (or failed), at most `limit`.
    fn wait_done(&self, id: &str, limit: Duration) -> Value {
        let until = Instant::now() + limit;
        loop {
            let (s, v) = self.get(&format!("/v1/requests/{id}"));
            assert_eq!(s, 200, "{v}");
            match v["status"].as_str() {
                Some("done") => return v,
                Some("failed") => panic!("{id} failed: {v}"),
                _ if Instant::now() > until => panic!("{id} not done in {limit:?}: {v}"),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        self.child.wait().unwrap()
    }

    /// kill -9.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn trained(dir: &Path) -> std::path::PathBuf {
    let r = dir.join("run");
    json(&train(&r, &[]));
    r
}

fn receipts_verify(run_dir: &Path) {
    let v = json(&run(bin()
        .args(["receipts", "verify"])
        .arg(run_dir)
        .arg("--json")));
    assert_eq!(v["problems"], json!([]), "{v}");
    let c = run(bin().arg("check").arg(run_dir));
    assert!(
        c.status.success(),
        "check failed: {}",
        String::from_utf8_lossy(&c.stderr)
    );
}

#[test]
fn the_api_answers_as_documented_and_only_with_the_token() {
    let t = Tmp::new("serve-api");
    let r = trained(&t.0);
    // Refused at start: a public address without a token.
    let out = run(bin()
        .arg("serve")
        .arg(&r)
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("OBLIVIATE_TOKEN"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without a token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let s = Service::start(
        &t.0,
        &r,
        &[
            "--batch-window",
            "0",
            "--max-body-bytes",
            "2000",
            "--header-timeout",
            "1",
        ],
    );
    // A client that connects and sends nothing is cut off after --header-timeout.
    let addr = s.base.strip_prefix("http://").unwrap();
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let opened = Instant::now();
    let mut buf = [0u8; 256];
    match std::io::Read::read(&mut silent, &mut buf) {
        Ok(_) => assert!(opened.elapsed() < Duration::from_secs(5)),
        Err(e) => panic!("a silent connection was still open after 10 s: {e}"),
    }
    // Auth: /healthz is open, everything else needs the token.
    let (code, v) = s.call(s.req("GET", "/healthz", None), None);
    assert_eq!((code, v["status"].as_str()), (200, Some("ok")));
    for path in [
        "/v1/model",
        "/v1/receipts",
        "/metrics",
        "/v1/requests/req-000001",
    ] {
        let (code, _) = s.call(s.req("GET", path, None), None);
        assert_eq!(code, 401, "{path} without a token");
        let (code, _) = s.call(s.req("GET", path, Some("wrong")), None);
        assert_eq!(code, 401, "{path} with a wrong token");
    }
    let (code, _) = s.call(
        s.req("POST", "/v1/requests", Some("s3cret")),
        Some("{\"ids\":[1]}"),
    );
    assert_eq!(code, 401, "a prefix of the token is not the token");

    // Bad bodies: 400 with a message; too large: 413; wrong ids: 422 naming them.
    for bad in [
        "{\"ids\": [1",
        "[1, 2]",
        "{\"ids\": [1], \"extra\": true}",
        "{\"ids\": [-1]}",
    ] {
        let (code, v) = s.post(bad, None);
        assert_eq!(code, 400, "{bad}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let big = format!("{{\"ids\": [{}]}}", vec!["1"; 1500].join(","));
    assert_eq!(s.post(&big, None).0, 413);
    let (code, v) = s.post("{\"ids\": [3, 600, 100000]}", None);
    assert_eq!(code, 422);
    assert_eq!(v["unknown_ids"], json!([600, 100000]), "{v}");
    let (code, v) = s.post("{\"ids\": []}", None);
    assert_eq!(code, 422, "{v}");
    let (code, v) = s.post("{\"groups\": [\"alice\"]}", None);
    assert_eq!(code, 422, "a run without groups: {v}");

    // Accepted; a repeated idempotency key gives the first answer, a reused one 409.
    let (code, first) = s.post("{\"ids\": [7, 3]}", Some("portal-1"));
    assert_eq!(code, 202, "{first}");
    assert_eq!(first["status"], "queued");
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.post("{\"ids\": [3, 7]}", Some("portal-1")),
        (202, first.clone())
    );
    let (code, v) = s.post("{\"ids\": [8]}", Some("portal-1"));
    assert_eq!((code, v["id"].as_str()), (409, Some(id.as_str())), "{v}");

    let done = s.wait_done(&id, Duration::from_secs(120));
    let receipt = &done["receipt"];
    assert_eq!(receipt["ids"], json!([3, 7]), "{done}");
    assert_eq!(receipt["request"], id.as_str());
    assert_eq!(receipt["seq"], 1);

    // The model moved on, and the weights served are the ones it names.
    let (code, m) = s.get("/v1/model");
    assert_eq!(code, 200);
    assert_eq!(m["generation"], 1, "{m}");
    assert_eq!(m["forgotten_samples"], 2);
    assert_eq!(m["model_sha256"], receipt["model_after_sha256"]);
    let resp = s
        .req("GET", "/v1/model/weights", Some(TOKEN))
        .call()
        .unwrap();
    assert_eq!(resp.header("x-model-sha256"), m["model_sha256"].as_str());
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).unwrap();
    use sha2::Digest;
    let sha = format!("{:x}", sha2::Sha256::digest(&bytes));
    assert_eq!(sha, m["model_sha256"].as_str().unwrap());

    // Forgotten ids are refused by name; unknown requests are 404.
    let (code, v) = s.post("{\"ids\": [7, 9]}", None);
    assert_eq!((code, &v["forgotten_ids"]), (422, &json!([7])), "{v}");
    assert_eq!(s.get("/v1/requests/req-999999").0, 404);

    // The receipt log and the metrics.
    let (_, all) = s.get("/v1/receipts");
    assert_eq!(all["receipts"].as_array().unwrap().len(), 1);
    assert_eq!(all["head"], all["receipts"][0]["sha256"]);
    let (_, none) = s.get("/v1/receipts?since=1");
    assert_eq!(none["receipts"], json!([]));
    let resp = s.req("GET", "/metrics", Some(TOKEN)).call().unwrap();
    let text = resp.into_string().unwrap();
    for line in [
        "obliviate_queue_depth 0",
        "obliviate_requests{status=\"done\"} 1",
        "obliviate_forgotten_samples 2",
        "obliviate_ids_forgotten_total 2",
        "obliviate_batch_seconds_count 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(s.terminate().success());
    receipts_verify(&r);
}

#[test]
fn queued_requests_coalesce_and_late_duplicates_are_acknowledged() {
    let t = Tmp::new("serve-coalesce");
    let r = trained(&t.0);
    let s = Service::start(&t.0, &r, &["--batch-window", "2"]);
    // Five requests inside the window, one of them repeating another's id: one batch.
    let bodies = ["[10]", "[20, 21]", "[30]", "[40]", "[20]"];
    let ids: Vec<String> = bodies
        .iter()
        .map(|b| {
            let (code, v) = s.post(&format!("{{\"ids\": {b}}}"), None);
            assert_eq!(code, 202, "{v}");
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    let receipts: Vec<Value> = ids
        .iter()
        .map(|id| s.wait_done(id, Duration::from_secs(120))["receipt"].clone())
        .collect();
    let batches: BTreeSet<u64> = receipts
        .iter()
        .map(|r| r["batch"].as_u64().unwrap())
        .collect();
    assert_eq!(batches.len(), 1, "one batch for all: {receipts:?}");
    assert_eq!(
        receipts[4]["ids"],
        json!([20]),
        "both requests of id 20 name it"
    );
    assert_eq!(receipts[1]["ids"], json!([20, 21]));

    // A request for an id whose batch is running when it arrives: acknowledged afterwards,
    // pointing to that batch.
    drop(s);
    let s = Service::start(&t.0, &r, &["--batch-window", "0"]);
    let (_, v) = s.post("{\"ids\": [0, 1, 2]}", None);
    let first = v["id"].as_str().unwrap().to_string();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = s.get(&format!("/v1/requests/{first}"));
        match v["status"].as_str() {
            Some("running") => break,
            Some("queued") if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(2))
            }
            _ => panic!("the first batch was not seen running: {v}"),
        }
    }
    let (code, v) = s.post("{\"ids\": [1]}", None);
    assert_eq!(code, 202, "{v}");
    let late = v["id"].as_str().unwrap().to_string();
    let one = s.wait_done(&first, Duration::from_secs(120))["receipt"].clone();
    let ack = s.wait_done(&late, Duration::from_secs(120))["receipt"].clone();
    assert_eq!(ack["ids"], json!([]), "{ack}");
    assert_eq!(ack["skipped"], json!([1]));
    assert_eq!(ack["earlier_batches"], json!([one["batch"]]));
    assert_eq!(ack["blocks_retrained"], 0);
    assert_eq!(ack["model_before_sha256"], ack["model_after_sha256"]);
    assert_eq!(ack["model_after_sha256"], one["model_after_sha256"]);
    assert!(s.terminate().success());
    receipts_verify(&r);
}

#[test]
fn sigterm_leaves_the_old_or_the_new_chain_and_a_restart_carries_the_request_out() {
    let t = Tmp::new("serve-term");
    let r = trained(&t.0);
    let before = json(&run(bin().arg("info").arg(&r).arg("--json")));
    let s = Service::start(
        &t.0,
        &r,
        &["--batch-window", "0", "--stop", "fit", "--epsilon", "0"],
    );
    // ε = 0: the segment runs to the chain's end, long enough to be interrupted.
    let (_, v) = s.post("{\"ids\": [0]}", None);
    let id = v["id"].as_str().unwrap().to_string();
    loop {
        let (_, v) = s.get(&format!("/v1/requests/{id}"));
        if v["status"] != "queued" {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let started = Instant::now();
    assert!(s.terminate().success());
    assert!(started.elapsed() < Duration::from_secs(20));
    let after = json(&run(bin().arg("info").arg(&r).arg("--json")));
    let s = Service::start(&t.0, &r, &["--batch-window", "0"]);
    let done = s.wait_done(&id, Duration::from_secs(120));
    // Abandoned (generation unchanged after SIGTERM) or finished before the signal landed:
    // either way exactly one receipt.
    assert!(
        after["generation"] == before["generation"] || after["generation"] == 1,
        "{after}"
    );
    assert_eq!(done["receipt"]["seq"], 1);
    assert!(s.terminate().success());
    receipts_verify(&r);
}

/// A linear congruential generator (Knuth's MMIX constants): reproducible random moments.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn twenty_kill_9s_at_random_moments_lose_no_acknowledged_request() {
    let t = Tmp::new("serve-kill");
    let r = trained(&t.0);
    let mut rng = Lcg(20261206);
    // id → the ids it asked, for every request that got a 202.
    let mut acknowledged: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for round in 0..20 {
        let s = Service::start(&t.0, &r, &["--batch-window", "0.2"]);
        let kill_at = Instant::now() + Duration::from_millis(100 + rng.next() % 1400);
        while Instant::now() < kill_at {
            let n = 1 + rng.next() % 3;
            let ids: Vec<u64> = (0..n).map(|_| rng.next() % 600).collect();
            let r = s
                .req("POST", "/v1/requests", Some(TOKEN))
                .send_string(&json!({ "ids": ids }).to_string());
            match r {
                Ok(resp) if resp.status() == 202 => {
                    let v: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
                    let mut ids = ids.clone();
                    ids.sort_unstable();
                    ids.dedup();
                    acknowledged.insert(v["id"].as_str().unwrap().to_string(), ids);
                }
                Ok(resp) => panic!("round {round}: {}", resp.status()),
                Err(ureq::Error::Status(422, _)) => {} // already forgotten
                Err(e) => panic!("round {round}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(rng.next() % 40));
        }
        s.kill();
    }
    assert!(acknowledged.len() > 40, "too few requests to mean anything");
    let s = Service::start(&t.0, &r, &["--batch-window", "0"]);
    for (id, ids) in &acknowledged {
        let v = s.wait_done(id, Duration::from_secs(300));
        let r = &v["receipt"];
        let mut covered: Vec<u64> = r["ids"]
            .as_array()
            .unwrap()
            .iter()
            .chain(r["skipped"].as_array().into_iter().flatten())
            .map(|x| x.as_u64().unwrap())
            .collect();
        covered.sort_unstable();
        assert_eq!(&covered, ids, "{id}: {v}");
    }
    // Exactly one receipt per request, and nothing the service did not acknowledge.
    let (_, log) = s.get("/v1/receipts");
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for e in log["receipts"].as_array().unwrap() {
        *per.entry(e["receipt"]["request"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(per.values().all(|&n| n == 1), "{per:?}");
    let named: BTreeSet<&String> = per.keys().collect();
    let acked: BTreeSet<&String> = acknowledged.keys().collect();
    assert!(
        acked.is_subset(&named),
        "every acknowledged request has its receipt"
    );
    eprintln!(
        "{} requests acknowledged over 20 kill -9 restarts, each done with one receipt ({} receipts in all)",
        acknowledged.len(),
        per.len()
    );
    assert!(s.terminate().success());
    receipts_verify(&r);
}

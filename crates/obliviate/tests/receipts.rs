//! Deletion receipts: issued per request, hash-chained, and every kind of tampering with the
//! log is reported by receipt number.

mod common;

use common::*;
use obliviate::chain::Chain;
use obliviate::chain::receipts::{self, GENESIS, Verification};
use obliviate::model::ModelKind;
use obliviate::store::sha256;
use obliviate::unlearn::{Ask, acknowledge, forget_asks};

fn verify(run: &Tmp) -> Verification {
    receipts::verify(&run.0).expect("verification runs")
}

/// The problems found, as `(receipt, detail)`.
fn problems(v: &Verification) -> Vec<(u64, String)> {
    v.problems
        .iter()
        .map(|p| (p.receipt, p.detail.clone()))
        .collect()
}

/// A trained run with two committed requests: ids of blocks 2 and 6.
fn two_requests(name: &str) -> (Tmp, obliviate::data::Dataset) {
    let data = tiny_data();
    let run = Tmp::new(name);
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(21));
    let m = Chain::open(&run.0).unwrap().into_manifest();
    forget_in(&run.0, &data, &[m.blocks[1].ids[0]], &eager()).unwrap();
    forget_in(&run.0, &data, &[m.blocks[5].ids[0]], &eager()).unwrap();
    (run, data)
}

fn sql(run: &Tmp, statement: &str) {
    let db = rusqlite::Connection::open(run.join("ledger.sqlite")).unwrap();
    db.execute_batch(statement).unwrap();
}

/// Replaces `from` by `to` in receipt `seq`'s body; with `rehash`, stores the new body's SHA-256
/// too (a forger who knows the format).
fn rewrite(run: &Tmp, seq: u64, from: &str, to: &str, rehash: bool) {
    let edited = body(run, seq).replace(from, to);
    assert_ne!(edited, body(run, seq), "{from:?} is in receipt {seq}");
    let hash = match rehash {
        true => format!(", sha256 = '{}'", sha256(edited.as_bytes())),
        false => String::new(),
    };
    sql(
        run,
        &format!(
            "UPDATE receipts SET body = '{}'{hash} WHERE seq = {seq}",
            edited.replace('\'', "''")
        ),
    );
}

fn body(run: &Tmp, seq: u64) -> String {
    let db = rusqlite::Connection::open(run.join("ledger.sqlite")).unwrap();
    db.query_row(
        "SELECT body FROM receipts WHERE seq = ?1",
        [seq as i64],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn every_request_gets_a_receipt_chained_to_the_one_before() {
    let (run, _) = two_requests("receipts-chain");
    let v = verify(&run);
    assert!(v.is_sound(), "{:?}", v.problems);
    let [a, b] = &v.receipts[..] else {
        panic!("two receipts expected: {:?}", v.receipts)
    };
    assert_eq!((a.seq, b.seq), (1, 2));
    assert_eq!((a.batch, b.batch), (1, 2));
    assert_eq!((a.generation, b.generation), (1, 2));
    assert_eq!(a.request, "request-1");
    assert_eq!(a.previous_sha256, GENESIS);
    assert_eq!(b.previous_sha256, sha256(body(&run, 1).as_bytes()));
    assert_eq!(b.model_before_sha256, a.model_after_sha256);
    assert!(a.blocks_retrained >= 1 && a.residuals.len() == a.blocks_retrained);
    let m = Chain::open(&run.0).unwrap().into_manifest();
    assert_eq!(b.model_after_sha256, m.model_file.unwrap().sha256);
    assert_eq!(
        m.receipts_head.as_deref(),
        Some(sha256(body(&run, 2).as_bytes()).as_str())
    );
    assert!(a.ids.iter().chain(&b.ids).all(|id| m.deleted.contains(id)));
    assert!(v.notes.is_empty(), "{:?}", v.notes);
}

#[test]
fn a_batch_issues_one_receipt_per_ask() {
    let data = tiny_data();
    let run = Tmp::new("receipts-batch");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(22));
    let m = Chain::open(&run.0).unwrap().into_manifest();
    let (x, y, z) = (m.blocks[3].ids[0], m.blocks[3].ids[1], m.blocks[8].ids[0]);
    let asks = [
        Ask {
            name: "portal-17".into(),
            ids: vec![y, x],
            groups: vec!["alice".into()],
            requested_unix: 1_700_000_000,
        },
        Ask {
            name: String::new(),
            ids: vec![x, z, 999_999],
            ..Ask::default()
        },
    ];
    let opts = obliviate::unlearn::ForgetOptions {
        skip_missing: true,
        ..eager()
    };
    let mut chain = Chain::open_mut(&run.0).unwrap();
    let manifest = std::fs::read(run.join("manifest.json")).unwrap();
    let empty = [asks[0].clone(), Ask::default()];
    let e = forget_asks::<B>(
        &mut chain,
        &data,
        &empty,
        &opts,
        &Default::default(),
        &mut obliviate::train::NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("2 (\"\") names no ids"), "{e}");
    assert_eq!(std::fs::read(run.join("manifest.json")).unwrap(), manifest);
    let r = forget_asks::<B>(
        &mut chain,
        &data,
        &asks,
        &opts,
        &Default::default(),
        &mut obliviate::train::NoProgress,
    )
    .unwrap();
    drop(chain);
    assert_eq!(r.receipts.len(), 2);
    let (a, b) = (&r.receipts[0], &r.receipts[1]);
    let mut xy = vec![x, y];
    xy.sort_unstable();
    assert_eq!(
        (a.request.as_str(), &a.ids, &a.groups),
        ("portal-17", &xy, &vec!["alice".to_string()])
    );
    assert_eq!(a.requested_unix, 1_700_000_000);
    let mut xz = vec![x, z];
    xz.sort_unstable();
    assert_eq!(
        (b.request.as_str(), &b.ids, &b.skipped),
        ("request-1", &xz, &vec![999_999])
    );
    assert_eq!((a.batch, b.batch), (1, 1));
    assert_eq!(b.previous_sha256, sha256(body(&run, 1).as_bytes()));
    let v = verify(&run);
    assert!(v.is_sound(), "{:?}", v.problems);
    assert_eq!(
        v.receipts, r.receipts,
        "what was reported is what was stored"
    );
}

#[test]
fn an_edited_receipt_is_named() {
    let (run, _) = two_requests("receipts-edit");
    // The body changed, its stored hash not.
    rewrite(&run, 1, "request-1", "request-9", false);
    let p = problems(&verify(&run));
    assert!(
        p.iter().any(|(n, d)| *n == 1 && d.contains("edited")),
        "{p:?}"
    );
    assert!(
        p.iter().all(|(n, _)| *n == 1),
        "only receipt 1 is named: {p:?}"
    );
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_chain_at_the_next_receipt() {
    let (run, _) = two_requests("receipts-rehash");
    rewrite(&run, 1, "request-1", "request-9", true);
    let p = problems(&verify(&run));
    assert!(
        p.iter()
            .any(|(n, d)| *n == 2 && d.contains("hash chain is broken")),
        "{p:?}"
    );
}

#[test]
fn the_last_receipt_is_anchored_in_the_manifest() {
    let (run, _) = two_requests("receipts-last");
    // Rewrite the last receipt consistently (body and hash): only the manifest can tell.
    rewrite(&run, 2, "request-2", "request-7", true);
    let p = problems(&verify(&run));
    assert!(
        p.iter()
            .any(|(n, d)| *n == 2 && d.contains("the manifest records")),
        "{p:?}"
    );
}

#[test]
fn removed_receipts_are_reported() {
    let (run, _) = two_requests("receipts-removed");
    sql(&run, "DELETE FROM receipts WHERE seq = 1");
    let p = problems(&verify(&run));
    assert!(
        p.iter().any(|(n, d)| *n == 2 && d.contains("missing")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|(n, d)| *n == 0 && d.contains("requests 1 have no receipt")),
        "{p:?}"
    );
    sql(&run, "DELETE FROM receipts");
    let p = problems(&verify(&run));
    assert!(
        p.iter().any(|(_, d)| d.contains("the log holds none")),
        "{p:?}"
    );
}

#[test]
fn a_receipt_that_disagrees_with_its_ledger_row_is_named() {
    let (run, _) = two_requests("receipts-ledger");
    // A consistent forgery of receipt 2 claiming an id the chain still trains on, with the
    // manifest's anchor left alone: both the anchor and the ids give it away.
    let m = Chain::open(&run.0).unwrap().into_manifest();
    let kept = m.blocks[0].ids[0];
    let r: serde_json::Value = serde_json::from_str(&body(&run, 2)).unwrap();
    let forgotten = r["ids"][0].as_u64().unwrap();
    rewrite(
        &run,
        2,
        &format!("\"ids\":[{forgotten}]"),
        &format!("\"ids\":[{kept}]"),
        true,
    );
    let p = problems(&verify(&run));
    assert!(
        p.iter()
            .any(|(n, d)| *n == 2 && d.contains("not among the run's forgotten ids")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|(n, d)| *n == 2 && d.contains("were not forgotten by batch 2")),
        "{p:?}"
    );
}

#[test]
fn python_checks_the_chain_with_its_standard_library() {
    let (run, _) = two_requests("receipts-python");
    let check = || python_json("receipts.py", &run.0, "the standard library suffices");
    assert_eq!(check(), serde_json::json!({"receipts": 2, "problems": []}));
    rewrite(&run, 1, "request-1", "request-9", true);
    assert_eq!(
        check()["problems"],
        serde_json::json!([[2, "it does not name the previous receipt's SHA-256"]])
    );
}

#[test]
fn a_run_from_before_receipts_gets_them_from_its_next_request() {
    let data = tiny_data();
    let run = Tmp::new("receipts-old");
    train_tiny(&run.0, &data, ModelKind::MlpSmall, tiny_cfg(23));
    let ids: Vec<u64> = {
        let m = Chain::open(&run.0).unwrap().into_manifest();
        vec![m.blocks[2].ids[0], m.blocks[7].ids[0]]
    };
    forget_in(&run.0, &data, &ids[..1], &eager()).unwrap();
    // What a format-2 build left: no receipts table, no anchor.
    sql(&run, "DROP TABLE receipts");
    let mut m = Chain::open(&run.0).unwrap().into_manifest();
    (m.format, m.receipts_head) = (2, None);
    obliviate::store::sealed::write_sealed(&run.join("manifest.json"), &m).unwrap();
    let v = verify(&run);
    assert!(v.is_sound() && v.receipts.is_empty(), "{:?}", v.problems);
    assert!(
        v.notes[0].contains("requests 1 predate receipts"),
        "{:?}",
        v.notes
    );
    forget_in(&run.0, &data, &ids[1..], &eager()).unwrap();
    let v = verify(&run);
    assert!(v.is_sound(), "{:?}", v.problems);
    assert_eq!((v.receipts[0].seq, v.receipts[0].batch), (1, 2));
    assert!(
        v.notes[0].contains("requests 1 predate receipts"),
        "{:?}",
        v.notes
    );
    let m = Chain::open(&run.0).unwrap().into_manifest();
    assert_eq!(m.format, obliviate::chain::manifest::FORMAT);
}

#[test]
fn ids_forgotten_before_are_acknowledged_with_the_batches_that_removed_them() {
    let (run, data) = two_requests("receipts-acknowledge");
    let m = Chain::open(&run.0).unwrap().into_manifest();
    let before = verify(&run).receipts;
    let (first, second) = (before[0].ids[0], before[1].ids[0]);
    let model = m.model_file.clone().unwrap().sha256;
    let mut chain = Chain::open_mut(&run.0).unwrap();
    // An ask with an id still trained on is refused, and nothing is written.
    let manifest = std::fs::read(run.join("manifest.json")).unwrap();
    let kept = m.blocks[0].ids[0];
    let e = acknowledge(&mut chain, &[Ask::ids(&[first, kept])])
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("ids [{kept}] remain")), "{e}");
    assert_eq!(std::fs::read(run.join("manifest.json")).unwrap(), manifest);

    let asks = [
        Ask {
            name: "late".into(),
            ids: vec![first],
            ..Ask::default()
        },
        Ask {
            name: "both".into(),
            ids: vec![second, first],
            ..Ask::default()
        },
    ];
    let r = acknowledge(&mut chain, &asks).unwrap();
    assert_eq!(chain.manifest().generation, 3);
    assert_eq!(chain.manifest().model_file.as_ref().unwrap().sha256, model);
    drop(chain);
    let (late, both) = (&r[0], &r[1]);
    assert_eq!((late.seq, late.batch, late.generation), (3, 3, 3));
    assert!(late.ids.is_empty());
    assert_eq!(late.skipped, vec![first]);
    assert_eq!(late.earlier_batches, vec![1]);
    assert_eq!(both.earlier_batches, vec![1, 2]);
    assert_eq!((late.blocks_retrained, late.residuals.len()), (0, 0));
    assert_eq!(
        (&late.model_before_sha256, &late.model_after_sha256),
        (&model, &model)
    );
    let v = verify(&run);
    assert!(v.is_sound(), "{:?}", v.problems);

    // A batch with something left to remove names the batch that removed the rest.
    let third = m.blocks[9].ids[0];
    let opts = obliviate::unlearn::ForgetOptions {
        skip_missing: true,
        ..eager()
    };
    let mut chain = Chain::open_mut(&run.0).unwrap();
    let r = forget_asks::<B>(
        &mut chain,
        &data,
        &[Ask::ids(&[third, second])],
        &opts,
        &Default::default(),
        &mut obliviate::train::NoProgress,
    )
    .unwrap();
    drop(chain);
    let mixed = &r.receipts[0];
    assert_eq!(
        (&mixed.ids, &mixed.skipped, &mixed.earlier_batches),
        (&vec![third], &vec![second], &vec![2])
    );
    assert!(verify(&run).is_sound());

    // A forged pointer (hash recomputed) is named.
    rewrite(
        &run,
        3,
        "\"earlier_batches\":[1]",
        "\"earlier_batches\":[2]",
        true,
    );
    let p = problems(&verify(&run));
    assert!(
        p.iter()
            .any(|(n, d)| *n == 3 && d.contains("not forgotten by its earlier batches [2]")),
        "{p:?}"
    );
}

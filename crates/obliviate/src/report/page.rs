//! `obliviate report`: one Markdown page and one standalone HTML page per run, with the request
//! ledger, audit tables and figures.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;

use super::plot::{self, Lines, ResidualSeries};
use crate::audit::mia::{MiaReport, mia};
use crate::audit::outputs_of;
use crate::chain::Chain;
use crate::chain::ledger::Ledger;
use crate::data::{Dataset, Split};
use crate::error::{IoContext, Result, invalid};
use crate::store::atomic;

/// What to put in the report beyond the run itself.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// Output folder (created).
    pub out: PathBuf,
    /// A retrained run (`obliviate retrain`) to compare with.
    pub against: Option<PathBuf>,
    /// A copy of the run from before forgetting.
    pub original: Option<PathBuf>,
    /// A retrain with another seed (noise floor).
    pub floor: Option<PathBuf>,
    /// Seed of the attacks.
    pub seed: u64,
}

enum Block {
    Heading(String),
    Para(String),
    Table(Vec<String>, Vec<Vec<String>>),
    Figure(String, String),
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn render_md(blocks: &[Block]) -> String {
    let mut s = String::new();
    for b in blocks {
        match b {
            Block::Heading(t) => s.push_str(&format!("\n## {t}\n\n")),
            Block::Para(t) => s.push_str(&format!("{t}\n\n")),
            Block::Table(h, rows) => {
                s.push_str(&format!(
                    "| {} |\n|{}\n",
                    h.join(" | "),
                    "---|".repeat(h.len())
                ));
                for r in rows {
                    // A cell may hold a requester's text (a receipt's name): keep it one cell.
                    let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
                    s.push_str(&format!("| {} |\n", cells.join(" | ")));
                }
                s.push('\n');
            }
            Block::Figure(file, cap) => s.push_str(&format!("![{cap}]({file})\n\n*{cap}*\n\n")),
        }
    }
    s
}

fn render_html(title: &str, blocks: &[Block], dir: &Path) -> Result<String> {
    let mut s = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title><style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}th{{background:#eee}}figure{{margin:1em 0}}figcaption{{font-style:italic}}code{{background:#f4f4f4}}</style></head><body>\n<h1>{}</h1>\n",
        esc(title),
        esc(title)
    );
    for b in blocks {
        match b {
            Block::Heading(t) => s.push_str(&format!("<h2>{}</h2>\n", esc(t))),
            Block::Para(t) => s.push_str(&format!("<p>{}</p>\n", esc(t))),
            Block::Table(h, rows) => {
                s.push_str("<table><tr>");
                for c in h {
                    s.push_str(&format!("<th>{}</th>", esc(c)));
                }
                s.push_str("</tr>\n");
                for r in rows {
                    s.push_str("<tr>");
                    for c in r {
                        s.push_str(&format!("<td>{}</td>", esc(c)));
                    }
                    s.push_str("</tr>\n");
                }
                s.push_str("</table>\n");
            }
            Block::Figure(file, cap) => {
                let p = dir.join(file);
                let svg = std::fs::read_to_string(&p).at(&p)?;
                let body = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
                s.push_str(&format!(
                    "<figure>{body}<figcaption>{}</figcaption></figure>\n",
                    esc(cap)
                ));
            }
        }
    }
    s.push_str("</body></html>\n");
    Ok(s)
}

fn pct(x: f64) -> String {
    format!("{:.2} %", 100.0 * x)
}

/// Writes `report.md`, `report.html` and the SVG figures into `o.out`; returns the HTML path.
pub fn write_report<B: AutodiffBackend>(
    run: &Path,
    data: &Dataset,
    o: &ReportOptions,
    device: &B::Device,
) -> Result<PathBuf> {
    let chain = Chain::open(run)?;
    chain.check_dataset(data)?;
    // A compliance report is only as good as the chain it describes.
    chain.verify()?;
    let m = chain.manifest();
    let served = chain.served()?;
    let scale = served.numel() as f64;
    let requests = Ledger::committed(run, m.generation)?;
    std::fs::create_dir_all(&o.out).at(&o.out)?;
    let mut b = Vec::new();
    let c = &m.config;
    b.push(Block::Para(format!(
        "Run {} — {} on {} ({} training samples, {} test), {} blocks × {} epochs, batch {}, {} lr {} (×{} by the last block), seed {}. {} request(s) forgot {} sample(s). Current test accuracy {}. {} bytes on disk.",
        run.display(), m.model, m.dataset.name, m.dataset.train_samples, m.dataset.test_samples, c.blocks, c.epochs_per_block, c.batch_size,
        c.optim.kind.name(), c.optim.lr, c.lr_final, c.seed, requests.len(), m.deleted.len(), m.test_accuracy.map_or("-".into(), pct), chain.bytes_on_disk()
    )));

    b.push(Block::Heading("Requests".into()));
    b.push(Block::Table(
        [
            "request",
            "ids",
            "d",
            "L",
            "s",
            "blocks retrained",
            "rule",
            "seconds",
            "test accuracy",
            "model sha256",
        ]
        .map(String::from)
        .to_vec(),
        requests
            .iter()
            .map(|r| {
                vec![
                    r.id.to_string(),
                    r.ids.len().to_string(),
                    r.first_block.to_string(),
                    r.last_block.to_string(),
                    r.stop_block.to_string(),
                    r.residuals_l1.len().to_string(),
                    r.stop_rule.to_string(),
                    format!("{:.2}", r.seconds),
                    r.test_accuracy.map_or("-".into(), pct),
                    r.model_sha256[..12.min(r.model_sha256.len())].to_string(),
                ]
            })
            .collect(),
    ));

    let receipts = crate::chain::receipts::verify(run)?;
    if !receipts.receipts.is_empty() || !receipts.is_sound() {
        b.push(Block::Heading("Receipts".into()));
        let mut text = match receipts.problems.len() {
            0 => format!(
                "{} receipt(s); the hash chain, the ledger and the manifest agree (`obliviate receipts verify`).",
                receipts.receipts.len()
            ),
            n => format!("{n} problem(s) found by `obliviate receipts verify`:"),
        };
        for p in &receipts.problems {
            text.push_str(&format!(" Receipt {}: {}.", p.receipt, p.detail));
        }
        for n in &receipts.notes {
            text.push_str(&format!(" Note: {n}."));
        }
        b.push(Block::Para(text));
        b.push(Block::Table(
            [
                "receipt",
                "request",
                "ids",
                "groups",
                "batch",
                "generation",
                "requested (unix)",
                "committed (unix)",
                "model after",
            ]
            .map(String::from)
            .to_vec(),
            receipts
                .receipts
                .iter()
                .map(|r| {
                    vec![
                        r.seq.to_string(),
                        r.request.clone(),
                        r.ids.len().to_string(),
                        r.groups.join(", "),
                        r.batch.to_string(),
                        r.generation.to_string(),
                        r.requested_unix.to_string(),
                        r.committed_unix.to_string(),
                        r.model_after_sha256[..12.min(r.model_after_sha256.len())].to_string(),
                    ]
                })
                .collect(),
        ));
    }

    // Accuracy after each request (and the references, when given).
    let mut series = vec![(
        "unlearned (after each request)".to_string(),
        requests
            .iter()
            .filter_map(|r| Some((r.id as f64, 100.0 * r.test_accuracy?)))
            .collect::<Vec<_>>(),
    )];
    let last = requests.last().map_or(1.0, |r| r.id as f64);
    for (label, p) in [
        ("original", &o.original),
        ("retrained", &o.against),
        ("retrained, another seed", &o.floor),
    ] {
        if let Some(p) = p {
            let acc = Chain::open(p)?.manifest().test_accuracy.unwrap_or(0.0);
            series.push((
                format!("{label} ({})", pct(acc)),
                vec![(0.0, 100.0 * acc), (last, 100.0 * acc)],
            ));
        }
    }
    if !requests.is_empty() {
        plot::lines(
            &o.out.join("accuracy.svg"),
            &Lines {
                title: "Test accuracy",
                x_desc: "request",
                y_desc: "accuracy %",
                series: &series,
                y_range: None,
            },
        )?;
        b.push(Block::Heading("Accuracy".into()));
        b.push(Block::Figure(
            "accuracy.svg".into(),
            "Test accuracy of the unlearned model after each request, with the reference models"
                .into(),
        ));
    }

    b.push(Block::Heading("Residual memory".into()));
    b.push(Block::Para("r_k = ‖δ_k − δ'_k‖₁ for each retrained block; the red curve is the power law fitted (on r_k per parameter) when retraining stopped.".into()));
    for r in requests.iter().rev().take(20).rev() {
        let file = format!("residuals-{}.svg", r.id);
        plot::residuals(&o.out.join(&file), &ResidualSeries::from_request(r, scale))?;
        b.push(Block::Figure(
            file,
            format!(
                "Request {}: {} id(s), blocks {}..={}",
                r.id,
                r.ids.len(),
                r.first_block,
                r.stop_block
            ),
        ));
    }
    if requests.len() > 20 {
        b.push(Block::Para(format!(
            "Figures for the {} earlier requests are omitted.",
            requests.len() - 20
        )));
    }

    if let Some(against) = &o.against {
        if m.deleted.is_empty() {
            return Err(invalid(
                "report",
                "comparing against a retrained run needs a run that has forgotten samples",
            ));
        }
        let rows: Vec<usize> = m
            .deleted
            .iter()
            .filter_map(|&id| data.train.row(id))
            .collect();
        let test: Vec<usize> = (0..data.test.len()).collect();
        let mut models: Vec<(&str, PathBuf)> = Vec::new();
        if let Some(p) = &o.original {
            models.push(("original", p.clone()));
        }
        models.push(("unlearned", run.to_path_buf()));
        models.push(("retrained", against.clone()));
        if let Some(p) = &o.floor {
            models.push(("retrained, another seed", p.clone()));
        }
        let mut results: Vec<(
            &str,
            MiaReport,
            crate::audit::Outputs,
            crate::params::ParamSet,
        )> = Vec::new();
        for (label, p) in &models {
            let ch = Chain::open(p)?;
            ch.check_dataset(data)?;
            let theta = ch.served()?;
            let f = outputs_of::<B>(
                ch.manifest().model,
                &theta,
                data,
                Split::Train,
                &rows,
                device,
            )?;
            let t = outputs_of::<B>(
                ch.manifest().model,
                &theta,
                data,
                Split::Test,
                &test,
                device,
            )?;
            results.push((label, mia(&f, &t, o.seed), t, theta));
        }
        b.push(Block::Heading("Membership inference".into()));
        b.push(Block::Para(format!("Attacks on the {} forgotten samples against as many test samples; AUC 0.5 = no membership signal.", rows.len())));
        b.push(Block::Table(
            [
                "model",
                "loss AUC",
                "loss accuracy",
                "confidence AUC",
                "confidence accuracy",
            ]
            .map(String::from)
            .to_vec(),
            results
                .iter()
                .map(|(l, r, _, _)| {
                    vec![
                        l.to_string(),
                        format!("{:.3}", r.loss.auc),
                        format!("{:.3}", r.loss.accuracy),
                        format!("{:.3}", r.confidence.auc),
                        format!("{:.3}", r.confidence.accuracy),
                    ]
                })
                .collect(),
        ));
        let mut roc: Vec<(String, Vec<(f64, f64)>)> = results
            .iter()
            .map(|(l, r, _, _)| (format!("{l} (AUC {:.3})", r.loss.auc), r.loss.roc.clone()))
            .collect();
        roc.push(("chance".into(), vec![(0.0, 0.0), (1.0, 1.0)]));
        plot::lines(
            &o.out.join("mia-roc.svg"),
            &Lines {
                title: "Loss-attack ROC on the forgotten samples",
                x_desc: "false-positive rate",
                y_desc: "true-positive rate",
                series: &roc,
                y_range: Some((0.0, 1.0)),
            },
        )?;
        b.push(Block::Figure(
            "mia-roc.svg".into(),
            "ROC curves of the loss attack".into(),
        ));

        let find = |name: &str| results.iter().find(|r| r.0 == name);
        if let (Some(u), Some(g)) = (find("unlearned"), find("retrained")) {
            let mut rows = vec![vec![
                "unlearned vs retrained".to_string(),
                format!("{:.4}", u.3.distance(&g.3)?.l2),
                format!("{:.5}", g.2.mean_kl(&u.2)),
            ]];
            if let Some(f) = find("retrained, another seed") {
                rows.push(vec![
                    "retrained vs retrained, another seed (noise floor)".to_string(),
                    format!("{:.4}", g.3.distance(&f.3)?.l2),
                    format!("{:.5}", g.2.mean_kl(&f.2)),
                ]);
            }
            if let Some(orig) = find("original") {
                rows.push(vec![
                    "original vs retrained".to_string(),
                    format!("{:.4}", orig.3.distance(&g.3)?.l2),
                    format!("{:.5}", g.2.mean_kl(&orig.2)),
                ]);
            }
            b.push(Block::Heading("Distance to the retrained model".into()));
            b.push(Block::Table(
                ["pair", "weight L2", "mean KL(retrained ‖ other), test set"]
                    .map(String::from)
                    .to_vec(),
                rows,
            ));
        }
    }

    let title = format!(
        "obliviate report: {}",
        run.file_name()
            .map_or("run".into(), |n| n.to_string_lossy().into_owned())
    );
    let md = format!("# {title}\n\n{}", render_md(&b));
    atomic::write_file(&o.out.join("report.md"), md.as_bytes())?;
    let html = render_html(&title, &b, &o.out)?;
    let path = o.out.join("report.html");
    atomic::write_file(&path, html.as_bytes())?;
    Ok(path)
}

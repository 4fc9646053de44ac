//! `bench compare`: renders `experiments::compare`.

use anyhow::Result;
use clap::Args;
use obliviate::experiments::compare::{
    Baselines, CompareResult, CompareRow, CompareSettings, Method, run as run_bench,
};
use obliviate::experiments::mean_std;
use serde::Serialize;

use super::{BenchArgs, pm};
use crate::args::{Env, StopArgs};
use crate::backend::on_backend;
use crate::output::{emit, outln, say};

#[derive(Args, Debug)]
pub struct Compare {
    #[command(flatten)]
    bench: BenchArgs,
    /// Request sizes (ids per request).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    requests: Vec<usize>,
    #[command(flatten)]
    stop: StopArgs,
    /// SISA shard counts to compare.
    #[arg(long, value_delimiter = ',', default_values_t = Baselines::default().shards)]
    shards: Vec<usize>,
    /// SISA slices per shard.
    #[arg(long, default_value_t = Baselines::default().slices)]
    slices: usize,
    /// SISA epochs per slice step (default: max(1, round(2E/(R+1))), the paper's rule for the
    /// same training budget as E epochs).
    #[arg(long)]
    sisa_epochs: Option<usize>,
    /// Fine-tune steps.
    #[arg(long, default_value_t = Baselines::default().finetune_steps)]
    finetune_steps: usize,
    /// NegGrad+ steps.
    #[arg(long, default_value_t = Baselines::default().neggrad_steps)]
    neggrad_steps: usize,
    /// NegGrad+ weight of the retain loss.
    #[arg(long, default_value_t = Baselines::default().neggrad_beta)]
    neggrad_beta: f64,
    /// Amnesiac repair (fine-tune) steps after subtracting updates.
    #[arg(long, default_value_t = Baselines::default().repair_steps)]
    repair_steps: usize,
}

#[derive(Serialize)]
struct Out<'a> {
    datasets: &'a [CompareResult],
}

pub fn run(a: &Compare, env: &Env) -> Result<()> {
    let s = CompareSettings {
        setup: a.bench.setup(&a.stop, env)?,
        requests: a.requests.clone(),
        baselines: Baselines {
            shards: a.shards.clone(),
            slices: a.slices,
            sisa_epochs: a.sisa_epochs,
            finetune_steps: a.finetune_steps,
            neggrad_steps: a.neggrad_steps,
            neggrad_beta: a.neggrad_beta,
            repair_steps: a.repair_steps,
        },
    };
    let data_dir = env.data_dir.as_deref();
    let results =
        on_backend!(env, B, device => run_bench::<B>(&s, data_dir, &device, &mut say(env))?);
    let mut md: String = results.iter().map(|r| table(&s, r)).collect();
    md.push_str("\nWhat each method guarantees:\n\n");
    for m in [
        Method::DeepObliviate,
        Method::Retrain,
        Method::Sisa(0),
        Method::Amnesiac,
        Method::FineTune,
        Method::NegGradPlus,
    ] {
        let name = match m {
            Method::Sisa(_) => "SISA".to_string(),
            other => other.to_string(),
        };
        md.push_str(&format!("- **{name}**: {}.\n", m.guarantee()));
    }
    a.bench.write("bench-compare", &md)?;
    emit(env, &Out { datasets: &results }, || outln!("{md}"))
}

fn table(settings: &CompareSettings, res: &CompareResult) -> String {
    let s = &settings.setup;
    let mut methods: Vec<Method> = Vec::new();
    for r in &res.rows {
        if !methods.contains(&r.method) {
            methods.push(r.method);
        }
    }
    let limit = match s.limit {
        Some((tr, te)) if te == usize::MAX => format!("first {tr} training samples, full test set"),
        Some((tr, te)) => format!("first {tr} training / {te} test samples"),
        None => "full dataset".into(),
    };
    let (b, cfg) = (&settings.baselines, &s.cfg);
    let mut md = format!(
        "\n**{}** ({limit}), `{}`; DeepObliviate B = {}, E = {}, batch {}, {} lr {} → ×{}, stop {:?} min-points {}; SISA R = {} slices, {} epoch(s) per slice step, constant lr; Amnesiac repair {} steps; Fine-tune {} steps; NegGrad+ {} steps, β = {}; {} seed(s). Mean ± std over seeds.\n",
        res.dataset,
        s.kind,
        cfg.blocks,
        cfg.epochs_per_block,
        cfg.batch_size,
        cfg.optim.kind.name(),
        cfg.optim.lr,
        cfg.lr_final,
        s.opts.stop,
        s.opts.min_points,
        b.slices,
        b.sisa_config(cfg).epochs_per_block,
        b.repair_steps,
        b.finetune_steps,
        b.neggrad_steps,
        b.neggrad_beta,
        s.seeds
    );
    for &n in &settings.requests {
        md.push_str(&format!("\n{n} id(s) per request:\n\n| method | test acc % | forget-set acc % | \\|gap\\| to retrained pt | MIA AUC | unlearning s | speedup vs retrain × | predict ms / 1,000 | bytes on disk |\n|---|---|---|---|---|---|---|---|---|\n"));
        for m in &methods {
            let sel: Vec<&CompareRow> = res
                .rows
                .iter()
                .filter(|r| r.ids == n && r.method == *m)
                .collect();
            let f = |get: fn(&CompareRow) -> f64, scale: f64, p: usize| {
                pm(sel.iter().map(|r| get(r)), scale, p)
            };
            let bytes = mean_std(&sel.iter().map(|r| r.bytes as f64).collect::<Vec<_>>()).0;
            md.push_str(&format!(
                "| {m} | {} | {} | {} | {} | {} | {} | {} | {:.2e} |\n",
                f(|r| r.test_accuracy, 100.0, 2),
                f(|r| r.forget_accuracy, 100.0, 1),
                f(|r| r.gap, 100.0, 2),
                f(|r| r.mia_auc, 1.0, 3),
                f(|r| r.seconds, 1.0, 2),
                f(|r| r.speedup, 1.0, 1),
                f(|r| r.latency_per_1000, 1000.0, 1),
                bytes
            ));
        }
    }
    md
}

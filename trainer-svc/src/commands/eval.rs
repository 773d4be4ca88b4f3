//! `trainer-svc eval`: every requested family and the baselines on one
//! chronological hold-out of a CSV file; optionally an existing artifact on
//! the same hold-out, each family's plots, and each family as requests
//! without item ids would get it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use taskcast_contract::runtime::{OnnxModel, Output};
use taskcast_learn::ablation::{self, FeatureGroup};
use taskcast_learn::dataset::Dataset;
use taskcast_learn::families::{Family, Fitted};
use taskcast_learn::itemless;
use taskcast_learn::judge::evaluate;
use taskcast_learn::judge::incumbent::Incumbent;
use taskcast_learn::judge::metrics::MetricSet;
use taskcast_learn::pipeline::{self, Phase, TrainSpec};
use trainer_svc::plots::{self, PlotData, TimePoint};

use crate::commands::input::{Offline, file_name, read_csv};
use crate::commands::output::{Progress, eval_json, print_table, summary_json};

/// `eval`'s arguments.
#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    common: Offline,
    /// Families to evaluate (repeatable; auto too); linear, mlp,
    /// pretrained and auto when omitted.
    #[arg(long)]
    family: Vec<Family>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Write each family's hold-out plots (reliability, time, per-learner
    /// spread; PNG and SVG) into DIR/<family>/.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
    /// Also score each family as requests without item ids would get it:
    /// the same model with items hidden at request time, and a model
    /// trained with every item id blanked, on the same hold-out attempts.
    #[arg(long)]
    hidden_items: bool,
    /// Also score an existing artifact (a `train --out` file, a registry
    /// export, the bootstrap) on the same hold-out, as it would serve:
    /// with its own priors and history window. Only it and the baselines
    /// are scored unless --family is given too.
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Switch a feature group off (repeatable): its columns are zeroed in
    /// every row before fitting, for ablation studies. Groups: v2 (every
    /// column schema v2 added), decay, gaps, clock, item.
    #[arg(long, value_name = "GROUP")]
    without: Vec<FeatureGroup>,
    /// Seed of the families' random draws (the MLP's initialisation and
    /// batches), to judge a family over several seeds.
    #[arg(long)]
    seed: Option<u64>,
}

/// Reads the file once, fits each family once, and prints the table (or
/// JSON) with what `auto` chose and what each family cost.
pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    let families = if !args.family.is_empty() {
        args.family.clone()
    } else if args.model.is_some() {
        Vec::new()
    } else {
        Family::NAMED.to_vec()
    };
    let mut spec = args
        .common
        .spec(families.first().copied().unwrap_or(Family::Linear))?;
    if let Some(seed) = args.seed {
        spec.fit.seed = seed;
    }
    let mut scored = match &args.model {
        Some(file) => Some(load_model(file)?),
        None => None,
    };
    let progress = Progress::start();
    let path = &args.common.data;
    let (summary, mut source) = read_csv(
        path,
        args.common.ts_unit,
        spec.max_training_rows,
        &progress,
        args.json,
    )?;
    let mut ds = pipeline::prepare(
        &mut source,
        spec.history_window,
        scored.as_mut(),
        &mut progress.on_phase(),
    )
    .await?;
    ablation::without(&mut ds, &args.without);
    let itemless = if args.hidden_items {
        progress.message("no items");
        let mut free = itemless::without_items(&source);
        let mut free = itemless::itemless_dataset(&mut free, &ds).await?;
        ablation::without(&mut free.dataset, &args.without);
        ablation::zero(&mut free.seen_with_items.x, &args.without);
        Some(free)
    } else {
        None
    };
    // As in `train`: the file's rows are features now; freed before the fits.
    drop(source);
    let mut models: BTreeMap<String, MetricSet> = BTreeMap::new();
    let mut seconds: BTreeMap<String, f64> = BTreeMap::new();
    // The family each entry's model is of (`auto` names the one it chose).
    let mut chosen: BTreeMap<String, String> = BTreeMap::new();
    if let Some(m) = &scored {
        let s = m.score(&ds.holdout, ds.time_modeled())?;
        models.insert(format!("model:{}", m.version()), s.metrics);
        models.extend(evaluate::baselines(&ds));
    }
    // Each concrete family is fitted once, with its fit time: `auto` chooses
    // among the same fits the table reports, and its time is what a run of
    // it costs (its families' fits and its own export and scoring).
    let mut fits: HashMap<Family, (Fitted, f64)> = HashMap::new();
    for family in &families {
        let spec = TrainSpec {
            family: *family,
            ..spec.clone()
        };
        let mut on_phase = progress.on_phase();
        on_phase(Phase::Fitting, 0.0);
        let mut fit_seconds = 0.0;
        let (fitted, choice) = pipeline::fit_with(&spec, &ds.train, |f| {
            let (fitted, s) = match fits.get(&f) {
                Some(cached) => cached.clone(),
                None => {
                    let started = Instant::now();
                    let fitted = Fitted::fit(f, &ds, &spec.fit)?;
                    let s = started.elapsed().as_secs_f64();
                    fits.insert(f, (fitted.clone(), s));
                    (fitted, s)
                }
            };
            fit_seconds += s;
            Ok(fitted)
        })?;
        let started = Instant::now();
        let trained = pipeline::judge(&ds, &spec, fitted, choice.as_ref(), None, &mut on_phase)?;
        seconds.insert(
            family.name().to_string(),
            fit_seconds + started.elapsed().as_secs_f64(),
        );
        if let Some(dir) = &args.plots {
            // Plot what serving would say: the exported file, not the
            // in-memory fit (export is verified equal, but this is the truth).
            let model = OnnxModel::load(&trained.onnx, 1)?;
            let preds = model.run(&ds.holdout.x, &ds.holdout.keys())?;
            let name = format!("{} on {} (hold-out)", family.name(), file_name(path));
            let files = plots::write_all(
                &dir.join(family.name()),
                &name,
                &holdout_plot_data(&ds, &preds),
            )?;
            for f in &files {
                progress.say(&format!("wrote {}", f.display()), true);
            }
        }
        if let Some(free) = &itemless {
            models.extend(itemless::compare(&trained.onnx, free, &spec)?);
        }
        models.insert(family.name().to_string(), trained.candidate.metrics);
        chosen.insert(family.name().to_string(), trained.metadata.family.clone());
        if models.keys().all(|k| !k.starts_with("baseline_")) {
            models.extend(trained.baselines);
        }
    }
    progress.finish();
    let rows = ds.census.rows;
    let holdout = ds.holdout.len() as u64;
    if args.json {
        let mut v = eval_json(rows, holdout, &models);
        v["input"] = summary_json(&summary);
        v["time_modeled"] = json!(ds.time_modeled());
        if let Some(c) = chosen.get(Family::Auto.name()) {
            v["auto_chose"] = json!({ Family::Auto.name(): c });
        }
        println!("{v}");
    } else {
        print_table(rows, holdout, &models);
        println!("{}", ds.time_support());
        if let Some(c) = chosen.get(Family::Auto.name()) {
            println!("auto chose {c}");
        }
        for (f, s) in seconds {
            println!("{f}: fit + evaluate + export in {s:.1}s");
        }
    }
    Ok(())
}

/// The hold-out rows with a model's predictions, as the plots take them.
fn holdout_plot_data(ds: &Dataset, preds: &[Output]) -> PlotData {
    let rows = &ds.holdout;
    let with_times = ds.time_modeled();
    let mut data = PlotData::default();
    // Per learner: (min, max, rows) of the predictions.
    let mut per_learner: BTreeMap<u32, (f64, f64, usize)> = BTreeMap::new();
    for (i, o) in preds.iter().enumerate().take(rows.len()) {
        let p = f64::from(o.p_correct);
        data.p.push(p);
        data.y.push(rows.correct[i]);
        let e = per_learner.entry(rows.user[i]).or_insert((p, p, 0));
        *e = (e.0.min(p), e.1.max(p), e.2 + 1);
        if with_times && let Some(actual) = rows.seconds.get(i) {
            let q = o.log_seconds.map(|v| f64::from(v).exp());
            data.time.push(TimePoint {
                median: q[1],
                interval: Some((q[0], q[2])),
                actual,
            });
        }
    }
    // As in the live report: a learner with one hold-out row cannot move.
    data.learner_spreads = per_learner
        .values()
        .filter(|(_, _, n)| *n >= 2)
        .map(|(lo, hi, _)| hi - lo)
        .collect();
    data
}

/// Reads and loads the artifact `eval --model` scores; the error names the
/// file and why (unreadable, corrupt, another feature schema).
fn load_model(file: &Path) -> anyhow::Result<Incumbent> {
    let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
    Incumbent::try_load(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

//! The offline commands: `train` and `eval` on a CSV file, with a progress
//! bar and a metrics table, on exactly the code the service runs.
//!
//! Unlike `import`, they skip bad rows rather than refuse the file: nothing
//! they read is kept, so a partial file costs nothing later, and the summary
//! printed first (rows read, used, rejected by reason with the first line
//! numbers) says what was left out.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::data::csv::{RowSummary, TsUnit};
use crate::data::dataset::{Dataset, PriorSet, Rows};
use crate::data::source::MemorySource;
use crate::data::source::load_csv_with;
use crate::families::linear::{self, LinearOptions};
use crate::families::{Family, Fitted};
use crate::judge::evaluate;
use crate::judge::incumbent::Incumbent;
use crate::judge::metrics::MetricSet;
use crate::plots::{self, PlotData, PlotError, TimePoint};
use crate::run::hidden_items;
use crate::run::pipeline::{self, Phase, TrainError, TrainSpec, Trained};
use taskcast_contract::FEATURE_NAMES;
use taskcast_contract::linear::LinearModel;
use taskcast_contract::runtime::{OnnxModel, Output};

/// What went wrong in an offline command.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The CSV could not be read.
    // Causes are in the messages rather than `#[source]`s, which `{:#}`
    // would print a second time.
    #[error("{path}: {error}")]
    Csv {
        /// The file.
        path: String,
        /// Cause (names the line).
        error: crate::data::csv::CsvError,
    },
    /// Every row of the file was rejected, or it has none.
    #[error("{path}: no usable training rows: {}", no_rows_why(*read))]
    NoRows {
        /// The file.
        path: String,
        /// Rows read (all rejected, as the summary printed before says).
        read: u64,
    },
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Running the exported model on the hold-out (for plots) failed.
    #[error("running the exported model: {0}")]
    Runtime(#[from] taskcast_contract::runtime::RuntimeError),
    /// The artifact given to `eval --model` cannot be scored.
    #[error("{path}: {error}")]
    Model {
        /// The file.
        path: String,
        /// Why (unreadable, corrupt, another feature schema).
        error: String,
    },
    /// `pretrain`'s weights fail the checks a bootstrap must pass.
    #[error(
        "the pretrained weights fail the first-contact checks (weights not written):\n  {failures}"
    )]
    FirstContact {
        /// Each failed check, one per line.
        failures: String,
    },
    /// A plot could not be written.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// Writing the output failed.
    #[error("writing {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        error: std::io::Error,
    },
}

fn no_rows_why(read: u64) -> String {
    if read == 0 {
        "the file has no rows after the header".to_string()
    } else {
        format!("all {read} rows read were rejected (reasons above)")
    }
}

/// A progress bar over the run's phases (hidden when stderr is not a terminal).
fn bar() -> ProgressBar {
    let pb = ProgressBar::new(1000);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg:<12} [{bar:30}] {percent:>3}% {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn on_phase(pb: &ProgressBar) -> impl FnMut(Phase, f64) + Send + '_ {
    move |phase: Phase, share: f64| {
        pb.set_message(phase.name());
        pb.set_position((phase.overall(share) * 1000.0) as u64);
    }
}

/// Loads and featurises a CSV once, for training one or several families,
/// after printing what was read, used and rejected (to stderr when stdout is
/// reserved for JSON).
async fn dataset(
    path: &Path,
    ts_unit: TsUnit,
    spec: &TrainSpec,
    pb: &ProgressBar,
    summary_to_stderr: bool,
    incumbent: Option<&mut Incumbent>,
) -> Result<(Dataset, RowSummary, MemorySource), OfflineError> {
    let (summary, mut source) = source(path, ts_unit, spec, pb, summary_to_stderr)?;
    let mut progress = on_phase(pb);
    let ds = pipeline::prepare(&mut source, spec.history_window, incumbent, &mut progress).await?;
    Ok((ds, summary, source))
}

/// Reads a CSV into the rows training would use (within the training
/// budget), after printing what was read, used and rejected.
fn source(
    path: &Path,
    ts_unit: TsUnit,
    spec: &TrainSpec,
    pb: &ProgressBar,
    summary_to_stderr: bool,
) -> Result<(RowSummary, MemorySource), OfflineError> {
    pb.set_message("loading");
    let display = path.display().to_string();
    let csv = load_csv_with(path, ts_unit).map_err(|error| OfflineError::Csv {
        path: display.clone(),
        error,
    })?;
    let summary = csv.summary;
    let text = format!("{display}: {}", summary.render("used"));
    pb.suspend(|| {
        if summary_to_stderr {
            eprintln!("{text}");
        } else {
            // A blank line before the metrics table.
            println!("{text}\n");
        }
    });
    // The CSV reader rejects exactly the rows training would skip, so no
    // accepted row means no training row: say why here, with the file's
    // counts, rather than let the pipeline report "0 rows skipped".
    if summary.accepted == 0 {
        return Err(OfflineError::NoRows {
            path: display,
            read: summary.read,
        });
    }
    let source = csv.source.with_budget(spec.max_training_rows);
    let kept = source.rows().len() as u64;
    if kept < summary.accepted {
        let text = format!(
            "training budget {}: kept the {kept} rows of the most recently active learners",
            spec.max_training_rows
        );
        pb.suspend(|| {
            if summary_to_stderr {
                eprintln!("{text}");
            } else {
                println!("{text}\n");
            }
        });
    }
    Ok((summary, source))
}

/// `trainer-svc train`: fits `spec.family` on a CSV and writes the ONNX file.
pub async fn train(
    path: &Path,
    ts_unit: TsUnit,
    spec: &TrainSpec,
    out: &Path,
) -> Result<Trained, OfflineError> {
    let started = Instant::now();
    let pb = bar();
    let (ds, _, _) = dataset(path, ts_unit, spec, &pb, false, None).await?;
    let mut progress = on_phase(&pb);
    let trained = pipeline::fit_and_judge(&ds, spec, None, &mut progress)?;
    drop(progress);
    write_file(out, &trained.onnx)?;
    pb.finish_and_clear();
    let mut models = trained.baselines.clone();
    models.insert(
        spec.family.name().to_string(),
        trained.candidate.metrics.clone(),
    );
    print_table(trained.rows, trained.holdout_rows, &models);
    println!(
        "\nwrote {} ({} bytes, sha256 {}) in {:.1}s\nversion {}  {}\ngate: {}",
        out.display(),
        trained.onnx.len(),
        trained.sha256,
        started.elapsed().as_secs_f64(),
        trained.metadata.version,
        trained.time,
        trained.verdict.reason()
    );
    Ok(trained)
}

/// The priors `pretrain` featurises each file's rows with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PretrainPriors {
    /// The file's own (out-of-fold) priors, as the trainer featurises an app's rows.
    Own,
    /// Empty priors, as a new deployment serves the bootstrap: the weights
    /// learn from the learner's history alone.
    Empty,
    /// Every row twice, once each way: weights that hold up in both conditions.
    Both,
}

/// `trainer-svc pretrain`: fits the linear family across several CSV files
/// (their training rows pooled, featurised with `priors`) with one interval
/// width for all rows, as the contract's linear graph carries, and the
/// learner's own times out of the correctness head
/// ([`linear::LEARNER_TIME_FEATURES`]); checks the fit
/// over empty priors ([`taskcast_contract::first_contact`]) and writes the
/// weights as the Rust source of `taskcast_contract::bootstrap_weights`.
/// With `onnx`, also the model as an artifact over empty priors (as the
/// bootstrap is served), for `eval --model`, written even when the checks fail
/// so the failure can be looked at.
pub async fn pretrain(
    paths: &[std::path::PathBuf],
    ts_unit: TsUnit,
    spec: &TrainSpec,
    priors: PretrainPriors,
    out: &Path,
    onnx: Option<&Path>,
) -> Result<(), OfflineError> {
    let pb = bar();
    let mut sets = Vec::with_capacity(paths.len() * 2);
    for path in paths {
        let (_, mut source) = source(path, ts_unit, spec, &pb, false)?;
        // Empty priors' rows first, then the file's own: the pooled order
        // the shipped weights were fitted in.
        if priors != PretrainPriors::Own {
            let census = crate::data::dataset::census(&mut source)
                .await
                .map_err(TrainError::from)?;
            let empty = PriorSet::uniform(taskcast_contract::Priors::default());
            let ds = crate::data::dataset::build_with(
                &mut source,
                census,
                empty,
                spec.history_window,
                None,
                &mut |_| {},
            )
            .await
            .map_err(TrainError::from)?;
            sets.push(ds);
        }
        if priors != PretrainPriors::Empty {
            let mut progress = on_phase(&pb);
            sets.push(
                pipeline::prepare(&mut source, spec.history_window, None, &mut progress).await?,
            );
        }
    }
    pb.set_message("fitting");
    let rows = Rows::pooled(sets.iter().map(|d| &d.train));
    let learn_time = sets.iter().any(Dataset::time_modeled);
    let opts = LinearOptions {
        per_row_scale: false,
        p_excluded: linear::LEARNER_TIME_FEATURES
            .iter()
            .filter_map(|n| taskcast_contract::features::feature_index(n))
            .collect(),
        ..spec.fit.linear.clone()
    };
    let fitted = linear::fit(&rows, &opts, learn_time).map_err(|error| TrainError::Fit {
        family: Family::Pretrained,
        error,
    })?;
    pb.finish_and_clear();
    if let Some(file) = onnx {
        let metadata = taskcast_contract::bootstrap::linear_metadata(
            "pretrained",
            Family::Pretrained.name(),
            taskcast_contract::Priors::default(),
        );
        let bytes = taskcast_contract::Artifact::write(fitted.model.graph(), &metadata)
            .map_err(TrainError::from)?;
        write_file(file, &bytes)?;
        println!("wrote {}", file.display());
    }
    let failures = taskcast_contract::first_contact::check(|row| fitted.model.predict(row));
    if !failures.is_empty() {
        return Err(OfflineError::FirstContact {
            failures: failures.join("\n  "),
        });
    }
    let names: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into())
        })
        .collect();
    let provenance = format!(
        "trainer-svc pretrain --priors {} on {} ({} training rows, L2 per row {:e}, history window {})",
        clap::ValueEnum::to_possible_value(&priors)
            .map_or("?".into(), |v| v.get_name().to_string()),
        names.join(", "),
        rows.len(),
        fitted.info.l2_per_row,
        spec.history_window
    );
    write_file(
        out,
        pretrained_source(&fitted.model, &provenance).as_bytes(),
    )?;
    println!("wrote {} ({provenance})", out.display());
    Ok(())
}

/// Writes an output file, naming it in the error.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), OfflineError> {
    std::fs::write(path, bytes).map_err(|error| OfflineError::Io {
        path: path.display().to_string(),
        error,
    })
}

/// `taskcast_contract::bootstrap_weights`' source for `model`: weights by
/// feature name (zeros left out), printed so they read back bit for bit.
fn pretrained_source(model: &LinearModel, provenance: &str) -> String {
    let pairs = |w: &[f32]| -> String {
        FEATURE_NAMES
            .iter()
            .zip(w)
            .filter(|(_, w)| **w != 0.0)
            .map(|(n, w)| format!("    (\"{n}\", {w:?}),\n"))
            .collect()
    };
    format!(
        "//! Weights of the pretrained model (the bootstrap, and where the trainer's\n\
         //! `pretrained` family starts), by feature name. Generated by `trainer-svc\n\
         //! pretrain` (README, \"Pretrained starting model\"); regenerate them with\n\
         //! that command, then `models/bootstrap.onnx` with\n\
         //! `cargo run -p taskcast-contract --example write_bootstrap`; do not edit them.\n\n\
         /// Where the weights came from.\n\
         pub const PROVENANCE: &str = {provenance:?};\n\n\
         /// Logit weights on raw features (calibration folded in).\n\
         pub const P_WEIGHTS: &[(&str, f32)] = &[\n{}];\n\n\
         /// Logit intercept.\n\
         pub const P_BIAS: f32 = {:?};\n\n\
         /// Median log-seconds weights on raw features.\n\
         pub const T_WEIGHTS: &[(&str, f32)] = &[\n{}];\n\n\
         /// Median log-seconds intercept.\n\
         pub const T_BIAS: f32 = {:?};\n\n\
         /// The 10th, 50th and 90th percentile offsets in log-seconds.\n\
         pub const T_QUANTILE_OFFSETS: [f32; 3] = {:?};\n",
        pairs(&model.p_weights),
        model.p_bias,
        pairs(&model.t_weights),
        model.t_bias,
        model.t_quantile_offsets,
    )
}

/// The hold-out rows with a model's predictions, as the plots take them.
pub fn holdout_plot_data(ds: &Dataset, preds: &[Output]) -> PlotData {
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
        if with_times && let Some(actual) = rows.seconds[i] {
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

/// What `eval` prints and adds beside the families it trains.
#[derive(Clone, Copy, Debug, Default)]
pub struct EvalOptions<'a> {
    /// One JSON object instead of a table.
    pub json: bool,
    /// Each family's hold-out plots go to `plots/<family>/`.
    pub plots: Option<&'a Path>,
    /// Also score each family as requests without item ids would get it.
    pub hidden_items: bool,
    /// An existing artifact to score on the same hold-out, as it would
    /// serve: with its own priors and history window, not the file's.
    pub model: Option<&'a Path>,
}

/// `trainer-svc eval`: every requested family and the baselines on one
/// hold-out; with `plots`, each family's hold-out plots in `plots/<family>/`;
/// with `model`, that artifact too, as `model:<its version>`.
pub async fn eval(
    path: &Path,
    ts_unit: TsUnit,
    families: &[Family],
    spec: &TrainSpec,
    opts: &EvalOptions<'_>,
) -> Result<(), OfflineError> {
    let EvalOptions {
        json: json_out,
        plots: plots_dir,
        hidden_items,
        model: model_file,
    } = *opts;
    let mut scored = match model_file {
        Some(file) => Some(load_model(file)?),
        None => None,
    };
    let pb = bar();
    let (ds, summary, source) =
        dataset(path, ts_unit, spec, &pb, json_out, scored.as_mut()).await?;
    let itemless = if hidden_items {
        pb.set_message("no items");
        let mut free = hidden_items::without_items(&source);
        Some(hidden_items::itemless_dataset(&mut free, &ds).await?)
    } else {
        None
    };
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
    for family in families {
        let spec = TrainSpec {
            family: *family,
            ..spec.clone()
        };
        let mut progress = on_phase(&pb);
        progress(Phase::Fitting, 0.0);
        let mut fit_seconds = 0.0;
        let (fitted, choice) = pipeline::fit_with(&spec, |f| {
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
        let trained = pipeline::judge(&ds, &spec, fitted, choice.as_ref(), None, &mut progress)?;
        seconds.insert(
            family.name().to_string(),
            fit_seconds + started.elapsed().as_secs_f64(),
        );
        if let Some(dir) = plots_dir {
            // Plot what serving would say: the exported file, not the
            // in-memory fit (export is verified equal, but this is the truth).
            let model = OnnxModel::load(&trained.onnx, 1)?;
            let preds = model.run(&ds.holdout.x, &ds.holdout.keys)?;
            let data = holdout_plot_data(&ds, &preds);
            let name = format!(
                "{} on {} (hold-out)",
                family.name(),
                path.file_name().map_or_else(
                    || path.display().to_string(),
                    |f| f.to_string_lossy().into_owned()
                )
            );
            let files = plots::write_all(&dir.join(family.name()), &name, &data)?;
            pb.suspend(|| {
                for f in &files {
                    eprintln!("wrote {}", f.display());
                }
            });
        }
        if let Some(free) = &itemless {
            let spec = TrainSpec {
                family: *family,
                ..spec.clone()
            };
            models.extend(hidden_items::compare(&trained.onnx, free, &spec)?);
        }
        models.insert(family.name().to_string(), trained.candidate.metrics);
        chosen.insert(family.name().to_string(), trained.metadata.family.clone());
        if models.keys().all(|k| !k.starts_with("baseline_")) {
            models.extend(trained.baselines);
        }
    }
    pb.finish_and_clear();
    let rows = ds.census.rows;
    let holdout = ds.holdout.len() as u64;
    if json_out {
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

/// The `--json` object: `{"rows", "holdout_rows", "models": {name: metrics}}`,
/// every metric key present, `null` where not measured.
pub fn eval_json(rows: u64, holdout_rows: u64, models: &BTreeMap<String, MetricSet>) -> Value {
    let models: serde_json::Map<String, Value> = models
        .iter()
        .map(|(name, m)| {
            (
                name.clone(),
                json!({
                    "auc": m.auc, "logloss": m.logloss, "brier": m.brier, "ece": m.ece,
                    "accuracy": m.accuracy, "mae_seconds": m.mae_seconds,
                    "median_ae_seconds": m.median_ae_seconds, "mae_log_seconds": m.mae_log_seconds,
                    "interval_coverage": m.interval_coverage,
                }),
            )
        })
        .collect();
    json!({ "rows": rows, "holdout_rows": holdout_rows, "models": models })
}

/// What the file held, for `eval --json`: `{"rows_read", "rows_used",
/// "rows_rejected", "rejected": [{"reason", "count", "first_lines"}]}`.
pub fn summary_json(summary: &RowSummary) -> Value {
    let rejected: Vec<Value> = summary
        .rejected
        .iter()
        .map(|r| json!({ "reason": r.reason(), "count": r.count, "first_lines": r.first_lines }))
        .collect();
    json!({
        "rows_read": summary.read,
        "rows_used": summary.accepted,
        "rows_rejected": summary.rejected_total(),
        "rejected": rejected,
    })
}

/// Prints models (families first, then baselines) as an aligned table.
pub fn print_table(rows: u64, holdout_rows: u64, models: &BTreeMap<String, MetricSet>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "rows {rows}, hold-out {holdout_rows} (last 20% of each learner with >= 5 attempts)\n"
    );
    let width = models
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(22);
    let _ = writeln!(
        out,
        "{:<width$} {:>7} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9} {:>8} {:>8}",
        "model", "auc", "logloss", "brier", "ece", "acc", "mae_s", "medae_s", "mae_log", "cover80"
    );
    let f = |v: Option<f64>, w: usize, d: usize| {
        v.map_or(format!("{:>w$}", "-"), |x| format!("{x:>w$.d$}"))
    };
    let mut names: Vec<&String> = models.keys().collect();
    names.sort_by_key(|n| (n.starts_with("baseline_"), n.to_string()));
    for name in names {
        let m = &models[name];
        let _ = writeln!(
            out,
            "{:<width$} {} {} {} {} {} {} {} {} {}",
            name,
            f(m.auc, 7, 4),
            f(m.logloss, 8, 4),
            f(m.brier, 7, 4),
            f(m.ece, 7, 4),
            f(m.accuracy, 7, 4),
            f(m.mae_seconds, 9, 2),
            f(m.median_ae_seconds, 9, 2),
            f(m.mae_log_seconds, 8, 4),
            f(m.interval_coverage, 8, 3),
        );
    }
}

/// Reads and loads the artifact `eval --model` scores.
fn load_model(file: &Path) -> Result<Incumbent, OfflineError> {
    let fail = |error: String| OfflineError::Model {
        path: file.display().to_string(),
        error,
    };
    let bytes = std::fs::read(file).map_err(|e| fail(e.to_string()))?;
    Incumbent::try_load(&bytes).map_err(|e| fail(e.to_string()))
}

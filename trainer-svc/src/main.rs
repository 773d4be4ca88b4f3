//! `trainer-svc`: the command line. `serve` runs the service; `import`,
//! `train`, `eval` and `simulate` are offline tools on the same code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use trainer_svc::data::csv::TsUnit;
use trainer_svc::families::{Family, FitOptions};
use trainer_svc::run::offline::PretrainPriors;
use trainer_svc::run::pipeline::TrainSpec;

/// Retrains Taskcast models from completed tasks, evaluates them on a
/// chronological hold-out, keeps a registry and notifies inference replicas.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the trainer service (gRPC Trainer API, automatic retraining,
    /// model registry, WatchModels for inference replicas).
    // Boxed: the serve flags outweigh every other command's many times over.
    Serve(Box<trainer_svc::serve::config::ServeConfig>),
    /// Import a CSV file (user_id,item_id,topic,correct,seconds,ts[,difficulty])
    /// into completed_tasks in one transaction. A bad row (unparsable value,
    /// empty user_id, topic or ts, negative seconds, wrong column count)
    /// refuses the whole file, naming its line, column and value, unless
    /// --skip-bad-rows is given. Prints rows read, imported and rejected.
    #[command(after_help = TS_HELP)]
    Import {
        /// Database URL (sqlite://FILE?mode=rwc or postgres://...).
        #[arg(
            long,
            env = "TASKCAST_DATABASE_URL",
            default_value = "sqlite://taskcast.db?mode=rwc"
        )]
        database_url: String,
        /// The CSV file, plain or gzip.
        #[arg(long)]
        data: PathBuf,
        /// Import only while completed_tasks is empty; otherwise do nothing
        /// and exit 0 (a seed step that is safe to run on every start).
        #[arg(long)]
        if_empty: bool,
        /// Import the good rows and skip the bad ones, listing them by reason
        /// with their first line numbers (the file is still refused when no
        /// row is good).
        #[arg(long)]
        skip_bad_rows: bool,
        /// What a number in the ts column counts: s = Unix seconds, ms = Unix
        /// milliseconds (integer or fractional either way; never guessed).
        #[arg(long, value_enum, default_value_t = TsUnit::S)]
        ts_unit: TsUnit,
    },
    /// Train one model family on a CSV file and write an ONNX file that
    /// `inference-svc --model` serves. Bad rows are skipped and reported
    /// (rows read, used, rejected by reason with the first line numbers).
    #[command(after_help = TS_HELP)]
    Train {
        #[command(flatten)]
        common: Offline,
        /// Model family: auto (fit pretrained, linear and mlp, keep the first
        /// no later one clearly beats on the inner validation slice), linear,
        /// mlp or pretrained.
        #[arg(long, default_value = "auto")]
        family: Family,
        /// Where to write the model.
        #[arg(long)]
        out: PathBuf,
    },
    /// Fit the pretrained model (the bootstrap every new deployment serves,
    /// and what the `pretrained` family recalibrates to an app's data)
    /// across CSV files, check it over empty priors (right answers raise p,
    /// a mastered topic ranks above a new one, slow answers raise the time)
    /// and write its weights as contract/src/bootstrap_weights.rs; then
    /// `cargo run -p taskcast-contract --example write_bootstrap` rewrites
    /// models/bootstrap.onnx from them.
    #[command(after_help = TS_HELP)]
    Pretrain {
        /// The CSV files, plain or gzip (repeatable; their training rows are
        /// pooled, each featurised with its own priors).
        #[arg(long, required = true)]
        data: Vec<PathBuf>,
        /// Where to write the weights' Rust source.
        #[arg(long, default_value = "contract/src/bootstrap_weights.rs")]
        out: PathBuf,
        /// Also write the model as an artifact over empty priors (as a fresh
        /// deployment would serve it), e.g. for `eval --model`.
        #[arg(long, value_name = "FILE")]
        onnx: Option<PathBuf>,
        /// The priors each file's rows are featurised with: own (the file's,
        /// as an app's trainer does), empty (as a new deployment serves) or
        /// both (every row twice).
        #[arg(long, value_enum, default_value_t = PretrainPriors::Both)]
        priors: PretrainPriors,
        /// Attempts of history the features look back over.
        #[arg(long, default_value_t = taskcast_contract::features::DEFAULT_HISTORY_WINDOW)]
        history_window: u32,
        /// Training budget per file (as for train); 0 uses every row.
        #[arg(long, default_value_t = trainer_svc::data::budget::DEFAULT_MAX_TRAINING_ROWS)]
        max_training_rows: u64,
        /// What a number in the ts column counts (s or ms).
        #[arg(long, value_enum, default_value_t = TsUnit::S)]
        ts_unit: TsUnit,
    },
    /// Evaluate model families and baselines on the chronological hold-out of
    /// a CSV file (the last 20% of each learner's attempts). Bad rows are
    /// skipped and reported as for train.
    #[command(after_help = TS_HELP)]
    Eval {
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
    },
    /// Report how each served model version does on real outcomes: the
    /// predictions the backend stored on completed_tasks, scored against what
    /// happened, beside the hold-out figures the version was promoted on.
    Report {
        /// Database URL (sqlite://FILE?mode=rwc or postgres://...).
        #[arg(
            long,
            env = "TASKCAST_DATABASE_URL",
            default_value = "sqlite://taskcast.db?mode=rwc"
        )]
        database_url: String,
        /// Only this version (default: every version with predictions).
        #[arg(long)]
        version: Option<String>,
        /// Only tasks completed in the last N days (0: no limit).
        #[arg(long, default_value_t = 0)]
        last_days: u32,
        /// Only the newest N tasks with a prediction (0: no limit).
        #[arg(long, default_value_t = 0)]
        last_rows: u32,
        /// K: list learners whose last K predictions stayed within 0.01.
        #[arg(long, default_value_t = trainer_svc::report::DEFAULT_STUCK_WINDOW)]
        stuck_window: u32,
        /// How far live AUC may fall below the hold-out AUC.
        #[arg(long, env = "TASKCAST_DRIFT_AUC_MARGIN", default_value_t = trainer_svc::report::drift::DEFAULT_AUC_MARGIN)]
        drift_auc_margin: f64,
        /// How far live ECE may rise above the hold-out ECE.
        #[arg(long, env = "TASKCAST_DRIFT_ECE_MARGIN", default_value_t = trainer_svc::report::drift::DEFAULT_ECE_MARGIN)]
        drift_ece_margin: f64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Write each version's plots (PNG and SVG) into DIR/<version>/.
        #[arg(long, value_name = "DIR")]
        plots: Option<PathBuf>,
    },
    /// Write simulated learners' completed tasks as CSV (demo and test data).
    Simulate {
        /// Output CSV file ("-" for stdout).
        #[arg(long, default_value = "-")]
        out: PathBuf,
        /// Learners to simulate.
        #[arg(long, default_value_t = 200)]
        learners: usize,
        /// Mean attempts per learner.
        #[arg(long, default_value_t = 60)]
        attempts: usize,
        /// Random seed (same seed, same data).
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

/// Options shared by the offline training commands.
#[derive(Args)]
struct Offline {
    /// The CSV file, plain or gzip.
    #[arg(long)]
    data: PathBuf,
    /// Attempts of history the features look back over.
    #[arg(long, default_value_t = taskcast_contract::features::DEFAULT_HISTORY_WINDOW)]
    history_window: u32,
    /// L2 strength of the linear family's logistic regression (linfa's
    /// alpha, on the summed log loss). Default: chosen on the inner
    /// validation slice of the training rows.
    #[arg(long)]
    alpha: Option<f64>,
    /// Training budget, as for serve: about this many rows at most, whole
    /// histories of the most recently active learners (latest ts first,
    /// taken while the learners before them hold fewer rows than this); the
    /// hold-out is then the end of each kept history. 0 uses every row.
    #[arg(long, env = "TASKCAST_MAX_TRAINING_ROWS", default_value_t = trainer_svc::data::budget::DEFAULT_MAX_TRAINING_ROWS)]
    max_training_rows: u64,
    /// ONNX Runtime library (default: $ORT_DYLIB_PATH, else .ort/libonnxruntime.so).
    #[arg(long, env = "TASKCAST_ORT_LIB")]
    ort_lib: Option<PathBuf>,
    /// What a number in the ts column counts: s = Unix seconds, ms = Unix
    /// milliseconds (integer or fractional either way; never guessed).
    #[arg(long, value_enum, default_value_t = TsUnit::S)]
    ts_unit: TsUnit,
}

/// The accepted `ts` forms, shown under import, train and eval's --help.
const TS_HELP: &str = "\
The ts column (required) takes, per row:
  - a number: Unix seconds, integer or fractional (1414749956, 1414749956.58917,
    1.4e9, negative before 1970); Unix milliseconds with --ts-unit ms. Row
    numbers 0, 1, 2... work too (only the order within a learner matters);
  - RFC 3339 with Z or any offset, T or space separated
    (2014-10-31T10:05:56.589Z, 2014-10-31 12:05:56+02:00; +0200 and +02 too);
  - YYYY-MM-DD HH:MM:SS[.ffffff] without an offset, taken as UTC.
Fractions below a millisecond are dropped; years 1 to 9999.";

impl Offline {
    fn spec(&self, family: Family) -> anyhow::Result<TrainSpec> {
        let lib = taskcast_contract::runtime::library_path(self.ort_lib.as_deref());
        taskcast_contract::runtime::init(&lib)?;
        Ok(TrainSpec {
            family,
            fit: FitOptions {
                linear: trainer_svc::families::linear::LinearOptions {
                    alpha: self.alpha,
                    ..Default::default()
                },
                ..FitOptions::default()
            },
            history_window: self.history_window,
            max_training_rows: self.max_training_rows,
            ..TrainSpec::default()
        })
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => {
            taskcast_serving::logging::init_tracing(config.log_format, "info");
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            let metrics = tokio::net::TcpListener::bind(config.metrics_listen)
                .await
                .with_context(|| format!("binding {}", config.metrics_listen))?;
            tracing::info!(listen = %config.listen, metrics = %config.metrics_listen, "trainer-svc starting");
            trainer_svc::serve::server::run(
                listener,
                Some(metrics),
                *config,
                taskcast_serving::shutdown::shutdown_signal(),
            )
            .await?;
        }
        Command::Import {
            database_url,
            data,
            if_empty,
            skip_bad_rows,
            ts_unit,
        } => {
            let db = trainer_svc::db::Db::connect(&database_url)
                .await
                .with_context(|| format!("opening {database_url}"))?;
            if if_empty {
                let rows = db.count_tasks().await?;
                if rows > 0 {
                    println!("completed_tasks has {rows} rows: nothing imported (--if-empty)");
                    return Ok(());
                }
            }
            let options = trainer_svc::data::import::ImportOptions {
                ts_unit,
                skip_bad_rows,
            };
            let report =
                trainer_svc::data::import::import_csv(&db, &data, &options, |_| {}).await?;
            println!("{}: {}", data.display(), report.summary.render("imported"));
            println!(
                "committed {} rows in {:.1}s",
                report.rows_imported,
                report.elapsed.as_secs_f64()
            );
        }
        Command::Train {
            common,
            family,
            out,
        } => {
            let spec = common.spec(family)?;
            trainer_svc::run::offline::train(&common.data, common.ts_unit, &spec, &out).await?;
        }
        Command::Pretrain {
            data,
            out,
            onnx,
            priors,
            history_window,
            max_training_rows,
            ts_unit,
        } => {
            let spec = TrainSpec {
                family: Family::Pretrained,
                history_window,
                max_training_rows,
                ..TrainSpec::default()
            };
            trainer_svc::run::offline::pretrain(
                &data,
                ts_unit,
                &spec,
                priors,
                &out,
                onnx.as_deref(),
            )
            .await?;
        }
        Command::Eval {
            common,
            family,
            json,
            plots,
            hidden_items,
            model,
        } => {
            let families = if !family.is_empty() {
                family
            } else if model.is_some() {
                Vec::new()
            } else {
                Family::NAMED.to_vec()
            };
            let spec = common.spec(families.first().copied().unwrap_or(Family::Linear))?;
            let opts = trainer_svc::run::offline::EvalOptions {
                json,
                plots: plots.as_deref(),
                hidden_items,
                model: model.as_deref(),
            };
            trainer_svc::run::offline::eval(&common.data, common.ts_unit, &families, &spec, &opts)
                .await?;
        }
        Command::Report {
            database_url,
            version,
            last_days,
            last_rows,
            stuck_window,
            drift_auc_margin,
            drift_ece_margin,
            json,
            plots,
        } => {
            let db = trainer_svc::db::Db::connect(&database_url)
                .await
                .with_context(|| format!("opening {database_url}"))?;
            let request = trainer_svc::report::ReportRequest {
                version,
                last_days,
                last_rows,
                stuck_window,
            };
            let drift = trainer_svc::report::DriftConfig {
                auc_margin: drift_auc_margin,
                ece_margin: drift_ece_margin,
            };
            let report = trainer_svc::report::compute(&db, &request, &drift).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", trainer_svc::report::text::render(&report));
            }
            if let Some(dir) = plots {
                for v in &report.versions {
                    let files = trainer_svc::plots::write_all(
                        &dir.join(path_safe(&v.version)),
                        &format!("{} (live)", v.version),
                        &v.plot,
                    )?;
                    for f in files {
                        eprintln!("wrote {}", f.display());
                    }
                }
            }
        }
        Command::Simulate {
            out,
            learners,
            attempts,
            seed,
        } => {
            let config = taskcast_sim::SimConfig {
                seed,
                learners,
                attempts_per_learner: attempts,
                ..Default::default()
            };
            let rows = taskcast_sim::Simulator::new(config)?.generate();
            if out.as_os_str() == "-" {
                taskcast_sim::write_csv(&rows, std::io::stdout().lock())?;
            } else {
                let file = std::fs::File::create(&out)
                    .with_context(|| format!("creating {}", out.display()))?;
                taskcast_sim::write_csv(&rows, std::io::BufWriter::new(file))?;
                eprintln!("wrote {} rows to {}", rows.len(), out.display());
            }
        }
    }
    Ok(())
}

/// `s` usable as one path component: anything but letters, digits, `.`, `-`
/// and `_` becomes `_` (version ids are chosen by whoever registers them).
fn path_safe(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        "_".into()
    } else {
        out
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A model fit runs on a blocking thread that cannot be interrupted. On
    // SIGTERM the run was already abandoned (recorded FAILED, nothing
    // published), so exit within the grace period instead of letting the
    // runtime wait for the fit to finish.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

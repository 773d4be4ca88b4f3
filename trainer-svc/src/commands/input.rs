//! What the offline commands read: a CSV file (leniently: bad rows are
//! skipped and listed, since nothing these commands read is kept), the
//! options `train` and `eval` share, and the training spec they make.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use taskcast_learn::families::linear::LinearOptions;
use taskcast_learn::families::{Family, FitOptions};
use taskcast_learn::pipeline::TrainSpec;
use taskcast_learn::source::MemorySource;
use trainer_svc::data::csv::{RowSummary, TsUnit};
use trainer_svc::data::source::load_csv_with;
use trainer_svc::db::{Db, redact};

use crate::commands::output::Progress;

/// The accepted `ts` forms, shown under import, train and eval's --help.
pub const TS_HELP: &str = "\
The ts column (required) takes, per row:
  - a number: Unix seconds, integer or fractional (1414749956, 1414749956.58917,
    1.4e9, negative before 1970); Unix milliseconds with --ts-unit ms. Row
    numbers 0, 1, 2... work too (only the order within a learner matters);
  - RFC 3339 with Z or any offset, T or space separated
    (2014-10-31T10:05:56.589Z, 2014-10-31 12:05:56+02:00; +0200 and +02 too);
  - YYYY-MM-DD HH:MM:SS[.ffffff] without an offset, taken as UTC.
Fractions below a millisecond are dropped; years 1 to 9999.";

/// Options shared by the offline training commands.
#[derive(Args)]
pub struct Offline {
    /// The CSV file, plain or gzip.
    #[arg(long)]
    pub data: PathBuf,
    /// Attempts of history the features look back over.
    #[arg(long, default_value_t = taskcast_contract::features::DEFAULT_HISTORY_WINDOW)]
    pub history_window: u32,
    /// L2 strength of the linear family's logistic regression (linfa's
    /// alpha, on the summed log loss). Default: chosen on the inner
    /// validation slice of the training rows.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Training budget, as for serve: about this many rows at most, whole
    /// histories of the most recently active learners (latest ts first,
    /// taken while the learners before them hold fewer rows than this); the
    /// hold-out is then the end of each kept history. 0 uses every row.
    #[arg(long, env = "TASKCAST_MAX_TRAINING_ROWS", default_value_t = taskcast_learn::budget::DEFAULT_MAX_TRAINING_ROWS)]
    pub max_training_rows: u64,
    /// ONNX Runtime library (default: $ORT_DYLIB_PATH, else .ort/libonnxruntime.so).
    #[arg(long, env = "TASKCAST_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
    /// What a number in the ts column counts: s = Unix seconds, ms = Unix
    /// milliseconds (integer or fractional either way; never guessed).
    #[arg(long, value_enum, default_value_t = TsUnit::S)]
    pub ts_unit: TsUnit,
}

impl Offline {
    /// Loads ONNX Runtime (every offline run verifies its export through
    /// it) and the spec these options describe, for `family`.
    pub fn spec(&self, family: Family) -> anyhow::Result<TrainSpec> {
        let lib = taskcast_contract::runtime::library_path(self.ort_lib.as_deref());
        taskcast_contract::runtime::init(&lib)?;
        Ok(TrainSpec {
            family,
            fit: FitOptions {
                linear: LinearOptions {
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

/// Reads a CSV into the rows training would use (within a budget of
/// `max_rows`), after printing what was read, used and rejected (to stderr
/// when stdout is reserved for JSON).
pub fn read_csv(
    path: &Path,
    ts_unit: TsUnit,
    max_rows: u64,
    progress: &Progress,
    summary_to_stderr: bool,
) -> anyhow::Result<(RowSummary, MemorySource)> {
    progress.message("loading");
    let display = path.display().to_string();
    let csv = match load_csv_with(path, ts_unit) {
        Ok(csv) => csv,
        // The cause names the line; `{display}: ` names the file.
        Err(error) => bail!("{display}: {error}"),
    };
    let summary = csv.summary;
    progress.say(
        &format!("{display}: {}", summary.render("used")),
        summary_to_stderr,
    );
    // The CSV reader rejects exactly the rows training would skip, so no
    // accepted row means no training row: say why here, with the file's
    // counts, rather than let the pipeline report "0 rows skipped".
    if summary.accepted == 0 {
        let why = if summary.read == 0 {
            "the file has no rows after the header".to_string()
        } else {
            format!(
                "all {} rows read were rejected (reasons above)",
                summary.read
            )
        };
        bail!("{display}: no usable training rows: {why}");
    }
    let source = csv.source.with_budget(max_rows);
    let kept = source.len() as u64;
    if kept < summary.accepted {
        progress.say(
            &format!(
                "training budget {max_rows}: kept the {kept} rows of the most recently active learners"
            ),
            summary_to_stderr,
        );
    }
    Ok((summary, source))
}

/// A file's name for titles and provenance (its path when it has none).
pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    )
}

/// The database a command works on.
#[derive(Args)]
pub struct Database {
    /// Database URL (sqlite://FILE?mode=rwc or postgres://...).
    #[arg(
        long,
        env = "TASKCAST_DATABASE_URL",
        default_value = "sqlite://taskcast.db?mode=rwc"
    )]
    pub database_url: String,
}

impl Database {
    /// Opens it, naming it (without its password) when that fails.
    pub async fn open(&self) -> anyhow::Result<Db> {
        let url = &self.database_url;
        Db::connect(url)
            .await
            .with_context(|| format!("opening {}", redact(url)))
    }
}

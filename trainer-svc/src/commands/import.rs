//! `trainer-svc import`: a CSV file into `completed_tasks`, in one
//! transaction, at most once per file and once per `task_id`.

use std::path::PathBuf;

use clap::Args;

use crate::commands::input::Database;
use trainer_svc::data::csv::TsUnit;
use trainer_svc::data::import::{ImportOptions, import_csv};

/// `import`'s arguments.
#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    db: Database,
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
    /// Import the file even though a file with the same sha256 was imported
    /// before (every import records its file's digest and refuses a file it
    /// already imported). Rows with a task_id are still never stored twice.
    #[arg(long, env = "TASKCAST_ALLOW_REIMPORT")]
    allow_reimport: bool,
}

/// Imports the file and prints rows read, imported and rejected.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let db = args.db.open().await?;
    if args.if_empty {
        let rows = db.count_tasks().await?;
        if rows > 0 {
            println!("completed_tasks has {rows} rows: nothing imported (--if-empty)");
            return Ok(());
        }
    }
    let options = ImportOptions {
        ts_unit: args.ts_unit,
        skip_bad_rows: args.skip_bad_rows,
        allow_reimport: args.allow_reimport,
    };
    let report = import_csv(&db, &args.data, &options, |_| {}).await?;
    println!(
        "{}: {}",
        args.data.display(),
        report.summary.render("imported")
    );
    println!(
        "committed {} rows in {:.1}s; {} duplicates (task_id already stored) ignored",
        report.rows_imported,
        report.elapsed.as_secs_f64(),
        report.duplicates,
    );
    Ok(())
}

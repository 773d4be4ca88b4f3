//! `trainer-svc report`: how each served version does on real outcomes,
//! as text or JSON, with plots on request.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::commands::input::Database;
use trainer_svc::report::{self, DriftConfig, ReportRequest, drift};

/// `report`'s arguments.
#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    db: Database,
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
    #[arg(long, default_value_t = report::DEFAULT_STUCK_WINDOW)]
    stuck_window: u32,
    /// How far live AUC may fall below the hold-out AUC.
    #[arg(long, env = "TASKCAST_DRIFT_AUC_MARGIN", default_value_t = drift::DEFAULT_AUC_MARGIN)]
    drift_auc_margin: f64,
    /// How far live ECE may rise above the hold-out ECE.
    #[arg(long, env = "TASKCAST_DRIFT_ECE_MARGIN", default_value_t = drift::DEFAULT_ECE_MARGIN)]
    drift_ece_margin: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Write each version's plots (PNG and SVG) into DIR/<version>/.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
}

/// Computes and prints the report.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let db = args.db.open().await?;
    let request = ReportRequest {
        version: args.version,
        last_days: args.last_days,
        last_rows: args.last_rows,
        stuck_window: args.stuck_window,
    };
    let drift = DriftConfig {
        auc_margin: args.drift_auc_margin,
        ece_margin: args.drift_ece_margin,
    };
    let report = report::compute(&db, &request, &drift).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("rendering the report")?
        );
    } else {
        print!("{}", report::text::render(&report));
    }
    if let Some(dir) = args.plots {
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

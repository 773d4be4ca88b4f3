//! `trainer-svc prune`: the registry's retention policy applied now (the
//! server applies it after every run), or with `--dry-run` only listed.

use clap::Args;

use crate::commands::input::Database;
use trainer_svc::db::{DEFAULT_KEEP_CANDIDATES, RetentionPolicy};

/// `prune`'s arguments.
#[derive(Args)]
pub struct PruneArgs {
    #[command(flatten)]
    db: Database,
    /// The newest N versions never active keep their ONNX bytes whatever
    /// their state; older rejected ones keep their metadata only.
    #[arg(long, env = "TASKCAST_KEEP_CANDIDATES", default_value_t = DEFAULT_KEEP_CANDIDATES)]
    keep_candidates: u64,
    /// List what would be pruned and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Prunes (or lists) and prints each version with its size, then the
/// registry's size before and after.
pub async fn run(args: PruneArgs) -> anyhow::Result<()> {
    let db = args.db.open().await?;
    let policy = RetentionPolicy {
        keep_candidates: args.keep_candidates,
    };
    let report = db.prune_models(&policy, args.dry_run).await?;
    let verb = if args.dry_run {
        "would prune"
    } else {
        "pruned"
    };
    for (version, bytes) in &report.pruned {
        println!("{verb} {version} ({bytes} bytes)");
    }
    let freed: u64 = report.pruned.iter().map(|(_, n)| n).sum();
    println!(
        "{verb} {} versions, {freed} bytes; registry {} -> {} bytes{}",
        report.pruned.len(),
        report.bytes_before,
        if args.dry_run {
            report.bytes_before - freed.min(report.bytes_before)
        } else {
            report.bytes_after
        },
        if args.dry_run { " (dry run)" } else { "" }
    );
    db.close().await?;
    Ok(())
}

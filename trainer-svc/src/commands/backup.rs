//! `trainer-svc backup`: an online, consistent copy of a SQLite database
//! (`VACUUM INTO`), safe while the trainer runs. PostgreSQL is backed up
//! with `pg_dump` (docs/operations.md).

use std::path::PathBuf;

use clap::Args;

/// `backup`'s arguments.
#[derive(Args)]
pub struct BackupArgs {
    /// Database URL (sqlite://FILE?mode=rwc).
    #[arg(
        long,
        env = "TASKCAST_DATABASE_URL",
        default_value = "sqlite://taskcast.db?mode=rwc"
    )]
    database_url: String,
    /// The backup file to write; must not exist.
    #[arg(long)]
    out: PathBuf,
}

/// Writes the backup and prints its size.
pub async fn run(args: BackupArgs) -> anyhow::Result<()> {
    let db = crate::commands::input::open_db(&args.database_url).await?;
    db.backup_sqlite(&args.out).await?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    println!("backed up to {} ({bytes} bytes)", args.out.display());
    db.close().await?;
    Ok(())
}

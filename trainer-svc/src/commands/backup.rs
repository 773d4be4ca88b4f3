//! `trainer-svc backup`: an online, consistent copy of a SQLite database
//! (`VACUUM INTO`), safe while the trainer runs. PostgreSQL is backed up
//! with `pg_dump` (docs/operations.md).

use std::path::PathBuf;

use clap::Args;

use crate::commands::input::Database;

/// `backup`'s arguments (a SQLite database URL).
#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    db: Database,
    /// The backup file to write; must not exist.
    #[arg(long)]
    out: PathBuf,
}

/// Writes the backup and prints its size.
pub async fn run(args: BackupArgs) -> anyhow::Result<()> {
    let db = args.db.open().await?;
    db.backup_sqlite(&args.out).await?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    println!("backed up to {} ({bytes} bytes)", args.out.display());
    db.close().await?;
    Ok(())
}

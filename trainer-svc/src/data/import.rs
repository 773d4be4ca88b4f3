//! `trainer-svc import`: a CSV file into `completed_tasks`, in one transaction.
//!
//! The file is parsed on a blocking thread and handed over in batches through
//! a small bounded channel, so decompression and parsing overlap with the
//! database inserts while memory stays at a few batches. Everything goes into
//! one transaction. By default a bad row anywhere means nothing is imported
//! and the error names the line, the column and the value: what is imported
//! stays in the database and every later training run reads it, so a file
//! is only partly imported when the operator says so
//! ([`ImportOptions::skip_bad_rows`]); then the report lists what was
//! skipped, by reason with the first line numbers.
//!
//! Imports are idempotent twice over: a row whose `task_id` is already
//! stored is left out and counted as a duplicate, and the file's sha256 is
//! recorded in the same transaction as its rows, so importing the same file
//! again is refused ([`ImportError::AlreadyImported`]) unless
//! [`ImportOptions::allow_reimport`]. A killed import commits nothing, file
//! record included, so running it again imports it once.

use std::path::Path;
use std::time::{Duration, Instant};

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::data::csv::{CsvError, CsvSource, RowSummary, TsUnit};
use crate::db::{Db, DbError, INSERT_BATCH, KeyedTask};

/// Batches parsed ahead of the database.
const CHANNEL_BATCHES: usize = 4;

/// How far an import has got, passed to the progress callback after each batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportProgress {
    /// Rows inserted so far (not yet committed).
    pub rows: u64,
    /// Bytes of the file read so far (compressed bytes for gzip).
    pub bytes_read: u64,
    /// Size of the file in bytes.
    pub total_bytes: u64,
}

/// How to read the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// What a number in `ts` counts.
    pub ts_unit: TsUnit,
    /// Import the good rows and report the bad ones instead of refusing the file.
    pub skip_bad_rows: bool,
    /// Import a file even though one with the same sha256 was imported
    /// before (rows with a `task_id` are still never stored twice).
    pub allow_reimport: bool,
}

/// The outcome of a successful import.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportReport {
    /// Rows imported (committed).
    pub rows_imported: u64,
    /// Good rows left out because their `task_id` was already stored (or
    /// repeated earlier in the file).
    pub duplicates: u64,
    /// sha256 of the file, hex, as recorded in `imported_files`.
    pub sha256: String,
    /// Rows read, imported, and skipped by reason (only with
    /// [`ImportOptions::skip_bad_rows`] can any be skipped).
    pub summary: RowSummary,
    /// Wall time, from opening the file to the commit.
    pub elapsed: Duration,
}

impl ImportReport {
    /// Import throughput.
    pub fn rows_per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.rows_imported as f64 / s
        } else {
            0.0
        }
    }
}

/// Why an import failed; in every case nothing was imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    // The causes are part of the messages, not `#[source]`s: printed with
    // their chain (`{:#}`) they would otherwise be repeated.
    /// The file is missing, unreadable or has no usable header.
    #[error("{path}: {error}")]
    Csv {
        /// The file.
        path: String,
        /// What is wrong, with the line number where there is one.
        error: CsvError,
    },
    /// A row is bad and bad rows are not being skipped.
    #[error(
        "{path}: {error}\nnothing imported; --skip-bad-rows imports the other rows and lists the rejected ones"
    )]
    BadRow {
        /// The file.
        path: String,
        /// The first bad row: line, column and value.
        error: CsvError,
    },
    /// Skipping bad rows left none to import.
    #[error("{path}: nothing imported, every row was rejected\n{}", .summary.render("imported"))]
    NothingImported {
        /// The file.
        path: String,
        /// Why each row was rejected.
        summary: RowSummary,
    },
    /// A file with the same sha256 was imported before.
    #[error(
        "{path}: this file (sha256 {sha256}) was already imported on {imported_at} from {earlier_path} ({rows} rows); nothing imported. --allow-reimport imports it again (rows with a task_id are still stored once)"
    )]
    AlreadyImported {
        /// The file.
        path: String,
        /// Its sha256, hex.
        sha256: String,
        /// Where the earlier import read it from.
        earlier_path: String,
        /// Rows the earlier import inserted.
        rows: u64,
        /// When.
        imported_at: chrono::DateTime<chrono::Utc>,
    },
    /// The file could not be read to compute its digest.
    #[error("{path}: cannot read: {error}")]
    Digest {
        /// The file.
        path: String,
        /// The cause.
        error: std::io::Error,
    },
    /// The database refused the rows.
    #[error("database: {0}")]
    Db(#[from] DbError),
    /// The parsing thread died.
    #[error("CSV reader thread failed: {0}")]
    Reader(String),
}

impl ImportError {
    /// The malformed line, when the failure is about one line of the file.
    pub fn line(&self) -> Option<u64> {
        match self {
            ImportError::Csv { error, .. } | ImportError::BadRow { error, .. } => error.line(),
            _ => None,
        }
    }
}

type Batch = Result<Vec<KeyedTask>, CsvError>;

/// sha256 of the file's bytes, hex, read in 1 MiB blocks.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Parses `source` into batches until the end, an error, or the receiver
/// hanging up; returns what it read.
fn read_batches(mut source: CsvSource, tx: tokio::sync::mpsc::Sender<Batch>) -> RowSummary {
    let mut batch = Vec::with_capacity(INSERT_BATCH);
    while let Some(item) = source.next_keyed() {
        match item {
            Ok((_line, key, row)) => {
                batch.push((key, row));
                if batch.len() >= INSERT_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(INSERT_BATCH));
                    if tx.blocking_send(Ok(full)).is_err() {
                        return source.into_summary();
                    }
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return source.into_summary();
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(Ok(batch));
    }
    source.into_summary()
}

/// Imports the rows of the CSV file at `path` (plain or gzip) into
/// `completed_tasks` in one transaction, calling `progress` after each batch:
/// every row, or with `options.skip_bad_rows` every good row (refusing the
/// file when no row is good).
///
/// On SQLite the transaction holds the pool's only connection until the
/// commit, so other users of the same `Db` wait for the import.
pub async fn import_csv(
    db: &Db,
    path: &Path,
    options: &ImportOptions,
    mut progress: impl FnMut(&ImportProgress),
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let display = path.display().to_string();
    let csv_err = |error: CsvError| {
        let path = display.clone();
        if error.is_row_error() {
            ImportError::BadRow { path, error }
        } else {
            ImportError::Csv { path, error }
        }
    };
    let total_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    // Opening and reading the header here reports a missing file or a bad
    // header before any transaction starts.
    let mut source = CsvSource::open(path)
        .map_err(csv_err)?
        .ts_unit(options.ts_unit);
    if options.skip_bad_rows {
        source = source.lenient();
    }
    let bytes_read = source.bytes_read_counter();

    // Hashed before any row is read so a file imported before is refused at
    // once; the file is read twice, the hash pass at disk speed.
    let hash_path = path.to_owned();
    let sha256 = tokio::task::spawn_blocking(move || file_sha256(&hash_path))
        .await
        .map_err(|e| ImportError::Reader(e.to_string()))?
        .map_err(|error| ImportError::Digest {
            path: display.clone(),
            error,
        })?;
    if !options.allow_reimport
        && let Some(earlier) = db.imported_file(&sha256).await?
    {
        return Err(ImportError::AlreadyImported {
            path: display,
            sha256,
            earlier_path: earlier.path,
            rows: earlier.rows,
            imported_at: earlier.imported_at,
        });
    }

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(CHANNEL_BATCHES);
    let reader = tokio::task::spawn_blocking(move || read_batches(source, tx));

    let mut inserter = db.task_inserter().await?;
    let mut rows = 0u64;
    while let Some(batch) = rx.recv().await {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                // Dropping the inserter would roll back too; doing it here
                // frees the connection before the error is returned.
                inserter.rollback().await?;
                return Err(csv_err(e));
            }
        };
        rows += batch.len() as u64;
        if let Err(e) = inserter.extend_keyed(batch).await {
            drop(rx);
            let _ = inserter.rollback().await;
            return Err(e.into());
        }
        progress(&ImportProgress {
            rows,
            bytes_read: bytes_read.load(std::sync::atomic::Ordering::Relaxed),
            total_bytes,
        });
    }
    let summary = match reader.await {
        Ok(summary) => summary,
        Err(e) => {
            let _ = inserter.rollback().await;
            return Err(ImportError::Reader(e.to_string()));
        }
    };
    // Rows that were all rejected mean the file was misread (a wrong
    // `--ts-unit`, another format), not that it is empty: say so loudly.
    if summary.read > 0 && summary.accepted == 0 {
        inserter.rollback().await?;
        return Err(ImportError::NothingImported {
            path: display,
            summary,
        });
    }
    let offered = summary.accepted;
    let rows_imported = inserter
        .commit_file(&sha256, &display, options.allow_reimport)
        .await?;
    Ok(ImportReport {
        rows_imported,
        duplicates: offered.saturating_sub(rows_imported),
        sha256,
        summary,
        elapsed: started.elapsed(),
    })
}

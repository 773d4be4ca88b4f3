//! The database: entities, migrations and queries (sea-orm; SQLite or PostgreSQL).
//!
//! [`Db`] is the only way the rest of the trainer touches the database. It is
//! cheap to clone (the pool is shared). On SQLite the pool holds a single
//! connection, so nothing here keeps a cursor open across calls: the training
//! scan pages by keyset ([`TaskPager`]) and every other call is one short query
//! or transaction.

/// `as_str`, `Display` and `FromStr` for an enum stored as text: one table of
/// spellings instead of two matches that can drift apart. An unknown spelling
/// read back is `DbError::Corrupt` naming `what`.
macro_rules! stored_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The stored (and wire) spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = DbError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    other => Err(DbError::Corrupt(format!(concat!($what, " {:?}"), other))),
                }
            }
        }
    };
}

pub mod entities;
mod fleet;
mod lock;
pub mod migration;
mod outcomes;
mod registry;
mod retention;
mod rollout;
mod runs;
mod selection;
mod tasks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ConnectOptions, ConnectionTrait, Database, DatabaseBackend,
    DatabaseConnection, DbErr, EntityTrait,
};
use sea_orm_migration::MigratorTrait;

use entities::trainer_state;
pub use fleet::{MAX_NAME_BYTES as MAX_REPLICA_NAME_BYTES, ReplicaRecord, ReplicaReportIn};
pub use lock::TrainingLockGuard;
pub use outcomes::{OutcomeFilter, OutcomePager, OutcomeRow, StoredPrediction};
pub use registry::{ModelState, ModelVersionMeta, NewModelVersion, PromotionKind, PromotionRecord};
pub use retention::{DEFAULT_KEEP_CANDIDATES, PruneReport, RetentionPolicy};
pub use rollout::{CanaryEnd, Rollout};
pub use runs::{NewRun, RunRecord, RunState, RunTrigger, RunUpdate};
pub use selection::{LearnerCut, SelectedPager};
pub use tasks::{ImportedFile, KeyedTask, TaskInserter, TaskPager};

/// Rows per multi-row `INSERT` on SQLite (9 bound values per row; SQLite
/// allows 32766), and the size of the batches the CSV import hands over.
pub const INSERT_BATCH: usize = 1000;

/// Rows per multi-row `INSERT` on PostgreSQL: as many as fit under the
/// protocol's 65535 bound values, at one per task column and `task_id`
/// (7222 rows of 9 = 64998). Larger than on SQLite because each statement
/// costs a network round trip (about 40 ms for statements this big, as sqlx
/// does not disable Nagle's algorithm), so fewer is faster: 941k rows took
/// 46 s in batches of 1000 and 8 s in batches of 9000. Derived from the
/// column list, so a new column cannot push a batch over the limit (the
/// kill test of `tests/hardening.rs` caught exactly that).
pub const PG_INSERT_BATCH: usize = 65_000 / (tasks::TASK_COLUMNS.len() + 1);

/// Earliest `completed_at` accepted (0001-01-01T00:00:00Z) in Unix milliseconds.
/// SQLite stores timestamps as RFC 3339 text and the scan orders by that text,
/// which matches time order only for four-digit years AD.
pub const MIN_COMPLETED_AT_MS: i64 = -62_135_596_800_000;
/// Latest `completed_at` accepted (9999-12-31T23:59:59.999Z) in Unix milliseconds.
pub const MAX_COMPLETED_AT_MS: i64 = 253_402_300_799_999;

/// `trainer_state` key of the auto-retrain watermark.
const WATERMARK_KEY: &str = "auto_retrain_watermark";

/// Advisory lock keys (PostgreSQL). Advisory locks are per database, so these
/// only need to be unique among Taskcast's own uses. "taskcast" in ASCII.
const TRAINING_LOCK_KEY: i64 = 0x7461_736b_6361_7374;
const MIGRATION_LOCK_KEY: i64 = TRAINING_LOCK_KEY + 1;
const REGISTRY_LOCK_KEY: i64 = TRAINING_LOCK_KEY + 2;

/// What can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is neither `sqlite:` nor `postgres:`/`postgresql:`.
    #[error("unsupported database URL {0:?}: expected sqlite:... or postgres://...")]
    UnsupportedUrl(String),
    /// Connecting or running migrations failed.
    #[error("cannot open database {url}: {source}")]
    Connect {
        /// The URL with any password removed.
        url: String,
        /// The cause.
        source: DbErr,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] DbErr),
    /// A query on a dedicated connection (advisory locks) failed.
    #[error("database error: {0}")]
    Sqlx(#[from] sea_orm::sqlx::Error),
    /// The named record does not exist.
    #[error("{what} {key:?} not found")]
    NotFound {
        /// Kind of record.
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// The request contradicts the stored state (e.g. rejecting the active model).
    #[error("{0}")]
    Conflict(String),
    /// A value cannot be stored (e.g. a timestamp outside years 1..=9999).
    #[error("invalid value: {0}")]
    Invalid(String),
    /// A stored value is not what this code writes (hand-edited or newer schema).
    #[error("unexpected stored value: {0}")]
    Corrupt(String),
}

/// Result alias for this module.
pub type DbResult<T> = Result<T, DbError>;

/// Converts Unix milliseconds to a storable timestamp, or `None` outside
/// [`MIN_COMPLETED_AT_MS`]..=[`MAX_COMPLETED_AT_MS`].
pub fn completed_at_from_ms(ms: i64) -> Option<DateTime<Utc>> {
    if !(MIN_COMPLETED_AT_MS..=MAX_COMPLETED_AT_MS).contains(&ms) {
        return None;
    }
    DateTime::<Utc>::from_timestamp_millis(ms)
}

/// The handle to the trainer's database. Clones share the pool.
#[derive(Clone)]
pub struct Db {
    conn: DatabaseConnection,
    /// In-process training lock used on SQLite (one process by design); shared
    /// by every `Db` opened on the same file in this process.
    local_lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.conn.get_database_backend())
            .finish_non_exhaustive()
    }
}

/// Removes a password from a URL for error messages.
pub fn redact(url: &str) -> String {
    // The query string can carry one too (`?password=…`, libpq style).
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((cred, host)) => match cred.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
                None => base.to_owned(),
            },
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

impl Db {
    /// Opens the database at `url` (`sqlite://file.db?mode=rwc`, `sqlite::memory:`
    /// or `postgres://user@host/db`) and applies pending migrations.
    ///
    /// SQLite files are created if missing and put in WAL mode with a busy timeout,
    /// so a second process (e.g. `trainer-svc import`) waits instead of failing.
    pub async fn connect(url: &str) -> DbResult<Db> {
        let is_sqlite = url.starts_with("sqlite:");
        let is_pg = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !is_sqlite && !is_pg {
            return Err(DbError::UnsupportedUrl(redact(url)));
        }
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10));
        if is_sqlite {
            opts.map_sqlx_sqlite_opts(|o| {
                o.create_if_missing(true)
                    .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(30))
            });
            // The one pooled connection must never be recycled: with
            // `sqlite::memory:` that would silently drop the whole database.
            opts.map_sqlx_sqlite_pool_opts(|p| p.idle_timeout(None).max_lifetime(None));
        }
        let conn = Database::connect(opts)
            .await
            .map_err(|source| DbError::Connect {
                url: redact(url),
                source,
            })?;
        let local_lock = if is_sqlite {
            lock::local_lock_for(url)
        } else {
            Arc::new(tokio::sync::Mutex::new(()))
        };
        let db = Db { conn, local_lock };
        db.migrate().await.map_err(|e| match e {
            DbError::Query(source) => DbError::Connect {
                url: redact(url),
                source,
            },
            other => other,
        })?;
        Ok(db)
    }

    /// Applies pending migrations. On PostgreSQL replicas starting together
    /// serialise on an advisory lock so only one of them creates the tables.
    async fn migrate(&self) -> DbResult<()> {
        if self.backend() == DatabaseBackend::Postgres {
            let mut conn = self
                .conn
                .get_postgres_connection_pool()
                .acquire()
                .await?
                .detach();
            sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK_KEY)
                .execute(&mut conn)
                .await?;
            let result = migration::Migrator::up(&self.conn, None).await;
            // Closing the session releases the lock even if the unlock fails.
            let _ = sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK_KEY)
                .execute(&mut conn)
                .await;
            let _ = sea_orm::sqlx::Connection::close(conn).await;
            result?;
        } else {
            migration::Migrator::up(&self.conn, None).await?;
        }
        Ok(())
    }

    /// Writes a consistent copy of a SQLite database to `out` with
    /// `VACUUM INTO`, which reads in one transaction and so is safe while
    /// other connections write; the copy is compacted. PostgreSQL is
    /// refused: `pg_dump` is its tool.
    pub async fn backup_sqlite(&self, out: &std::path::Path) -> DbResult<()> {
        if self.backend() != DatabaseBackend::Sqlite {
            return Err(DbError::Invalid(
                "backup copies SQLite databases; back PostgreSQL up with pg_dump".into(),
            ));
        }
        if out.exists() {
            return Err(DbError::Invalid(format!(
                "{} exists; backup writes a new file",
                out.display()
            )));
        }
        let path = out
            .to_str()
            .ok_or_else(|| DbError::Invalid(format!("{} is not UTF-8", out.display())))?;
        self.conn
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                DatabaseBackend::Sqlite,
                "VACUUM INTO ?",
                [path.into()],
            ))
            .await?;
        Ok(())
    }

    /// Rows per multi-row `INSERT` on this backend.
    pub fn insert_batch_rows(&self) -> usize {
        if self.backend() == DatabaseBackend::Postgres {
            PG_INSERT_BATCH
        } else {
            INSERT_BATCH
        }
    }

    /// The underlying connection, for queries this module does not offer.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// Which database engine this is.
    pub fn backend(&self) -> DatabaseBackend {
        self.conn.get_database_backend()
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(self) -> DbResult<()> {
        self.conn.close().await?;
        Ok(())
    }

    /// Takes a transaction-scoped advisory lock on PostgreSQL so concurrent
    /// registry transactions from several replicas run one after another.
    /// SQLite needs nothing: its single pooled connection already serialises them.
    async fn registry_xact_lock(&self, tx: &impl ConnectionTrait) -> DbResult<()> {
        if self.backend() == DatabaseBackend::Postgres {
            tx.execute_raw(sea_orm::Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [REGISTRY_LOCK_KEY.into()],
            ))
            .await?;
        }
        Ok(())
    }

    /// The auto-retrain watermark: the highest `completed_tasks.id` included in
    /// the last training trigger; 0 when never set.
    pub async fn get_watermark(&self) -> DbResult<i64> {
        let row = trainer_state::Entity::find_by_id(WATERMARK_KEY.to_owned())
            .one(&self.conn)
            .await?;
        match row {
            None => Ok(0),
            Some(m) => m.value.trim().parse().map_err(|_| {
                DbError::Corrupt(format!("watermark {:?} is not an integer", m.value))
            }),
        }
    }

    /// Stores the auto-retrain watermark.
    pub async fn set_watermark(&self, id: i64) -> DbResult<()> {
        let am = trainer_state::ActiveModel {
            key: Set(WATERMARK_KEY.to_owned()),
            value: Set(id.to_string()),
        };
        trainer_state::Entity::insert(am)
            .on_conflict(
                OnConflict::column(trainer_state::Column::Key)
                    .update_column(trainer_state::Column::Value)
                    .to_owned(),
            )
            .exec_without_returning(&self.conn)
            .await?;
        Ok(())
    }
}

/// Serialises metrics for a JSON text column.
fn metrics_to_json(m: &BTreeMap<String, f64>) -> String {
    // serde_json writes NaN/inf as null; reading maps null back to NaN.
    serde_json::to_string(m).unwrap_or_else(|_| "{}".to_owned())
}

/// Parses a metrics JSON text column; `null` values (non-finite when written) become NaN.
fn metrics_from_json(s: &str) -> DbResult<BTreeMap<String, f64>> {
    if s.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let raw: BTreeMap<String, Option<f64>> = serde_json::from_str(s)
        .map_err(|e| DbError::Corrupt(format!("metrics JSON {s:?}: {e}")))?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

/// `u64` counter to a BIGINT column.
fn to_i64(what: &str, v: u64) -> DbResult<i64> {
    i64::try_from(v).map_err(|_| DbError::Invalid(format!("{what} {v} exceeds i64")))
}

/// BIGINT column to a `u64` counter; negatives cannot be written by this code.
fn to_u64(what: &str, v: i64) -> DbResult<u64> {
    u64::try_from(v).map_err(|_| DbError::Corrupt(format!("{what} is negative ({v})")))
}

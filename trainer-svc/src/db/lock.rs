//! The cross-replica training lock.
//!
//! PostgreSQL: a session-level advisory lock held on a connection detached
//! from the pool, so it lives exactly as long as the guard (or the process:
//! the server drops a dead client's session and with it the lock).
//! SQLite: one process by design, so an in-process mutex shared by every
//! `Db` opened on the same file.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use sea_orm::DatabaseBackend;
use sea_orm::sqlx::{self, Connection, PgConnection};
use tokio::sync::OwnedMutexGuard;

use super::{Db, DbResult, TRAINING_LOCK_KEY};

/// Per-file in-process locks for SQLite databases.
static LOCAL_LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The lock shared by all `Db`s on the SQLite database at `url`.
pub(super) fn local_lock_for(url: &str) -> Arc<tokio::sync::Mutex<()>> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path.contains(":memory:") || rest.contains("mode=memory") {
        // Every in-memory pool is its own database.
        return Arc::new(tokio::sync::Mutex::new(()));
    }
    // The file exists once connected; canonical paths make `./a.db` and
    // `a.db` the same key.
    let key = std::fs::canonicalize(path)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.to_owned());
    let mut map = LOCAL_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(key)
        .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
        .clone()
}

enum Held {
    Postgres(PgConnection),
    Local(#[allow(dead_code)] OwnedMutexGuard<()>),
}

/// Proof that this process holds the training lock. Dropping it releases the
/// lock (on PostgreSQL in a background task, or by closing the session if no
/// runtime is left); [`TrainingLockGuard::release`] does it deterministically.
pub struct TrainingLockGuard {
    held: Option<Held>,
}

impl std::fmt::Debug for TrainingLockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.held {
            Some(Held::Postgres(_)) => "postgres advisory lock",
            Some(Held::Local(_)) => "in-process lock",
            None => "released",
        };
        f.debug_tuple("TrainingLockGuard").field(&kind).finish()
    }
}

async fn pg_unlock(mut conn: PgConnection) -> DbResult<()> {
    let res = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TRAINING_LOCK_KEY)
        .execute(&mut conn)
        .await;
    // Closing ends the session, which releases the lock even if unlock failed.
    let closed = conn.close().await;
    res?;
    closed?;
    Ok(())
}

impl TrainingLockGuard {
    /// Releases the lock and waits until it is released.
    pub async fn release(mut self) -> DbResult<()> {
        match self.held.take() {
            Some(Held::Postgres(conn)) => pg_unlock(conn).await,
            Some(Held::Local(_)) | None => Ok(()),
        }
    }
}

impl Drop for TrainingLockGuard {
    fn drop(&mut self) {
        if let Some(Held::Postgres(conn)) = self.held.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                if let Err(e) = pg_unlock(conn).await {
                    tracing::warn!(error = %e, "releasing the training lock failed; the session end releases it");
                }
            });
        }
        // Without a runtime the connection is simply dropped: the socket
        // closes and the server ends the session, releasing the lock.
    }
}

impl Db {
    /// Tries to become the one replica that trains. `None` when another
    /// holder has it. Hold the guard for the whole run.
    pub async fn try_training_lock(&self) -> DbResult<Option<TrainingLockGuard>> {
        match self.backend() {
            DatabaseBackend::Postgres => {
                let mut conn = self
                    .conn
                    .get_postgres_connection_pool()
                    .acquire()
                    .await?
                    .detach();
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(TRAINING_LOCK_KEY)
                    .fetch_one(&mut conn)
                    .await?;
                if got {
                    Ok(Some(TrainingLockGuard {
                        held: Some(Held::Postgres(conn)),
                    }))
                } else {
                    let _ = conn.close().await;
                    Ok(None)
                }
            }
            _ => Ok(self
                .local_lock
                .clone()
                .try_lock_owned()
                .ok()
                .map(|g| TrainingLockGuard {
                    held: Some(Held::Local(g)),
                })),
        }
    }
}

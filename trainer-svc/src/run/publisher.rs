//! The active model as subscribers see it: a watch channel fed from the
//! registry. Every promotion, rollback or change made by another trainer
//! replica (noticed by polling) reaches every `WatchModels` stream.
//!
//! Three states, not two: before the first successful read of the registry
//! the trainer does not know whether anything is active ([`Published::Unknown`]),
//! and must not tell a replica "nothing is active, serve your bootstrap" —
//! that is only said after the registry answered so ([`Published::Empty`]).
//!
//! During a canary the active model carries the candidate too
//! ([`CanaryModel`]): starting or ending a canary is announced like a
//! promotion.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::db::{Db, DbResult, ModelVersionMeta, Rollout};

/// The active model, bytes included.
#[derive(Debug)]
pub struct ActiveModel {
    /// Registry metadata.
    pub meta: ModelVersionMeta,
    /// The ONNX file.
    pub onnx: Arc<Vec<u8>>,
    /// The canary in progress, if any.
    pub canary: Option<CanaryModel>,
}

/// A canary's candidate, bytes included.
#[derive(Debug)]
pub struct CanaryModel {
    /// The rollout.
    pub rollout: Rollout,
    /// The candidate's registry metadata.
    pub meta: ModelVersionMeta,
    /// The candidate's ONNX file.
    pub onnx: Arc<Vec<u8>>,
}

/// What makes two announcements the same: the active version and its
/// activation, and the canary's rollout.
fn identity(
    m: &ModelVersionMeta,
    rollout: Option<&Rollout>,
) -> (String, Option<DateTime<Utc>>, Option<String>) {
    (
        m.version.clone(),
        m.promoted_at,
        rollout.map(|r| r.id.clone()),
    )
}

impl ActiveModel {
    fn identity(&self) -> (String, Option<DateTime<Utc>>, Option<String>) {
        identity(&self.meta, self.canary.as_ref().map(|c| &c.rollout))
    }
}

/// What the registry says is active, as far as this trainer knows.
#[derive(Clone, Debug, Default)]
pub enum Published {
    /// The registry has not been read yet (or could not be).
    #[default]
    Unknown,
    /// The registry was read and no version is active: a fresh install.
    Empty,
    /// The active model.
    Active(Arc<ActiveModel>),
}

impl Published {
    /// The active model, if one is known.
    pub fn active(&self) -> Option<Arc<ActiveModel>> {
        match self {
            Published::Active(m) => Some(Arc::clone(m)),
            Published::Unknown | Published::Empty => None,
        }
    }
}

/// Holds the active model and tells subscribers when it changes.
#[derive(Clone, Debug)]
pub struct Publisher {
    tx: Arc<watch::Sender<Published>>,
    /// One refresh at a time: refreshes race (the scheduler's poll, a run's
    /// publish, Promote, the canary judge), and one holding an older read
    /// must not replace a newer one.
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher {
            tx: Arc::new(watch::channel(Published::Unknown).0),
            refreshing: Arc::default(),
        }
    }
}

impl Publisher {
    /// The active model now, if any.
    pub fn current(&self) -> Option<Arc<ActiveModel>> {
        self.tx.borrow().active()
    }

    /// A receiver that sees the current state and every change.
    pub fn subscribe(&self) -> watch::Receiver<Published> {
        self.tx.subscribe()
    }

    /// Number of live subscribers (for metrics).
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Re-reads the registry's active version and canary and publishes them
    /// if they changed (version, promotion time or rollout: a rollback to
    /// the same version re-announces). Returns true when subscribers were
    /// notified.
    pub async fn refresh(&self, db: &Db) -> DbResult<bool> {
        let _one_at_a_time = self.refreshing.lock().await;
        let Some(meta) = db.active_model_version().await? else {
            // Known empty now; an active model is never taken back to
            // nothing (the registry has no such transition).
            let sent = self.tx.send_if_modified(|cur| {
                let was_unknown = matches!(cur, Published::Unknown);
                if was_unknown {
                    *cur = Published::Empty;
                }
                was_unknown
            });
            return Ok(sent);
        };
        let rollout = db.open_rollout().await?;
        let current = self.current();
        if current
            .as_ref()
            .is_some_and(|cur| cur.identity() == identity(&meta, rollout.as_ref()))
        {
            return Ok(false);
        }
        // The active bytes are re-read only when the active version changed.
        let onnx = match current.as_ref() {
            Some(cur) if cur.meta.version == meta.version && cur.meta.sha256 == meta.sha256 => {
                Arc::clone(&cur.onnx)
            }
            _ => match db.get_model_onnx(&meta.version).await? {
                Some(onnx) => Arc::new(onnx),
                None => return Ok(false),
            },
        };
        let canary = match rollout {
            Some(rollout) => canary_model(db, rollout).await?,
            None => None,
        };
        let model = Arc::new(ActiveModel { meta, onnx, canary });
        tracing::info!(
            version = %model.meta.version,
            family = %model.meta.family,
            canary = model.canary.as_ref().map(|c| c.meta.version.as_str()).unwrap_or("<none>"),
            "publishing active model"
        );
        self.tx.send_replace(Published::Active(model));
        Ok(true)
    }
}

/// The canary's candidate with its bytes; `None` if it vanished meanwhile.
async fn canary_model(db: &Db, rollout: Rollout) -> DbResult<Option<CanaryModel>> {
    let Some(meta) = db.get_model_version(&rollout.candidate).await? else {
        return Ok(None);
    };
    let Some(onnx) = db.get_model_onnx(&rollout.candidate).await? else {
        return Ok(None);
    };
    Ok(Some(CanaryModel {
        rollout,
        meta,
        onnx: Arc::new(onnx),
    }))
}

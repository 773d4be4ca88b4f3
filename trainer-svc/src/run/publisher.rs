//! The active model as subscribers see it: a watch channel fed from the
//! registry. Every promotion, rollback or change made by another trainer
//! replica (noticed by polling) reaches every `WatchModels` stream.
//!
//! Three states, not two: before the first successful read of the registry
//! the trainer does not know whether anything is active ([`Published::Unknown`]),
//! and must not tell a replica "nothing is active, serve your bootstrap" —
//! that is only said after the registry answered so ([`Published::Empty`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::db::{Db, DbResult, ModelVersionMeta};

/// The active model, bytes included.
#[derive(Debug)]
pub struct ActiveModel {
    /// Registry metadata.
    pub meta: ModelVersionMeta,
    /// The ONNX file.
    pub onnx: Arc<Vec<u8>>,
}

impl ActiveModel {
    /// When it became active.
    pub fn promoted_at(&self) -> Option<DateTime<Utc>> {
        self.meta.promoted_at
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
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher {
            tx: Arc::new(watch::channel(Published::Unknown).0),
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

    /// Re-reads the registry's active version and publishes it if it changed
    /// (version or promotion time: a rollback to the same version re-announces).
    /// Returns true when subscribers were notified.
    pub async fn refresh(&self, db: &Db) -> DbResult<bool> {
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
        let unchanged = self.current().is_some_and(|cur| {
            cur.meta.version == meta.version && cur.meta.promoted_at == meta.promoted_at
        });
        if unchanged {
            return Ok(false);
        }
        let Some(onnx) = db.get_model_onnx(&meta.version).await? else {
            return Ok(false);
        };
        // Refreshes race (the scheduler's poll, a run's publish, Promote):
        // decide against the value current now, so one activation is announced
        // once and a slower refresh holding an older read never replaces a
        // newer activation (`seq` grows with every activation).
        let model = Arc::new(ActiveModel {
            meta,
            onnx: Arc::new(onnx),
        });
        let sent = self.tx.send_if_modified(|cur| {
            if let Published::Active(c) = cur {
                let same = c.meta.version == model.meta.version
                    && c.meta.promoted_at == model.meta.promoted_at;
                let stale = matches!((c.meta.seq, model.meta.seq), (Some(a), Some(b)) if a >= b);
                if same || stale {
                    return false;
                }
            }
            *cur = Published::Active(Arc::clone(&model));
            true
        });
        if sent {
            tracing::info!(version = %model.meta.version, family = %model.meta.family, "publishing active model");
        }
        Ok(sent)
    }
}

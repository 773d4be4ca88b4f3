//! `training_runs`: one row per training run, updated as it progresses.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::entities::training_run::{self, ActiveModel, Column, Entity};
use super::{Db, DbError, DbResult, metrics_from_json, metrics_to_json, to_i64, to_u64};

/// A run's outcome so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Still going (or its process died; see [`Db::fail_stale_running_runs`]).
    Running,
    /// Trained and promoted.
    Succeeded,
    /// Trained, but the gate said no.
    Rejected,
    /// Stopped by an error.
    Failed,
}

stored_enum!(RunState, "run state", {
    Running => "RUNNING",
    Succeeded => "SUCCEEDED",
    Rejected => "REJECTED",
    Failed => "FAILED",
});

impl RunState {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        self != RunState::Running
    }
}

/// What started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunTrigger {
    /// Enough new rows arrived.
    Auto,
    /// An operator's `Train`.
    Operator,
    /// No model at startup.
    Startup,
}

stored_enum!(RunTrigger, "run trigger", {
    Auto => "auto",
    Operator => "operator",
    Startup => "startup",
});

/// A run to record; it starts RUNNING in phase "reading" at progress 0.
#[derive(Clone, Debug)]
pub struct NewRun {
    /// Unique run id.
    pub id: String,
    /// What started it.
    pub trigger: RunTrigger,
    /// Model family being trained.
    pub family: String,
}

/// A stored run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// What started it.
    pub trigger: RunTrigger,
    /// Model family.
    pub family: String,
    /// Outcome so far.
    pub state: RunState,
    /// Current phase ("reading", "features", ... "done").
    pub phase: String,
    /// 0..1.
    pub progress: f64,
    /// Rows used.
    pub rows_used: u64,
    /// Rows skipped.
    pub rows_skipped: u64,
    /// Skipped rows by reason.
    pub skipped_detail: BTreeMap<String, u64>,
    /// Metrics; non-finite values come back as NaN.
    pub metrics: BTreeMap<String, f64>,
    /// Version produced.
    pub model_version: Option<String>,
    /// The gate's verdict.
    pub gate_reason: String,
    /// Error of a failed run; empty otherwise.
    pub error: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time, set when the state becomes terminal.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Changes to a run; `None` fields stay as they are. Setting a terminal
/// `state` also sets `finished_at` to now.
#[derive(Clone, Debug, Default)]
pub struct RunUpdate {
    /// New phase.
    pub phase: Option<String>,
    /// New progress.
    pub progress: Option<f64>,
    /// New state.
    pub state: Option<RunState>,
    /// Rows used.
    pub rows_used: Option<u64>,
    /// Rows skipped.
    pub rows_skipped: Option<u64>,
    /// Skipped rows by reason.
    pub skipped_detail: Option<BTreeMap<String, u64>>,
    /// Metrics.
    pub metrics: Option<BTreeMap<String, f64>>,
    /// Version produced.
    pub model_version: Option<String>,
    /// The gate's verdict.
    pub gate_reason: Option<String>,
    /// Error message.
    pub error: Option<String>,
}

impl TryFrom<training_run::Model> for RunRecord {
    type Error = DbError;
    fn try_from(m: training_run::Model) -> DbResult<Self> {
        let skipped_detail = if m.skipped_detail.trim().is_empty() {
            BTreeMap::new()
        } else {
            serde_json::from_str(&m.skipped_detail).map_err(|e| {
                DbError::Corrupt(format!("skipped_detail JSON {:?}: {e}", m.skipped_detail))
            })?
        };
        Ok(RunRecord {
            trigger: m.trigger.parse()?,
            state: m.state.parse()?,
            rows_used: to_u64("rows_used", m.rows_used)?,
            rows_skipped: to_u64("rows_skipped", m.rows_skipped)?,
            skipped_detail,
            metrics: metrics_from_json(&m.metrics)?,
            id: m.id,
            family: m.family,
            phase: m.phase,
            progress: m.progress,
            model_version: m.model_version,
            gate_reason: m.gate_reason,
            error: m.error,
            started_at: m.started_at,
            finished_at: m.finished_at,
        })
    }
}

fn set_if<T: Into<sea_orm::Value>>(v: Option<T>) -> sea_orm::ActiveValue<T> {
    match v {
        Some(v) => Set(v),
        None => NotSet,
    }
}

impl Db {
    /// Records a new run (RUNNING, phase "reading", progress 0).
    pub async fn insert_run(&self, new: &NewRun) -> DbResult<RunRecord> {
        let am = ActiveModel {
            id: Set(new.id.clone()),
            trigger: Set(new.trigger.as_str().to_owned()),
            family: Set(new.family.clone()),
            state: Set(RunState::Running.as_str().to_owned()),
            phase: Set("reading".to_owned()),
            progress: Set(0.0),
            rows_used: Set(0),
            rows_skipped: Set(0),
            skipped_detail: Set("{}".to_owned()),
            metrics: Set("{}".to_owned()),
            model_version: Set(None),
            gate_reason: Set(String::new()),
            error: Set(String::new()),
            started_at: Set(Utc::now()),
            finished_at: Set(None),
        };
        Entity::insert(am)
            .exec_without_returning(&self.conn)
            .await?;
        self.get_run(&new.id)
            .await?
            .ok_or_else(|| DbError::NotFound {
                what: "training run",
                key: new.id.clone(),
            })
    }

    /// Applies `update` to run `id` and returns the run as stored afterwards.
    pub async fn update_run(&self, id: &str, update: &RunUpdate) -> DbResult<RunRecord> {
        let skipped_detail = match &update.skipped_detail {
            Some(d) => Some(serde_json::to_string(d).map_err(|e| DbError::Invalid(e.to_string()))?),
            None => None,
        };
        let am = ActiveModel {
            phase: set_if(update.phase.clone()),
            progress: set_if(update.progress),
            state: set_if(update.state.map(|s| s.as_str().to_owned())),
            rows_used: set_if(
                update
                    .rows_used
                    .map(|v| to_i64("rows_used", v))
                    .transpose()?,
            ),
            rows_skipped: set_if(
                update
                    .rows_skipped
                    .map(|v| to_i64("rows_skipped", v))
                    .transpose()?,
            ),
            skipped_detail: set_if(skipped_detail),
            metrics: set_if(update.metrics.as_ref().map(metrics_to_json)),
            model_version: set_if(update.model_version.clone().map(Some)),
            gate_reason: set_if(update.gate_reason.clone()),
            error: set_if(update.error.clone()),
            finished_at: if update.state.is_some_and(RunState::is_terminal) {
                Set(Some(Utc::now()))
            } else {
                NotSet
            },
            ..Default::default()
        };
        let changes_something = update.phase.is_some()
            || update.progress.is_some()
            || update.state.is_some()
            || update.rows_used.is_some()
            || update.rows_skipped.is_some()
            || update.skipped_detail.is_some()
            || update.metrics.is_some()
            || update.model_version.is_some()
            || update.gate_reason.is_some()
            || update.error.is_some();
        if changes_something {
            Entity::update_many()
                .set(am)
                .filter(Column::Id.eq(id))
                .exec(&self.conn)
                .await?;
        }
        self.get_run(id).await?.ok_or_else(|| DbError::NotFound {
            what: "training run",
            key: id.to_owned(),
        })
    }

    /// One run.
    pub async fn get_run(&self, id: &str) -> DbResult<Option<RunRecord>> {
        Entity::find_by_id(id.to_owned())
            .one(&self.conn)
            .await?
            .map(RunRecord::try_from)
            .transpose()
    }

    /// The newest `limit` runs, newest first.
    pub async fn list_runs(&self, limit: u64) -> DbResult<Vec<RunRecord>> {
        Entity::find()
            .order_by_desc(Column::StartedAt)
            .order_by_desc(Column::Id)
            .limit(limit)
            .all(&self.conn)
            .await?
            .into_iter()
            .map(RunRecord::try_from)
            .collect()
    }

    /// The newest run still RUNNING, if any.
    pub async fn running_run(&self) -> DbResult<Option<RunRecord>> {
        Entity::find()
            .filter(Column::State.eq(RunState::Running.as_str()))
            .order_by_desc(Column::StartedAt)
            .one(&self.conn)
            .await?
            .map(RunRecord::try_from)
            .transpose()
    }

    /// Marks every RUNNING run FAILED with `reason` as its error, for runs
    /// whose process died (called at startup). Returns how many were failed.
    ///
    /// Runs only happen under the training lock, so this takes the lock
    /// first: if anyone holds it (another replica, or this process), a
    /// RUNNING row may be live and nothing is changed (returns 0).
    pub async fn fail_stale_running_runs(&self, reason: &str) -> DbResult<u64> {
        let Some(guard) = self.try_training_lock().await? else {
            return Ok(0);
        };
        let res = self.fail_running_runs(&guard, reason).await;
        guard.release().await?;
        res
    }

    /// Marks every RUNNING run FAILED with `reason`, for a caller holding
    /// the training lock (`_held` proves it): a run is RUNNING only while
    /// its process holds the lock, so any RUNNING row now belongs to a
    /// trainer that died. The runner calls it on every lock it takes, so a
    /// run killed with its trainer is closed by whichever trainer trains
    /// next, not only by one that starts while the lock is free.
    pub async fn fail_running_runs(
        &self,
        _held: &super::TrainingLockGuard,
        reason: &str,
    ) -> DbResult<u64> {
        let res = Entity::update_many()
            .col_expr(Column::State, Expr::value(RunState::Failed.as_str()))
            .col_expr(Column::Error, Expr::value(reason))
            .col_expr(Column::FinishedAt, Expr::value(Some(Utc::now())))
            .filter(Column::State.eq(RunState::Running.as_str()))
            .exec(&self.conn)
            .await?;
        Ok(res.rows_affected)
    }
}

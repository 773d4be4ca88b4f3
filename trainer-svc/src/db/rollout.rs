//! Canaries in the registry: the `rollouts` table, one row per canary, at
//! most one open. While open, its candidate is in state `canary` and
//! replicas serve it to `percent` of learners beside the active version
//! (the baseline). A canary ends in one of three ways, each in one
//! transaction under the registry lock with the candidate's new state:
//! promoted (the candidate becomes active), rejected (worse on live
//! outcomes, or an operator's Rollback) or returned (back to `candidate`:
//! not enough outcomes in time, or an operator promoted something else).
//!
//! `start_task_id` is the highest `completed_tasks.id` when the canary
//! started: outcomes are those after it, so the judge never mixes in rows
//! the baseline answered before the canary, and a backend's clock does not
//! decide what counts.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Statement, TransactionTrait,
    Value,
};
use sea_orm_migration::prelude::*;

use super::entities::model_version;
use super::registry::{
    ModelState, ModelVersionMeta, PromotionKind, activate_in, active_in, meta_where, not_found,
    onnx_len_in,
};
use super::{Db, DbError, DbResult};

/// A canary as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// Rollout id; keys the learners' split.
    pub id: String,
    /// The version under canary.
    pub candidate: String,
    /// The active version when it started, which it is compared with.
    pub baseline: String,
    /// Share of learners, in percent.
    pub percent: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Outcomes count from the task after this id.
    pub start_task_id: i64,
    /// When it ended; `None` while it runs.
    pub ended_at: Option<DateTime<Utc>>,
    /// How it ended (`promoted`, `rejected`, `returned`).
    pub decision: Option<String>,
    /// Why, with the figures.
    pub reason: String,
}

/// What ending a canary does to its candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CanaryEnd {
    /// Make it active for every learner.
    Promote,
    /// Never serve it again (rollback can not return to it either).
    Reject,
    /// Back to `candidate`: not judged, may be tried again.
    Return,
}

impl CanaryEnd {
    fn decision(self) -> &'static str {
        match self {
            CanaryEnd::Promote => "promoted",
            CanaryEnd::Reject => "rejected",
            CanaryEnd::Return => "returned",
        }
    }
}

const COLUMNS: &str =
    "id, candidate, baseline, percent, started_ms, start_task_id, ended_ms, decision, reason";

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn rollout_from(r: &sea_orm::QueryResult) -> Result<Rollout, DbErr> {
    let percent: i64 = r.try_get("", "percent")?;
    Ok(Rollout {
        id: r.try_get("", "id")?,
        candidate: r.try_get("", "candidate")?,
        baseline: r.try_get("", "baseline")?,
        percent: <u32 as TryFrom<i64>>::try_from(percent).unwrap_or(0),
        started_at: at(r.try_get("", "started_ms")?),
        start_task_id: r.try_get("", "start_task_id")?,
        ended_at: r.try_get::<Option<i64>>("", "ended_ms")?.map(at),
        decision: r.try_get("", "decision")?,
        reason: r.try_get("", "reason")?,
    })
}

/// The open rollout, read on `conn`.
async fn open_in(conn: &impl ConnectionTrait) -> DbResult<Option<Rollout>> {
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            format!(
                "SELECT {COLUMNS} FROM rollouts WHERE ended_ms IS NULL ORDER BY started_ms DESC LIMIT 1"
            ),
        ))
        .await?;
    Ok(row.as_ref().map(rollout_from).transpose()?)
}

/// Sets `version`'s state and reason on `conn`.
async fn set_state_in(
    conn: &impl ConnectionTrait,
    version: &str,
    state: ModelState,
    reason: &str,
) -> DbResult<()> {
    model_version::Entity::update_many()
        .col_expr(model_version::Column::State, Expr::value(state.as_str()))
        .col_expr(model_version::Column::Reason, Expr::value(reason))
        .filter(model_version::Column::Version.eq(version))
        .exec(conn)
        .await?;
    Ok(())
}

/// Closes rollout `id` on `conn` with `decision` and `reason`.
async fn close_in(
    conn: &impl ConnectionTrait,
    id: &str,
    end: CanaryEnd,
    reason: &str,
) -> DbResult<()> {
    conn.execute_raw(Statement::from_sql_and_values(
        conn.get_database_backend(),
        "UPDATE rollouts SET ended_ms = $1, decision = $2, reason = $3 WHERE id = $4",
        vec![
            Utc::now().timestamp_millis().into(),
            end.decision().into(),
            reason.into(),
            id.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Ends the open canary, if any, because `version` is being made active
/// another way (inside [`activate_in`]'s transaction): promoting the
/// candidate itself promotes the canary, anything else returns the
/// candidate to `candidate`.
pub(super) async fn end_for_promotion_in(
    tx: &impl ConnectionTrait,
    version: &str,
    kind: PromotionKind,
) -> DbResult<()> {
    let Some(open) = open_in(tx).await? else {
        return Ok(());
    };
    if open.candidate == version {
        let why = match kind {
            PromotionKind::Canary => "promoted by its canary".to_owned(),
            other => format!("canary ended early: promoted ({other})"),
        };
        close_in(tx, &open.id, CanaryEnd::Promote, &why).await
    } else {
        let why = format!("canary ended: {version} was made active ({kind})");
        close_in(tx, &open.id, CanaryEnd::Return, &why).await?;
        set_state_in(tx, &open.candidate, ModelState::Candidate, &why).await
    }
}

impl Db {
    /// The canary in progress, if any.
    pub async fn open_rollout(&self) -> DbResult<Option<Rollout>> {
        open_in(&self.conn).await
    }

    /// One rollout by id.
    pub async fn get_rollout(&self, id: &str) -> DbResult<Option<Rollout>> {
        let row = self
            .conn
            .query_one_raw(Statement::from_sql_and_values(
                self.backend(),
                format!("SELECT {COLUMNS} FROM rollouts WHERE id = $1"),
                vec![id.into()],
            ))
            .await?;
        Ok(row.as_ref().map(rollout_from).transpose()?)
    }

    /// Starts a canary of `candidate` on `percent` of learners (1..=99),
    /// against the active version. Refused ([`DbError::Conflict`]) when a
    /// canary runs, nothing is active, or `candidate` is active or pruned;
    /// [`DbError::Invalid`] for a percent out of range. A rejected version
    /// may be tried (an operator's explicit decision, as with Promote).
    pub async fn start_canary(&self, candidate: &str, percent: u32) -> DbResult<Rollout> {
        if let Some(why) = taskcast_contract::canary::percent_problem(percent) {
            return Err(DbError::Invalid(why));
        }
        let tx = self.conn.begin().await?;
        self.registry_xact_lock(&tx).await?;
        if let Some(open) = open_in(&tx).await? {
            return Err(DbError::Conflict(format!(
                "a canary of {} ({}%) is in progress: promote it or roll it back first",
                open.candidate, open.percent
            )));
        }
        let target = meta_where(&tx, candidate)
            .await?
            .ok_or_else(|| not_found(candidate))?;
        let Some(baseline) = active_in(&tx).await? else {
            return Err(DbError::Conflict(
                "no version is active: a canary needs one to compare with; promote fully".into(),
            ));
        };
        if target.state == ModelState::Active {
            return Err(DbError::Conflict(format!(
                "model version {candidate:?} is already active"
            )));
        }
        if onnx_len_in(&tx, candidate).await? == Some(0) {
            return Err(DbError::Conflict(format!(
                "model version {candidate:?} was pruned (its ONNX bytes were deleted) and cannot be served"
            )));
        }
        let max_task: Option<i64> = tx
            .query_one_raw(Statement::from_string(
                self.backend(),
                "SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) AS n FROM completed_tasks",
            ))
            .await?
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?;
        let now = Utc::now();
        let rollout = Rollout {
            id: format!("canary-{candidate}-{}", now.timestamp_millis()),
            candidate: candidate.to_owned(),
            baseline,
            percent,
            started_at: now,
            start_task_id: max_task.unwrap_or(0),
            ended_at: None,
            decision: None,
            reason: String::new(),
        };
        let values: Vec<Value> = vec![
            rollout.id.clone().into(),
            rollout.candidate.clone().into(),
            rollout.baseline.clone().into(),
            i64::from(percent).into(),
            now.timestamp_millis().into(),
            rollout.start_task_id.into(),
        ];
        tx.execute_raw(Statement::from_sql_and_values(
            self.backend(),
            "INSERT INTO rollouts (id, candidate, baseline, percent, started_ms, start_task_id, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, '')",
            values,
        ))
        .await?;
        set_state_in(
            &tx,
            candidate,
            ModelState::Canary,
            &format!(
                "canary: {percent}% of learners since {}, against {} (rollout {})",
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                rollout.baseline,
                rollout.id
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(rollout)
    }

    /// Ends rollout `id` with `end`, `reason` saying why (with the figures).
    /// Returns the active version afterwards, or `None` when the rollout
    /// had already ended (another trainer replica decided first: nothing
    /// changes twice).
    pub async fn end_canary(
        &self,
        id: &str,
        end: CanaryEnd,
        reason: &str,
    ) -> DbResult<Option<ModelVersionMeta>> {
        let tx = self.conn.begin().await?;
        self.registry_xact_lock(&tx).await?;
        let Some(open) = open_in(&tx).await?.filter(|o| o.id == id) else {
            tx.commit().await?;
            return Ok(None);
        };
        match end {
            CanaryEnd::Promote => {
                // Closes the rollout through end_for_promotion_in.
                activate_in(&tx, &open.candidate, PromotionKind::Canary).await?;
                close_in(&tx, &open.id, end, reason).await?;
                set_reason_in(&tx, &open.candidate, reason).await?;
            }
            CanaryEnd::Reject => {
                close_in(&tx, &open.id, end, reason).await?;
                set_state_in(&tx, &open.candidate, ModelState::Rejected, reason).await?;
            }
            CanaryEnd::Return => {
                close_in(&tx, &open.id, end, reason).await?;
                set_state_in(&tx, &open.candidate, ModelState::Candidate, reason).await?;
            }
        }
        // A canary always has an active version: ending one never empties it.
        let active = active_in(&tx).await?.unwrap_or(open.baseline);
        let meta = meta_where(&tx, &active)
            .await?
            .ok_or_else(|| not_found(&active))?;
        tx.commit().await?;
        Ok(Some(meta))
    }
}

impl Db {
    /// Replaces `version`'s reason (its state unchanged).
    pub async fn set_reason(&self, version: &str, reason: &str) -> DbResult<()> {
        set_reason_in(&self.conn, version, reason).await
    }
}

/// Replaces `version`'s reason on `conn`.
async fn set_reason_in(conn: &impl ConnectionTrait, version: &str, reason: &str) -> DbResult<()> {
    model_version::Entity::update_many()
        .col_expr(model_version::Column::Reason, Expr::value(reason))
        .filter(model_version::Column::Version.eq(version))
        .exec(conn)
        .await?;
    Ok(())
}

/// The migration creating `rollouts` and the replicas' canary column.
pub(super) struct Rollouts;

impl MigrationName for Rollouts {
    fn name(&self) -> &str {
        "m20261212_000001_rollouts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Rollouts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared(
            "CREATE TABLE IF NOT EXISTS rollouts (\
             id TEXT PRIMARY KEY, \
             candidate TEXT NOT NULL, \
             baseline TEXT NOT NULL, \
             percent BIGINT NOT NULL, \
             started_ms BIGINT NOT NULL, \
             start_task_id BIGINT NOT NULL, \
             ended_ms BIGINT, \
             decision TEXT, \
             reason TEXT NOT NULL)",
        )
        .await?;
        if !manager
            .has_column("fleet_replicas", "canary_version")
            .await?
        {
            conn.execute_unprepared(
                "ALTER TABLE fleet_replicas ADD COLUMN canary_version TEXT NOT NULL DEFAULT ''",
            )
            .await?;
        }
        Ok(())
    }
}

//! The model registry: `model_versions` plus the `promotions` history that
//! defines what "roll back" means.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DerivePartialModel, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};

use super::entities::{model_version, promotion};
use super::{Db, DbError, DbResult, metrics_from_json, metrics_to_json, to_i64, to_u64};

/// Where a model version is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelState {
    /// Registered, never served (or not yet).
    Candidate,
    /// Served to a share of learners by a canary in progress (`db/rollout.rs`).
    Canary,
    /// Serving now; at most one.
    Active,
    /// Served before, replaced since.
    Retired,
    /// Must not be served (the gate or an operator said no).
    Rejected,
}

stored_enum!(ModelState, "model state", {
    Candidate => "candidate",
    Canary => "canary",
    Active => "active",
    Retired => "retired",
    Rejected => "rejected",
});

/// How a version became active.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PromotionKind {
    /// An operator's `Promote`.
    Promote,
    /// An operator's `Rollback` (to [`Db::previous_active`]).
    Rollback,
    /// The training gate promoted a new version.
    Auto,
    /// A canary's judge promoted its candidate on live outcomes.
    Canary,
}

stored_enum!(PromotionKind, "promotion kind", {
    Promote => "promote",
    Rollback => "rollback",
    Auto => "auto",
    Canary => "canary",
});

/// A version to register. It starts as a [`ModelState::Candidate`].
#[derive(Clone, Debug, Default)]
pub struct NewModelVersion {
    /// Unique version id.
    pub version: String,
    /// Model family.
    pub family: String,
    /// Feature schema id.
    pub feature_schema: String,
    /// The ONNX file; its sha256 and size are computed on insert.
    pub onnx: Vec<u8>,
    /// Hold-out metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Initial reason text (e.g. the gate's verdict).
    pub reason: String,
    /// The run that produced it.
    pub run_id: Option<String>,
    /// Whether it learned its time head (else its times are the priors').
    pub time_modeled: Option<bool>,
}

/// A registered version without its ONNX bytes (see [`Db::get_model_onnx`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelVersionMeta {
    /// Version id.
    pub version: String,
    /// Model family.
    pub family: String,
    /// Feature schema id.
    pub feature_schema: String,
    /// sha256 of the ONNX file, hex.
    pub sha256: String,
    /// Hold-out metrics; non-finite values come back as NaN.
    pub metrics: BTreeMap<String, f64>,
    /// Current state.
    pub state: ModelState,
    /// Why it is in that state.
    pub reason: String,
    /// Registration time.
    pub created_at: DateTime<Utc>,
    /// Last time it was made active.
    pub promoted_at: Option<DateTime<Utc>>,
    /// ONNX size in bytes.
    pub size_bytes: u64,
    /// Producing run.
    pub run_id: Option<String>,
    /// Promotion sequence number of its latest activation (monotonic).
    pub seq: Option<i64>,
    /// Whether it learned its time head; `None` for versions registered
    /// before the registry recorded it.
    pub time_modeled: Option<bool>,
}

/// One entry of the promotion history.
#[derive(Clone, Debug, PartialEq)]
pub struct PromotionRecord {
    /// Order of the entry.
    pub id: i64,
    /// Version made active.
    pub version: String,
    /// When.
    pub promoted_at: DateTime<Utc>,
    /// How.
    pub kind: PromotionKind,
}

/// Every column but `onnx`, so listings do not drag model files along.
#[derive(Clone, Debug, DerivePartialModel)]
#[sea_orm(entity = "model_version::Entity")]
struct MetaRow {
    version: String,
    family: String,
    feature_schema: String,
    sha256: String,
    metrics: String,
    state: String,
    reason: String,
    created_at: DateTime<Utc>,
    promoted_at: Option<DateTime<Utc>>,
    size_bytes: i64,
    run_id: Option<String>,
    seq: Option<i64>,
    time_modeled: Option<bool>,
}

impl TryFrom<MetaRow> for ModelVersionMeta {
    type Error = DbError;
    fn try_from(r: MetaRow) -> DbResult<Self> {
        Ok(ModelVersionMeta {
            metrics: metrics_from_json(&r.metrics)?,
            state: r.state.parse()?,
            size_bytes: to_u64("size_bytes", r.size_bytes)?,
            version: r.version,
            family: r.family,
            feature_schema: r.feature_schema,
            sha256: r.sha256,
            reason: r.reason,
            created_at: r.created_at,
            promoted_at: r.promoted_at,
            run_id: r.run_id,
            seq: r.seq,
            time_modeled: r.time_modeled,
        })
    }
}

impl TryFrom<promotion::Model> for PromotionRecord {
    type Error = DbError;
    fn try_from(m: promotion::Model) -> DbResult<Self> {
        Ok(PromotionRecord {
            id: m.id,
            kind: m.kind.parse()?,
            version: m.version,
            promoted_at: m.promoted_at,
        })
    }
}

pub(super) async fn meta_where(
    conn: &impl ConnectionTrait,
    version: &str,
) -> DbResult<Option<ModelVersionMeta>> {
    model_version::Entity::find_by_id(version.to_owned())
        .into_partial_model::<MetaRow>()
        .one(conn)
        .await?
        .map(ModelVersionMeta::try_from)
        .transpose()
}

/// `LENGTH(onnx)` as BIGINT on both backends (PostgreSQL's is `integer`).
pub(super) const ONNX_LEN: &str = "CAST(LENGTH(onnx) AS BIGINT)";

/// Size of one version's ONNX bytes; `Some(0)` once pruned, `None` when the
/// version does not exist.
pub(super) async fn onnx_len_in(
    conn: &impl ConnectionTrait,
    version: &str,
) -> DbResult<Option<i64>> {
    Ok(model_version::Entity::find_by_id(version.to_owned())
        .select_only()
        .column_as(Expr::cust(ONNX_LEN), "n")
        .into_tuple::<i64>()
        .one(conn)
        .await?)
}

pub(super) fn not_found(version: &str) -> DbError {
    DbError::NotFound {
        what: "model version",
        key: version.to_owned(),
    }
}

impl Db {
    /// Registers a new version as a candidate. Fails with
    /// [`DbError::Conflict`] if the version id exists.
    pub async fn insert_model_version(&self, new: &NewModelVersion) -> DbResult<ModelVersionMeta> {
        if meta_where(&self.conn, &new.version).await?.is_some() {
            return Err(DbError::Conflict(format!(
                "model version {:?} already exists",
                new.version
            )));
        }
        let now = Utc::now();
        let sha256 = taskcast_contract::artifact::sha256_hex(&new.onnx);
        let size = new.onnx.len() as u64;
        let am = model_version::ActiveModel {
            version: Set(new.version.clone()),
            family: Set(new.family.clone()),
            feature_schema: Set(new.feature_schema.clone()),
            onnx: Set(new.onnx.clone()),
            sha256: Set(sha256.clone()),
            metrics: Set(metrics_to_json(&new.metrics)),
            state: Set(ModelState::Candidate.as_str().to_owned()),
            reason: Set(new.reason.clone()),
            created_at: Set(now),
            promoted_at: Set(None),
            size_bytes: Set(to_i64("size_bytes", size)?),
            run_id: Set(new.run_id.clone()),
            seq: Set(None),
            time_modeled: Set(new.time_modeled),
        };
        model_version::Entity::insert(am)
            .exec_without_returning(&self.conn)
            .await?;
        meta_where(&self.conn, &new.version)
            .await?
            .ok_or_else(|| not_found(&new.version))
    }

    /// One version's metadata.
    pub async fn get_model_version(&self, version: &str) -> DbResult<Option<ModelVersionMeta>> {
        meta_where(&self.conn, version).await
    }

    /// One version's ONNX file.
    pub async fn get_model_onnx(&self, version: &str) -> DbResult<Option<Vec<u8>>> {
        Ok(model_version::Entity::find_by_id(version.to_owned())
            .select_only()
            .column(model_version::Column::Onnx)
            .into_tuple::<Vec<u8>>()
            .one(&self.conn)
            .await?)
    }

    /// The newest `limit` versions, newest first.
    pub async fn list_model_versions(&self, limit: u64) -> DbResult<Vec<ModelVersionMeta>> {
        model_version::Entity::find()
            .order_by_desc(model_version::Column::CreatedAt)
            .order_by_desc(model_version::Column::Version)
            .limit(limit)
            .into_partial_model::<MetaRow>()
            .all(&self.conn)
            .await?
            .into_iter()
            .map(ModelVersionMeta::try_from)
            .collect()
    }

    /// The version serving now, if any.
    pub async fn active_model_version(&self) -> DbResult<Option<ModelVersionMeta>> {
        model_version::Entity::find()
            .filter(model_version::Column::State.eq(ModelState::Active.as_str()))
            .into_partial_model::<MetaRow>()
            .one(&self.conn)
            .await?
            .map(ModelVersionMeta::try_from)
            .transpose()
    }

    /// Makes `version` the active one in one transaction: the old active
    /// version becomes retired, `version` gets `promoted_at` and the next
    /// `seq`, and the promotion is appended to the history. Making the active
    /// version active again changes nothing. Rejected versions can be promoted
    /// (an operator's explicit decision); the rejection reason is replaced.
    pub async fn set_active(
        &self,
        version: &str,
        kind: PromotionKind,
    ) -> DbResult<ModelVersionMeta> {
        let tx = self.conn.begin().await?;
        self.registry_xact_lock(&tx).await?;
        let meta = activate_in(&tx, version, kind).await?;
        tx.commit().await?;
        Ok(meta)
    }
}

/// The body of [`Db::set_active`], inside the caller's transaction (which
/// holds the registry lock). A canary in progress ends with it
/// ([`super::rollout::end_for_promotion_in`]).
pub(super) async fn activate_in(
    tx: &impl ConnectionTrait,
    version: &str,
    kind: PromotionKind,
) -> DbResult<ModelVersionMeta> {
    let target = meta_where(tx, version)
        .await?
        .ok_or_else(|| not_found(version))?;
    if target.state == ModelState::Active {
        return Ok(target);
    }
    super::rollout::end_for_promotion_in(tx, version, kind).await?;
    // A pruned version has no model left to serve.
    if onnx_len_in(tx, version).await? == Some(0) {
        return Err(DbError::Conflict(format!(
            "model version {version:?} was pruned (its ONNX bytes were deleted) and cannot be served"
        )));
    }
    let now = Utc::now();
    let max_seq: Option<Option<i64>> = model_version::Entity::find()
        .select_only()
        .column_as(model_version::Column::Seq.max(), "max_seq")
        .into_tuple()
        .one(tx)
        .await?;
    let seq = max_seq.flatten().unwrap_or(0) + 1;

    // Retire first: the partial unique index allows one active row at a time.
    model_version::Entity::update_many()
        .col_expr(
            model_version::Column::State,
            Expr::value(ModelState::Retired.as_str()),
        )
        .col_expr(
            model_version::Column::Reason,
            Expr::value(format!("superseded by {version} ({kind})")),
        )
        .filter(model_version::Column::State.eq(ModelState::Active.as_str()))
        .exec(tx)
        .await?;
    model_version::Entity::update_many()
        .col_expr(
            model_version::Column::State,
            Expr::value(ModelState::Active.as_str()),
        )
        .col_expr(
            model_version::Column::Reason,
            Expr::value(match kind {
                PromotionKind::Promote => "promoted by operator".to_owned(),
                PromotionKind::Rollback => "restored by rollback".to_owned(),
                // Keep the gate's own words (registered with the version):
                // what it judged and what it could not (e.g. times).
                PromotionKind::Auto if !target.reason.is_empty() => {
                    format!("promoted by the training gate: {}", target.reason)
                }
                PromotionKind::Auto => "promoted by the training gate".to_owned(),
                PromotionKind::Canary => "promoted by its canary".to_owned(),
            }),
        )
        .col_expr(model_version::Column::PromotedAt, Expr::value(now))
        .col_expr(model_version::Column::Seq, Expr::value(seq))
        .filter(model_version::Column::Version.eq(version))
        .exec(tx)
        .await?;
    promotion::Entity::insert(promotion::ActiveModel {
        version: Set(version.to_owned()),
        promoted_at: Set(now),
        kind: Set(kind.as_str().to_owned()),
        ..Default::default()
    })
    .exec_without_returning(tx)
    .await?;
    meta_where(tx, version)
        .await?
        .ok_or_else(|| not_found(version))
}

impl Db {
    /// The promotion history, oldest first.
    pub async fn promotion_history(&self) -> DbResult<Vec<PromotionRecord>> {
        promotion::Entity::find()
            .order_by_asc(promotion::Column::Id)
            .all(&self.conn)
            .await?
            .into_iter()
            .map(PromotionRecord::try_from)
            .collect()
    }

    /// The version a rollback returns to: the one active before the current
    /// one, skipping rejected or deleted versions.
    ///
    /// The history is replayed as a stack: promotions push, a rollback pops
    /// back to its target. So after A → B → C, rollback goes to B and a
    /// second rollback to A (not back to C, which was rolled back from).
    pub async fn previous_active(&self) -> DbResult<Option<ModelVersionMeta>> {
        previous_active_in(&self.conn).await
    }

    /// Makes [`Db::previous_active`] active again; `None` when there is none.
    /// The history is read and the target written in one transaction under
    /// the registry lock, so a promotion landing in between cannot make the
    /// rollback return to a version that is no longer the previous one.
    pub async fn rollback(&self) -> DbResult<Option<ModelVersionMeta>> {
        self.rollback_checked(None, None).await
    }

    /// [`Db::rollback`], only if `from` is still the active version and
    /// `to` still the version a rollback returns to: callers that checked
    /// `to` first (is it servable?) or decided on `from` (every replica
    /// refuses it) act on what they checked, or get
    /// [`DbError::Conflict`] when the registry moved in between — two
    /// trainer replicas never roll back twice for one cause.
    pub async fn rollback_from(&self, from: &str, to: &str) -> DbResult<ModelVersionMeta> {
        self.rollback_checked(Some((from, to)), None)
            .await?
            .ok_or_else(|| DbError::Conflict("there is no previous active version".into()))
    }

    /// [`Db::rollback_from`], and `from` rejected with `reason` in the same
    /// transaction: a version every replica refuses is never left retired
    /// (and so a rollback target) by a trainer that dies between the two.
    pub async fn rollback_rejecting(
        &self,
        from: &str,
        to: &str,
        reason: &str,
    ) -> DbResult<ModelVersionMeta> {
        self.rollback_checked(Some((from, to)), Some(reason))
            .await?
            .ok_or_else(|| DbError::Conflict("there is no previous active version".into()))
    }

    async fn rollback_checked(
        &self,
        expect: Option<(&str, &str)>,
        reject: Option<&str>,
    ) -> DbResult<Option<ModelVersionMeta>> {
        let tx = self.conn.begin().await?;
        self.registry_xact_lock(&tx).await?;
        let Some(prev) = previous_active_in(&tx).await? else {
            tx.commit().await?;
            return Ok(None);
        };
        if let Some((from, to)) = expect {
            let active = active_in(&tx).await?;
            if active.as_deref() != Some(from) || prev.version != to {
                return Err(DbError::Conflict(format!(
                    "the registry changed: {} is active and a rollback would return to {}, \
                     not {from} to {to}; look again and retry",
                    active.as_deref().unwrap_or("nothing"),
                    prev.version
                )));
            }
        }
        let meta = activate_in(&tx, &prev.version, PromotionKind::Rollback).await?;
        if let (Some((from, _)), Some(reason)) = (expect, reject) {
            reject_in(&tx, from, reason).await?;
        }
        tx.commit().await?;
        Ok(Some(meta))
    }
}

/// [`Db::previous_active`] on `conn` (a transaction for [`Db::rollback`]).
async fn previous_active_in(conn: &impl ConnectionTrait) -> DbResult<Option<ModelVersionMeta>> {
    let history: Vec<PromotionRecord> = promotion::Entity::find()
        .order_by_asc(promotion::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .map(PromotionRecord::try_from)
        .collect::<DbResult<_>>()?;
    let mut stack: Vec<String> = Vec::new();
    for p in history {
        if p.kind == PromotionKind::Rollback
            && let Some(pos) = stack.iter().rposition(|v| *v == p.version)
        {
            stack.truncate(pos + 1);
        } else if stack.last() != Some(&p.version) {
            stack.push(p.version);
        }
    }
    let active = active_in(conn).await?;
    for v in stack.iter().rev() {
        if Some(v) == active.as_ref() {
            continue;
        }
        if let Some(meta) = meta_where(conn, v).await?
            && meta.state != ModelState::Rejected
        {
            return Ok(Some(meta));
        }
    }
    Ok(None)
}

/// The active version's id, read on `conn`.
pub(super) async fn active_in(conn: &impl ConnectionTrait) -> DbResult<Option<String>> {
    Ok(model_version::Entity::find()
        .select_only()
        .column(model_version::Column::Version)
        .filter(model_version::Column::State.eq(ModelState::Active.as_str()))
        .into_tuple()
        .one(conn)
        .await?)
}

impl Db {
    /// Marks a version rejected so it is never served or rolled back to.
    /// The active version cannot be rejected: roll back or promote another first.
    pub async fn reject(&self, version: &str, reason: &str) -> DbResult<ModelVersionMeta> {
        let tx = self.conn.begin().await?;
        self.registry_xact_lock(&tx).await?;
        let meta = meta_where(&tx, version)
            .await?
            .ok_or_else(|| not_found(version))?;
        if meta.state == ModelState::Active {
            return Err(DbError::Conflict(format!(
                "model version {version:?} is active and cannot be rejected"
            )));
        }
        if meta.state == ModelState::Canary {
            return Err(DbError::Conflict(format!(
                "model version {version:?} is under a canary: end the canary (Rollback) to reject it"
            )));
        }
        reject_in(&tx, version, reason).await?;
        let meta = meta_where(&tx, version)
            .await?
            .ok_or_else(|| not_found(version))?;
        tx.commit().await?;
        Ok(meta)
    }
}

/// Marks `version` rejected with `reason`, inside the caller's transaction
/// (which holds the registry lock and has checked the version may be).
async fn reject_in(tx: &impl ConnectionTrait, version: &str, reason: &str) -> DbResult<()> {
    model_version::Entity::update_many()
        .col_expr(
            model_version::Column::State,
            Expr::value(ModelState::Rejected.as_str()),
        )
        .col_expr(model_version::Column::Reason, Expr::value(reason))
        .filter(model_version::Column::Version.eq(version))
        .exec(tx)
        .await?;
    Ok(())
}

//! Registry retention: which versions keep their ONNX bytes, and the prune
//! that drops the rest (their metadata stays), with the registry's size.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};

use super::entities::{model_version, promotion};
use super::registry::{ModelState, ONNX_LEN};
use super::{Db, DbResult, to_u64};

/// Default of [`RetentionPolicy::keep_candidates`].
pub const DEFAULT_KEEP_CANDIDATES: u64 = 20;

/// Which versions keep their ONNX bytes ([`Db::prune_models`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// The newest this many versions that were never active keep their
    /// bytes whatever their state, so a recent rejection can still be
    /// inspected or promoted by an operator.
    pub keep_candidates: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            keep_candidates: DEFAULT_KEEP_CANDIDATES,
        }
    }
}

/// What [`Db::prune_models`] did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Versions whose bytes went (or would go), oldest first, with their size.
    pub pruned: Vec<(String, u64)>,
    /// ONNX bytes in the registry before.
    pub bytes_before: u64,
    /// ONNX bytes in the registry after (equal to before on a dry run).
    pub bytes_after: u64,
}

/// Every version's ONNX bytes together, as stored now.
async fn registry_bytes_in(conn: &impl ConnectionTrait) -> DbResult<u64> {
    let total: Option<Option<i64>> = model_version::Entity::find()
        .select_only()
        .column_as(Expr::cust(format!("CAST(SUM({ONNX_LEN}) AS BIGINT)")), "n")
        .into_tuple()
        .one(conn)
        .await?;
    to_u64("registry bytes", total.flatten().unwrap_or(0))
}

impl Db {
    /// ONNX bytes held by the registry (every version's, pruned ones count 0).
    pub async fn registry_bytes(&self) -> DbResult<u64> {
        registry_bytes_in(&self.conn).await
    }

    /// Deletes the ONNX bytes of old rejected versions, keeping their
    /// metadata (ListModels still lists them; `size_bytes` and `sha256` say
    /// what they were). Kept whole: every version that was ever active
    /// (anything in the promotion history, so rollbacks always find a
    /// model), candidates not rejected (they may still be promoted) and
    /// versions under a canary (replicas are serving them), and
    /// the newest [`RetentionPolicy::keep_candidates`] versions never
    /// active. With `dry_run` nothing changes and the report lists what
    /// would go. One transaction under the registry lock, so a concurrent
    /// Promote either sees the bytes or is refused.
    ///
    /// The space comes back to the file system only after `VACUUM` (SQLite)
    /// or autovacuum (PostgreSQL); the registry gauge counts live bytes.
    pub async fn prune_models(
        &self,
        policy: &RetentionPolicy,
        dry_run: bool,
    ) -> DbResult<PruneReport> {
        let tx = self.conn.begin().await?;
        self.registry_xact_lock(&tx).await?;
        let bytes_before = registry_bytes_in(&tx).await?;
        let ever_active: std::collections::HashSet<String> = promotion::Entity::find()
            .select_only()
            .column(promotion::Column::Version)
            .into_tuple::<String>()
            .all(&tx)
            .await?
            .into_iter()
            .collect();
        // (version, state, promoted_at, stored length), newest first.
        let rows: Vec<(String, String, Option<DateTime<Utc>>, i64)> = model_version::Entity::find()
            .select_only()
            .column(model_version::Column::Version)
            .column(model_version::Column::State)
            .column(model_version::Column::PromotedAt)
            .column_as(Expr::cust(ONNX_LEN), "n")
            .order_by_desc(model_version::Column::CreatedAt)
            .order_by_desc(model_version::Column::Version)
            .into_tuple()
            .all(&tx)
            .await?;
        let mut never_active_seen = 0u64;
        let mut pruned = Vec::new();
        for (version, state, promoted_at, len) in rows {
            let state: ModelState = state.parse()?;
            if promoted_at.is_some()
                || ever_active.contains(&version)
                || matches!(state, ModelState::Active | ModelState::Retired)
            {
                continue;
            }
            never_active_seen += 1;
            if never_active_seen <= policy.keep_candidates
                || state != ModelState::Rejected
                || len == 0
            {
                continue;
            }
            pruned.push((version, to_u64("onnx length", len)?));
        }
        pruned.reverse();
        if dry_run || pruned.is_empty() {
            tx.commit().await?;
            return Ok(PruneReport {
                pruned,
                bytes_before,
                bytes_after: bytes_before,
            });
        }
        // Chunked so the IN list stays far below either backend's limit
        // on bound values.
        for chunk in pruned.chunks(500) {
            model_version::Entity::update_many()
                .col_expr(model_version::Column::Onnx, Expr::value(Vec::<u8>::new()))
                .filter(model_version::Column::Version.is_in(chunk.iter().map(|(v, _)| v.clone())))
                .filter(model_version::Column::State.eq(ModelState::Rejected.as_str()))
                .exec(&tx)
                .await?;
        }
        let bytes_after = registry_bytes_in(&tx).await?;
        tx.commit().await?;
        Ok(PruneReport {
            pruned,
            bytes_before,
            bytes_after,
        })
    }
}

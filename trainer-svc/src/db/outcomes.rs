//! `completed_tasks` as outcomes of predictions: the rows on which the app
//! backend stored what inference said, read page by page for the live report,
//! and the backend-shaped insert the tests and demos write them with.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use taskcast_contract::TaskRow;

use super::entities::completed_task::{Column, Entity};
use super::tasks::{TASK_COLUMNS, after_key, task_values};
use super::{Db, DbError, DbResult};

/// What inference said about a task when it was handed out, as the backend
/// stores it on the completed row.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPrediction {
    /// `predicted_p_correct`.
    pub p_correct: f64,
    /// `predicted_seconds` (the median).
    pub seconds: Option<f64>,
    /// `predicted_seconds_low` (10th percentile).
    pub seconds_low: Option<f64>,
    /// `predicted_seconds_high` (90th percentile).
    pub seconds_high: Option<f64>,
    /// `model_version`.
    pub model_version: String,
}

/// One completed task that carries a prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct OutcomeRow {
    /// Row id (arrival order).
    pub id: i64,
    /// The learner.
    pub user_id: String,
    /// Topic label.
    pub topic: String,
    /// What happened.
    pub correct: bool,
    /// Recorded seconds, if any.
    pub seconds: Option<f64>,
    /// When it was completed.
    pub completed_at: DateTime<Utc>,
    /// What was predicted, and by which version.
    pub prediction: StoredPrediction,
}

/// Which outcome rows to read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutcomeFilter {
    /// Only this model version.
    pub version: Option<String>,
    /// Only rows completed at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only rows with `id >= min_id` (how "the last N rows" is applied).
    pub min_id: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct Raw {
    id: i64,
    user_id: String,
    topic: String,
    correct: bool,
    seconds: Option<f64>,
    completed_at: DateTime<Utc>,
    predicted_p_correct: Option<f64>,
    predicted_seconds: Option<f64>,
    predicted_seconds_low: Option<f64>,
    predicted_seconds_high: Option<f64>,
    model_version: Option<String>,
}

/// The conditions every outcome query shares: a prediction and its version
/// are present, plus the filter's window.
fn outcome_conditions<Q: QueryFilter>(mut q: Q, f: &OutcomeFilter) -> Q {
    q = q
        .filter(Column::PredictedPCorrect.is_not_null())
        .filter(Column::ModelVersion.is_not_null());
    if let Some(v) = &f.version {
        q = q.filter(Column::ModelVersion.eq(v.clone()));
    }
    if let Some(since) = f.since {
        q = q.filter(Column::CompletedAt.gte(since));
    }
    if let Some(min_id) = f.min_id {
        q = q.filter(Column::Id.gte(min_id));
    }
    q
}

/// Pages through outcome rows in `(user_id, completed_at, id)` order, so each
/// learner's rows arrive together and in time order; one keyset query per
/// page on the training scan's index, no connection held between pages.
pub struct OutcomePager {
    conn: DatabaseConnection,
    filter: OutcomeFilter,
    page_size: u64,
    cursor: Option<(String, DateTime<Utc>, i64)>,
    done: bool,
}

impl OutcomePager {
    /// The next page, or `None` when the scan is over.
    pub async fn next_page(&mut self) -> DbResult<Option<Vec<OutcomeRow>>> {
        if self.done {
            return Ok(None);
        }
        let mut q = outcome_conditions(
            Entity::find().select_only().columns([
                Column::Id,
                Column::UserId,
                Column::Topic,
                Column::Correct,
                Column::Seconds,
                Column::CompletedAt,
                Column::PredictedPCorrect,
                Column::PredictedSeconds,
                Column::PredictedSecondsLow,
                Column::PredictedSecondsHigh,
                Column::ModelVersion,
            ]),
            &self.filter,
        )
        .order_by_asc(Column::UserId)
        .order_by_asc(Column::CompletedAt)
        .order_by_asc(Column::Id)
        .limit(self.page_size);
        if let Some((user_id, at, id)) = &self.cursor {
            q = q.filter(after_key(user_id, *at, *id));
        }
        let raw: Vec<Raw> = q.into_model::<Raw>().all(&self.conn).await?;
        if (raw.len() as u64) < self.page_size {
            self.done = true;
        }
        if let Some(last) = raw.last() {
            self.cursor = Some((last.user_id.clone(), last.completed_at, last.id));
        } else {
            return Ok(None);
        }
        let page = raw
            .into_iter()
            .filter_map(|r| {
                // The query asked for non-null values; the filter_map only
                // satisfies the types.
                let (p, version) = (r.predicted_p_correct?, r.model_version?);
                Some(OutcomeRow {
                    id: r.id,
                    user_id: r.user_id,
                    topic: r.topic,
                    correct: r.correct,
                    seconds: r.seconds,
                    completed_at: r.completed_at,
                    prediction: StoredPrediction {
                        p_correct: p,
                        seconds: r.predicted_seconds,
                        seconds_low: r.predicted_seconds_low,
                        seconds_high: r.predicted_seconds_high,
                        model_version: version,
                    },
                })
            })
            .collect();
        Ok(Some(page))
    }
}

impl Db {
    /// Pages through the rows that carry a prediction, learner by learner.
    /// `page_size` 0 is taken as 1.
    pub fn scan_outcomes(&self, filter: OutcomeFilter, page_size: u64) -> OutcomePager {
        OutcomePager {
            conn: self.conn.clone(),
            filter,
            page_size: std::cmp::max(page_size, 1),
            cursor: None,
            done: false,
        }
    }

    /// The id from which the newest `n` outcome rows matching `filter` start
    /// (ids at or above it); `None` when fewer than `n` rows match, i.e. no
    /// limit is needed. One query walking the primary key backwards.
    pub async fn outcome_min_id_for_last(
        &self,
        filter: &OutcomeFilter,
        n: u64,
    ) -> DbResult<Option<i64>> {
        if n == 0 {
            return Ok(None);
        }
        let id: Option<i64> =
            outcome_conditions(Entity::find().select_only().column(Column::Id), filter)
                .order_by_desc(Column::Id)
                .offset(n - 1)
                .limit(1)
                .into_tuple()
                .one(&self.conn)
                .await?;
        Ok(id)
    }

    /// Inserts completed tasks together with the predictions that were shown
    /// for them, in one transaction, as an app backend writes them.
    pub async fn insert_outcomes(&self, rows: &[(TaskRow, StoredPrediction)]) -> DbResult<u64> {
        let tx = self.conn.begin().await?;
        let mut n = 0;
        // 12 bound values per row; well under SQLite's and PostgreSQL's limits.
        for chunk in rows.chunks(500) {
            let mut stmt = Query::insert();
            // `columns` replaces the list, so both parts go in one call.
            stmt.into_table(Entity)
                .columns(TASK_COLUMNS.into_iter().chain([
                    Column::PredictedPCorrect,
                    Column::PredictedSeconds,
                    Column::PredictedSecondsLow,
                    Column::PredictedSecondsHigh,
                    Column::ModelVersion,
                ]));
            for (r, p) in chunk {
                let mut values = task_values(r)?;
                values.extend([
                    Expr::val(p.p_correct),
                    Expr::val(p.seconds),
                    Expr::val(p.seconds_low),
                    Expr::val(p.seconds_high),
                    Expr::val(p.model_version.clone()),
                ]);
                stmt.values(values)
                    .map_err(|e| DbError::Invalid(e.to_string()))?;
            }
            n += tx.execute(&stmt).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }
}

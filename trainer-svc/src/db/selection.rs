//! The training budget in SQL: which learners a run reads when the table
//! holds more rows than its budget (the rule is in `data::budget`: whole
//! histories of the most recently active learners). [`Db::training_cut`]
//! finds the last learner taken in one aggregate query; [`SelectedPager`]
//! then walks the taken learners with `GROUP BY user_id HAVING` the cut and
//! reads their rows in the training scan's order, a page at a time, so its
//! memory is one page whatever the table or the budget holds.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Order, Query, WindowStatement};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use taskcast_contract::TaskRow;
pub use taskcast_learn::budget::LearnerCut;

use super::entities::completed_task::{Column, Entity};
use super::tasks::{Cursor, fetch_page, scan_query};
use super::{Db, DbError, DbResult, completed_at_from_ms};

/// Learners fetched per query while walking the taken ones: their ids and
/// row counts, a few tens of kB.
const LEARNERS_PER_QUERY: u64 = 1000;

/// The `HAVING` condition that keeps the learners `cut` takes, on a query
/// grouped by `user_id` (`at` is the cut's `last_completed_at_ms` as a time).
fn having(cut: &LearnerCut, at: DateTime<Utc>) -> Expr {
    let latest = || Expr::expr(Func::max(Expr::col((Entity, Column::CompletedAt))));
    latest().gt(at).or(latest()
        .eq(at)
        .and(Expr::col((Entity, Column::UserId)).gte(cut.user_id.clone())))
}

impl Db {
    /// The last learner a budget of `max_rows` takes among rows with
    /// `id <= up_to_id`; `None` when those rows number at most `max_rows`
    /// (or `max_rows` is 0), so the run reads them all. One count and one
    /// aggregate over the table, with a running sum of rows per learner in
    /// the order learners are taken.
    pub async fn training_cut(
        &self,
        max_rows: u64,
        up_to_id: Option<i64>,
    ) -> DbResult<Option<LearnerCut>> {
        if max_rows == 0 {
            return Ok(None);
        }
        let mut count = Entity::find();
        if let Some(up) = up_to_id {
            count = count.filter(Column::Id.lte(up));
        }
        if count.count(&self.conn).await? <= max_rows {
            return Ok(None);
        }
        let latest = || Func::max(Expr::col((Entity, Column::CompletedAt)));
        let rows = || Func::count(Expr::col((Entity, Column::Id)));
        let mut order = WindowStatement::new();
        order
            .order_by_expr(latest().into(), Order::Desc)
            .order_by_expr(Expr::col((Entity, Column::UserId)), Order::Desc);
        let mut ranked = Query::select();
        ranked
            .column((Entity, Column::UserId))
            .expr_as(latest(), Alias::new("last_at"))
            .expr_as(rows(), Alias::new("n"))
            .expr_window_as(Func::sum(rows()), order, Alias::new("through"))
            .from(Entity)
            .group_by_col((Entity, Column::UserId));
        if let Some(up) = up_to_id {
            ranked.and_where(Expr::col((Entity, Column::Id)).lte(up));
        }
        let budget = i64::try_from(max_rows).unwrap_or(i64::MAX);
        let mut cut = Query::select();
        cut.column(Alias::new("user_id"))
            .column(Alias::new("last_at"))
            .from_subquery(ranked, Alias::new("ranked"))
            // Taken while the learners before hold fewer than the budget.
            .and_where(
                Expr::col(Alias::new("through"))
                    .sub(Expr::col(Alias::new("n")))
                    .lt(budget),
            )
            .order_by(Alias::new("through"), Order::Desc)
            .limit(1);
        let Some(row) = self.conn.query_one(&cut).await? else {
            return Ok(None);
        };
        let user_id: String = row.try_get("", "user_id")?;
        let last_at: DateTime<Utc> = row.try_get("", "last_at")?;
        Ok(Some(LearnerCut {
            last_completed_at_ms: last_at.timestamp_millis(),
            user_id,
        }))
    }

    /// Pages through the rows of the learners `cut` takes (those with
    /// `id <= up_to_id`) in the training scan's `(user_id, completed_at, id)`
    /// order, about `page_size` rows per query.
    pub fn scan_selected(
        &self,
        page_size: u64,
        up_to_id: Option<i64>,
        cut: &LearnerCut,
    ) -> DbResult<SelectedPager> {
        let at = completed_at_from_ms(cut.last_completed_at_ms).ok_or_else(|| {
            DbError::Invalid(format!(
                "cut at {} ms is outside years 1..=9999",
                cut.last_completed_at_ms
            ))
        })?;
        Ok(SelectedPager {
            conn: self.conn.clone(),
            page_size: std::cmp::max(page_size, 1),
            up_to_id,
            cut: cut.clone(),
            at,
            learners: VecDeque::new(),
            fetched_through: None,
            learners_done: false,
            group: None,
            cursor: None,
        })
    }
}

/// Reads the rows of the learners a [`LearnerCut`] takes.
///
/// It walks the taken learners in `user_id` order, a thousand per query
/// (`GROUP BY user_id HAVING` the cut, an index-only scan that also gives
/// each learner's row count), and reads their rows a group at a time:
/// consecutive taken learners holding at most a page of rows together, named
/// in the row query (`user_id IN (…)`, at most a page's worth of ids). Naming
/// them lets the database fetch only their rows: with a range and a
/// subquery instead, it fetched every row of the range, those of the learners
/// left out between the taken ones included — four in five rows at 2 M of
/// 10 M. A learner with more than a page of rows is read in keyset pages as
/// [`super::TaskPager`] reads.
pub struct SelectedPager {
    conn: DatabaseConnection,
    page_size: u64,
    up_to_id: Option<i64>,
    cut: LearnerCut,
    at: DateTime<Utc>,
    /// Taken learners fetched and not yet read, with their row counts.
    learners: VecDeque<(String, u64)>,
    /// The last learner fetched so far.
    fetched_through: Option<String>,
    learners_done: bool,
    /// The learners being read, in `user_id` order.
    group: Option<Vec<String>>,
    cursor: Option<Cursor>,
}

impl SelectedPager {
    /// The next page of `(id, row)`, or `None` when the scan is over.
    pub async fn next_page(&mut self) -> DbResult<Option<Vec<(i64, TaskRow)>>> {
        loop {
            if self.group.is_none() && !self.next_group().await? {
                return Ok(None);
            }
            let Some(group) = &self.group else {
                return Ok(None);
            };
            let q = scan_query(self.up_to_id, self.cursor.as_ref())
                .filter(Column::UserId.is_in(group.iter().cloned()));
            let (page, cursor) = fetch_page(&self.conn, q, self.page_size).await?;
            if (page.len() as u64) < self.page_size {
                self.group = None;
                self.cursor = None;
            } else {
                self.cursor = cursor;
            }
            if !page.is_empty() {
                return Ok(Some(page));
            }
        }
    }

    /// Sets the next group of taken learners to read; false when none is left.
    async fn next_group(&mut self) -> DbResult<bool> {
        if self.learners.is_empty() && !self.learners_done {
            self.fetch_learners().await?;
        }
        let Some((first, n)) = self.learners.pop_front() else {
            return Ok(false);
        };
        let mut group = vec![first];
        let mut rows = n;
        while let Some((_, m)) = self.learners.front() {
            if rows + m > self.page_size {
                break;
            }
            rows += m;
            if let Some((next, _)) = self.learners.pop_front() {
                group.push(next);
            }
        }
        self.group = Some(group);
        self.cursor = None;
        Ok(true)
    }

    /// The next taken learners after those fetched so far.
    async fn fetch_learners(&mut self) -> DbResult<()> {
        let mut q = Entity::find()
            .select_only()
            .column(Column::UserId)
            .column_as(Column::Id.count(), "n")
            .group_by(Column::UserId)
            .having(having(&self.cut, self.at))
            .order_by_asc(Column::UserId)
            .limit(LEARNERS_PER_QUERY);
        if let Some(up) = self.up_to_id {
            q = q.filter(Column::Id.lte(up));
        }
        if let Some(after) = &self.fetched_through {
            q = q.filter(Column::UserId.gt(after.clone()));
        }
        let got: Vec<(String, i64)> = q.into_tuple().all(&self.conn).await?;
        if (got.len() as u64) < LEARNERS_PER_QUERY {
            self.learners_done = true;
        }
        if let Some((last, _)) = got.last() {
            self.fetched_through = Some(last.clone());
        }
        self.learners.extend(
            got.into_iter()
                .map(|(user, n)| (user, u64::try_from(n).unwrap_or(0))),
        );
        Ok(())
    }
}

//! `completed_tasks`: bulk inserts and the keyset-paged training scan.

use chrono::{DateTime, Utc};
use futures::Stream;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select, TransactionTrait,
};
use taskcast_contract::TaskRow;

use super::entities::completed_task::{Column, Entity};
use super::entities::imported_file;
use super::{Db, DbError, DbResult, completed_at_from_ms};
use sea_orm::ActiveValue::Set;

/// The columns a completed task is inserted with, in [`task_values`] order.
pub(super) const TASK_COLUMNS: [Column; 8] = [
    Column::UserId,
    Column::ItemId,
    Column::Topic,
    Column::Difficulty,
    Column::Correct,
    Column::Seconds,
    Column::CompletedAt,
    Column::StartedAt,
];

/// One row's values for [`TASK_COLUMNS`]; a time outside what the databases
/// store is an error naming it.
pub(super) fn task_values(r: &TaskRow) -> DbResult<Vec<Expr>> {
    let time = |column: &str, ms: i64| {
        completed_at_from_ms(ms)
            .ok_or_else(|| DbError::Invalid(format!("{column} {ms} ms is outside years 1..=9999")))
    };
    let at = time("completed_at", r.completed_at_ms)?;
    let started = r
        .started_at_ms
        .map(|ms| time("started_at", ms))
        .transpose()?;
    Ok(vec![
        Expr::val(r.user_id.clone()),
        Expr::val(r.item_id.clone()),
        Expr::val(r.topic.clone()),
        Expr::val(r.difficulty.clone()),
        Expr::val(r.correct),
        Expr::val(r.seconds),
        Expr::val(at),
        Expr::val(started),
    ])
}

/// A file `trainer-svc import` committed, as `imported_files` recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedFile {
    /// sha256 of its bytes, hex.
    pub sha256: String,
    /// The path it was imported from.
    pub path: String,
    /// Rows it inserted.
    pub rows: u64,
    /// When.
    pub imported_at: DateTime<Utc>,
}

/// A row to insert with the client's key for it, if it has one.
pub type KeyedTask = (Option<String>, TaskRow);

/// Inserts `rows` with one multi-row `INSERT ... ON CONFLICT DO NOTHING`
/// (callers keep it within [`Db::insert_batch_rows`]); returns the rows
/// inserted. A row whose `task_id` is already stored, or repeated earlier in
/// `rows`, is left out by the database's partial unique index on `task_id`:
/// the same statement a backend uses for a retry-safe write (docs/ingestion.md).
async fn insert_chunk<'a>(
    conn: &impl ConnectionTrait,
    rows: impl ExactSizeIterator<Item = (Option<&'a str>, &'a TaskRow)>,
) -> DbResult<u64> {
    if rows.len() == 0 {
        return Ok(0);
    }
    let mut stmt = Query::insert();
    stmt.into_table(Entity)
        // `columns` replaces rather than appends: one list.
        .columns(TASK_COLUMNS.into_iter().chain([Column::TaskId]))
        // No conflict target: it then covers the partial index on both
        // backends (a target would have to repeat the index's WHERE).
        .on_conflict(OnConflict::new().do_nothing().to_owned());
    for (key, r) in rows {
        let mut values = task_values(r)?;
        values.push(Expr::val(key.map(str::to_owned)));
        stmt.values(values)
            .map_err(|e| DbError::Invalid(e.to_string()))?;
    }
    let res = conn.execute(&stmt).await?;
    Ok(res.rows_affected())
}

/// Streams rows into `completed_tasks` inside one transaction, in batches of
/// [`Db::insert_batch_rows`]. Nothing is visible to others until [`TaskInserter::commit`];
/// dropping the inserter (or an error) rolls everything back.
pub struct TaskInserter {
    tx: DatabaseTransaction,
    buf: Vec<KeyedTask>,
    batch: usize,
    written: u64,
    offered: u64,
}

impl TaskInserter {
    /// Adds one row without a key, flushing a full batch to the database.
    pub async fn push(&mut self, row: TaskRow) -> DbResult<()> {
        self.push_keyed(None, row).await
    }

    /// Adds one row with the client's key for it (`None`: no key), flushing
    /// a full batch to the database. A row whose key is already stored is
    /// left out and counted by [`TaskInserter::duplicates`].
    pub async fn push_keyed(&mut self, task_id: Option<String>, row: TaskRow) -> DbResult<()> {
        self.offered += 1;
        self.buf.push((task_id, row));
        if self.buf.len() >= self.batch {
            self.flush().await?;
        }
        Ok(())
    }

    /// Adds many rows.
    pub async fn extend(&mut self, rows: impl IntoIterator<Item = TaskRow>) -> DbResult<()> {
        for r in rows {
            self.push(r).await?;
        }
        Ok(())
    }

    /// Adds many rows with their keys.
    pub async fn extend_keyed(
        &mut self,
        rows: impl IntoIterator<Item = KeyedTask>,
    ) -> DbResult<()> {
        for (k, r) in rows {
            self.push_keyed(k, r).await?;
        }
        Ok(())
    }

    /// Rows inserted so far (not counting the unflushed batch).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Rows left out so far because their `task_id` was already stored (not
    /// counting the unflushed batch).
    pub fn duplicates(&self) -> u64 {
        self.offered - self.buf.len() as u64 - self.written
    }

    async fn flush(&mut self) -> DbResult<()> {
        let rows = self.buf.iter().map(|(k, r)| (k.as_deref(), r));
        self.written += insert_chunk(&self.tx, rows).await?;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and commits; returns the rows inserted.
    pub async fn commit(mut self) -> DbResult<u64> {
        self.flush().await?;
        self.tx.commit().await?;
        Ok(self.written)
    }

    /// Writes what is buffered, records the file the rows came from in
    /// `imported_files` in the same transaction (so a file is recorded if
    /// and only if its rows are committed) and commits; returns the rows
    /// inserted. With `again` an earlier record of the same digest is
    /// replaced; without it a concurrent import of the same file fails here
    /// on the primary key instead of importing it twice.
    pub async fn commit_file(mut self, sha256: &str, path: &str, again: bool) -> DbResult<u64> {
        self.flush().await?;
        let record = imported_file::ActiveModel {
            sha256: Set(sha256.to_owned()),
            path: Set(path.to_owned()),
            rows: Set(super::to_i64("rows", self.written)?),
            imported_at: Set(Utc::now()),
        };
        let insert = imported_file::Entity::insert(record);
        let insert = if again {
            insert.on_conflict(
                OnConflict::column(imported_file::Column::Sha256)
                    .update_columns([
                        imported_file::Column::Path,
                        imported_file::Column::Rows,
                        imported_file::Column::ImportedAt,
                    ])
                    .to_owned(),
            )
        } else {
            insert
        };
        insert.exec_without_returning(&self.tx).await?;
        self.tx.commit().await?;
        Ok(self.written)
    }

    /// Discards everything inserted through this inserter.
    pub async fn rollback(self) -> DbResult<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// The keyset cursor: the sort key of the last row returned.
#[derive(Clone, Debug)]
pub(super) struct Cursor {
    user_id: String,
    completed_at: DateTime<Utc>,
    id: i64,
}

/// Pages through `completed_tasks` ordered by `(user_id, completed_at, id)`.
///
/// Each page is one query `WHERE (user_id, completed_at, id) > <last key>
/// ORDER BY user_id, completed_at, id LIMIT n`, served by the index on those
/// columns, so memory is one page and no connection is held between pages
/// (important on SQLite, whose pool has one connection). Rows inserted
/// during the scan with ids above `up_to_id` are never returned.
pub struct TaskPager {
    conn: DatabaseConnection,
    page_size: u64,
    up_to_id: Option<i64>,
    cursor: Option<Cursor>,
    done: bool,
}

/// One row of `completed_tasks` as selected by the scan.
type ScanTuple = (
    i64,
    String,
    Option<String>,
    String,
    String,
    bool,
    Option<f64>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// The training scan's columns and order, rows with `id <= up_to_id` (all
/// when `None`), after `cursor` when given.
pub(super) fn scan_query(up_to_id: Option<i64>, cursor: Option<&Cursor>) -> Select<Entity> {
    let mut q = Entity::find()
        .select_only()
        .column(Column::Id)
        .columns(TASK_COLUMNS)
        .order_by_asc(Column::UserId)
        .order_by_asc(Column::CompletedAt)
        .order_by_asc(Column::Id)
        .filter(first_of_its_key());
    if let Some(up) = up_to_id {
        q = q.filter(Column::Id.lte(up));
    }
    if let Some(c) = cursor {
        q = q.filter(after_key(&c.user_id, c.completed_at, c.id));
    }
    q
}

/// Keeps a row unless an earlier row (lower `id`) has the same `task_id`.
/// The unique index already refuses such rows; this keeps training right
/// on a `completed_tasks` the backend created where the index could not be
/// built, or was dropped. Cheap where it exists: one index probe per keyed row.
fn first_of_its_key() -> Expr {
    Expr::cust(
        r#"("completed_tasks"."task_id" IS NULL OR NOT EXISTS (SELECT 1 FROM "completed_tasks" AS "dup" WHERE "dup"."task_id" = "completed_tasks"."task_id" AND "dup"."id" < "completed_tasks"."id"))"#,
    )
}

/// Rows after `(user_id, completed_at, id)` in the scans' order (keyset
/// paging). A row-value comparison keeps this a single index range scan on
/// both PostgreSQL and SQLite (>= 3.15).
pub(super) fn after_key(user_id: &str, completed_at: DateTime<Utc>, id: i64) -> Expr {
    Expr::tuple([
        Expr::col((Entity, Column::UserId)),
        Expr::col((Entity, Column::CompletedAt)),
        Expr::col((Entity, Column::Id)),
    ])
    .gt(Expr::tuple([
        Expr::val(user_id.to_string()),
        Expr::val(completed_at),
        Expr::val(id),
    ]))
}

/// Runs one page of a [`scan_query`]: its rows, and the cursor after the
/// last of them (`None` when the page is empty).
pub(super) async fn fetch_page(
    conn: &DatabaseConnection,
    q: Select<Entity>,
    page_size: u64,
) -> DbResult<(Vec<(i64, TaskRow)>, Option<Cursor>)> {
    let rows: Vec<ScanTuple> = q.limit(page_size).into_tuple().all(conn).await?;
    let cursor = rows
        .last()
        .map(|(id, user_id, _, _, _, _, _, completed_at, _)| Cursor {
            user_id: user_id.clone(),
            completed_at: *completed_at,
            id: *id,
        });
    let page = rows
        .into_iter()
        .map(
            |(id, user_id, item_id, topic, difficulty, correct, seconds, at, started)| {
                (
                    id,
                    TaskRow {
                        user_id,
                        item_id,
                        topic,
                        difficulty,
                        correct,
                        seconds,
                        completed_at_ms: at.timestamp_millis(),
                        started_at_ms: started.map(|t| t.timestamp_millis()),
                    },
                )
            },
        )
        .collect();
    Ok((page, cursor))
}

impl TaskPager {
    /// The next page of `(id, row)`, or `None` when the scan is over.
    pub async fn next_page(&mut self) -> DbResult<Option<Vec<(i64, TaskRow)>>> {
        if self.done {
            return Ok(None);
        }
        let q = scan_query(self.up_to_id, self.cursor.as_ref());
        let (page, cursor) = fetch_page(&self.conn, q, self.page_size).await?;
        if (page.len() as u64) < self.page_size {
            self.done = true;
        }
        if page.is_empty() {
            return Ok(None);
        }
        self.cursor = cursor;
        Ok(Some(page))
    }

    /// The scan as a stream of single rows (still fetched a page at a time).
    pub fn into_stream(self) -> impl Stream<Item = DbResult<(i64, TaskRow)>> + Send {
        use futures::StreamExt;
        futures::stream::try_unfold(self, |mut pager| async move {
            Ok(pager
                .next_page()
                .await?
                .map(|page| (futures::stream::iter(page.into_iter().map(Ok)), pager)))
        })
        .flat_map(|r| match r {
            Ok(s) => s.left_stream(),
            Err(e) => futures::stream::once(async move { Err(e) }).right_stream(),
        })
    }
}

impl Db {
    /// Inserts rows in one transaction, as multi-row `INSERT`s of
    /// [`Db::insert_batch_rows`]; all or nothing. Returns the rows inserted.
    pub async fn insert_tasks(&self, rows: &[TaskRow]) -> DbResult<u64> {
        let tx = self.conn.begin().await?;
        let mut n = 0;
        for chunk in rows.chunks(self.insert_batch_rows()) {
            n += insert_chunk(&tx, chunk.iter().map(|r| (None, r))).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Starts a streaming all-or-nothing insert (used by the CSV import).
    ///
    /// On SQLite the transaction holds the only pooled connection until it
    /// commits or is dropped: do not run other queries on this `Db` meanwhile.
    pub async fn task_inserter(&self) -> DbResult<TaskInserter> {
        Ok(TaskInserter {
            tx: self.conn.begin().await?,
            buf: Vec::with_capacity(self.insert_batch_rows()),
            batch: self.insert_batch_rows(),
            written: 0,
            offered: 0,
        })
    }

    /// The record of an earlier import of the file with this sha256 (hex).
    pub async fn imported_file(&self, sha256: &str) -> DbResult<Option<ImportedFile>> {
        Ok(imported_file::Entity::find_by_id(sha256.to_owned())
            .one(&self.conn)
            .await?
            .map(|m| ImportedFile {
                sha256: m.sha256,
                path: m.path,
                rows: u64::try_from(m.rows).unwrap_or(0),
                imported_at: m.imported_at,
            }))
    }

    /// Number of rows in `completed_tasks`.
    pub async fn count_tasks(&self) -> DbResult<u64> {
        Ok(Entity::find().count(&self.conn).await?)
    }

    /// Highest `completed_tasks.id`, `None` when the table is empty.
    pub async fn max_task_id(&self) -> DbResult<Option<i64>> {
        let max: Option<Option<i64>> = Entity::find()
            .select_only()
            .column_as(Column::Id.max(), "max_id")
            .into_tuple()
            .one(&self.conn)
            .await?;
        Ok(max.flatten())
    }

    /// Rows with `id > after` (arrived since the watermark `after`).
    pub async fn count_tasks_after(&self, after: i64) -> DbResult<u64> {
        Ok(Entity::find()
            .filter(Column::Id.gt(after))
            .count(&self.conn)
            .await?)
    }

    /// Pages through all rows (or those with `id <= up_to_id`) in
    /// `(user_id, completed_at, id)` order, `page_size` rows per query.
    /// `page_size` 0 is taken as 1.
    pub fn scan_tasks(&self, page_size: u64, up_to_id: Option<i64>) -> TaskPager {
        TaskPager {
            conn: self.conn.clone(),
            page_size: std::cmp::max(page_size, 1),
            up_to_id,
            cursor: None,
            done: false,
        }
    }
}

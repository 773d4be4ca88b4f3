//! Training data sources: anything that yields one learner's attempts at a
//! time, in order ([`LearnerSource`]): the database (paged, learner by
//! learner), a CSV file read into memory (the offline commands), or rows in
//! memory.

use std::path::Path;

use taskcast_contract::TaskRow;

use crate::data::csv::{CsvError, CsvSource, RowSummary, TsUnit};
use crate::db::Db;

/// Something that yields learners' attempts, one learner at a time, each in
/// chronological order. Called once per pass.
#[allow(async_fn_in_trait)]
pub trait LearnerSource {
    /// Calls `visit` with each learner's attempts, in order.
    async fn for_each_learner(
        &mut self,
        visit: &mut (dyn FnMut(&[TaskRow]) + Send),
    ) -> Result<(), SourceError>;
}

/// A source failed mid-pass.
#[derive(Debug, thiserror::Error)]
#[error("reading training data: {0}")]
pub struct SourceError(pub String);

/// An in-memory source: rows grouped by learner, keeping their order within a
/// learner (a stable sort, so CSV row order breaks timestamp ties).
pub struct MemorySource {
    rows: Vec<TaskRow>,
}

impl MemorySource {
    /// Groups `rows` by learner, ordered by time within each.
    pub fn new(mut rows: Vec<TaskRow>) -> Self {
        rows.sort_by(|a, b| {
            a.user_id
                .cmp(&b.user_id)
                .then(a.completed_at_ms.cmp(&b.completed_at_ms))
        });
        Self { rows }
    }

    /// The rows, grouped.
    pub fn rows(&self) -> &[TaskRow] {
        &self.rows
    }
}

impl LearnerSource for MemorySource {
    async fn for_each_learner(
        &mut self,
        visit: &mut (dyn FnMut(&[TaskRow]) + Send),
    ) -> Result<(), SourceError> {
        for group in self.rows.chunk_by(|a, b| a.user_id == b.user_id) {
            visit(group);
        }
        Ok(())
    }
}

/// Rows per database page: large enough to amortise a query, small enough
/// that a page is a few MB.
pub const PAGE_SIZE: u64 = 5_000;

/// `completed_tasks` read page by page in learner order, up to a fixed id so
/// both passes of a run see the same snapshot.
pub struct DbSource {
    db: Db,
    up_to_id: Option<i64>,
}

impl DbSource {
    /// Reads rows with `id <= up_to_id` (all rows when `None`).
    pub fn new(db: Db, up_to_id: Option<i64>) -> Self {
        DbSource { db, up_to_id }
    }
}

impl LearnerSource for DbSource {
    async fn for_each_learner(
        &mut self,
        visit: &mut (dyn FnMut(&[TaskRow]) + Send),
    ) -> Result<(), SourceError> {
        let mut pager = self.db.scan_tasks(PAGE_SIZE, self.up_to_id);
        let mut learner: Vec<TaskRow> = Vec::new();
        while let Some(page) = pager
            .next_page()
            .await
            .map_err(|e| SourceError(e.to_string()))?
        {
            for (_, row) in page {
                if learner.last().is_some_and(|r| r.user_id != row.user_id) {
                    visit(&learner);
                    learner.clear();
                }
                learner.push(row);
            }
        }
        if !learner.is_empty() {
            visit(&learner);
        }
        Ok(())
    }
}

/// A CSV file read leniently into memory: bad rows are skipped and counted
/// by reason (the offline commands report them), rows grouped by learner.
pub struct CsvFile {
    /// The rows, grouped by learner.
    pub source: MemorySource,
    /// Rows read, used, and skipped by reason with their first line numbers.
    pub summary: RowSummary,
}

/// Loads `path` (plain or gzip CSV), numbers in `ts` as Unix seconds.
pub fn load_csv(path: &Path) -> Result<CsvFile, CsvError> {
    load_csv_with(path, TsUnit::S)
}

/// Loads `path` (plain or gzip CSV), numbers in `ts` counting `ts_unit`.
pub fn load_csv_with(path: &Path, ts_unit: TsUnit) -> Result<CsvFile, CsvError> {
    let mut csv = CsvSource::open(path)?.lenient().ts_unit(ts_unit);
    let mut rows = Vec::new();
    for item in csv.by_ref() {
        let (_, row) = item?;
        rows.push(row);
    }
    Ok(CsvFile {
        summary: csv.into_summary(),
        source: MemorySource::new(rows),
    })
}

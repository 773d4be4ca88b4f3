//! The trainer's training-data sources: `completed_tasks` read page by page
//! in learner order ([`DbSource`]), and a CSV file read leniently into memory
//! ([`load_csv`]) for the offline commands. Both yield rows through the
//! learning crate's [`LearnerSource`].

use std::path::Path;

use taskcast_contract::TaskRow;
use taskcast_learn::budget::LearnerCut;
use taskcast_learn::source::{LearnerSource, MemorySource, SourceError};

use crate::data::csv::{CsvError, CsvSource, RowSummary, TsUnit};
use crate::db::{Db, SelectedPager, TaskPager};

/// Rows per database page: large enough to amortise a query, small enough
/// that a page is a few MB.
pub const PAGE_SIZE: u64 = 5_000;

/// `completed_tasks` read page by page in learner order, up to a fixed id so
/// both passes of a run see the same snapshot, and within a training budget
/// ([`taskcast_learn::budget`]) when one is set.
pub struct DbSource {
    db: Db,
    up_to_id: Option<i64>,
    max_rows: u64,
    /// The budget's cut, found on the first pass and kept, so both passes
    /// read the same learners: `Some(None)` when the budget does not bind.
    cut: Option<Option<LearnerCut>>,
}

impl DbSource {
    /// Reads rows with `id <= up_to_id` (all rows when `None`).
    pub fn new(db: Db, up_to_id: Option<i64>) -> Self {
        DbSource {
            db,
            up_to_id,
            max_rows: 0,
            cut: None,
        }
    }

    /// Reads only the learners a budget of `max_rows` takes (0: no budget).
    pub fn with_budget(mut self, max_rows: u64) -> Self {
        self.max_rows = max_rows;
        self.cut = None;
        self
    }

    /// The budget's cut, querying it on first use; `None` when every
    /// learner is read.
    pub async fn cut(&mut self) -> Result<Option<&LearnerCut>, SourceError> {
        if self.cut.is_none() {
            let cut = self
                .db
                .training_cut(self.max_rows, self.up_to_id)
                .await
                .map_err(|e| SourceError(e.to_string()))?;
            self.cut = Some(cut);
        }
        Ok(self.cut.as_ref().and_then(Option::as_ref))
    }
}

/// Either scan of `completed_tasks`: every row, or a budget's learners.
enum Pager {
    All(TaskPager),
    Selected(SelectedPager),
}

impl Pager {
    async fn next_page(&mut self) -> Result<Option<Vec<(i64, TaskRow)>>, SourceError> {
        match self {
            Pager::All(p) => p.next_page().await,
            Pager::Selected(p) => p.next_page().await,
        }
        .map_err(|e| SourceError(e.to_string()))
    }
}

impl LearnerSource for DbSource {
    async fn for_each_learner(
        &mut self,
        visit: &mut (dyn FnMut(&[TaskRow]) + Send),
    ) -> Result<(), SourceError> {
        let mut pager = match self.cut().await?.cloned() {
            Some(cut) => Pager::Selected(
                self.db
                    .scan_selected(PAGE_SIZE, self.up_to_id, &cut)
                    .map_err(|e| SourceError(e.to_string()))?,
            ),
            None => Pager::All(self.db.scan_tasks(PAGE_SIZE, self.up_to_id)),
        };
        let mut learner: Vec<TaskRow> = Vec::new();
        while let Some(page) = pager.next_page().await? {
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
    // Packed as read: the file's rows as `TaskRow`s would outweigh their features.
    let source = csv
        .by_ref()
        .map(|item| item.map(|(_, row)| row))
        .collect::<Result<MemorySource, CsvError>>()?;
    Ok(CsvFile {
        summary: csv.into_summary(),
        source,
    })
}

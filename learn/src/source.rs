//! Where training rows come from, as the learning code sees it: anything
//! that yields one learner's attempts at a time, in order
//! ([`LearnerSource`]). The trainer implements it over its database (paged,
//! learner by learner); [`MemorySource`] holds rows in memory (a CSV file,
//! tests, the simulator).

use taskcast_contract::TaskRow;

use crate::budget;

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

    /// Keeps only the learners a training budget of `max_rows` takes
    /// ([`budget::select_recent`]; 0: all).
    pub fn with_budget(self, max_rows: u64) -> Self {
        MemorySource {
            rows: budget::select_recent(self.rows, max_rows),
        }
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

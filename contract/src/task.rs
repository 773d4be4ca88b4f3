//! One completed task as the trainer reads it, whatever the source (database
//! table, CSV file or simulator): here rather than in the trainer so that the
//! simulator, and the load generator and tests on top of it, need no trainer.

/// One completed task, in the shape of the `completed_tasks` contract table.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRow {
    /// The learner.
    pub user_id: String,
    /// The exercise, when the app has one.
    pub item_id: Option<String>,
    /// Topic (skill) label.
    pub topic: String,
    /// The app's difficulty label; empty when unknown (derived from item statistics).
    pub difficulty: String,
    /// Whether the first answer was correct.
    pub correct: bool,
    /// Seconds taken; `None` when not recorded.
    pub seconds: Option<f64>,
    /// Completion time as Unix milliseconds; only the order within a learner matters
    /// (a CSV `ts` column of row numbers is read as seconds 0, 1, 2…).
    pub completed_at_ms: i64,
    /// When the task was handed out, as Unix milliseconds, if the app
    /// recorded it: the moment it would have called Predict. The only "now"
    /// a training row may see besides its history (the feature module's
    /// docs say why a completion time must not be used).
    pub started_at_ms: Option<i64>,
}

/// Why a row cannot be used for training. Such rows are skipped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowProblem {
    /// `user_id` is empty.
    EmptyUser,
    /// `topic` is empty.
    EmptyTopic,
    /// `seconds` is negative, NaN or infinite.
    BadSeconds,
}

impl TaskRow {
    /// Checks the row against what training needs.
    pub fn problem(&self) -> Option<RowProblem> {
        if self.user_id.trim().is_empty() {
            return Some(RowProblem::EmptyUser);
        }
        if self.topic.trim().is_empty() {
            return Some(RowProblem::EmptyTopic);
        }
        if let Some(s) = self.seconds
            && (!s.is_finite() || s < 0.0)
        {
            return Some(RowProblem::BadSeconds);
        }
        None
    }
}

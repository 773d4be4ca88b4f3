//! Where training rows come from, as the learning code sees it: anything
//! that yields one learner's attempts at a time, in order
//! ([`LearnerSource`]). The trainer implements it over its database (paged,
//! learner by learner); [`MemorySource`] holds rows in memory (a CSV file,
//! tests, the simulator).

use taskcast_contract::TaskRow;

use crate::budget;
use crate::vocab::Vocab;

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
///
/// The rows are kept packed: each distinct label (learner, topic,
/// difficulty, item) once, a row as indices into them, and a learner's
/// [`TaskRow`]s made only while that learner is visited. A `TaskRow` holds
/// four strings: by arithmetic about 270 bytes a row (144 for the struct and
/// four small heap blocks); packed it is 64 (checked below). A CSV file's rows stay in memory until they are featurised, beside the
/// features, and at 1 M rows they were the `train` command's peak (issue 29).
pub struct MemorySource {
    /// Every label of every kind, interned once.
    vocab: Vocab,
    rows: Vec<Packed>,
}

/// A [`TaskRow`] with its strings interned in the source's vocabulary.
#[derive(Clone, Copy)]
struct Packed {
    user: u32,
    topic: u32,
    difficulty: u32,
    item: Option<u32>,
    correct: bool,
    seconds: Option<f64>,
    completed_at_ms: i64,
    started_at_ms: Option<i64>,
}

// The size the type's docs give a packed row.
const _: () = assert!(std::mem::size_of::<Packed>() == 64);

impl MemorySource {
    /// Groups `rows` by learner, ordered by time within each.
    pub fn new(rows: Vec<TaskRow>) -> Self {
        rows.into_iter().collect()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, grouped, as [`TaskRow`]s (a copy: the source keeps them packed).
    pub fn task_rows(&self) -> Vec<TaskRow> {
        self.rows.iter().map(|p| self.unpack(p)).collect()
    }

    /// Keeps only the learners a training budget of `max_rows` takes
    /// ([`budget::select_recent`]; 0: all).
    pub fn with_budget(self, max_rows: u64) -> Self {
        let labels = &self.vocab.labels;
        let rows = budget::select_recent_by(self.rows, max_rows, |r| {
            (labels[r.user as usize].as_str(), r.completed_at_ms)
        });
        MemorySource {
            vocab: self.vocab,
            rows,
        }
    }

    fn pack(&mut self, r: TaskRow) -> Packed {
        Packed {
            user: self.vocab.id(&r.user_id),
            topic: self.vocab.id(&r.topic),
            difficulty: self.vocab.id(&r.difficulty),
            item: r.item_id.map(|i| self.vocab.id(&i)),
            correct: r.correct,
            seconds: r.seconds,
            completed_at_ms: r.completed_at_ms,
            started_at_ms: r.started_at_ms,
        }
    }

    fn unpack(&self, p: &Packed) -> TaskRow {
        let name = |id: u32| self.vocab.labels[id as usize].clone();
        TaskRow {
            user_id: name(p.user),
            item_id: p.item.map(name),
            topic: name(p.topic),
            difficulty: name(p.difficulty),
            correct: p.correct,
            seconds: p.seconds,
            completed_at_ms: p.completed_at_ms,
            started_at_ms: p.started_at_ms,
        }
    }
}

impl FromIterator<TaskRow> for MemorySource {
    /// Packs the rows as they come, then groups them by learner, ordered by
    /// time within each.
    fn from_iter<I: IntoIterator<Item = TaskRow>>(rows: I) -> Self {
        let mut source = MemorySource {
            vocab: Vocab::new(),
            rows: Vec::new(),
        };
        for r in rows {
            let p = source.pack(r);
            source.rows.push(p);
        }
        let labels = &source.vocab.labels;
        source.rows.sort_by(|a, b| {
            labels[a.user as usize]
                .cmp(&labels[b.user as usize])
                .then(a.completed_at_ms.cmp(&b.completed_at_ms))
        });
        source
    }
}

impl LearnerSource for MemorySource {
    async fn for_each_learner(
        &mut self,
        visit: &mut (dyn FnMut(&[TaskRow]) + Send),
    ) -> Result<(), SourceError> {
        let mut learner = Vec::new();
        for group in self.rows.chunk_by(|a, b| a.user == b.user) {
            learner.clear();
            learner.extend(group.iter().map(|p| self.unpack(p)));
            visit(&learner);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, item: Option<&str>, at: i64, seconds: Option<f64>) -> TaskRow {
        TaskRow {
            user_id: user.into(),
            item_id: item.map(str::to_string),
            topic: format!("topic-{}", at % 3),
            difficulty: if at % 2 == 0 {
                "hard".into()
            } else {
                String::new()
            },
            correct: at % 3 != 0,
            seconds,
            completed_at_ms: at,
            started_at_ms: (at > 4).then_some(at - 1),
        }
    }

    /// Learners interleaved and out of time order, an item absent and an
    /// item empty (not the same thing), a time missing, a timestamp tie.
    fn rows() -> Vec<TaskRow> {
        vec![
            row("b", Some("i1"), 9, Some(4.5)),
            row("a", None, 7, None),
            row("b", Some(""), 2, Some(1.0)),
            row("c", Some("i1"), 5, Some(2.0)),
            row("a", Some("i2"), 3, Some(8.25)),
            row("a", Some("i3"), 7, Some(3.0)),
        ]
    }

    /// What the source held as `TaskRow`s before it packed them: a stable
    /// sort by learner, then time.
    fn grouped(mut rows: Vec<TaskRow>) -> Vec<TaskRow> {
        rows.sort_by(|a, b| {
            a.user_id
                .cmp(&b.user_id)
                .then(a.completed_at_ms.cmp(&b.completed_at_ms))
        });
        rows
    }

    #[test]
    fn packed_rows_come_back_as_they_went_in_grouped() {
        let source = MemorySource::new(rows());
        assert_eq!(source.len(), 6);
        assert_eq!(source.task_rows(), grouped(rows()));
    }

    #[tokio::test]
    async fn learners_are_visited_whole_and_in_order() {
        let mut source = MemorySource::new(rows());
        let mut seen = Vec::new();
        source
            .for_each_learner(&mut |learner| seen.push(learner.to_vec()))
            .await
            .unwrap();
        let want: Vec<Vec<TaskRow>> = grouped(rows())
            .chunk_by(|a, b| a.user_id == b.user_id)
            .map(<[TaskRow]>::to_vec)
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn the_budget_takes_what_it_takes_of_task_rows() {
        for max_rows in [0, 1, 2, 3, 4, 6] {
            let kept = MemorySource::new(rows()).with_budget(max_rows);
            assert_eq!(
                kept.task_rows(),
                budget::select_recent(grouped(rows()), max_rows),
                "budget {max_rows}"
            );
        }
    }
}

//! Model-ready rows: one side of the split as columns (features, outcome,
//! seconds, vocabulary indices), kept compact because a training run holds
//! every row at once (issue 29), and the key tables that turn a row's
//! indices back into label keys.

use std::sync::Arc;

use taskcast_contract::features::{label_key, log_time};
use taskcast_contract::{FEATURE_COUNT, RowKeys};

use super::baselines::Baselines;
use crate::vocab::Vocab;

/// The recorded seconds of each row, `None` where none was recorded: f64
/// with NaN for `None`, 8 bytes a row where `Option<f64>` takes 16 (issue
/// 29: at 1 M rows, 8 MB of the training peak). Only positive times are
/// stored ([`Seconds::push`]), so NaN is never a recorded time.
#[derive(Clone, Debug, Default)]
pub struct Seconds(Vec<f64>);

impl Seconds {
    /// Room for `n` rows.
    pub fn with_capacity(n: usize) -> Seconds {
        Seconds(Vec::with_capacity(n))
    }

    /// Appends a row's time: kept only when positive (NaN is not).
    pub fn push(&mut self, seconds: Option<f64>) {
        self.0
            .push(seconds.filter(|s| *s > 0.0).unwrap_or(f64::NAN));
    }

    /// Row `i`'s recorded time.
    pub fn get(&self, i: usize) -> Option<f64> {
        Some(self.0[i]).filter(|s| !s.is_nan())
    }

    /// The first `n` rows' times.
    pub fn head(&self, n: usize) -> Seconds {
        Seconds(self.0[..n].to_vec())
    }

    /// Appends every row of `other`.
    pub fn extend_from(&mut self, other: &Seconds) {
        self.0.extend_from_slice(&other.0);
    }
}

/// Model-ready rows of one side of the split.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    /// Row-major `[len, FEATURE_COUNT]` features.
    pub x: Vec<f32>,
    /// Outcome.
    pub correct: Vec<bool>,
    /// Recorded seconds (`None` when not recorded).
    pub seconds: Seconds,
    /// Learner index into [`Dataset::users`].
    pub user: Vec<u32>,
    /// Topic index into [`Dataset::topics`].
    pub topic: Vec<u32>,
    /// Effective difficulty index into [`Dataset::difficulties`] (0 = none).
    pub difficulty: Vec<u32>,
    /// Item index into [`Dataset::items`] (0 = none).
    pub item: Vec<u32>,
    /// The label keys of the indices above, for a model's index inputs
    /// ([`Rows::key`]): one table per vocabulary, shared by both sides of
    /// a dataset, instead of 32 bytes of keys on every row.
    pub key_tables: Arc<KeyTables>,
    /// Baselines' predictions (hold-out only): see [`Baselines`].
    pub baselines: Baselines,
}

impl Rows {
    /// No rows, with room for `n` (and their baselines' predictions when
    /// `holdout`): vectors grown by doubling would hold up to twice what
    /// they need, and three times while one is copied.
    pub(super) fn with_capacity(n: usize, holdout: bool) -> Rows {
        let b = if holdout { n } else { 0 };
        Rows {
            x: Vec::with_capacity(n * FEATURE_COUNT),
            correct: Vec::with_capacity(n),
            seconds: Seconds::with_capacity(n),
            user: Vec::with_capacity(n),
            topic: Vec::with_capacity(n),
            difficulty: Vec::with_capacity(n),
            item: Vec::with_capacity(n),
            key_tables: Arc::default(),
            baselines: Baselines {
                population: Vec::with_capacity(b),
                learner: Vec::with_capacity(b),
                topic: Vec::with_capacity(b),
            },
        }
    }

    /// The training rows of several datasets as one set, for a model fitted
    /// across apps (`trainer-svc pretrain`): learner, topic, difficulty and
    /// item indices are offset by the vocabularies before them, so that
    /// datasets stay apart and every row keeps its own label keys; baselines
    /// are left empty.
    pub fn pooled<'a>(parts: impl IntoIterator<Item = &'a Rows> + Clone) -> Rows {
        let n = parts.clone().into_iter().map(Rows::len).sum();
        let mut all = Rows::with_capacity(n, false);
        let mut tables = KeyTables::default();
        for r in parts {
            // Each part's index 0 (key 0, "none") lands on its own first
            // entry, whose key is 0 too.
            let offsets = [
                &tables.user,
                &tables.topic,
                &tables.difficulty,
                &tables.item,
            ]
            .map(|t| t.len() as u32);
            all.x.extend_from_slice(&r.x);
            all.correct.extend_from_slice(&r.correct);
            all.seconds.extend_from(&r.seconds);
            all.user.extend(r.user.iter().map(|u| u + offsets[0]));
            all.topic.extend(r.topic.iter().map(|u| u + offsets[1]));
            all.difficulty
                .extend(r.difficulty.iter().map(|u| u + offsets[2]));
            all.item.extend(r.item.iter().map(|u| u + offsets[3]));
            tables.append(&r.key_tables);
        }
        all.key_tables = Arc::new(tables);
        all
    }

    /// Row `i`'s label keys.
    pub fn key(&self, i: usize) -> RowKeys {
        let t = &self.key_tables;
        let at = |table: &[u64], id: u32| table.get(id as usize).copied().unwrap_or(0);
        RowKeys {
            user: at(&t.user, self.user[i]),
            topic: at(&t.topic, self.topic[i]),
            difficulty: at(&t.difficulty, self.difficulty[i]),
            item: at(&t.item, self.item[i]),
        }
    }

    /// Every row's label keys, in row order (what a model run takes).
    pub fn keys(&self) -> Vec<RowKeys> {
        (0..self.len()).map(|i| self.key(i)).collect()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.correct.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.correct.is_empty()
    }

    /// Row `i`'s features.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * FEATURE_COUNT..(i + 1) * FEATURE_COUNT]
    }

    /// Training target for time: the capped log-seconds of the feature code.
    pub fn log_time(&self, i: usize) -> Option<f64> {
        log_time(self.seconds.get(i))
    }

    /// Rows with a usable time (what
    /// [`TimeSupport`](crate::time_support::TimeSupport) counts).
    pub fn timed(&self) -> usize {
        (0..self.len())
            .filter(|&i| self.log_time(i).is_some())
            .count()
    }
}

/// The label key ([`label_key`]) of every vocabulary entry, by index: what
/// turns a row's indices back into the keys a model's index inputs look up.
/// Index 0, the empty label, has key 0 ("none") in every table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyTables {
    /// Learner keys.
    pub user: Vec<u64>,
    /// Topic keys.
    pub topic: Vec<u64>,
    /// Effective difficulty keys.
    pub difficulty: Vec<u64>,
    /// Item keys.
    pub item: Vec<u64>,
}

impl KeyTables {
    /// The tables of a dataset's vocabularies.
    pub(super) fn of(
        users: &Vocab,
        topics: &Vocab,
        difficulties: &Vocab,
        items: &Vocab,
    ) -> KeyTables {
        let keys = |v: &Vocab| v.labels.iter().map(|l| label_key(l)).collect();
        KeyTables {
            user: keys(users),
            topic: keys(topics),
            difficulty: keys(difficulties),
            item: keys(items),
        }
    }

    fn append(&mut self, other: &KeyTables) {
        for (mine, theirs) in [
            (&mut self.user, &other.user),
            (&mut self.topic, &other.topic),
            (&mut self.difficulty, &other.difficulty),
            (&mut self.item, &other.item),
        ] {
            mine.extend_from_slice(theirs);
        }
    }
}

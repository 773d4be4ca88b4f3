//! The training budget: at most about this many rows are read and
//! featurised per run, whatever the table holds, so a run's time and memory
//! have a ceiling.
//!
//! **Which rows.** Whole histories of the most recently active learners:
//! learners are ordered by their latest `completed_at` (newest first; ties
//! by `user_id`, highest first) and taken while the learners before them
//! hold fewer than the budget's rows. A run therefore reads at most
//! `budget + (longest history − 1)` rows, and every learner it reads comes
//! with all of its attempts.
//!
//! Why whole histories rather than every learner's rows after a date: a
//! row's features summarise the learner's earlier attempts, so a history cut
//! at a date would featurise its first kept attempt as a newcomer's, and the
//! model would learn from rows that serving never produces. Why the most
//! recently active learners: they are the ones requests come for, the
//! hold-out (the end of each kept history) is the most recent behaviour, and
//! the priors (topic, difficulty, item rates) follow the current catalogue.
//!
//! The database applies the rule in SQL (`Db::training_cut` finds the last
//! learner taken; the scan keeps learners at or above it); [`select_recent`]
//! applies the same rule to rows in memory (`train` / `eval` on a CSV).

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use taskcast_contract::TaskRow;

/// The last learner a budget takes, in the order learners are taken (latest
/// attempt newest first, then `user_id` highest first): a learner is read iff
/// `(its latest completed_at, user_id) >= (last_completed_at_ms, user_id)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnerCut {
    /// That learner's latest `completed_at`, Unix milliseconds.
    pub last_completed_at_ms: i64,
    /// That learner.
    pub user_id: String,
}

impl LearnerCut {
    /// Whether a learner whose latest attempt was at `last_ms` is taken.
    pub fn takes(&self, last_ms: i64, user_id: &str) -> bool {
        (last_ms, user_id) >= (self.last_completed_at_ms, self.user_id.as_str())
    }
}

/// Default budget: 1.5 million rows. A `linear` run peaks in its logistic
/// fit, at about 300 bytes per row read (the features and labels, and the
/// fit's f32 design matrix): a startup run on a 10 M-row table with this
/// budget peaked at 499 MiB (BENCHMARKS.md, "Training memory, second step";
/// 1.04–1.11 GB when the budget was set, with f64 matrices), under the 2 GiB
/// the Kubernetes manifests give the trainer. The hold-out cost is nil at
/// that size: on 1 M simulated rows, models trained on the most recent 250 k
/// rows scored within 0.001 AUC of models trained on all of them, on the same
/// hold-out (BENCHMARKS.md, "Scale").
pub const DEFAULT_MAX_TRAINING_ROWS: u64 = 1_500_000;

/// The cut for learners given as `(user_id, latest completed_at ms, rows)`,
/// in any order; `None` when they hold at most `max_rows` rows together (or
/// `max_rows` is 0, no budget), so every learner is taken.
pub fn cut<'a>(
    learners: impl IntoIterator<Item = (&'a str, i64, u64)>,
    max_rows: u64,
) -> Option<LearnerCut> {
    if max_rows == 0 {
        return None;
    }
    let mut all: Vec<(&str, i64, u64)> = learners.into_iter().collect();
    if all.iter().map(|l| l.2).sum::<u64>() <= max_rows {
        return None;
    }
    all.sort_unstable_by_key(|&(user, last, _)| Reverse((last, user)));
    let mut before = 0u64;
    let mut last_taken = None;
    for (user, last, n) in all {
        if before >= max_rows {
            break;
        }
        before += n;
        last_taken = Some(LearnerCut {
            last_completed_at_ms: last,
            user_id: user.to_string(),
        });
    }
    last_taken
}

/// `rows` (grouped by learner, as [`MemorySource`](crate::source::MemorySource)
/// keeps them, or in any order) without the learners a budget of `max_rows`
/// leaves out; order is kept.
pub fn select_recent(rows: Vec<TaskRow>, max_rows: u64) -> Vec<TaskRow> {
    select_recent_by(rows, max_rows, |r| (r.user_id.clone(), r.completed_at_ms))
}

/// [`select_recent`] for rows of any shape: `learner` gives a row's learner
/// (`user_id`, or anything that reads as it) and `completed_at` (Unix
/// milliseconds).
pub fn select_recent_by<R, K>(
    rows: Vec<R>,
    max_rows: u64,
    learner: impl Fn(&R) -> (K, i64),
) -> Vec<R>
where
    K: AsRef<str> + Clone + Eq + Hash,
{
    let mut learners: HashMap<K, (i64, u64)> = HashMap::new();
    for r in &rows {
        let (user, at) = learner(r);
        let e = learners.entry(user).or_insert((at, 0));
        e.0 = e.0.max(at);
        e.1 += 1;
    }
    let Some(cut) = cut(
        learners
            .iter()
            .map(|(u, (last, n))| (u.as_ref(), *last, *n)),
        max_rows,
    ) else {
        return rows;
    };
    let taken: HashSet<K> = learners
        .into_iter()
        .filter(|(u, (last, _))| cut.takes(*last, u.as_ref()))
        .map(|(u, _)| u)
        .collect();
    rows.into_iter()
        .filter(|r| taken.contains(&learner(r).0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, at: i64) -> TaskRow {
        TaskRow {
            user_id: user.into(),
            item_id: None,
            topic: "t".into(),
            difficulty: String::new(),
            correct: true,
            seconds: None,
            completed_at_ms: at,
            started_at_ms: None,
        }
    }

    #[test]
    fn no_budget_or_a_large_one_takes_everyone() {
        let learners = [("a", 5, 3), ("b", 9, 4)];
        assert_eq!(cut(learners, 0), None);
        assert_eq!(cut(learners, 7), None);
        assert_eq!(cut(learners, 100), None);
    }

    #[test]
    fn whole_learners_newest_first_until_the_budget_is_reached() {
        // Newest first: d (30), b (20), c (10), a (5).
        let learners = [("a", 5, 3), ("b", 20, 4), ("c", 10, 2), ("d", 30, 1)];
        // d (1) < 4, so b is taken too (1 + 4 = 5 rows, one learner over).
        let c = cut(learners, 4).expect("binding");
        assert_eq!(c.user_id, "b");
        assert!(c.takes(30, "d") && c.takes(20, "b"));
        assert!(!c.takes(10, "c") && !c.takes(5, "a"));
        // Exactly reached after b: c is not taken.
        assert_eq!(cut(learners, 5).map(|c| c.user_id), Some("b".into()));
        assert_eq!(cut(learners, 6).map(|c| c.user_id), Some("c".into()));
        // A budget smaller than the newest learner still takes that learner.
        assert_eq!(cut(learners, 1).map(|c| c.user_id), Some("d".into()));
    }

    #[test]
    fn ties_on_time_go_to_the_higher_user_id() {
        let learners = [("x", 7, 2), ("y", 7, 2), ("z", 1, 2)];
        let c = cut(learners, 2).expect("binding");
        assert_eq!(c.user_id, "y");
        assert!(c.takes(7, "y") && !c.takes(7, "x"));
    }

    #[test]
    fn select_recent_keeps_whole_histories_in_order() {
        let rows = vec![
            row("a", 1),
            row("a", 2),
            row("a", 50),
            row("b", 3),
            row("b", 4),
            row("c", 10),
            row("c", 20),
        ];
        // Newest: a (50, 3 rows), then c (20), then b (4).
        let kept = select_recent(rows.clone(), 3);
        assert_eq!(kept, rows[..3].to_vec());
        let kept = select_recent(rows.clone(), 4);
        let users: Vec<&str> = kept.iter().map(|r| r.user_id.as_str()).collect();
        assert_eq!(users, ["a", "a", "a", "c", "c"]);
        assert_eq!(select_recent(rows.clone(), 0), rows);
        assert_eq!(select_recent(rows.clone(), 7), rows);
    }
}

//! Pass 1, counting: every learner's attempts split chronologically into
//! training and hold-out, and the training attempts counted per learner fold,
//! from which the priors are built.

use std::collections::HashMap;

use taskcast_contract::features::log_time;
use taskcast_contract::{RowProblem, Stat, TaskRow};

use super::{FOLDS, fold_of, holdout_len};
use crate::source::{LearnerSource, SourceError};

/// Share of rows with a `started_at` from which a model uses the clock: a
/// model that saw "now" on a handful of rows would be served it on every
/// request.
pub const CLOCK_MIN_SHARE: f64 = 0.5;

/// Counts of training attempts within one fold.
#[derive(Clone, Debug, Default)]
pub(super) struct FoldCounts {
    pub(super) population: Stat,
    pub(super) topics: HashMap<String, Stat>,
    pub(super) difficulties: HashMap<String, Stat>,
    pub(super) items: HashMap<String, Stat>,
    /// Item counts over attempts without an app difficulty label, for the
    /// derived difficulty classes.
    pub(super) unlabelled_items: HashMap<String, Stat>,
}

impl FoldCounts {
    fn add(&mut self, r: &TaskRow) {
        self.population.add(r.correct, r.seconds);
        self.topics
            .entry(r.topic.clone())
            .or_default()
            .add(r.correct, r.seconds);
        if !r.difficulty.is_empty() {
            self.difficulties
                .entry(r.difficulty.clone())
                .or_default()
                .add(r.correct, r.seconds);
        }
        if let Some(item) = r.item_id.as_deref().filter(|i| !i.is_empty()) {
            self.items
                .entry(item.to_string())
                .or_default()
                .add(r.correct, r.seconds);
            if r.difficulty.is_empty() {
                self.unlabelled_items
                    .entry(item.to_string())
                    .or_default()
                    .add(r.correct, r.seconds);
            }
        }
    }

    pub(super) fn merge(&mut self, o: &FoldCounts) {
        self.population.merge(&o.population);
        for (dst, src) in [
            (&mut self.topics, &o.topics),
            (&mut self.difficulties, &o.difficulties),
            (&mut self.items, &o.items),
            (&mut self.unlabelled_items, &o.unlabelled_items),
        ] {
            for (k, v) in src {
                dst.entry(k.clone()).or_default().merge(v);
            }
        }
    }

    pub(super) fn minus(&self, o: &FoldCounts) -> FoldCounts {
        let sub = |a: &HashMap<String, Stat>, b: &HashMap<String, Stat>| {
            a.iter()
                .filter_map(|(k, v)| {
                    let s = b.get(k).map_or(*v, |w| v.minus(w));
                    (s.n > 0).then(|| (k.clone(), s))
                })
                .collect()
        };
        FoldCounts {
            population: self.population.minus(&o.population),
            topics: sub(&self.topics, &o.topics),
            difficulties: sub(&self.difficulties, &o.difficulties),
            items: sub(&self.items, &o.items),
            unlabelled_items: sub(&self.unlabelled_items, &o.unlabelled_items),
        }
    }
}

/// What the counting pass learned.
#[derive(Clone, Debug, Default)]
pub struct Census {
    pub(super) folds: Vec<FoldCounts>,
    pub(super) item_topic_votes: HashMap<String, HashMap<String, u32>>,
    /// Usable attempts.
    pub rows: u64,
    /// Rows skipped as unusable, by reason.
    pub skipped: HashMap<RowProblem, u64>,
    /// Learners seen.
    pub learners: u64,
    /// Attempts that went to hold-out.
    pub holdout_rows: u64,
    /// Usable attempts with a recorded `started_at`.
    pub started_rows: u64,
    /// Training attempts' log-times, for the baselines' population
    /// quantiles; moved out (empty) once the row pass has taken them.
    pub train_log_times: Vec<f64>,
    /// Training attempts' log-times by topic, for the per-topic baseline;
    /// moved out as `train_log_times` is.
    pub topic_log_times: HashMap<String, Vec<f64>>,
}

impl Census {
    /// Whether a model trained on these rows learns from "now": when at
    /// least [`CLOCK_MIN_SHARE`] of them recorded when they were handed out.
    /// Below that, every row is featurised with "now" unknown, as the model
    /// will then be served.
    pub fn clock(&self) -> bool {
        self.rows > 0 && self.started_rows as f64 >= CLOCK_MIN_SHARE * self.rows as f64
    }

    /// Total skipped rows.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

/// Keeps a learner's usable rows, counting the rest.
pub(super) fn usable<'a>(
    rows: &'a [TaskRow],
    skipped: &mut HashMap<RowProblem, u64>,
) -> Vec<&'a TaskRow> {
    rows.iter()
        .filter(|r| match r.problem() {
            Some(p) => {
                *skipped.entry(p).or_default() += 1;
                false
            }
            None => true,
        })
        .collect()
}

/// Pass 1: counts training attempts per fold.
pub async fn census(source: &mut impl LearnerSource) -> Result<Census, SourceError> {
    let mut c = Census {
        folds: vec![FoldCounts::default(); FOLDS],
        ..Default::default()
    };
    source
        .for_each_learner(&mut |rows| {
            let rows = usable(rows, &mut c.skipped);
            if rows.is_empty() {
                return;
            }
            c.learners += 1;
            c.rows += rows.len() as u64;
            c.started_rows += rows.iter().filter(|r| r.started_at_ms.is_some()).count() as u64;
            let h = holdout_len(rows.len());
            c.holdout_rows += h as u64;
            let fold = &mut c.folds[fold_of(&rows[0].user_id)];
            for r in &rows[..rows.len() - h] {
                fold.add(r);
                if let Some(item) = r.item_id.as_deref().filter(|i| !i.is_empty()) {
                    *c.item_topic_votes
                        .entry(item.to_string())
                        .or_default()
                        .entry(r.topic.clone())
                        .or_default() += 1;
                }
                if let Some(lt) = log_time(r.seconds) {
                    c.train_log_times.push(lt);
                    c.topic_log_times
                        .entry(r.topic.clone())
                        .or_default()
                        .push(lt);
                }
            }
        })
        .await?;
    Ok(c)
}

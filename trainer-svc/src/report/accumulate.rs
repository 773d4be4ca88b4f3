//! One version's live figures, accumulated learner by learner from outcome
//! rows and finished with the hold-out metric code of [`taskcast_learn::judge::metrics`].
//!
//! Memory is per version: the predictions and outcomes (AUC needs them all,
//! 9 bytes a row), the timed rows, one small record per learner and one per
//! topic; never more than one learner's rows beyond that.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::OutcomeRow;
use crate::plots::{PlotData, TimePoint};
use taskcast_learn::judge::metrics::{
    DEFAULT_ECE_BINS, STUCK_EPSILON, accuracy, auc, brier, ece, interval_coverage, log_loss,
    mae_log_seconds, mae_seconds, quantile, quantile_spread,
};

/// Default K for the stuck check: five tasks are a short session; fewer would
/// flag learners whose next tasks simply looked alike.
pub const DEFAULT_STUCK_WINDOW: u32 = 5;

/// Stuck learners listed by name per version (all are counted).
pub const MAX_LISTED_STUCK: usize = 20;

/// Predictions are counted as distinct at this resolution, so "distinct
/// values" means "visibly different" (0.4302 and 0.4304 are one value) and the
/// count needs at most 1 001 bits per group.
pub const DISTINCT_RESOLUTION: f64 = 0.001;

const DISTINCT_SLOTS: usize = 1001;
const BITSET_WORDS: usize = DISTINCT_SLOTS.div_ceil(64);

/// The set of distinct predictions at [`DISTINCT_RESOLUTION`], as bits.
#[derive(Clone, Debug)]
struct DistinctSet([u64; BITSET_WORDS]);

impl Default for DistinctSet {
    fn default() -> Self {
        DistinctSet([0; BITSET_WORDS])
    }
}

impl DistinctSet {
    fn insert(&mut self, p: f64) {
        // NaN saturates to slot 0; predictions outside [0, 1] are clamped.
        let slot =
            ((p.clamp(0.0, 1.0) / DISTINCT_RESOLUTION).round() as usize).min(DISTINCT_SLOTS - 1);
        self.0[slot / 64] |= 1 << (slot % 64);
    }

    fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// Distinct values and spread of the predictions in one group.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Diversity {
    /// Groups measured: 1 overall; per learner, the learners with at least
    /// two predictions (one prediction cannot move).
    pub groups: u64,
    /// Distinct predicted p(correct) values at [`DISTINCT_RESOLUTION`]
    /// (per learner: the median over learners).
    pub distinct: f64,
    /// max − min of predicted p(correct) (per learner: the median).
    pub spread: f64,
    /// 90th − 10th percentile of the predictions (overall only).
    pub spread_p10_p90: Option<f64>,
}

/// Prediction diversity within one topic.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TopicDiversity {
    /// The topic.
    pub topic: String,
    /// Rows with a prediction.
    pub rows: u64,
    /// Distinct predictions at [`DISTINCT_RESOLUTION`].
    pub distinct: u64,
    /// max − min of the predictions.
    pub spread: f64,
    /// Population standard deviation of the predictions.
    pub std_dev: f64,
}

/// A learner whose predictions did not move over their last K tasks.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StuckLearner {
    /// The learner.
    pub user_id: String,
    /// Predictions by this version for the learner in the window.
    pub tasks: u64,
    /// Lowest prediction over the last K tasks.
    pub p_min: f64,
    /// Highest prediction over the last K tasks.
    pub p_max: f64,
}

/// The live metrics of one version; `None` where the rows cannot define one.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LiveMetrics {
    /// Rows with a prediction.
    pub rows: u64,
    /// AUC of p(correct).
    pub auc: Option<f64>,
    /// Log loss of p(correct), nats.
    pub logloss: Option<f64>,
    /// Brier score.
    pub brier: Option<f64>,
    /// Expected calibration error, [`DEFAULT_ECE_BINS`] bins.
    pub ece: Option<f64>,
    /// Accuracy at 0.5.
    pub accuracy: Option<f64>,
    /// Mean predicted p(correct).
    pub mean_predicted: Option<f64>,
    /// Observed success rate.
    pub observed_rate: Option<f64>,
    /// Rows with a predicted median time and a recorded time.
    pub timed_rows: u64,
    /// Mean absolute error of the median, seconds.
    pub time_mae_seconds: Option<f64>,
    /// Mean absolute error of log-seconds.
    pub time_mae_log_seconds: Option<f64>,
    /// Rows with a stored 10–90 % interval and a recorded time.
    pub interval_rows: u64,
    /// Share of those inside the interval.
    pub interval_coverage: Option<f64>,
}

/// Everything [`VersionAccumulator::finish`] computes.
#[derive(Clone, Debug, Default)]
pub struct VersionFigures {
    /// Correctness and time metrics.
    pub metrics: LiveMetrics,
    /// Diversity over all rows.
    pub overall: Diversity,
    /// Median per-learner diversity.
    pub per_learner: Diversity,
    /// Per-topic diversity, by topic name.
    pub topics: Vec<TopicDiversity>,
    /// Learners with at least K predictions.
    pub stuck_eligible_learners: u64,
    /// Of those, how many were stuck.
    pub stuck_learners: u64,
    /// The first [`MAX_LISTED_STUCK`] stuck learners, by id.
    pub stuck: Vec<StuckLearner>,
    /// Earliest completion in the rows.
    pub first_completed_at: Option<DateTime<Utc>>,
    /// Latest completion in the rows.
    pub last_completed_at: Option<DateTime<Utc>>,
    /// The rows' predictions for plotting.
    pub plot: PlotData,
}

#[derive(Clone, Debug)]
struct TopicAcc {
    rows: u64,
    distinct: DistinctSet,
    min: f64,
    max: f64,
    sum: f64,
    sum_sq: f64,
}

impl Default for TopicAcc {
    fn default() -> Self {
        TopicAcc {
            rows: 0,
            distinct: DistinctSet::default(),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            sum_sq: 0.0,
        }
    }
}

/// Accumulates one version's rows, one learner at a time.
#[derive(Clone, Debug)]
pub struct VersionAccumulator {
    stuck_window: usize,
    p: Vec<f64>,
    y: Vec<bool>,
    time: Vec<TimePoint>,
    overall: DistinctSet,
    learner_distinct: Vec<f64>,
    learner_spread: Vec<f64>,
    topics: BTreeMap<String, TopicAcc>,
    stuck_eligible: u64,
    stuck_count: u64,
    stuck: Vec<StuckLearner>,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

/// max − min of `values`; 0 for an empty slice.
fn spread(values: impl Iterator<Item = f64>) -> f64 {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo.is_finite() && hi.is_finite() {
        hi - lo
    } else {
        0.0
    }
}

impl VersionAccumulator {
    /// An empty accumulator judging "stuck" over the last `stuck_window` tasks.
    pub fn new(stuck_window: u32) -> Self {
        VersionAccumulator {
            stuck_window: stuck_window.max(1) as usize,
            p: Vec::new(),
            y: Vec::new(),
            time: Vec::new(),
            overall: DistinctSet::default(),
            learner_distinct: Vec::new(),
            learner_spread: Vec::new(),
            topics: BTreeMap::new(),
            stuck_eligible: 0,
            stuck_count: 0,
            stuck: Vec::new(),
            first: None,
            last: None,
        }
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.p.len() as u64
    }

    /// Adds one learner's rows predicted by this version, in time order.
    /// Learners must come one at a time (each learner once).
    pub fn add_learner(&mut self, user_id: &str, rows: &[&OutcomeRow]) {
        if rows.is_empty() {
            return;
        }
        let mut own = DistinctSet::default();
        for r in rows {
            let p = r.prediction.p_correct;
            self.p.push(p);
            self.y.push(r.correct);
            self.overall.insert(p);
            own.insert(p);
            let t = self.topics.entry(r.topic.clone()).or_default();
            t.rows += 1;
            t.distinct.insert(p);
            t.min = t.min.min(p);
            t.max = t.max.max(p);
            t.sum += p;
            t.sum_sq += p * p;
            if let (Some(median), Some(actual)) = (r.prediction.seconds, r.seconds)
                && median.is_finite()
                && actual.is_finite()
                && actual >= 0.0
            {
                let interval = match (r.prediction.seconds_low, r.prediction.seconds_high) {
                    (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() => Some((lo, hi)),
                    _ => None,
                };
                self.time.push(TimePoint {
                    median,
                    interval,
                    actual,
                });
            }
            self.first = Some(self.first.map_or(r.completed_at, |f| f.min(r.completed_at)));
            self.last = Some(self.last.map_or(r.completed_at, |l| l.max(r.completed_at)));
        }
        // One prediction cannot move: such learners would pile up at spread
        // 0 and read as stuck, so per-learner figures need two.
        if rows.len() >= 2 {
            self.learner_distinct.push(own.len() as f64);
            self.learner_spread
                .push(spread(rows.iter().map(|r| r.prediction.p_correct)));
        }

        if rows.len() >= self.stuck_window {
            self.stuck_eligible += 1;
            let tail = &rows[rows.len() - self.stuck_window..];
            let (lo, hi) = tail
                .iter()
                .map(|r| r.prediction.p_correct)
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                });
            if hi - lo < STUCK_EPSILON {
                self.stuck_count += 1;
                if self.stuck.len() < MAX_LISTED_STUCK {
                    self.stuck.push(StuckLearner {
                        user_id: user_id.to_owned(),
                        tasks: rows.len() as u64,
                        p_min: lo,
                        p_max: hi,
                    });
                }
            }
        }
    }

    /// The figures over everything added.
    pub fn finish(self) -> VersionFigures {
        let (p, y) = (&self.p, &self.y);
        let n = p.len();
        let mean = |v: &mut dyn Iterator<Item = f64>| (n > 0).then(|| v.sum::<f64>() / n as f64);
        let medians: Vec<f64> = self.time.iter().map(|t| t.median).collect();
        let actuals: Vec<f64> = self.time.iter().map(|t| t.actual).collect();
        let (mut low, mut high, mut inside_actual) = (Vec::new(), Vec::new(), Vec::new());
        for t in &self.time {
            if let Some((lo, hi)) = t.interval {
                low.push(lo);
                high.push(hi);
                inside_actual.push(t.actual);
            }
        }
        let metrics = LiveMetrics {
            rows: n as u64,
            auc: auc(p, y),
            logloss: log_loss(p, y),
            brier: brier(p, y),
            ece: ece(p, y, DEFAULT_ECE_BINS),
            accuracy: accuracy(p, y),
            mean_predicted: mean(&mut p.iter().copied()),
            observed_rate: mean(&mut y.iter().map(|&c| if c { 1.0 } else { 0.0 })),
            timed_rows: medians.len() as u64,
            time_mae_seconds: mae_seconds(&medians, &actuals),
            time_mae_log_seconds: mae_log_seconds(&medians, &actuals),
            interval_rows: inside_actual.len() as u64,
            interval_coverage: interval_coverage(&low, &high, &inside_actual),
        };
        let overall = Diversity {
            groups: u64::from(n > 0),
            distinct: self.overall.len() as f64,
            spread: spread(p.iter().copied()),
            spread_p10_p90: quantile_spread(p, 0.1, 0.9),
        };
        let per_learner = Diversity {
            groups: self.learner_spread.len() as u64,
            distinct: quantile(&self.learner_distinct, 0.5).unwrap_or(0.0),
            spread: quantile(&self.learner_spread, 0.5).unwrap_or(0.0),
            spread_p10_p90: None,
        };
        let topics = self
            .topics
            .into_iter()
            .map(|(topic, t)| {
                let rows = t.rows as f64;
                let mean = t.sum / rows;
                TopicDiversity {
                    topic,
                    rows: t.rows,
                    distinct: t.distinct.len(),
                    spread: t.max - t.min,
                    // Rounding can leave a tiny negative variance for constant predictions.
                    std_dev: (t.sum_sq / rows - mean * mean).max(0.0).sqrt(),
                }
            })
            .collect();
        let mut stuck = self.stuck;
        stuck.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        VersionFigures {
            metrics,
            overall,
            per_learner,
            topics,
            stuck_eligible_learners: self.stuck_eligible,
            stuck_learners: self.stuck_count,
            stuck,
            first_completed_at: self.first,
            last_completed_at: self.last,
            plot: PlotData {
                p: self.p,
                y: self.y,
                time: self.time,
                learner_spreads: self.learner_spread,
            },
        }
    }
}

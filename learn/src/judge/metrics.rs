//! Hold-out metrics for correctness and time predictions.
//!
//! Every function is pure and returns `None` rather than a made-up number when
//! the input cannot define the metric (empty input, slices of different
//! lengths, a class missing for AUC), so a report or a gate can tell "not
//! measured" from "measured as zero". Probabilities are expected to be finite;
//! a NaN is not silently dropped but propagates into the result.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Probabilities are clipped to `[LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]` in
/// [`log_loss`] so one confident mistake costs about 34.5 nats, not infinity.
pub const LOG_LOSS_EPS: f64 = 1e-15;

/// Number of equal-width bins [`MetricsAccumulator`] uses for ECE.
pub const DEFAULT_ECE_BINS: usize = 10;

/// A learner whose last K predictions stay within this distance of each
/// other is "stuck". One percentage point: a working model moves a learner's
/// p(correct) by several points after a wrong answer, so honest models rarely
/// trip it, while the original app's broken model moved 0.0002 ("0.4302–0.4304
/// for every task") and is caught at any K.
pub const STUCK_EPSILON: f64 = 0.01;

/// Both slices non-empty and of equal length: the precondition every paired metric shares.
fn paired<A, B>(a: &[A], b: &[B]) -> bool {
    !a.is_empty() && a.len() == b.len()
}

fn mean(values: impl ExactSizeIterator<Item = f64>) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    Some(values.sum::<f64>() / n as f64)
}

fn label(y: bool) -> f64 {
    if y { 1.0 } else { 0.0 }
}

/// Area under the ROC curve: the probability that a randomly chosen positive
/// (`y = true`) gets a higher `p` than a randomly chosen negative, ties
/// counting one half.
///
/// Computed as the Mann–Whitney statistic from ranks in O(n log n): sort by
/// `p`, give tied values their average rank, then
/// `AUC = (R₊ − n₊(n₊+1)/2) / (n₊·n₋)` where `R₊` is the sum of the positives'
/// ranks. All-equal scores therefore give exactly 0.5.
///
/// `None` when the slices are empty, differ in length, or one class is absent.
pub fn auc(p: &[f64], y: &[bool]) -> Option<f64> {
    if !paired(p, y) {
        return None;
    }
    let n_pos = y.iter().filter(|&&v| v).count();
    let n_neg = y.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_unstable_by(|&a, &b| p[a].total_cmp(&p[b]));

    let mut rank_sum_pos = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && p[order[end]].total_cmp(&p[order[start]]) == Ordering::Equal {
            end += 1;
        }
        // Ranks are 1-based, so the tie group start..end holds ranks start+1..=end.
        let avg_rank = (start + 1 + end) as f64 / 2.0;
        let pos_in_group = order[start..end].iter().filter(|&&i| y[i]).count();
        rank_sum_pos += avg_rank * pos_in_group as f64;
        start = end;
    }
    let (n_pos, n_neg) = (n_pos as f64, n_neg as f64);
    Some((rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

/// Mean negative log-likelihood in nats:
/// `−mean(y·ln p + (1−y)·ln(1−p))`, with `p` first clipped to
/// `[1e-15, 1 − 1e-15]` ([`LOG_LOSS_EPS`]).
///
/// `None` when the slices are empty or differ in length.
pub fn log_loss(p: &[f64], y: &[bool]) -> Option<f64> {
    if !paired(p, y) {
        return None;
    }
    mean(p.iter().zip(y).map(|(&pi, &yi)| {
        let pi = pi.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
        if yi { -pi.ln() } else { -(1.0 - pi).ln() }
    }))
}

/// Brier score: `mean((p − y)²)` with `y` as 0/1.
///
/// `None` when the slices are empty or differ in length.
pub fn brier(p: &[f64], y: &[bool]) -> Option<f64> {
    if !paired(p, y) {
        return None;
    }
    mean(p.iter().zip(y).map(|(&pi, &yi)| (pi - label(yi)).powi(2)))
}

/// Expected calibration error with `bins` equal-width bins over `[0, 1]`:
/// `Σ_b (n_b / n)·|mean p_b − mean y_b|` over non-empty bins.
///
/// Bin `b` holds `p` in `[b/bins, (b+1)/bins)`, except that `p = 1` falls in
/// the last bin; `p` outside `[0, 1]` is clamped first.
///
/// `None` when the slices are empty, differ in length, or `bins` is 0.
pub fn ece(p: &[f64], y: &[bool], bins: usize) -> Option<f64> {
    if !paired(p, y) || bins == 0 {
        return None;
    }
    // Per bin: (count, sum of p, sum of y).
    let mut acc = vec![(0usize, 0.0f64, 0.0f64); bins];
    for (&pi, &yi) in p.iter().zip(y) {
        let pc = pi.clamp(0.0, 1.0);
        // `as usize` saturates NaN to 0; the NaN still reaches the sum and the result.
        let b = ((pc * bins as f64).floor() as usize).min(bins - 1);
        acc[b].0 += 1;
        acc[b].1 += pi;
        acc[b].2 += label(yi);
    }
    let n = p.len() as f64;
    Some(
        acc.iter()
            .filter(|(count, _, _)| *count > 0)
            .map(|&(count, sp, sy)| {
                let c = count as f64;
                (c / n) * (sp / c - sy / c).abs()
            })
            .sum(),
    )
}

/// Fraction of rows where the prediction `p >= 0.5` equals `y`
/// (exactly 0.5 counts as predicting correct).
///
/// `None` when the slices are empty or differ in length.
pub fn accuracy(p: &[f64], y: &[bool]) -> Option<f64> {
    if !paired(p, y) {
        return None;
    }
    mean(p.iter().zip(y).map(|(&pi, &yi)| label((pi >= 0.5) == yi)))
}

/// Mean absolute error in seconds: `mean(|pred_median − actual|)`.
///
/// `None` when the slices are empty or differ in length.
pub fn mae_seconds(pred_median: &[f64], actual: &[f64]) -> Option<f64> {
    if !paired(pred_median, actual) {
        return None;
    }
    mean(pred_median.iter().zip(actual).map(|(&p, &a)| (p - a).abs()))
}

/// Median absolute error in seconds: the median of `|pred_median − actual|`
/// (mean of the two middle values for an even count). Robust to the few
/// abandoned-tab outliers that dominate [`mae_seconds`].
///
/// `None` when the slices are empty, differ in length, or an error is not finite.
pub fn median_ae_seconds(pred_median: &[f64], actual: &[f64]) -> Option<f64> {
    if !paired(pred_median, actual) {
        return None;
    }
    let errors: Vec<f64> = pred_median
        .iter()
        .zip(actual)
        .map(|(&p, &a)| (p - a).abs())
        .collect();
    quantile(&errors, 0.5)
}

/// Log time as the time metrics use it: `ln(max(seconds, 1))`, so sub-second
/// and zero durations do not blow up to −∞.
pub fn log_seconds(seconds: f64) -> f64 {
    seconds.max(1.0).ln()
}

/// Mean absolute error of log time:
/// `mean(|ln(max(pred_median, 1)) − ln(max(actual, 1))|`; 0.1 means the
/// prediction is typically off by a factor of about e^0.1 ≈ 1.105.
///
/// `None` when the slices are empty or differ in length.
pub fn mae_log_seconds(pred_median: &[f64], actual: &[f64]) -> Option<f64> {
    if !paired(pred_median, actual) {
        return None;
    }
    mean(
        pred_median
            .iter()
            .zip(actual)
            .map(|(&p, &a)| (log_seconds(p) - log_seconds(a)).abs()),
    )
}

/// Fraction of rows with `low <= actual <= high` (both ends inclusive).
///
/// `None` when the slices are empty or differ in length.
pub fn interval_coverage(low: &[f64], high: &[f64], actual: &[f64]) -> Option<f64> {
    if !paired(low, actual) || high.len() != actual.len() {
        return None;
    }
    mean(
        low.iter()
            .zip(high)
            .zip(actual)
            .map(|((&l, &h), &a)| label(l <= a && a <= h)),
    )
}

/// Population standard deviation `sqrt(mean((x − mean x)²))`.
///
/// `None` when `values` is empty or holds a non-finite value, so a gate that
/// treats `None` as failure also rejects a model emitting NaN.
pub fn std_dev(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let m = mean(values.iter().copied())?;
    let var = mean(values.iter().map(|v| (v - m).powi(2)))?;
    Some(var.sqrt())
}

/// The `q`-quantile with linear interpolation between order statistics
/// (position `q·(n−1)` in the sorted values, "type 7"): `q = 0.5` is the
/// median, `q = 0` the minimum, `q = 1` the maximum.
///
/// `None` when `values` is empty, holds a non-finite value, or `q` is outside `[0, 1]`.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// `quantile(values, high) − quantile(values, low)` (see [`quantile`]), e.g.
/// `quantile_spread(p, 0.1, 0.9)`: near 0 means the model says nearly the same
/// thing for everyone, which a mean-level metric can hide.
///
/// `None` when either quantile is `None` or `low > high`.
pub fn quantile_spread(values: &[f64], low: f64, high: f64) -> Option<f64> {
    if low > high {
        return None;
    }
    Some(quantile(values, high)? - quantile(values, low)?)
}

/// One evaluation's metrics; a field is `None` when it could not be measured
/// (e.g. AUC on a single-class hold-out, time metrics with no recorded times).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricSet {
    /// [`auc`] of p(correct).
    pub auc: Option<f64>,
    /// [`log_loss`] of p(correct), in nats.
    pub logloss: Option<f64>,
    /// [`brier`] score of p(correct).
    pub brier: Option<f64>,
    /// [`ece`] of p(correct) with [`DEFAULT_ECE_BINS`] bins.
    pub ece: Option<f64>,
    /// [`accuracy`] of p(correct) at threshold 0.5.
    pub accuracy: Option<f64>,
    /// [`mae_seconds`] of the predicted median time.
    pub mae_seconds: Option<f64>,
    /// [`median_ae_seconds`] of the predicted median time.
    pub median_ae_seconds: Option<f64>,
    /// [`mae_log_seconds`] of the predicted median time.
    pub mae_log_seconds: Option<f64>,
    /// [`interval_coverage`] of the predicted time interval.
    pub interval_coverage: Option<f64>,
}

impl MetricSet {
    /// The measured fields keyed by their field names (`"auc"`, `"logloss"`,
    /// ...); unmeasured fields are left out rather than written as NaN or 0.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        [
            ("auc", self.auc),
            ("logloss", self.logloss),
            ("brier", self.brier),
            ("ece", self.ece),
            ("accuracy", self.accuracy),
            ("mae_seconds", self.mae_seconds),
            ("median_ae_seconds", self.median_ae_seconds),
            ("mae_log_seconds", self.mae_log_seconds),
            ("interval_coverage", self.interval_coverage),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect()
    }
}

/// Collects hold-out predictions row by row and computes a [`MetricSet`].
///
/// Rows are kept (AUC and median need them all), about 50 bytes per row.
/// Time metrics use only rows that have both a predicted interval and a
/// finite actual time; correctness metrics use every row.
#[derive(Clone, Debug, Default)]
pub struct MetricsAccumulator {
    p: Vec<f64>,
    y: Vec<bool>,
    low: Vec<f64>,
    median: Vec<f64>,
    high: Vec<f64>,
    actual: Vec<f64>,
}

impl MetricsAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one hold-out row: the predicted p(correct), the outcome, the
    /// predicted `(low, median, high)` seconds if the model predicts time, and
    /// the actual seconds if recorded.
    pub fn push(
        &mut self,
        p_correct: f64,
        correct: bool,
        seconds_pred: Option<(f64, f64, f64)>,
        actual_seconds: Option<f64>,
    ) {
        self.p.push(p_correct);
        self.y.push(correct);
        if let (Some((low, median, high)), Some(actual)) = (seconds_pred, actual_seconds)
            && actual.is_finite()
        {
            self.low.push(low);
            self.median.push(median);
            self.high.push(high);
            self.actual.push(actual);
        }
    }

    /// Rows pushed so far.
    pub fn len(&self) -> usize {
        self.p.len()
    }

    /// Whether no row has been pushed.
    pub fn is_empty(&self) -> bool {
        self.p.is_empty()
    }

    /// Rows that counted towards the time metrics.
    pub fn timed_len(&self) -> usize {
        self.actual.len()
    }

    /// The metrics over all rows pushed so far; every field is `None` when
    /// nothing was pushed, and the time fields are `None` when no row had
    /// both a predicted and an actual time.
    pub fn finish(&self) -> MetricSet {
        MetricSet {
            auc: auc(&self.p, &self.y),
            logloss: log_loss(&self.p, &self.y),
            brier: brier(&self.p, &self.y),
            ece: ece(&self.p, &self.y, DEFAULT_ECE_BINS),
            accuracy: accuracy(&self.p, &self.y),
            mae_seconds: mae_seconds(&self.median, &self.actual),
            median_ae_seconds: median_ae_seconds(&self.median, &self.actual),
            mae_log_seconds: mae_log_seconds(&self.median, &self.actual),
            interval_coverage: interval_coverage(&self.low, &self.high, &self.actual),
        }
    }
}

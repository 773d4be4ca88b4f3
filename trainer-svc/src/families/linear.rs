//! Family `linear`: linfa's L2 logistic regression for correctness and a
//! linear model of log-seconds for time, on standardised features. The
//! standardisation and the calibration are folded back into the weights, so
//! the exported graph takes the shared feature rows as they are.
//!
//! Fitted to the data's size on the inner validation slice (the last
//! [`VALIDATION_SHARE`] of each learner's training rows, [`validation_split`],
//! the split `mlp` stops on); the hold-out is never looked at:
//!
//! - **L2 strength.** Every per-row strength of [`L2_GRID`] is fitted on the
//!   rest of the training rows and scored by log loss on the slice; the
//!   weakest whose loss is within one standard error of the best wins
//!   (`choose_l2` says why the weakest); with a slice under
//!   [`MIN_SELECTION_ROWS`] the strength is [`FALLBACK_ALPHA`] instead. The
//!   model is then refitted on every training row with that strength: the
//!   slice holds each learner's most recent attempts, the ones most like the
//!   hold-out, too good to leave out.
//! - **Calibration.** A Platt scaling of the logit, fitted on the slice's
//!   predictions ([`super::calibration`]) and folded into the weights, when the
//!   slice shows a miscalibration beyond chance
//!   ([`Platt::fit_if_significant`]): a logistic regression is calibrated on
//!   its own training rows, and on the learning curve an unconditional one
//!   raised the hold-out's ECE by 0.001–0.003 at 100 learners on every file.
//! - **Time.** The median log-time is a linear least-absolute-deviations
//!   regression (the median, which the absolute error in seconds rewards,
//!   not the mean, which the long tail of slow answers drags up); from
//!   [`MIN_SCALE_ROWS`] timed rows the interval's width is per row,
//!   `exp(v·x + c)`, a second regression on the log of the absolute residuals
//!   ([`TimeScale`]); the 10th, 50th and 90th percentiles are
//!   `median + scale·u`, `u` from the standardised training residuals
//!   (`interval`).

use std::collections::BTreeMap;

use linfa::prelude::*;
use linfa_logistic::{FittedLogisticRegression, LogisticRegression};
use ndarray::{Array1, Array2, ArrayView2};
use taskcast_contract::artifact::{INPUT_FEATURES, OUTPUT_LOG_SECONDS, OUTPUT_P_CORRECT};
use taskcast_contract::features::feature_index;
use taskcast_contract::linear::LinearModel;
use taskcast_contract::onnx::{Dim, GraphBuilder};
use taskcast_contract::{FEATURE_COUNT, FeatureRow};

use super::calibration::{MIN_CALIBRATION_ROWS, Platt, calibrated_losses, mean_loss, row_log_loss};
use super::{FitError, VALIDATION_SHARE, check_both_outcomes, validation_split};
use crate::data::dataset::Rows;

/// Per-row L2 strengths tried on the inner validation slice, strongest first.
/// linfa's `alpha` weighs the penalty against the *summed* log loss, so a fit
/// on `n` rows uses `alpha = λ·n`: the same λ means the same pull towards 0
/// relative to the evidence whatever the row count. On standardised features
/// a row's curvature is about 0.2, so λ = 1 shrinks a weight about five-fold
/// and λ = 10⁻⁴ not at all.
pub const L2_GRID: [f64; 7] = [1.0, 0.3, 0.1, 0.03, 0.01, 1e-3, 1e-4];

/// Fewer inner-validation rows than this (or one outcome only on either side
/// of the split) and the strength is not chosen but [`FALLBACK_ALPHA`]. Below about 300
/// rows the slice's choice was worse on the learning curve (EVALUATION.md)
/// than a fixed strength, on all three files: the standard error of a
/// log-loss difference on it is as large as the differences between
/// strengths, and it is only 10 % of a few learners' recent attempts.
pub const MIN_SELECTION_ROWS: usize = 300;

/// The features that summarise the learner's own answer times. The
/// pretrained model's correctness head leaves them out: on the public data a
/// fast answer goes with a wrong one (guesses), so weights learned there
/// lowered p for a learner answering right and fast (six right answers in 15 s
/// each took a promoted `pretrained` model from 0.861 to 0.855 in the
/// end-to-end loop). An app's own fits keep them: they learn what times mean
/// in that app.
pub const LEARNER_TIME_FEATURES: [&str; 6] = [
    "overall_log_time",
    "topic_log_time",
    "difficulty_log_time",
    "recent_log_time",
    "speed",
    "topic_speed",
];

/// linfa's `alpha` when the slice cannot choose the strength: a fixed pull
/// on the summed loss, so the per-row strength falls as rows come in (λ = 0.3
/// at 300 rows, 0.03 at 3 000). Its curvature is that of about 500 rows'
/// log loss (a row's is about 0.2 on standardised features): the prior of a
/// model that has seen 500 rows saying nothing. Data that small is exactly
/// where an unregularised fit goes wrong (issue 13: log loss 1.18 against
/// 0.56 for a constant at 4 learners). On the learning curve's 25 disjoint
/// 4-learner groups per file (EVALUATION.md) it did best of `alpha` 30–300
/// and of a fixed λ = 0.3 on average, with a log loss 0.001 below the best
/// baseline's (0.008–0.15 above it before). With a larger slice it is the
/// weakest strength `choose_l2` tries.
pub const FALLBACK_ALPHA: f64 = 100.0;

/// L-BFGS iteration cap. On the real datasets and on 1 M simulated rows the
/// hold-out metrics agree to four decimals between 50, 100 and 200
/// iterations, while time grows linearly with them.
pub const MAX_ITERATIONS: u64 = 100;
/// Convergence: gradient norm of the summed loss below this times the rows.
pub const GRADIENT_TOLERANCE_PER_ROW: f64 = 1e-4;

/// How the linear family is fitted.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearOptions {
    /// A fixed linfa `alpha` for the final fit; `None` chooses it on the
    /// inner validation slice.
    pub alpha: Option<f64>,
    /// Fit a Platt calibration on the slice and fold it into the weights.
    pub calibrate: bool,
    /// Give the time interval a per-row width ([`TimeScale`]); without it
    /// one width for every row, as [`LinearModel`] alone can carry (the
    /// pretrained starting model is one).
    pub per_row_scale: bool,
    /// Feature indices the correctness head leaves out (weight 0); the time
    /// head keeps them. `pretrain` leaves out the learner's own times
    /// ([`LEARNER_TIME_FEATURES`]).
    pub p_excluded: Vec<usize>,
}

impl Default for LinearOptions {
    fn default() -> Self {
        LinearOptions {
            alpha: None,
            calibrate: true,
            per_row_scale: true,
            p_excluded: Vec::new(),
        }
    }
}

/// What a linear fit chose, and on how many rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinearInfo {
    /// linfa's `alpha` of the final fit.
    pub alpha: f64,
    /// The per-row strength λ it came from (`alpha / rows`).
    pub l2_per_row: f64,
    /// True when λ was chosen on the slice (else fixed or the fallback).
    pub l2_selected: bool,
    /// Rows of the inner validation slice.
    pub validation_rows: usize,
    /// The calibration folded into the weights, if one was fitted.
    pub calibration: Option<Platt>,
    /// True when the time interval's width is per row ([`TimeScale`]).
    pub time_scaled: bool,
    /// Per-row log loss on the slice of the logits from a fit that did not
    /// see it, before the calibration fitted on it (what `auto` compares
    /// families by); empty without a usable slice.
    pub validation_losses: Vec<f64>,
}

impl LinearInfo {
    /// The record written into the artifact's metrics, keyed `linear_*`.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::from([
            ("linear_alpha".to_string(), self.alpha),
            ("linear_l2_per_row".to_string(), self.l2_per_row),
            (
                "linear_l2_selected".to_string(),
                f64::from(u8::from(self.l2_selected)),
            ),
            ("validation_rows".to_string(), self.validation_rows as f64),
        ]);
        if let Some(c) = self.calibration {
            m.insert("calibration_scale".into(), c.scale);
            m.insert("calibration_shift".into(), c.shift);
        }
        m.insert(
            "linear_time_scaled".into(),
            f64::from(u8::from(self.time_scaled)),
        );
        if let Some(v) = mean_loss(&self.validation_losses) {
            m.insert("validation_log_loss".into(), v);
        }
        m
    }
}

/// The per-row width of the time interval: `exp(clamp(w·x + b, lo, hi))`.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeScale {
    /// Weights on raw feature rows.
    pub weights: [f32; FEATURE_COUNT],
    /// Intercept.
    pub bias: f32,
    /// The log-scale is kept within what the training rows produced, so a
    /// row unlike any of them gets the widest (or narrowest) interval seen,
    /// not an extrapolated one.
    pub log_range: [f32; 2],
}

impl TimeScale {
    /// The row's scale, in f32 as ONNX Runtime computes it.
    fn at(&self, row: &FeatureRow) -> f32 {
        dot(&self.weights, self.bias, row)
            .clamp(self.log_range[0], self.log_range[1])
            .exp()
    }
}

/// A fitted linear model.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Correctness weights (calibration folded in) and the log-time location.
    /// Without [`Linear::time_scale`] its `t_quantile_offsets` are added to the
    /// location as they are; with it they are multiples of the row's scale.
    pub model: LinearModel,
    /// The per-row interval width, when times were learned.
    pub time_scale: Option<TimeScale>,
    /// What the fit chose.
    pub info: LinearInfo,
}

/// `w·x + b` in f32, in the order [`LinearModel::predict`] sums.
fn dot(w: &[f32; FEATURE_COUNT], b: f32, row: &FeatureRow) -> f32 {
    w.iter().zip(row).fold(0f32, |acc, (w, x)| acc + w * x) + b
}

impl Linear {
    /// The forward pass in plain Rust, in f32 like ONNX Runtime:
    /// `(p_correct, [q10, q50, q90])` of log-seconds.
    pub fn predict(&self, row: &FeatureRow) -> (f32, [f32; 3]) {
        let (p, shifted) = self.model.predict(row);
        match &self.time_scale {
            None => (p, shifted),
            Some(s) => {
                let loc = dot(&self.model.t_weights, self.model.t_bias, row);
                let scale = s.at(row);
                (p, self.model.t_quantile_offsets.map(|u| loc + scale * u))
            }
        }
    }

    /// The ONNX graph: [`LinearModel::graph`], or with a per-row scale the
    /// same correctness half and `loc + exp(clip(s_w·x + s_b))·t_q`.
    pub fn graph(&self) -> GraphBuilder {
        let Some(s) = &self.time_scale else {
            return self.model.graph();
        };
        let m = &self.model;
        let f = FEATURE_COUNT as i64;
        let mut g = GraphBuilder::new("taskcast_linear");
        g.input_f32(INPUT_FEATURES, &[Dim::Batch, Dim::Fixed(f)])
            .output_f32(OUTPUT_P_CORRECT, &[Dim::Batch])
            .output_f32(OUTPUT_LOG_SECONDS, &[Dim::Batch, Dim::Fixed(3)])
            .init_f32("p_w", &[f, 1], &m.p_weights)
            .init_f32("p_b", &[1], &[m.p_bias])
            .init_f32("t_w", &[f, 1], &m.t_weights)
            .init_f32("t_b", &[1], &[m.t_bias])
            .init_f32("s_w", &[f, 1], &s.weights)
            .init_f32("s_b", &[1], &[s.bias])
            .init_f32("s_lo", &[], &[s.log_range[0]])
            .init_f32("s_hi", &[], &[s.log_range[1]])
            .init_f32("t_q", &[1, 3], &m.t_quantile_offsets)
            .init_i64("flat", &[1], &[-1])
            .node("Gemm", &[INPUT_FEATURES, "p_w", "p_b"], &["logit"], vec![])
            .node("Sigmoid", &["logit"], &["p_col"], vec![])
            .node("Reshape", &["p_col", "flat"], &[OUTPUT_P_CORRECT], vec![])
            .node("Gemm", &[INPUT_FEATURES, "t_w", "t_b"], &["loc"], vec![])
            .node(
                "Gemm",
                &[INPUT_FEATURES, "s_w", "s_b"],
                &["log_scale"],
                vec![],
            )
            .node(
                "Clip",
                &["log_scale", "s_lo", "s_hi"],
                &["log_scale_c"],
                vec![],
            )
            .node("Exp", &["log_scale_c"], &["scale"], vec![])
            .node("Mul", &["scale", "t_q"], &["spread"], vec![])
            .node("Add", &["loc", "spread"], &[OUTPUT_LOG_SECONDS], vec![]);
        g
    }
}

/// Per-feature mean and scale, and the columns the regressions may use.
///
/// Columns that are constant, or (almost) a linear combination of columns kept
/// before them, get weight 0. Pairwise duplicates are not the only case: the
/// features are built from shared sums, so some are exact linear combinations
/// of others on some data. Without item ids, for one, an item's prior *is* its
/// topic's, and `topic_log_time − topic_speed = prior_item_log_time` on every
/// row. Least squares on such a design has no unique answer; it returned
/// weights of ±5·10⁴ that cancel in f64 but not in the f32 graph ONNX Runtime
/// runs, so the export check failed (issue 11).
struct Scaling {
    mean: [f64; FEATURE_COUNT],
    scale: [f64; FEATURE_COUNT],
    used: Vec<usize>,
}

/// A column whose variance left after regressing it on the kept columns is
/// below this share of its own is dropped: its information is already there
/// (R² above 0.9999), and keeping it only buys huge, cancelling weights.
const COLLINEAR_RESIDUAL: f64 = 1e-4;

impl Scaling {
    fn fit(rows: &Rows, idx: &[usize]) -> Scaling {
        let n = idx.len().max(1) as f64;
        let mut mean = [0f64; FEATURE_COUNT];
        for &i in idx {
            for (j, v) in rows.row(i).iter().enumerate() {
                mean[j] += f64::from(*v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        // Covariance in one pass over the rows (k² / 2 per row, k = 24); only
        // the upper triangle is filled.
        let mut cov = [[0f64; FEATURE_COUNT]; FEATURE_COUNT];
        let mut centred = [0f64; FEATURE_COUNT];
        for &i in idx {
            for (c, (v, m)) in centred.iter_mut().zip(rows.row(i).iter().zip(&mean)) {
                *c = f64::from(*v) - m;
            }
            for (a, row) in cov.iter_mut().enumerate() {
                for (b, cell) in row.iter_mut().enumerate().skip(a) {
                    *cell += centred[a] * centred[b];
                }
            }
        }
        let scale: [f64; FEATURE_COUNT] = std::array::from_fn(|j| (cov[j][j] / n).sqrt());
        let used = independent_columns(&cov, &scale, n);
        Scaling {
            mean,
            scale: scale.map(|s| if s < 1e-9 { 1.0 } else { s }),
            used,
        }
    }

    fn matrix(&self, rows: &Rows, idx: &[usize]) -> Array2<f64> {
        let mut x = Array2::<f64>::zeros((idx.len(), self.used.len()));
        for (r, &i) in idx.iter().enumerate() {
            let row = rows.row(i);
            for (c, &j) in self.used.iter().enumerate() {
                x[[r, c]] = (f64::from(row[j]) - self.mean[j]) / self.scale[j];
            }
        }
        x
    }

    /// Weights on standardised used columns → weights and bias on raw rows.
    fn unfold(&self, w: &Array1<f64>, b: f64) -> ([f32; FEATURE_COUNT], f32) {
        let mut raw = [0f32; FEATURE_COUNT];
        let mut bias = b;
        for (c, &j) in self.used.iter().enumerate() {
            let wj = w[c] / self.scale[j];
            raw[j] = wj as f32;
            bias -= wj * self.mean[j];
        }
        (raw, bias as f32)
    }
}

/// Greedy rank-revealing selection in feature order: an incremental Cholesky
/// factor of the kept columns' correlation matrix; a column joins when its
/// residual variance after the kept ones is at least [`COLLINEAR_RESIDUAL`].
fn independent_columns(
    cov: &[[f64; FEATURE_COUNT]; FEATURE_COUNT],
    scale: &[f64; FEATURE_COUNT],
    n: f64,
) -> Vec<usize> {
    let corr = |a: usize, b: usize| cov[a.min(b)][a.max(b)] / (n * scale[a] * scale[b]);
    let mut used: Vec<usize> = Vec::new();
    // Row r of the lower-triangular factor L of the kept columns' correlations.
    let mut factor: Vec<Vec<f64>> = Vec::new();
    for (j, s) in scale.iter().enumerate() {
        if *s < 1e-9 {
            continue;
        }
        // Solve L·v = corr(kept, j) by forward substitution.
        let mut v = Vec::with_capacity(used.len());
        for (r, &k) in used.iter().enumerate() {
            let dot: f64 = factor[r].iter().zip(&v).map(|(l, x)| l * x).sum();
            v.push((corr(k, j) - dot) / factor[r][r]);
        }
        let residual = 1.0 - v.iter().map(|x| x * x).sum::<f64>();
        if residual >= COLLINEAR_RESIDUAL {
            v.push(residual.sqrt());
            factor.push(v);
            used.push(j);
        }
    }
    used
}

/// The logit on standardised columns, `w·x + b`, as p(correct).
struct Logit {
    w: Array1<f64>,
    b: f64,
}

impl Logit {
    fn of(x: ArrayView2<'_, f64>, fitted: &FittedLogisticRegression<f64, bool>) -> Vec<f64> {
        let l = Logit::from(fitted);
        (x.dot(&l.w) + l.b).to_vec()
    }
}

impl From<&FittedLogisticRegression<f64, bool>> for Logit {
    fn from(fitted: &FittedLogisticRegression<f64, bool>) -> Logit {
        // linfa's "positive" class is the more frequent label, not `true`:
        // flip when `false` is positive, or the model would predict the
        // complement.
        let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
        Logit {
            w: fitted.params().mapv(|w| w * sign),
            b: fitted.intercept() * sign,
        }
    }
}

/// linfa's L2 logistic regression of `y` on standardised `x`, from
/// `initial` (linfa's own parameters of an earlier fit on the same rows, the
/// intercept last) when given.
fn logistic(
    x: Array2<f64>,
    y: Array1<bool>,
    alpha: f64,
    initial: Option<Array1<f64>>,
) -> Result<FittedLogisticRegression<f64, bool>, FitError> {
    let n = x.nrows();
    let mut params = LogisticRegression::default()
        .alpha(alpha)
        .max_iterations(MAX_ITERATIONS)
        // linfa's loss is summed over rows, so its gradient grows with n: a
        // fixed tolerance is never met on large tables and every fit ran to
        // the iteration cap. Scaling by n makes it a per-row tolerance.
        .gradient_tolerance(GRADIENT_TOLERANCE_PER_ROW * n as f64);
    if let Some(p) = initial {
        params = params.initial_params(p);
    }
    params
        .fit(&linfa::Dataset::new(x, y))
        .map_err(|e| FitError::Linfa(e.to_string()))
}

/// linfa's parameters of a fit, intercept last: a warm start for the next.
fn warm_start(fitted: &FittedLogisticRegression<f64, bool>) -> Array1<f64> {
    let mut p = fitted.params().to_vec();
    p.push(fitted.intercept());
    Array1::from_vec(p)
}

fn outcomes(rows: &Rows, idx: &[usize]) -> Array1<bool> {
    Array1::from_iter(idx.iter().map(|&i| rows.correct[i]))
}

fn both_outcomes(rows: &Rows, idx: &[usize]) -> bool {
    let pos = idx.iter().filter(|&&i| rows.correct[i]).count();
    pos > 0 && pos < idx.len()
}

/// One strength of the grid, fitted on the fit rows and scored on the slice.
struct Tried {
    l2: f64,
    /// The slice's logits.
    z: Vec<f64>,
    /// The slice's log loss, per row.
    losses: Vec<f64>,
}

impl Tried {
    fn mean(&self) -> f64 {
        self.losses.iter().sum::<f64>() / self.losses.len().max(1) as f64
    }

    /// Whether this strength's mean log loss is within one standard error
    /// of `best`'s, the standard error of their row-wise difference.
    fn ties(&self, best: &Tried) -> bool {
        let m = self.losses.len() as f64;
        let d: Vec<f64> = self
            .losses
            .iter()
            .zip(&best.losses)
            .map(|(a, b)| a - b)
            .collect();
        let dm = d.iter().sum::<f64>() / m;
        let se = (d.iter().map(|v| (v - dm).powi(2)).sum::<f64>() / (m - 1.0).max(1.0) / m).sqrt();
        dm <= se
    }
}

/// The per-row L2 strength the slice prefers, and the slice's logits under
/// it (from the fit on the other rows): the *weakest* λ of [`L2_GRID`] whose
/// mean log loss on the slice is within one standard error of the best's.
///
/// Why the weakest of the ties: the slice's rows are featurised like every
/// training row, with out-of-fold priors, while the hold-out (and serving)
/// uses the priors of all training rows, the learner's own earlier attempts
/// included; their features say more about the learner than the slice's do,
/// so the slice overrates shrinkage. On the learning curve (EVALUATION.md)
/// the hold-out preferred the weaker side of every tie the slice could not
/// break; the strongest of the ties cost up to 0.004 of log loss.
///
/// The weakest candidate is [`FALLBACK_ALPHA`]'s per-row strength, and the
/// grid's weaker values are not tried: the prior used below
/// [`MIN_SELECTION_ROWS`] stays in force above it, so that a slice of a few
/// hundred rows, which cannot tell λ = 10⁻⁴ from 0.03, does not end in an
/// unregularised fit (on simulated learners that cost 0.007 of log loss at
/// 3 800 rows; on the real files it changed nothing beyond ±0.001). From
/// about 10⁶ rows the floor is below the grid and changes nothing.
///
/// The candidates are walked from weak to strong, each fit starting from the
/// last one's weights, and the walk stops once a strength is clearly worse
/// than the best so far (the loss is unimodal in λ): on large tables only the
/// first few strengths are fitted.
fn choose_l2(
    rows: &Rows,
    scaling: &Scaling,
    fit: &[usize],
    val: &[usize],
) -> Result<(f64, Vec<f64>), FitError> {
    let xv = scaling.matrix(rows, val);
    let yv: Vec<bool> = val.iter().map(|&i| rows.correct[i]).collect();
    let xf = scaling.matrix(rows, fit);
    let yf = outcomes(rows, fit);
    // The fallback's prior is the least regularisation there is: the slice
    // may strengthen it, never loosen it.
    let floor = FALLBACK_ALPHA / fit.len() as f64;
    let candidates =
        std::iter::once(floor).chain(L2_GRID.iter().rev().copied().filter(|&l| l > floor));
    let mut tried: Vec<Tried> = Vec::with_capacity(L2_GRID.len() + 1);
    let mut start = None;
    let mut best = 0;
    for l2 in candidates {
        let fitted = logistic(xf.clone(), yf.clone(), l2 * fit.len() as f64, start.take())?;
        start = Some(warm_start(&fitted));
        let z = Logit::of(xv.view(), &fitted);
        let losses = z
            .iter()
            .zip(&yv)
            .map(|(&z, &y)| row_log_loss(z, y))
            .collect();
        let t = Tried { l2, z, losses };
        tracing::debug!(l2, val_logloss = t.mean(), "linear L2 candidate");
        let worse = !tried.is_empty() && !t.ties(&tried[best]);
        if tried.is_empty() || t.mean() < tried[best].mean() {
            best = tried.len();
        }
        tried.push(t);
        if worse && best + 1 < tried.len() {
            break;
        }
    }
    // Walked weakest first, so the first tie is the weakest; the best ties
    // itself.
    let chosen = (0..tried.len())
        .find(|&k| tried[k].ties(&tried[best]))
        .unwrap_or(best);
    let t = tried.swap_remove(chosen);
    Ok((t.l2, t.z))
}

/// Fits the linear family on `rows` (all the training rows: the inner
/// validation slice is split off here). Without `learn_time` (the data
/// cannot support a time head: [`crate::data::time_support`]) times come
/// from the item prior, which falls back to the topic and population priors.
pub fn fit(rows: &Rows, opts: &LinearOptions, learn_time: bool) -> Result<Linear, FitError> {
    if rows.is_empty() {
        return Err(FitError::Empty);
    }
    check_both_outcomes(rows)?;
    let all: Vec<usize> = (0..rows.len()).collect();
    let (fit_idx, val_idx) = validation_split(rows, VALIDATION_SHARE);
    let n = all.len() as f64;
    // Standardisation uses features only, of training rows only; one for
    // every fit below, so that they are fits of the same parameters.
    let mut scaling = Scaling::fit(rows, &all);
    scaling.used.retain(|j| !opts.p_excluded.contains(j));
    let slice_usable = val_idx.len() >= MIN_SELECTION_ROWS
        && both_outcomes(rows, &val_idx)
        && both_outcomes(rows, &fit_idx);
    let mut info = LinearInfo {
        validation_rows: val_idx.len(),
        ..LinearInfo::default()
    };
    // The slice's logits from a fit that did not see it, for the calibration.
    let (l2, val_logits) = match opts.alpha {
        None if slice_usable => {
            info.l2_selected = true;
            let (l2, z) = choose_l2(rows, &scaling, &fit_idx, &val_idx)?;
            (l2, Some(z))
        }
        None => (FALLBACK_ALPHA / n, None),
        Some(alpha) => (alpha / n, None),
    };
    let val_logits = match val_logits {
        Some(z) => Some(z),
        // A fixed or fallback strength: the slice's logits still come from
        // a fit on the other rows, with the same per-row strength.
        None if opts.calibrate
            && val_idx.len() >= MIN_CALIBRATION_ROWS
            && both_outcomes(rows, &fit_idx) =>
        {
            let fitted = logistic(
                scaling.matrix(rows, &fit_idx),
                outcomes(rows, &fit_idx),
                l2 * fit_idx.len() as f64,
                None,
            )?;
            Some(Logit::of(scaling.matrix(rows, &val_idx).view(), &fitted))
        }
        None => None,
    };
    info.l2_per_row = l2;
    info.alpha = opts.alpha.unwrap_or(l2 * n);
    let fitted = logistic(
        scaling.matrix(rows, &all),
        outcomes(rows, &all),
        info.alpha,
        None,
    )?;
    let logit = Logit::from(&fitted);
    let (mut p_weights, mut p_bias) = scaling.unfold(&logit.w, logit.b);
    if let Some(z) = val_logits {
        let y: Vec<bool> = val_idx.iter().map(|&i| rows.correct[i]).collect();
        if opts.calibrate {
            info.calibration = Platt::fit_if_significant(&z, &y);
        }
        if let Some(c) = info.calibration {
            c.fold(p_weights.iter_mut(), &mut p_bias);
        }
        // Scored before the calibration, which was fitted on these rows:
        // with it the slice would flatter this family against `pretrained`,
        // whose calibration is fitted on other rows (see `auto`).
        info.validation_losses = calibrated_losses(&z, &y, None);
    }

    let timed: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| rows.log_time(i).is_some())
        .collect();
    let (model, time_scale) = if learn_time && timed.len() > FEATURE_COUNT * 2 {
        let head = fit_time(rows, &timed, opts.per_row_scale)?;
        info.time_scaled = head.scale.is_some();
        (
            LinearModel {
                p_weights,
                p_bias,
                t_weights: head.weights,
                t_bias: head.bias,
                t_quantile_offsets: head.offsets,
            },
            head.scale,
        )
    } else {
        // Too few times to learn from: the item prior's typical time (its own,
        // else its topic's, else the population's), with the bootstrap's spread.
        let mut w = [0f32; FEATURE_COUNT];
        if let Some(i) = feature_index("prior_item_log_time") {
            w[i] = 1.0;
        }
        (
            LinearModel {
                p_weights,
                p_bias,
                t_weights: w,
                t_bias: 0.0,
                t_quantile_offsets: [-1.0, 0.0, 1.0],
            },
            None,
        )
    };
    tracing::info!(
        alpha = info.alpha,
        l2 = info.l2_per_row,
        selected = info.l2_selected,
        validation_rows = info.validation_rows,
        calibration = ?info.calibration,
        time_scaled = info.time_scaled,
        "linear fitted"
    );
    Ok(Linear {
        model,
        time_scale,
        info,
    })
}

/// linfa's own `predict_probabilities` for `eval`, standardised as [`fit`]
/// standardises, from one logistic fit on all of `train` with `alpha`; and
/// linfa's positive class (`labels().pos`). The probabilities are of that
/// class, so they are p(correct) only when it is `true`. A reference for
/// checking [`fit`]'s folded weights (with that `alpha` and no calibration)
/// and the exported graph against linfa itself.
pub fn linfa_probabilities(
    train: &Rows,
    alpha: f64,
    eval: &Rows,
) -> Result<(Vec<f64>, bool), FitError> {
    if train.is_empty() {
        return Err(FitError::Empty);
    }
    let all: Vec<usize> = (0..train.len()).collect();
    let scaling = Scaling::fit(train, &all);
    let fitted = logistic(
        scaling.matrix(train, &all),
        outcomes(train, &all),
        alpha,
        None,
    )?;
    let idx: Vec<usize> = (0..eval.len()).collect();
    let p = fitted.predict_probabilities(&scaling.matrix(eval, &idx));
    Ok((p.to_vec(), fitted.labels().pos.class))
}

// ------------------------------------------------------------------ time

/// Fewer timed training rows than this and the interval's width is one for
/// all rows: the log-scale regression fits 24 weights to `ln |residual|`, a
/// target whose own noise has a standard deviation above 1, and on the
/// learning curve (EVALUATION.md) it widened and narrowed intervals in the
/// wrong places at 20 learners (1 700 timed rows) and paid off from 100
/// (7 600).
pub const MIN_SCALE_ROWS: usize = 5_000;
/// Iteratively reweighted least squares steps of the median regression.
const LAD_ITERATIONS: usize = 30;
/// Residuals below this (in log-seconds) weigh as if this large in the median
/// regression's reweighting, which keeps its weights finite.
const LAD_FLOOR: f64 = 0.05;
/// Added to |residual| before its log is regressed: an exact fit of one row
/// must not make a −∞ target.
const SCALE_FLOOR: f64 = 0.01;
/// A small ridge (per row, on standardised columns) in every least-squares
/// solve: it changes nothing measurable and keeps the solve defined when a
/// column is nearly constant among the timed rows.
const TIME_RIDGE: f64 = 1e-6;
/// Standard normal 90th percentile: the interval is `median ± Z90·σ`.
const Z90: f64 = 1.2816;

/// The fitted time head, on raw rows.
pub(crate) struct TimeHead {
    pub(crate) weights: [f32; FEATURE_COUNT],
    pub(crate) bias: f32,
    /// `[q10, q50, q90]` of the standardised residual (multiples of the
    /// row's scale with `scale`, else log-seconds).
    pub(crate) offsets: [f32; 3],
    pub(crate) scale: Option<TimeScale>,
}

/// The median of log-seconds by least absolute deviations: iteratively
/// reweighted least squares from the least-squares fit.
fn median_regression(x: ArrayView2<'_, f64>, y: &[f64]) -> Option<(Array1<f64>, f64)> {
    let mut loc = least_squares(x, y, None)?;
    let mut w = vec![1.0; y.len()];
    for _ in 0..LAD_ITERATIONS {
        let pred = x.dot(&loc.0) + loc.1;
        for ((wi, yi), pi) in w.iter_mut().zip(y).zip(pred.iter()) {
            *wi = 1.0 / (yi - pi).abs().max(LAD_FLOOR);
        }
        let next = least_squares(x, y, Some(&w))?;
        let moved = (next.1 - loc.1).abs()
            + next
                .0
                .iter()
                .zip(loc.0.iter())
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>();
        loc = next;
        if moved < 1e-6 {
            break;
        }
    }
    Some(loc)
}

/// Weighted least squares with an intercept: minimises
/// `Σ wᵢ (yᵢ − x·β − c)² + TIME_RIDGE·Σw·|β|²` by the normal equations and a
/// Cholesky factor (at most 25 unknowns). `None` when not positive definite.
fn least_squares(
    x: ArrayView2<'_, f64>,
    y: &[f64],
    w: Option<&[f64]>,
) -> Option<(Array1<f64>, f64)> {
    let k = x.ncols();
    let d = k + 1;
    // Upper triangle of the normal matrix, row-major.
    let mut a = vec![0f64; d * d];
    let mut rhs = vec![0f64; d];
    let mut total = 0f64;
    let mut xi = vec![0f64; d];
    for (r, row) in x.outer_iter().enumerate() {
        let wi = w.map_or(1.0, |w| w[r]);
        total += wi;
        xi[..k]
            .iter_mut()
            .zip(row.iter())
            .for_each(|(t, v)| *t = *v);
        xi[k] = 1.0;
        for i in 0..d {
            let wx = wi * xi[i];
            rhs[i] += wx * y[r];
            for j in i..d {
                a[i * d + j] += wx * xi[j];
            }
        }
    }
    for i in 0..k {
        a[i * d + i] += TIME_RIDGE * total;
    }
    // Lower-triangular L with L·Lᵀ = a.
    let mut l = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|m| l[i * d + m] * l[j * d + m]).sum();
            let aij = a[j * d + i];
            if i == j {
                let v = aij - s;
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (aij - s) / l[j * d + j];
            }
        }
    }
    // L·z = rhs, then Lᵀ·β = z.
    let mut z = vec![0f64; d];
    for i in 0..d {
        let s: f64 = (0..i).map(|m| l[i * d + m] * z[m]).sum();
        z[i] = (rhs[i] - s) / l[i * d + i];
    }
    let mut beta = vec![0f64; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|m| l[m * d + i] * beta[m]).sum();
        beta[i] = (z[i] - s) / l[i * d + i];
    }
    let c = beta[k];
    beta.truncate(k);
    Some((Array1::from_vec(beta), c))
}

/// `[median − Z90·σ, median, median + Z90·σ]` of the standardised
/// residuals `u`, σ their root mean square about the median.
///
/// Why not their empirical 10th and 90th percentiles: on the hold-out both
/// tails came out wider than on the training rows, at every size (coverage
/// 0.75–0.78 where 0.80 was meant). Log-time residuals have heavy tails, so
/// σ is larger than the central spread and this interval about as much wider
/// as the hold-out needed (coverage 0.78–0.82 on the learning curve) — the
/// `mlp` head's Gaussian interval, which covers 0.80–0.82, is the same form.
pub(crate) fn interval(mut u: Vec<f64>) -> [f32; 3] {
    u.sort_by(f64::total_cmp);
    let median = u[(u.len() - 1) / 2];
    let sigma = (u.iter().map(|v| (v - median).powi(2)).sum::<f64>() / u.len() as f64).sqrt();
    [median - Z90 * sigma, median, median + Z90 * sigma].map(|v| v as f32)
}

/// The time head on the timed training rows `idx`: the median of
/// log-seconds by least absolute deviations; with at least
/// [`MIN_SCALE_ROWS`] rows a per-row scale, `exp` of a least-squares fit of
/// `ln(|residual| + 0.01)`, kept within the range it takes on those rows;
/// and the interval of the residuals divided by their row's scale
/// ([`interval`]).
pub(crate) fn fit_time(
    rows: &Rows,
    idx: &[usize],
    per_row_scale: bool,
) -> Result<TimeHead, FitError> {
    let singular = || FitError::Linfa("time regression: singular design".into());
    let ts = Scaling::fit(rows, idx);
    let x = ts.matrix(rows, idx);
    let y: Vec<f64> = idx.iter().filter_map(|&i| rows.log_time(i)).collect();
    let loc = median_regression(x.view(), &y).ok_or_else(singular)?;
    let resid: Vec<f64> = y
        .iter()
        .zip((x.dot(&loc.0) + loc.1).iter())
        .map(|(y, p)| y - p)
        .collect();
    let (weights, bias) = ts.unfold(&loc.0, loc.1);
    if idx.len() < MIN_SCALE_ROWS || !per_row_scale {
        return Ok(TimeHead {
            weights,
            bias,
            offsets: interval(resid),
            scale: None,
        });
    }
    let target: Vec<f64> = resid.iter().map(|r| (r.abs() + SCALE_FLOOR).ln()).collect();
    let scale = least_squares(x.view(), &target, None).ok_or_else(singular)?;
    let ls = x.dot(&scale.0) + scale.1;
    let (lo, hi) = ls
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let u = resid
        .iter()
        .zip(ls.iter())
        .map(|(r, s)| r / s.exp())
        .collect();
    let (sw, sb) = ts.unfold(&scale.0, scale.1);
    Ok(TimeHead {
        weights,
        bias,
        offsets: interval(u),
        scale: Some(TimeScale {
            weights: sw,
            bias: sb,
            log_range: [lo as f32, hi as f32],
        }),
    })
}

//! The logistic fits (linfa, warm-started along the grid) and the choice of
//! L2 strength on the inner validation slice.

use linfa::prelude::*;
use linfa_logistic::{FittedLogisticRegression, LogisticRegression};
use ndarray::{Array1, ArrayView1, ArrayView2};

use super::{FALLBACK_ALPHA, GRADIENT_TOLERANCE_PER_ROW, L2_GRID, MAX_ITERATIONS};
use crate::dataset::Rows;
use crate::families::FitError;
use crate::families::calibration::row_log_loss;

/// The element type of the logistic fits' design matrix and parameters.
///
/// f32, as the features themselves are. In f64 the matrix took 8 bytes per
/// used column per training row, the largest allocation of a `linear` run
/// (issue 29); in f32 the developers' files moved by at most 0.0001 in
/// hold-out AUC and log loss and 0.0002 in ECE (BENCHMARKS.md, "Training
/// memory, second step"). What f32 costs is where the optimiser stops: the
/// order of a gradient's sums moves it (see [`super::linfa_probabilities`]).
pub(super) type Real = f32;

/// The logit on standardised columns, `w·x + b`, as p(correct).
pub(super) struct Logit {
    pub(super) w: Array1<f64>,
    pub(super) b: f64,
}

impl Logit {
    pub(super) fn of(
        x: ArrayView2<'_, Real>,
        fitted: &FittedLogisticRegression<Real, bool>,
    ) -> Vec<f64> {
        let sign = Logit::sign(fitted);
        let z = x.dot(fitted.params()) + fitted.intercept();
        z.iter().map(|&v| sign * f64::from(v)).collect()
    }

    /// linfa's "positive" class is the more frequent label, not `true`:
    /// −1 when `false` is positive, or the model would predict the
    /// complement.
    fn sign(fitted: &FittedLogisticRegression<Real, bool>) -> f64 {
        if fitted.labels().pos.class { 1.0 } else { -1.0 }
    }
}

impl From<&FittedLogisticRegression<Real, bool>> for Logit {
    fn from(fitted: &FittedLogisticRegression<Real, bool>) -> Logit {
        let sign = Logit::sign(fitted);
        Logit {
            w: fitted.params().mapv(|w| f64::from(w) * sign),
            b: f64::from(fitted.intercept()) * sign,
        }
    }
}

/// linfa's L2 logistic regression of `y` on standardised `x` (column-major:
/// [`super::scaling::Scaling::columns`] says why), from `initial` (linfa's
/// own parameters of an earlier fit, the intercept last) when given. Views,
/// so that the grid's fits share one matrix instead of copying it each.
pub(super) fn logistic(
    x: ArrayView2<'_, Real>,
    y: ArrayView1<'_, bool>,
    alpha: f64,
    initial: Option<Array1<Real>>,
) -> Result<FittedLogisticRegression<Real, bool>, FitError> {
    let n = x.nrows();
    let mut params = LogisticRegression::default()
        .alpha(alpha as Real)
        .max_iterations(MAX_ITERATIONS)
        // linfa's loss is summed over rows, so its gradient grows with n: a
        // fixed tolerance is never met on large tables and every fit ran to
        // the iteration cap. Scaling by n makes it a per-row tolerance.
        .gradient_tolerance((GRADIENT_TOLERANCE_PER_ROW * n as f64) as Real);
    if let Some(p) = initial {
        params = params.initial_params(p);
    }
    params
        .fit(&linfa::DatasetBase::new(x, y))
        .map_err(|e| FitError::Linfa(e.to_string()))
}

/// linfa's parameters of a fit, intercept last: a warm start for the next.
pub(super) fn warm_start(fitted: &FittedLogisticRegression<Real, bool>) -> Array1<Real> {
    let mut p = fitted.params().to_vec();
    p.push(fitted.intercept());
    Array1::from_vec(p)
}

pub(super) fn outcomes(rows: &Rows, idx: &[usize]) -> Array1<bool> {
    idx.iter().map(|&i| rows.correct[i]).collect()
}

pub(super) fn both_outcomes(rows: &Rows, idx: &[usize]) -> bool {
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
    /// linfa's parameters of the fit: the final fit on every row starts
    /// from the chosen one's.
    params: Array1<Real>,
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

/// The fit rows and the inner validation slice, as standardised columns and
/// outcomes: views of one matrix (the fit rows first), so the grid's fits and
/// the final fit on every row read the same memory.
pub(super) struct Split<'a> {
    pub(super) fit_x: ArrayView2<'a, Real>,
    pub(super) fit_y: ArrayView1<'a, bool>,
    pub(super) val_x: ArrayView2<'a, Real>,
    pub(super) val_y: ArrayView1<'a, bool>,
}

/// What [`choose_l2`] settled on.
pub(super) struct Choice {
    /// The per-row strength.
    pub(super) l2: f64,
    /// The slice's logits from the fit on the other rows.
    pub(super) z: Vec<f64>,
    /// That fit's parameters, a warm start for the final fit.
    pub(super) params: Array1<Real>,
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
pub(super) fn choose_l2(split: &Split<'_>) -> Result<Choice, FitError> {
    let n_fit = split.fit_x.nrows() as f64;
    // The fallback's prior is the least regularisation there is: the slice
    // may strengthen it, never loosen it.
    let floor = FALLBACK_ALPHA / n_fit;
    let candidates =
        std::iter::once(floor).chain(L2_GRID.iter().rev().copied().filter(|&l| l > floor));
    let mut tried: Vec<Tried> = Vec::with_capacity(L2_GRID.len() + 1);
    let mut start = None;
    let mut best = 0;
    for l2 in candidates {
        let fitted = logistic(split.fit_x, split.fit_y, l2 * n_fit, start.take())?;
        let params = warm_start(&fitted);
        start = Some(params.clone());
        let z = Logit::of(split.val_x, &fitted);
        let losses = z
            .iter()
            .zip(split.val_y)
            .map(|(&z, &y)| row_log_loss(z, y))
            .collect();
        let t = Tried {
            l2,
            z,
            losses,
            params,
        };
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
    Ok(Choice {
        l2: t.l2,
        z: t.z,
        params: t.params,
    })
}

//! The L2 logistic regression of correctness, fitted without a design
//! matrix: each evaluation of the loss streams over the feature rows and
//! standardises them as it reads them.
//!
//! The objective and the optimiser are linfa-logistic's: the summed log loss
//! plus `alpha/2·‖w‖²` (the intercept unpenalised), minimised by argmin's
//! L-BFGS (10 corrections, Moré–Thuente line search) from zero or a warm
//! start, stopping on the gradient's norm. What differs is where the rows
//! come from. linfa reads an `ndarray` matrix, so fitting through it meant a
//! standardised copy of every training row beside the features (128 bytes
//! a row in f32, the largest allocation of a `linear` run: issue 29,
//! BENCHMARKS.md "Training memory, third step"); here a fit holds the
//! parameters and one row. The arithmetic is f64 throughout, as linfa's was
//! before the copy went to f32 to save memory. linfa's own fit stays as the
//! reference the export is checked against ([`super::linfa_probabilities`]).

use std::sync::Mutex;

use argmin::core::{CostFunction, Executor, Gradient};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use ndarray::Array1;

use super::scaling::Scaling;
use super::{GRADIENT_TOLERANCE_PER_ROW, MAX_ITERATIONS};
use crate::dataset::Rows;
use crate::families::FitError;
use crate::families::calibration::{sigmoid64, softplus64};

/// L-BFGS's memory: the corrections kept, linfa's choice.
const CORRECTIONS: usize = 10;

/// Some rows of a table, as the logistic fits read them: their standardised
/// used columns and their outcomes.
#[derive(Clone, Copy)]
pub(super) struct Design<'a> {
    pub(super) rows: &'a Rows,
    pub(super) scaling: &'a Scaling,
    /// Row indices, in the order the loss sums them.
    pub(super) idx: &'a [usize],
}

impl<'a> Design<'a> {
    /// The first `n` rows and the rest.
    pub(super) fn split_at(self, n: usize) -> (Design<'a>, Design<'a>) {
        let (a, b) = self.idx.split_at(n);
        (Design { idx: a, ..self }, Design { idx: b, ..self })
    }

    /// Rows in the design.
    pub(super) fn len(&self) -> usize {
        self.idx.len()
    }

    /// The outcome of the design's `r`-th row.
    fn correct(&self, r: usize) -> bool {
        self.rows.correct[self.idx[r]]
    }

    /// Whether the rows hold both outcomes (a logistic fit needs both).
    pub(super) fn both_outcomes(&self) -> bool {
        let pos = (0..self.len()).filter(|&r| self.correct(r)).count();
        pos > 0 && pos < self.len()
    }

    /// The outcomes, in order.
    pub(super) fn outcomes(&self) -> Vec<bool> {
        (0..self.len()).map(|r| self.correct(r)).collect()
    }

    /// Each row's logit under `fitted`, in order.
    pub(super) fn logits(&self, fitted: &Logit) -> Vec<f64> {
        let mut z = Vec::with_capacity(self.len());
        self.scaling
            .each_row(self.rows, self.idx, |_, x| z.push(fitted.at(x)));
        z
    }
}

/// The logit on standardised used columns, `w·x + b`, as p(correct).
#[derive(Clone, Debug)]
pub(super) struct Logit {
    pub(super) w: Array1<f64>,
    pub(super) b: f64,
}

impl Logit {
    /// From the optimiser's parameters, the intercept last.
    fn from_params(p: &Array1<f64>) -> Logit {
        let k = p.len() - 1;
        Logit {
            w: p.slice(ndarray::s![..k]).to_owned(),
            b: p[k],
        }
    }

    /// The optimiser's parameters, intercept last: a warm start for the
    /// next fit.
    pub(super) fn params(&self) -> Array1<f64> {
        let mut p = self.w.to_vec();
        p.push(self.b);
        Array1::from_vec(p)
    }

    /// The logit of one standardised row.
    fn at(&self, x: &[f64]) -> f64 {
        self.w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>() + self.b
    }
}

/// The L2 logistic regression of `design`'s outcomes on its standardised
/// columns, with linfa's `alpha` (a pull on the summed loss), from `initial`
/// (a [`Logit::params`]) when given, else from zero.
pub(super) fn fit(
    design: Design<'_>,
    alpha: f64,
    initial: Option<Array1<f64>>,
) -> Result<Logit, FitError> {
    let k = design.scaling.used.len();
    let start = initial.unwrap_or_else(|| Array1::zeros(k + 1));
    let problem = Loss {
        design,
        alpha,
        last: Mutex::new(None),
    };
    // linfa refused non-finite rows up front; here the loss at the start
    // says it (a NaN or infinite feature makes it NaN or infinite whatever
    // the weights). Not optional: on a NaN loss the line search never ends
    // (a test ran for ten minutes). The optimiser's first question is this
    // point's cost and gradient, so the pass is not repeated.
    let first = problem.evaluate(&start);
    if !first.cost.is_finite() || first.gradient.iter().any(|g| !g.is_finite()) {
        return Err(FitError::Optimiser(
            "the log loss is not finite (a non-finite feature?)".into(),
        ));
    }
    // The loss is summed over rows, so its gradient grows with them: a fixed
    // tolerance is never met on large tables and every fit ran to the cap.
    // Scaling by the rows makes it a per-row tolerance.
    let tolerance = GRADIENT_TOLERANCE_PER_ROW * design.len() as f64;
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), CORRECTIONS)
        .with_tolerance_grad(tolerance)
        .map_err(optimiser)?;
    let result = Executor::new(problem, solver)
        .configure(|state| state.param(start).max_iters(MAX_ITERATIONS))
        .run()
        .map_err(optimiser)?;
    // A line search that fails near the optimum ends the run with its best
    // parameters, as in linfa: not an error.
    let best = result
        .state
        .best_param
        .ok_or_else(|| FitError::Optimiser("L-BFGS ended without parameters".into()))?;
    if best.iter().any(|v| !v.is_finite()) {
        return Err(FitError::Optimiser(
            "L-BFGS ended on non-finite parameters".into(),
        ));
    }
    Ok(Logit::from_params(&best))
}

fn optimiser(e: argmin::core::Error) -> FitError {
    FitError::Optimiser(e.to_string())
}

/// The penalised loss as argmin sees it. The line search asks for the cost
/// and then the gradient at the same point; both come from one pass over
/// the rows, and the last point's are kept for the second question.
struct Loss<'a> {
    design: Design<'a>,
    alpha: f64,
    last: Mutex<Option<Evaluated>>,
}

/// The loss and its gradient at one point.
#[derive(Clone)]
struct Evaluated {
    at: Array1<f64>,
    cost: f64,
    gradient: Array1<f64>,
}

impl Loss<'_> {
    fn evaluate(&self, p: &Array1<f64>) -> Evaluated {
        // A poisoned lock only means an earlier evaluation panicked; the
        // cache is then recomputed, never trusted.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = last.as_ref().filter(|e| e.at == *p) {
            return e.clone();
        }
        let e = self.pass(p);
        *last = Some(e.clone());
        e
    }

    /// One pass over the rows: `Σ −log p(outcome) + alpha/2·‖w‖²` and its
    /// gradient; per row the loss and slope Platt's fit uses
    /// (`softplus(z) − y·z`, `σ(z) − y`).
    fn pass(&self, p: &Array1<f64>) -> Evaluated {
        let d = &self.design;
        let k = p.len() - 1;
        let logit = Logit::from_params(p);
        let mut g = vec![0f64; k + 1];
        let mut cost = 0f64;
        d.scaling.each_row(d.rows, d.idx, |r, x| {
            let y = if d.correct(r) { 1.0 } else { 0.0 };
            let z = logit.at(x);
            cost += softplus64(z) - y * z;
            let dz = sigmoid64(z) - y;
            for (g, x) in g[..k].iter_mut().zip(x) {
                *g += dz * x;
            }
            g[k] += dz;
        });
        cost += 0.5 * self.alpha * logit.w.dot(&logit.w);
        for (g, w) in g.iter_mut().zip(&logit.w) {
            *g += self.alpha * w;
        }
        Evaluated {
            at: p.clone(),
            cost,
            gradient: Array1::from_vec(g),
        }
    }
}

impl CostFunction for Loss<'_> {
    type Param = Array1<f64>;
    type Output = f64;

    /// An error where the loss is not finite (weights large enough to
    /// overflow a logit): a line search ends on it, and L-BFGS ends with its
    /// best point, where on a NaN it would search forever.
    fn cost(&self, p: &Array1<f64>) -> Result<f64, argmin::core::Error> {
        let cost = self.evaluate(p).cost;
        if cost.is_finite() {
            Ok(cost)
        } else {
            Err(argmin::core::Error::msg("the log loss is not finite"))
        }
    }
}

impl Gradient for Loss<'_> {
    type Param = Array1<f64>;
    type Gradient = Array1<f64>;

    fn gradient(&self, p: &Array1<f64>) -> Result<Array1<f64>, argmin::core::Error> {
        Ok(self.evaluate(p).gradient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskcast_contract::FEATURE_COUNT;

    /// `n` rows whose features are a deterministic hash of their position
    /// and whose outcome is mostly their first feature's sign.
    fn noisy_rows(n: usize) -> Rows {
        let mut rows = Rows::default();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for i in 0..n {
            let x: Vec<f32> = (0..FEATURE_COUNT)
                .map(|j| next() * (j + 1) as f32)
                .collect();
            rows.correct.push(x[0] + 0.3 * next() > 0.0 || i % 7 == 0);
            rows.x.extend(x);
            rows.seconds.push(None);
        }
        rows
    }

    #[test]
    fn the_gradient_is_the_loss_s_derivative() {
        let rows = noisy_rows(300);
        let scaling = Scaling::fit(&rows, 0..rows.len());
        let idx: Vec<usize> = (0..rows.len()).rev().collect();
        let loss = Loss {
            design: Design {
                rows: &rows,
                scaling: &scaling,
                idx: &idx,
            },
            alpha: 3.0,
            last: Mutex::new(None),
        };
        let k = scaling.used.len();
        let p = Array1::from_iter((0..=k).map(|j| 0.1 * j as f64 - 0.4));
        let at = loss.pass(&p);
        let h = 1e-5;
        for j in 0..=k {
            let mut up = p.clone();
            up[j] += h;
            let mut down = p.clone();
            down[j] -= h;
            let numeric = (loss.pass(&up).cost - loss.pass(&down).cost) / (2.0 * h);
            assert!(
                (numeric - at.gradient[j]).abs() < 1e-5 * (1.0 + numeric.abs()),
                "column {j}: {numeric} vs {}",
                at.gradient[j]
            );
        }
        // The cached answer is the pass's, and a second point is not served
        // from the first's cache.
        assert_eq!(loss.evaluate(&p).cost, at.cost);
        assert_ne!(loss.evaluate(&up_by(&p, 0.5)).cost, at.cost);
    }

    #[test]
    fn a_non_finite_feature_is_an_error_not_a_constant_model() {
        let mut rows = noisy_rows(200);
        let scaling = Scaling::fit(&rows, 0..rows.len());
        rows.x[3] = f32::NAN;
        let idx: Vec<usize> = (0..rows.len()).collect();
        let design = Design {
            rows: &rows,
            scaling: &scaling,
            idx: &idx,
        };
        assert!(matches!(
            fit(design, 1.0, None),
            Err(FitError::Optimiser(_))
        ));
    }

    fn up_by(p: &Array1<f64>, d: f64) -> Array1<f64> {
        p.mapv(|v| v + d)
    }

    #[test]
    fn the_fit_separates_what_the_rows_separate() {
        let rows = noisy_rows(2000);
        let scaling = Scaling::fit(&rows, 0..rows.len());
        let idx: Vec<usize> = (0..rows.len()).collect();
        let design = Design {
            rows: &rows,
            scaling: &scaling,
            idx: &idx,
        };
        let fitted = fit(design, 1.0, None).expect("fit");
        // The first feature decides the outcome: its weight dominates.
        let first = fitted.w[0];
        assert!(first > 1.0, "{first}");
        assert!(fitted.w.iter().skip(1).all(|w| w.abs() < first / 3.0));
        let z = design.logits(&fitted);
        let right = z
            .iter()
            .zip(design.outcomes())
            .filter(|(z, y)| (**z > 0.0) == *y)
            .count();
        assert!(right as f64 / rows.len() as f64 > 0.8, "{right}");
    }

    #[test]
    fn the_loss_stays_finite_far_out() {
        let rows = noisy_rows(200);
        let scaling = Scaling::fit(&rows, 0..rows.len());
        let idx: Vec<usize> = (0..rows.len()).collect();
        let loss = Loss {
            design: Design {
                rows: &rows,
                scaling: &scaling,
                idx: &idx,
            },
            alpha: 0.0,
            last: Mutex::new(None),
        };
        let k = scaling.used.len();
        // Logits in the hundreds, both signs: no overflow to NaN or ∞.
        for w in [-300.0, 300.0] {
            let e = loss.pass(&Array1::from_elem(k + 1, w));
            assert!(e.cost.is_finite() && e.cost > 0.0, "{w}: {}", e.cost);
            assert!(e.gradient.iter().all(|g| g.is_finite()), "{w}");
        }
    }
}

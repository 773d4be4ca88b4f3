//! Family `linear`: linfa's L2 logistic regression for correctness and linfa's
//! least-squares regression on log-seconds for time, on standardised features;
//! the standardisation is folded back into the weights so the exported graph
//! takes the shared feature rows as they are.

use linfa::prelude::*;
use linfa_linear::LinearRegression;
use linfa_logistic::{FittedLogisticRegression, LogisticRegression};
use ndarray::{Array1, Array2};
use taskcast_contract::FEATURE_COUNT;
use taskcast_contract::features::feature_index;
use taskcast_contract::linear::LinearModel;

use super::{FitError, check_both_outcomes};
use crate::data::dataset::Rows;

/// L2 strength on the summed log loss (linfa's convention; ≈ 1/C of scikit-learn).
pub const DEFAULT_ALPHA: f64 = 1.0;

/// L-BFGS iteration cap. On the real datasets and on 1 M simulated rows the
/// hold-out metrics agree to four decimals between 50, 100 and 200
/// iterations, while time grows linearly with them.
pub const MAX_ITERATIONS: u64 = 100;
/// Convergence: gradient norm of the summed loss below this times the rows.
pub const GRADIENT_TOLERANCE_PER_ROW: f64 = 1e-4;

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

/// The correctness half of [`fit`]: scaling and linfa's logistic regression.
fn fit_logistic(
    rows: &Rows,
    all: &[usize],
    alpha: f64,
) -> Result<(Scaling, FittedLogisticRegression<f64, bool>), FitError> {
    let scaling = Scaling::fit(rows, all);
    let x = scaling.matrix(rows, all);
    let y = Array1::from_iter(rows.correct.iter().copied());
    let fitted = LogisticRegression::default()
        .alpha(alpha)
        .max_iterations(MAX_ITERATIONS)
        // linfa's loss is summed over rows, so its gradient grows with n: a
        // fixed tolerance is never met on large tables and every fit ran to
        // the iteration cap. Scaling by n makes it a per-row tolerance.
        .gradient_tolerance(GRADIENT_TOLERANCE_PER_ROW * all.len() as f64)
        .fit(&linfa::Dataset::new(x, y))
        .map_err(|e| FitError::Linfa(e.to_string()))?;
    Ok((scaling, fitted))
}

/// linfa's own `predict_probabilities` for `eval`, standardised as [`fit`]
/// standardises, from the same logistic fit on `train`; and linfa's positive
/// class (`labels().pos`). The probabilities are of that class, so they are
/// p(correct) only when it is `true`. A reference for checking [`fit`]'s
/// folded weights and the exported graph against linfa itself.
pub fn linfa_probabilities(
    train: &Rows,
    alpha: f64,
    eval: &Rows,
) -> Result<(Vec<f64>, bool), FitError> {
    if train.is_empty() {
        return Err(FitError::Empty);
    }
    let all: Vec<usize> = (0..train.len()).collect();
    let (scaling, fitted) = fit_logistic(train, &all, alpha)?;
    let idx: Vec<usize> = (0..eval.len()).collect();
    let p = fitted.predict_probabilities(&scaling.matrix(eval, &idx));
    Ok((p.to_vec(), fitted.labels().pos.class))
}

/// Fits the linear family on `rows` (all of them). Without `learn_time` (the
/// data cannot support a time head: [`crate::data::time_support`]) times come from
/// the item prior, which falls back to the topic and population priors.
pub fn fit(rows: &Rows, alpha: f64, learn_time: bool) -> Result<LinearModel, FitError> {
    if rows.is_empty() {
        return Err(FitError::Empty);
    }
    let all: Vec<usize> = (0..rows.len()).collect();
    check_both_outcomes(rows)?;
    let (scaling, fitted) = fit_logistic(rows, &all, alpha)?;
    // linfa's "positive" class is the more frequent label, not `true`: flip
    // when `false` is positive, or the model would predict the complement.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    let (p_weights, p_bias) = scaling.unfold(
        &fitted.params().mapv(|w| w * sign),
        fitted.intercept() * sign,
    );

    let timed: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| rows.log_time(i).is_some())
        .collect();
    let (t_weights, t_bias, offsets) = if learn_time && timed.len() > FEATURE_COUNT * 2 {
        let ts = Scaling::fit(rows, &timed);
        let xt = ts.matrix(rows, &timed);
        let yt = Array1::from_iter(timed.iter().filter_map(|&i| rows.log_time(i)));
        let reg = LinearRegression::new()
            .fit(&linfa::Dataset::new(xt.clone(), yt.clone()))
            .map_err(|e| FitError::Linfa(e.to_string()))?;
        let pred = reg.predict(&xt);
        let mut resid: Vec<f64> = yt.iter().zip(pred.iter()).map(|(y, p)| y - p).collect();
        resid.sort_by(f64::total_cmp);
        let q = |p: f64| resid[((resid.len() - 1) as f64 * p).round() as usize];
        let (w, b) = ts.unfold(reg.params(), reg.intercept());
        (w, b, [q(0.1) as f32, q(0.5) as f32, q(0.9) as f32])
    } else {
        // Too few times to learn from: the item prior's typical time (its own,
        // else its topic's, else the population's), with the bootstrap's spread.
        let mut w = [0f32; FEATURE_COUNT];
        if let Some(i) = feature_index("prior_item_log_time") {
            w[i] = 1.0;
        }
        (w, 0.0, [-1.0, 0.0, 1.0])
    };
    Ok(LinearModel {
        p_weights,
        p_bias,
        t_weights,
        t_bias,
        t_quantile_offsets: offsets,
    })
}

//! The time head: the median of log-seconds by least absolute deviations, a
//! per-row scale from enough timed rows, and the interval of the residuals.

use ndarray::{Array1, ArrayView1};
use taskcast_contract::{FEATURE_COUNT, FeatureRow};

use super::dot;
use super::scaling::Scaling;
use crate::dataset::Rows;
use crate::families::FitError;
use crate::families::auto::enough_learners;

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
    pub(super) fn at(&self, row: &FeatureRow) -> f32 {
        dot(&self.weights, self.bias, row)
            .clamp(self.log_range[0], self.log_range[1])
            .exp()
    }
}

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

/// Weights on standardised used columns and an intercept.
type Fit = (Array1<f64>, f64);

/// The timed rows' standardised used columns, read one row at a time.
///
/// Why no matrix: every pass of the head (the normal equations, the
/// reweighting, the scale's regression) reads the rows once, in order, and
/// an f64 matrix of them was as large as the logistic fit's, which it
/// followed: at 1 M rows the two were the run's peak in turn (issue 29).
/// Standardising a row again per pass costs a few divisions per column.
/// The values are the matrix's and every sum is taken in the same order
/// (`predict` below), so the head is the same to the bit.
struct Standardised<'a> {
    rows: &'a Rows,
    idx: &'a [usize],
    scaling: &'a Scaling,
}

impl Standardised<'_> {
    fn ncols(&self) -> usize {
        self.scaling.used.len()
    }

    /// Calls `f` with each row's position and standardised used columns.
    fn each(&self, f: impl FnMut(usize, &[f64])) {
        self.scaling.each_row(self.rows, self.idx, f);
    }

    /// `x·β + c` per row, each row's sum taken by ndarray's dot product, as
    /// its matrix-vector product takes it.
    fn predict(&self, (beta, c): &Fit) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.idx.len());
        self.each(|_, x| out.push(ArrayView1::from(x).dot(beta) + c));
        out
    }
}

/// The median of log-seconds by least absolute deviations: iteratively
/// reweighted least squares from the least-squares fit.
fn median_regression(x: &Standardised<'_>, y: &[f64]) -> Option<Fit> {
    let mut loc = least_squares(x, y, None)?;
    let mut w = vec![1.0; y.len()];
    for _ in 0..LAD_ITERATIONS {
        let pred = x.predict(&loc);
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
fn least_squares(x: &Standardised<'_>, y: &[f64], w: Option<&[f64]>) -> Option<Fit> {
    let k = x.ncols();
    let d = k + 1;
    // Upper triangle of the normal matrix, row-major.
    let mut a = vec![0f64; d * d];
    let mut rhs = vec![0f64; d];
    let mut total = 0f64;
    let mut xi = vec![0f64; d];
    x.each(|r, row| {
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
    });
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

/// Fewer timed rows on the inner validation slice than this (or too few
/// learners, [`enough_learners`]) and the interval is [`interval`]'s, from
/// the training residuals: the slice's own 10th and 90th percentiles would
/// rest on fewer than 20 rows each.
pub const MIN_SLICE_INTERVAL_ROWS: usize = 200;

impl TimeHead {
    /// The standardised residuals of the timed rows `idx` under this head:
    /// `(ln seconds − median) / scale`, the scale 1 without a per-row one.
    pub(crate) fn residuals(&self, rows: &Rows, idx: &[usize]) -> Vec<f64> {
        idx.iter()
            .filter_map(|&i| {
                let row: &FeatureRow = rows.row(i).try_into().ok()?;
                let loc = f64::from(dot(&self.weights, self.bias, row));
                let scale = self.scale.as_ref().map_or(1.0, |s| f64::from(s.at(row)));
                rows.log_time(i).map(|t| (t - loc) / scale)
            })
            .collect()
    }
}

/// The head's interval with its ends moved halfway towards what the inner
/// validation slice measured: the 10th and 90th percentiles of the slice's
/// standardised residuals. The median stays the training rows' own. `None`
/// (the head's own interval stands) below [`MIN_SLICE_INTERVAL_ROWS`] timed
/// slice rows or from too few learners ([`enough_learners`]): on
/// `ednet_kt1_rt`'s first four learners (466 slice rows) the slice narrowed the interval and
/// coverage fell from 0.763 to 0.736, as `auto` was misled by the same few
/// learners; at 20 learners it went from a too wide 0.869 to 0.847.
///
/// Why: [`interval`]'s `±Z90·σ` of the training residuals covered 0.81 of
/// `assist2009_rt`'s hold-out, whose log-time residuals are close to
/// normal, but 0.84 of `ednet_kt1_rt`'s, where questions of one bundle share
/// one recorded time and the tails make σ wide. The slice's percentiles
/// assume no shape, and the slice is the part of each learner's rows
/// nearest the hold-out in time, but it is a few hundred rows: alone they
/// covered 0.79 and 0.77 (too narrow on assist2009_rt). Halfway between,
/// 0.82 and 0.79 (EVALUATION.md, "Feature schema v2"). The head saw the
/// slice among all its rows; a head fitted without it gave the same
/// coverage (0.817, 0.792) for a second fit's time, 8 s at 1 M rows.
pub(crate) fn slice_interval(head: &TimeHead, rows: &Rows, slice: &[usize]) -> Option<[f32; 3]> {
    if slice.len() < MIN_SLICE_INTERVAL_ROWS
        || !enough_learners(slice.iter().map(|&i| rows.user[i]))
    {
        return None;
    }
    Some(slice_ends(head.offsets, head.residuals(rows, slice)))
}

/// `offsets` with each end moved halfway to the 10th or 90th percentile of
/// `u`, residuals of the slice ([`slice_interval`]); unchanged with fewer than
/// [`MIN_SLICE_INTERVAL_ROWS`] of them.
fn slice_ends(offsets: [f32; 3], mut u: Vec<f64>) -> [f32; 3] {
    if u.len() < MIN_SLICE_INTERVAL_ROWS {
        return offsets;
    }
    u.sort_by(f64::total_cmp);
    let at = |q: f64| u[((q * (u.len() - 1) as f64).round() as usize).min(u.len() - 1)] as f32;
    [
        0.5 * (at(0.1) + offsets[0]),
        offsets[1],
        0.5 * (at(0.9) + offsets[2]),
    ]
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
    let singular = || FitError::Optimiser("time regression: singular design".into());
    let ts = Scaling::fit(rows, idx.iter().copied());
    let x = Standardised {
        rows,
        idx,
        scaling: &ts,
    };
    let y: Vec<f64> = idx.iter().filter_map(|&i| rows.log_time(i)).collect();
    let loc = median_regression(&x, &y).ok_or_else(singular)?;
    // The per-row vectors below reuse each other's memory where one is done
    // with (the residuals overwrite the targets, the standardised residuals
    // the residuals): at 1 M rows each is 8 MB, and the head runs at the end
    // of the logistic fit's peak (issue 29).
    let mut resid = y;
    for (r, p) in resid.iter_mut().zip(x.predict(&loc)) {
        *r -= p;
    }
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
    let scale = least_squares(&x, &target, None).ok_or_else(singular)?;
    drop(target);
    let ls = x.predict(&scale);
    let (lo, hi) = ls
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let mut u = resid;
    for (r, s) in u.iter_mut().zip(&ls) {
        *r /= s.exp();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` residuals evenly spread over `[lo, hi]`.
    fn spread(n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n)
            .map(|k| lo + (hi - lo) * k as f64 / (n - 1) as f64)
            .collect()
    }

    #[test]
    fn few_slice_rows_leave_the_interval_alone() {
        let offsets = [-1.0, 0.1, 1.0];
        let u = spread(MIN_SLICE_INTERVAL_ROWS - 1, -5.0, 5.0);
        assert_eq!(slice_ends(offsets, u), offsets);
    }

    #[test]
    fn the_ends_move_halfway_to_the_slice_percentiles() {
        let offsets = [-1.0, 0.1, 1.0];
        // 10th and 90th percentiles of an even spread over [-5, 5]: ∓4.
        let u = spread(1001, -5.0, 5.0);
        let [lo, mid, hi] = slice_ends(offsets, u);
        assert!((lo - -2.5).abs() < 1e-6, "{lo}");
        assert_eq!(mid, 0.1, "the median stays the training rows'");
        assert!((hi - 2.5).abs() < 1e-6, "{hi}");
    }

    #[test]
    fn the_slice_order_does_not_matter() {
        let offsets = [-1.0, 0.0, 1.0];
        let u = spread(400, -3.0, 2.0);
        let mut reversed = u.clone();
        reversed.reverse();
        assert_eq!(slice_ends(offsets, u), slice_ends(offsets, reversed));
    }

    /// `n` rows of varied features (a few constant columns, which the
    /// scaling leaves out) with a time each.
    fn varied_rows(n: usize) -> Rows {
        let mut rows = Rows::default();
        for i in 0..n {
            rows.x.extend((0..FEATURE_COUNT).map(|j| match j % 5 {
                0 => 1.0,
                _ => ((i * 37 + j * 11) % 101) as f32 / 7.0 - (j as f32).sqrt(),
            }));
            rows.seconds.push(Some(5.0 + (i % 17) as f64));
            rows.correct.push(i % 3 == 0);
        }
        rows
    }

    #[test]
    fn row_by_row_products_are_the_matrix_products_to_the_bit() {
        let rows = varied_rows(700);
        let idx: Vec<usize> = (0..rows.len()).step_by(2).collect();
        let scaling = Scaling::fit(&rows, idx.iter().copied());
        let x = Standardised {
            rows: &rows,
            idx: &idx,
            scaling: &scaling,
        };
        assert!(x.ncols() > 20 && x.ncols() < FEATURE_COUNT, "{}", x.ncols());
        // The matrix the head used to build, and its product with ndarray.
        let mut m = ndarray::Array2::<f64>::zeros((idx.len(), x.ncols()));
        x.each(|r, v| m.row_mut(r).assign(&ArrayView1::from(v)));
        let fit: Fit = (
            (0..x.ncols()).map(|j| 0.37 * j as f64 - 1.3).collect(),
            0.25,
        );
        let want = m.dot(&fit.0) + fit.1;
        assert_eq!(x.predict(&fit), want.to_vec());
    }
}

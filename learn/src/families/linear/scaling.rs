//! Standardising the feature columns, and which of them a regression may use.

use ndarray::{Array1, Array2};
use taskcast_contract::FEATURE_COUNT;

use crate::dataset::Rows;

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
pub(super) struct Scaling {
    pub(super) mean: [f64; FEATURE_COUNT],
    pub(super) scale: [f64; FEATURE_COUNT],
    pub(super) used: Vec<usize>,
}

/// A column whose variance left after regressing it on the kept columns is
/// below this share of its own is dropped: its information is already there
/// (R² above 0.9999), and keeping it only buys huge, cancelling weights.
const COLLINEAR_RESIDUAL: f64 = 1e-4;

impl Scaling {
    /// From rows `idx` (twice iterated: the means, then the covariance).
    pub(super) fn fit(rows: &Rows, idx: impl Iterator<Item = usize> + Clone) -> Scaling {
        let n = idx.clone().count().max(1) as f64;
        let mut mean = [0f64; FEATURE_COUNT];
        for i in idx.clone() {
            for (j, v) in rows.row(i).iter().enumerate() {
                mean[j] += f64::from(*v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        // Covariance in one pass over the rows (k² / 2 per row, k = 24); only
        // the upper triangle is filled.
        let mut cov = [[0f64; FEATURE_COUNT]; FEATURE_COUNT];
        let mut centred = [0f64; FEATURE_COUNT];
        for i in idx {
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

    /// Row `row`'s standardised used columns, into `out` (one per used
    /// column): what every regression reads.
    fn standardise(&self, row: &[f32], out: &mut [f64]) {
        for (o, &j) in out.iter_mut().zip(&self.used) {
            *o = (f64::from(row[j]) - self.mean[j]) / self.scale[j];
        }
    }

    /// The standardised used columns of rows `idx`, as a matrix: what
    /// linfa's logistic regression reads, for the reference fit
    /// ([`super::linfa_probabilities`]); the family's own fits stream
    /// ([`super::logistic`]).
    pub(super) fn columns(&self, rows: &Rows, idx: &[usize]) -> Array2<f64> {
        let mut x = Array2::<f64>::zeros((idx.len(), self.used.len()));
        self.each_row(rows, idx, |r, v| {
            x.row_mut(r).assign(&ndarray::ArrayView1::from(v))
        });
        x
    }

    /// Calls `f` with the position of each row of `idx` and its standardised
    /// used columns, one row at a time.
    pub(super) fn each_row(&self, rows: &Rows, idx: &[usize], mut f: impl FnMut(usize, &[f64])) {
        let mut buf = [0f64; FEATURE_COUNT];
        let buf = &mut buf[..self.used.len()];
        for (r, &i) in idx.iter().enumerate() {
            self.standardise(rows.row(i), buf);
            f(r, buf);
        }
    }

    /// Weights on standardised used columns → weights and bias on raw rows.
    pub(super) fn unfold(&self, w: &Array1<f64>, b: f64) -> ([f32; FEATURE_COUNT], f32) {
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

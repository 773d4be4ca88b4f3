//! Calibration of p(correct) on the inner validation slice, carried inside
//! the exported graph.
//!
//! Platt scaling of the model's logit: `p = σ(a·z + b)`. Both families end
//! in a linear layer before the sigmoid, so `a` and `b` fold exactly into its
//! weights and bias ([`Platt::fold`]): the graph keeps its shape, serving runs
//! it unchanged, and the export check compares the calibrated model with its
//! own graph.
//!
//! The slice is the chronologically last [`super::VALIDATION_SHARE`] of each
//! learner's training rows, predicted by a model that did not fit them. Being
//! later than the rows the model learned from, it also carries the drift
//! between the training rows and the hold-out (learners improve: later
//! attempts succeed more often), which the shift `b` corrects.
//!
//! Small slices: the fit maximises the slice's likelihood under a Gaussian
//! prior centred on the identity `(1, 0)` ([`PRIOR_PRECISION`]), so a slice of
//! a few dozen rows moves the logit little and a slice of tens of thousands
//! as far as its evidence goes; below [`MIN_CALIBRATION_ROWS`] rows, or
//! [`MIN_CALIBRATION_CLASS_ROWS`] of either outcome, nothing is fitted.

/// Fewer validation rows than this and no calibration is fitted: a bias
/// estimated from fewer than 30 Bernoulli outcomes has a standard error
/// above 0.08, more than the ECE the issue allows at any size.
pub const MIN_CALIBRATION_ROWS: usize = 30;
/// …nor with fewer than this many rows of either outcome, where the slope is
/// set by a handful of answers.
pub const MIN_CALIBRATION_CLASS_ROWS: usize = 5;
/// Precision of the Gaussian prior on `(a − 1, b)`, in the units of the
/// log-likelihood's curvature: a row contributes `p(1 − p)·z²` (about 0.2 for
/// a logit of 1), so the prior weighs about as much as 500 rows. The slice is
/// an imperfect stand-in for the hold-out (its rows are featurised with
/// out-of-fold priors, the hold-out's with all the training rows'), and on
/// the learning curve (EVALUATION.md) a prior worth 50 rows over-corrected
/// more often than it helped below 100 learners; with this one the
/// calibration is about neutral there and takes 0.003–0.006 off `mlp`'s ECE
/// at 100 learners on the two 2009 files.
pub const PRIOR_PRECISION: f64 = 100.0;
/// The slope is kept in this range: `a ≤ 0` would reverse the ranking, and
/// a slope far from 1 says the slice is unlike what the model was fitted
/// on, not that the model should be trusted ten times more or less.
pub const SLOPE_RANGE: (f64, f64) = (0.25, 4.0);

/// `p = σ(scale·z + shift)` on the model's logit `z`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Platt {
    /// The slope `a` (1/temperature).
    pub scale: f64,
    /// The shift `b`.
    pub shift: f64,
}

impl Platt {
    /// No change.
    pub const IDENTITY: Platt = Platt {
        scale: 1.0,
        shift: 0.0,
    };

    /// The calibrated logit.
    pub fn apply(&self, z: f64) -> f64 {
        self.scale * z + self.shift
    }

    /// Folds the calibration into a last linear layer `z = w·h + c` (f32, as
    /// exported): `a·z + b = (a·w)·h + (a·c + b)`.
    pub fn fold<'a>(&self, weights: impl IntoIterator<Item = &'a mut f32>, bias: &mut f32) {
        for w in weights {
            *w = (self.scale * f64::from(*w)) as f32;
        }
        *bias = self.apply(f64::from(*bias)) as f32;
    }

    /// Fits `(a, b)` on logits `z` and outcomes `y` of the validation slice:
    /// Newton's method on the penalised log loss (module docs). `None` when
    /// the slice is too small to say anything ([`MIN_CALIBRATION_ROWS`],
    /// [`MIN_CALIBRATION_CLASS_ROWS`]) or a logit is not finite.
    pub fn fit(z: &[f64], y: &[bool]) -> Option<Platt> {
        let n = z.len().min(y.len());
        let positives = y[..n].iter().filter(|c| **c).count();
        if n < MIN_CALIBRATION_ROWS
            || positives.min(n - positives) < MIN_CALIBRATION_CLASS_ROWS
            || z[..n].iter().any(|v| !v.is_finite())
        {
            return None;
        }
        let prior = PRIOR_PRECISION;
        let objective = |p: &Platt| {
            let nll: f64 = z[..n]
                .iter()
                .zip(&y[..n])
                .map(|(&zi, &yi)| {
                    let s = p.apply(zi);
                    softplus64(s) - if yi { s } else { 0.0 }
                })
                .sum();
            nll + 0.5 * prior * ((p.scale - 1.0).powi(2) + p.shift.powi(2))
        };
        let mut cur = Platt::IDENTITY;
        let mut f = objective(&cur);
        for _ in 0..50 {
            // Gradient and Hessian of the penalised loss in (a, b).
            let (mut ga, mut gb) = (prior * (cur.scale - 1.0), prior * cur.shift);
            let (mut haa, mut hab, mut hbb) = (prior, 0.0, prior);
            for (&zi, &yi) in z[..n].iter().zip(&y[..n]) {
                let p = sigmoid64(cur.apply(zi));
                let r = p - if yi { 1.0 } else { 0.0 };
                let w = p * (1.0 - p);
                ga += r * zi;
                gb += r;
                haa += w * zi * zi;
                hab += w * zi;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det <= 0.0 || !det.is_finite() {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            // Step halving keeps every step downhill.
            let mut step = 1.0;
            let mut next = cur;
            let mut improved = false;
            for _ in 0..30 {
                next = Platt {
                    scale: cur.scale - step * da,
                    shift: cur.shift - step * db,
                };
                let fn_ = objective(&next);
                if fn_ <= f {
                    improved = f - fn_ > 1e-12 * f.abs().max(1.0);
                    f = fn_;
                    break;
                }
                step *= 0.5;
            }
            cur = next;
            if !improved || (da.abs() + db.abs()) * step < 1e-9 {
                break;
            }
        }
        let scale = cur.scale.clamp(SLOPE_RANGE.0, SLOPE_RANGE.1);
        (scale.is_finite() && cur.shift.is_finite()).then_some(Platt {
            scale,
            shift: cur.shift,
        })
    }
}

/// The logistic function in f64.
pub fn sigmoid64(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Log loss of one row from its logit.
pub fn row_log_loss(z: f64, y: bool) -> f64 {
    let p = sigmoid64(z).clamp(1e-15, 1.0 - 1e-15);
    if y { -p.ln() } else { -(1.0 - p).ln() }
}

/// Per-row log loss of logits `z` on outcomes `y` after `calibration`: how
/// every family scores itself on the inner validation slice, so that `auto`
/// can compare them row by row.
pub fn calibrated_losses(z: &[f64], y: &[bool], calibration: Option<Platt>) -> Vec<f64> {
    let c = calibration.unwrap_or(Platt::IDENTITY);
    z.iter()
        .zip(y)
        .map(|(&z, &y)| row_log_loss(c.apply(z), y))
        .collect()
}

/// The mean of per-row losses, `None` when there are none.
pub fn mean_loss(losses: &[f64]) -> Option<f64> {
    (!losses.is_empty()).then(|| losses.iter().sum::<f64>() / losses.len() as f64)
}

impl Platt {
    /// [`Platt::fit`], kept only when it explains the slice significantly
    /// better than no calibration: twice the log-likelihood gain above
    /// [`SIGNIFICANCE_CHI2`]. For a model that is calibrated on its training
    /// rows by construction (a logistic regression's intercept and weights
    /// solve `Σ (p − y)·x = 0` there), a shift the slice cannot establish is
    /// noise or the slice's own difference from the hold-out, not a
    /// correction.
    pub fn fit_if_significant(z: &[f64], y: &[bool]) -> Option<Platt> {
        let fitted = Platt::fit(z, y)?;
        let nll = |p: &Platt| -> f64 {
            z.iter()
                .zip(y)
                .map(|(&zi, &yi)| {
                    let s = p.apply(zi);
                    softplus64(s) - if yi { s } else { 0.0 }
                })
                .sum()
        };
        let gain = 2.0 * (nll(&Platt::IDENTITY) - nll(&fitted));
        (gain > SIGNIFICANCE_CHI2).then_some(fitted)
    }
}

/// The 95th percentile of χ² with two degrees of freedom: the likelihood-ratio
/// test of `(a, b)` against `(1, 0)` at 5 %.
pub const SIGNIFICANCE_CHI2: f64 = 5.99;

/// `ln(1 + e^z)` without overflow, in f64.
pub(crate) fn softplus64(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits and outcomes drawn from `σ(true_a·z + true_b)`, deterministic.
    fn sample(n: usize, true_a: f64, true_b: f64) -> (Vec<f64>, Vec<bool>) {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut uniform = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let z = 4.0 * uniform() - 2.0;
                let y = uniform() < sigmoid64(true_a * z + true_b);
                (z, y)
            })
            .unzip()
    }

    #[test]
    fn recovers_an_over_confident_logit_on_a_large_slice() {
        // The model's logit is twice what it should be, and 0.3 too low.
        let (z, y) = sample(20_000, 0.5, 0.3);
        let p = Platt::fit(&z, &y).expect("fitted");
        assert!((p.scale - 0.5).abs() < 0.05, "{p:?}");
        assert!((p.shift - 0.3).abs() < 0.05, "{p:?}");
    }

    #[test]
    fn small_slices_move_little_and_tiny_ones_not_at_all() {
        let (z, y) = sample(40, 0.5, 0.3);
        let p = Platt::fit(&z, &y).expect("fitted");
        let (zl, yl) = sample(20_000, 0.5, 0.3);
        let large = Platt::fit(&zl, &yl).expect("fitted");
        assert!(
            (p.scale - 1.0).abs() < (large.scale - 1.0).abs(),
            "{p:?} vs {large:?}"
        );
        assert_eq!(Platt::fit(&z[..20], &y[..20]), None);
        // One outcome only.
        assert_eq!(Platt::fit(&z, &vec![true; z.len()]), None);
    }

    #[test]
    fn fold_is_exact_for_a_linear_layer() {
        let p = Platt {
            scale: 0.7,
            shift: -0.2,
        };
        let (mut w, mut c) = ([0.5f32, -1.25, 2.0], 0.125f32);
        let h = [1.0f32, 2.0, -0.5];
        let before: f32 = w.iter().zip(&h).map(|(a, b)| a * b).sum::<f32>() + c;
        p.fold(w.iter_mut(), &mut c);
        let after: f32 = w.iter().zip(&h).map(|(a, b)| a * b).sum::<f32>() + c;
        assert!((f64::from(after) - p.apply(f64::from(before))).abs() < 1e-6);
    }
}

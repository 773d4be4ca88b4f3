//! The choice of L2 strength on the inner validation slice: the grid's
//! logistic fits ([`super::logistic`]), warm-started along it.

use ndarray::Array1;

use super::logistic::{Design, fit};
use super::{FALLBACK_ALPHA, L2_GRID};
use crate::families::FitError;
use crate::families::calibration::row_log_loss;

/// One strength of the grid, fitted on the fit rows and scored on the slice.
struct Tried {
    l2: f64,
    /// The slice's logits.
    z: Vec<f64>,
    /// The slice's log loss, per row.
    losses: Vec<f64>,
    /// The fit's parameters: the final fit on every row starts from the
    /// chosen one's.
    params: Array1<f64>,
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

/// The fit rows and the inner validation slice.
pub(super) struct Split<'a> {
    pub(super) fit: Design<'a>,
    pub(super) val: Design<'a>,
}

/// What [`choose_l2`] settled on.
pub(super) struct Choice {
    /// The per-row strength.
    pub(super) l2: f64,
    /// The slice's logits from the fit on the other rows.
    pub(super) z: Vec<f64>,
    /// That fit's parameters, a warm start for the final fit.
    pub(super) params: Array1<f64>,
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
    let n_fit = split.fit.len() as f64;
    let val_y = split.val.outcomes();
    // The fallback's prior is the least regularisation there is: the slice
    // may strengthen it, never loosen it.
    let floor = FALLBACK_ALPHA / n_fit;
    let candidates =
        std::iter::once(floor).chain(L2_GRID.iter().rev().copied().filter(|&l| l > floor));
    let mut tried: Vec<Tried> = Vec::with_capacity(L2_GRID.len() + 1);
    let mut start = None;
    let mut best = 0;
    for l2 in candidates {
        let fitted = fit(split.fit, l2 * n_fit, start.take())?;
        let params = fitted.params();
        start = Some(params.clone());
        let z = split.val.logits(&fitted);
        let losses = z
            .iter()
            .zip(&val_y)
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

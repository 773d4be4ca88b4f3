//! `auto`: fit every family and keep the simplest one that no other beats
//! on the inner validation slice. Each family scores, row by row, logits that
//! nothing was fitted to on the slice: `linear` and `mlp` those of their fit
//! on the other training rows before the calibration (which is fitted on the
//! slice itself: at a few dozen rows its two parameters flatter the family
//! they calibrate), `pretrained` its weights calibrated on the other rows.
//! The hold-out is never looked at (the gate still judges the one chosen
//! there, as it judges any family).
//!
//! The families are tried from the fewest parameters fitted on the app's
//! data to the most ([`ORDER`]: `pretrained`'s two, `linear`'s two dozen,
//! `mlp`'s thousands),
//! and a family displaces the current choice only when
//! its mean slice log loss is lower by more than one standard error of the
//! difference, taken over learners ([`beats`]), and only on a slice of at
//! least [`MIN_SELECTION_ROWS`] rows (the bound below which `linear` does not
//! choose its L2 strength on the slice either) from at least
//! [`MIN_SELECTION_LEARNERS`] learners. At the original app's scale the
//! slice has a few dozen rows, the last few attempts of four learners: on 4
//! real learners `mlp` beat `pretrained` there by more than a standard error
//! and was the worst of the three on the hold-out (EVALUATION.md,
//! "Pretrained starting model"). As the app's data grows the slice does too,
//! and its own fits take over where they are really better.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::calibration::mean_loss;
pub use super::linear::MIN_SELECTION_ROWS;
use super::{Family, FitError, FitOptions, Fitted, VALIDATION_SHARE, validation_split};
use crate::dataset::{Dataset, Rows};

/// Fewer learners than this on the slice and no family displaces another.
/// The slice's losses are not only noisy but biased in favour of the family
/// that chose the most on it (`mlp` its epoch, `linear` its strength), and
/// a few learners cannot show that bias for what it is: on `ednet_kt1_rt`'s
/// first four learners (470 slice rows) `mlp` beat `linear` on the slice by
/// 0.030 of log loss, on every learner, and lost to it on the hold-out by
/// 0.040 (EVALUATION.md, "Feature schema v2"). At 20 learners the slice
/// chose the hold-out's better family on both timed files.
pub const MIN_SELECTION_LEARNERS: usize = 10;

/// The order families are tried in: fewest parameters fitted on the app's
/// data first (`pretrained` two, `linear` two dozen, `mlp` thousands).
pub const ORDER: [Family; 3] = [Family::Pretrained, Family::Linear, Family::Mlp];

/// Why `auto` chose what it chose: every family's mean slice log loss
/// (`None` without a slice) or why its fit failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// The family chosen.
    pub chosen: Family,
    /// Each family tried and its slice log loss, or why it has none.
    pub tried: Vec<(Family, Result<Option<f64>, String>)>,
}

impl Choice {
    /// The record written into the artifact's metrics:
    /// `auto_<family>_validation_log_loss` for each family that had one.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        self.tried
            .iter()
            .filter_map(|(f, r)| match r {
                Ok(Some(v)) => Some((format!("auto_{}_validation_log_loss", f.name()), *v)),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "auto chose {}, the simplest family no other beat by a standard error on a \
             validation slice of at least {MIN_SELECTION_ROWS} rows from \
             {MIN_SELECTION_LEARNERS} learners (",
            self.chosen
        )?;
        for (k, (family, r)) in self.tried.iter().enumerate() {
            if k > 0 {
                f.write_str(", ")?;
            }
            match r {
                Ok(Some(v)) => write!(f, "{family} {v:.4}")?,
                Ok(None) => write!(f, "{family} no slice")?,
                Err(e) => write!(f, "{family} failed: {e}")?,
            }
        }
        f.write_str(")")
    }
}

/// Whether `challenger`'s slice losses beat `current`'s by more than one
/// standard error of their mean row-wise difference (same rows, same order;
/// a family without them never beats one with them, and one with them always
/// beats one without).
///
/// The standard error is taken over learners: `learners[i]` is row `i`'s
/// learner. A learner's rows on the slice are their last few attempts, one
/// after the other, so a family that suits one learner wins on all of that
/// learner's rows together; counted as independent rows, that one learner
/// looked like evidence. On `ednet_kt1_rt`'s first four learners `mlp` beat
/// `linear` on the slice by more than a row-wise standard error and lost on
/// the hold-out by 0.04 of log loss (EVALUATION.md, "Feature schema v2").
/// With fewer than two learners nothing can be told apart and the current
/// choice stays. When `learners` does not match the rows (a family fitted
/// with another slice share), each row counts as its own learner.
pub fn beats(challenger: &[f64], current: &[f64], learners: &[u32]) -> bool {
    if current.is_empty() {
        return !challenger.is_empty();
    }
    if challenger.len() != current.len() {
        return false;
    }
    let d: Vec<f64> = challenger.iter().zip(current).map(|(a, b)| a - b).collect();
    let m = d.len() as f64;
    let mean = d.iter().sum::<f64>() / m;
    // Each learner's summed deviation from the mean (the cluster-robust
    // variance of a mean); a B-tree so that the sum of squares is taken in
    // one order on every run.
    let mut by_learner: BTreeMap<usize, f64> = BTreeMap::new();
    let matched = learners.len() == d.len();
    for (i, v) in d.iter().enumerate() {
        let g = if matched { learners[i] as usize } else { i };
        *by_learner.entry(g).or_default() += v - mean;
    }
    let g = by_learner.len() as f64;
    if g < 2.0 {
        return false;
    }
    let variance = by_learner.values().map(|s| s * s).sum::<f64>() / (m * m) * g / (g - 1.0);
    mean < -variance.sqrt()
}

/// Fits every family of [`ORDER`] and returns the chosen fit and why. Fails
/// only when every family fails (with the first family's error: the data,
/// not the family, is then the problem).
pub fn choose(ds: &Dataset, opts: &FitOptions) -> Result<(Fitted, Choice), FitError> {
    choose_with(&ORDER, &ds.train, |family| Fitted::fit(family, ds, opts))
}

/// The learner of each row of the inner validation slice of `rows`, in the
/// slice's order ([`validation_split`] with [`VALIDATION_SHARE`], as the
/// families split it): what [`beats`] takes its standard error over.
fn slice_learners(rows: &Rows) -> Vec<u32> {
    let (_, val) = validation_split(rows, VALIDATION_SHARE);
    val.iter().map(|&i| rows.user[i]).collect()
}

/// Whether the slice rows' `learners` (one per row) are at least
/// [`MIN_SELECTION_LEARNERS`] distinct learners: below that, no family
/// displaces another, and the time interval keeps its training-row ends.
pub(crate) fn enough_learners(learners: impl IntoIterator<Item = u32>) -> bool {
    learners.into_iter().collect::<BTreeSet<_>>().len() >= MIN_SELECTION_LEARNERS
}

/// [`choose`] among the fits `fit` returns for each family of `order`
/// ([`ORDER`] but to measure another), so that a caller which fits those
/// families anyway (`eval`'s table) fits each of them once. `train` are the
/// training rows the fits were made on: their slice's learners are what the
/// standard error is taken over.
pub fn choose_with(
    order: &[Family],
    train: &Rows,
    mut fit: impl FnMut(Family) -> Result<Fitted, FitError>,
) -> Result<(Fitted, Choice), FitError> {
    let learners = slice_learners(train);
    let enough_learners = enough_learners(learners.iter().copied());
    let mut best: Option<Fitted> = None;
    let mut first_error = None;
    let mut tried = Vec::with_capacity(order.len());
    for &family in order {
        match fit(family) {
            Ok(fitted) => {
                tried.push((family, Ok(mean_loss(fitted.validation_losses()))));
                let better = best.as_ref().is_none_or(|b| {
                    enough_learners
                        && b.validation_losses().len() >= MIN_SELECTION_ROWS
                        && beats(fitted.validation_losses(), b.validation_losses(), &learners)
                });
                if better {
                    best = Some(fitted);
                }
            }
            Err(e) => {
                tracing::warn!(%family, error = %e, "auto: family failed to fit");
                tried.push((family, Err(e.to_string())));
                first_error.get_or_insert(e);
            }
        }
    }
    match best {
        Some(fitted) => {
            let choice = Choice {
                chosen: fitted.family(),
                tried,
            };
            tracing::info!(%choice, "auto chose a family");
            Ok((fitted, choice))
        }
        None => Err(first_error.unwrap_or(FitError::Empty)),
    }
}

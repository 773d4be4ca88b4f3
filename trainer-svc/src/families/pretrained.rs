//! The `pretrained` family: the shipped starting model
//! ([`super::pretrained_weights`], learned by `trainer-svc pretrain` on
//! public data from features that mean the same in any app), fitted to this
//! app only where a handful of rows can say something reliable:
//!
//! - its logit gets a Platt calibration (two parameters; the weights stay as
//!   pretrained), kept when significant. The weights never saw the app, so
//!   every training row can calibrate them: the calibration is fitted on the
//!   rows before the inner validation slice and scored on the slice (what
//!   `auto` compares), then refitted on all of them for the export;
//! - its median time is shifted by the median residual of the app's timed
//!   training rows, and its interval re-measured on them ([`interval`]), so an
//!   app whose tasks take longer or vary more is not held to the public data's
//!   pace.
//!
//! With a few learners this is what the app's own fits cannot beat: they
//! have two dozen weights to learn from a few hundred rows. `auto` chooses
//! between it and them on the slice, so it gives way as the app's data grows.

use taskcast_contract::FEATURE_COUNT;
use taskcast_contract::features::feature_index;
use taskcast_contract::linear::LinearModel;

use super::calibration::{Platt, calibrated_losses, mean_loss};
use super::linear::{Linear, LinearInfo, interval};
use super::pretrained_weights as w;
use super::{FitError, VALIDATION_SHARE, check_both_outcomes, validation_split};
use crate::data::dataset::Rows;

/// Timed training rows needed before the time head is moved to the app's
/// pace: fewer leave the pretrained median and interval as they are.
pub const MIN_TIME_ROWS: usize = 50;

/// Recalibrates the pretrained weights to `rows` (the training rows; the
/// slice is split off here as the other families split it). Without
/// `learn_time` the pretrained time head is kept as it is.
pub fn fit(rows: &Rows, calibrate: bool, learn_time: bool) -> Result<Linear, FitError> {
    if rows.is_empty() {
        return Err(FitError::Empty);
    }
    check_both_outcomes(rows)?;
    let mut model = weights();
    let (fit_idx, val_idx) = validation_split(rows, VALIDATION_SHARE);
    let mut info = LinearInfo {
        validation_rows: val_idx.len(),
        ..LinearInfo::default()
    };
    let logits = |idx: &[usize]| -> (Vec<f64>, Vec<bool>) {
        idx.iter()
            .map(|&i| {
                let z = dot(&model.p_weights, model.p_bias, rows.row(i));
                (z, rows.correct[i])
            })
            .unzip()
    };
    let calibration = |(z, y): &(Vec<f64>, Vec<bool>)| {
        calibrate.then(|| Platt::fit_if_significant(z, y)).flatten()
    };
    let (fit, val) = (logits(&fit_idx), logits(&val_idx));
    info.validation_losses = calibrated_losses(&val.0, &val.1, calibration(&fit));
    let all = ([fit.0, val.0].concat(), [fit.1, val.1].concat());
    info.calibration = calibration(&all);
    if let Some(c) = info.calibration {
        c.fold(model.p_weights.iter_mut(), &mut model.p_bias);
    }

    if learn_time {
        let resid: Vec<f64> = (0..rows.len())
            .filter_map(|i| {
                let median = dot(&model.t_weights, model.t_bias, rows.row(i));
                rows.log_time(i).map(|t| t - median)
            })
            .collect();
        if resid.len() >= MIN_TIME_ROWS {
            let [lo, mid, hi] = interval(resid);
            model.t_bias += mid;
            model.t_quantile_offsets = [lo - mid, 0.0, hi - mid];
        }
    }
    tracing::info!(
        validation_rows = info.validation_rows,
        calibration = ?info.calibration,
        validation_log_loss = ?mean_loss(&info.validation_losses),
        "pretrained recalibrated"
    );
    Ok(Linear {
        model,
        time_scale: None,
        info,
    })
}

/// `w·x + b` in f64 (for fitting on the model's outputs, not reproducing the
/// exported graph's f32 arithmetic).
fn dot(w: &[f32; FEATURE_COUNT], b: f32, x: &[f32]) -> f64 {
    w.iter().zip(x).fold(f64::from(b), |acc, (w, x)| {
        acc + f64::from(*w) * f64::from(*x)
    })
}

/// The shipped weights as a model. Not the bootstrap: they were fitted on
/// rows featurised with each file's priors and lean on them (a slower topic
/// than its prior predicts a higher rate, the prior's own weight
/// compensating), so over the bootstrap's empty priors they ranked a topic
/// the learner had never tried above one they had answered right ten times
/// out of ten (EVALUATION.md, "Pretrained starting model").
pub fn weights() -> LinearModel {
    let by_name = |pairs: &[(&str, f32)]| {
        let mut v = [0f32; FEATURE_COUNT];
        for (name, x) in pairs {
            if let Some(i) = feature_index(name) {
                v[i] += x;
            }
        }
        v
    };
    LinearModel {
        p_weights: by_name(w::P_WEIGHTS),
        p_bias: w::P_BIAS,
        t_weights: by_name(w::T_WEIGHTS),
        t_bias: w::T_BIAS,
        t_quantile_offsets: w::T_QUANTILE_OFFSETS,
    }
}

/// Names in [`super::pretrained_weights`] that are not features of this
/// schema ([`weights`] would drop them silently; a test refuses them).
pub fn unknown_names() -> Vec<&'static str> {
    w::P_WEIGHTS
        .iter()
        .chain(w::T_WEIGHTS)
        .map(|(n, _)| *n)
        .filter(|n| feature_index(n).is_none())
        .collect()
}

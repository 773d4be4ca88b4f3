//! The `pretrained` family: the bootstrap's weights
//! ([`taskcast_contract::bootstrap_weights`], learned by `trainer-svc
//! pretrain` on public data from features that mean the same in any app),
//! fitted to this app only where a handful of rows can say something
//! reliable:
//!
//! - its logit gets a Platt calibration (two parameters; the weights stay as
//!   pretrained), kept when significant. The weights never saw the app, so
//!   every training row can calibrate them: the calibration is fitted on the
//!   rows before the inner validation slice and scored on the slice (what
//!   `auto` compares), then refitted on all of them for the export;
//! - its median time is shifted by the median residual of the app's timed
//!   training rows, and its interval re-measured on them ([`interval`]), so an
//!   app whose tasks take longer or vary more is not held to the public data's
//!   pace; or, where a head fitted on the app's own times (as `linear` fits
//!   it) predicts the slice's times better than that by more than a standard
//!   error (both fitted on the rows before the slice, as the calibration
//!   is), the app's own head. Four simulated learners, whose times follow
//!   rules unlike the public data's, were refused by the gate with the moved
//!   head (MAE of ln-seconds 0.641 against the baselines' 0.613).
//!
//! With a few learners this is what the app's own fits cannot beat: they
//! have two dozen weights to learn from a few hundred rows. `auto` chooses
//! between it and them on the slice, so it gives way as the app's data grows.

use taskcast_contract::FEATURE_COUNT;
use taskcast_contract::bootstrap::bootstrap_linear;
use taskcast_contract::linear::LinearModel;

use super::auto::beats;
use super::calibration::{Platt, calibrated_losses, mean_loss};
use super::linear::{Linear, LinearInfo, TimeHead, fit_time, interval, slice_interval, timed};
use super::{FitError, VALIDATION_SHARE, check_both_outcomes, validation_split};
use crate::dataset::Rows;

/// Timed training rows needed before the time head is moved to the app's
/// pace: fewer leave the pretrained median and interval as they are.
pub const MIN_TIME_ROWS: usize = 50;

/// Recalibrates the pretrained weights to `rows` (the training rows; the
/// slice is split off here as the other families split it). Without
/// `learn_time` the pretrained time head is kept as it is.
pub fn fit(rows: &Rows, calibrate: bool, learn_time: bool) -> Result<Linear, FitError> {
    fit_from(bootstrap_linear(), rows, calibrate, learn_time)
}

/// [`fit`] from other starting weights (candidates from `trainer-svc
/// pretrain --onnx`, measured before they ship).
pub fn fit_from(
    mut model: LinearModel,
    rows: &Rows,
    calibrate: bool,
    learn_time: bool,
) -> Result<Linear, FitError> {
    if rows.is_empty() {
        return Err(FitError::Empty);
    }
    check_both_outcomes(rows)?;
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

    let mut time_from_app = false;
    if learn_time {
        let (fit_t, val_t) = (
            timed(rows, fit_idx.iter().copied()),
            timed(rows, val_idx.iter().copied()),
        );
        let all_t = [fit_t.clone(), val_t.clone()].concat();
        // The app's own head replaces the pretrained one only where it
        // predicts the slice's times better by more than a standard error
        // (`auto`'s rule, on absolute errors): an app's tasks can take a
        // different time for reasons no public feature carries, but on a few
        // dozen timed rows a closer fit is mostly noise.
        // Without a timed slice there is nothing to compare on, so the
        // app's own head (a median regression) is not fitted for nothing.
        if !val_t.is_empty()
            && let Some(m) = moved(&model, rows, &fit_t)
            && let Some(o) = own(rows, &fit_t)
        {
            let learners: Vec<u32> = val_t.iter().map(|&i| rows.user[i]).collect();
            time_from_app = beats(
                &errors(&o, rows, &val_t),
                &errors(&m, rows, &val_t),
                &learners,
            );
        }
        let head = if time_from_app {
            own(rows, &all_t).or_else(|| moved(&model, rows, &all_t))
        } else {
            moved(&model, rows, &all_t)
        };
        if let Some(h) = head {
            model.t_weights = h.weights;
            model.t_bias = h.bias;
            // The interval's ends from the slice's residuals, as `linear`'s.
            model.t_quantile_offsets = slice_interval(&h, rows, &val_t).unwrap_or(h.offsets);
        }
    }
    tracing::info!(
        validation_rows = info.validation_rows,
        calibration = ?info.calibration,
        validation_log_loss = ?mean_loss(&info.validation_losses),
        time_from_app,
        "pretrained recalibrated"
    );
    Ok(Linear {
        model,
        time_scale: None,
        info,
    })
}

/// Absolute error of `head`'s median in log-seconds on each timed row of
/// `idx` (its heads carry no per-row scale, so residuals are log-seconds).
fn errors(head: &TimeHead, rows: &Rows, idx: &[usize]) -> Vec<f64> {
    let median = f64::from(head.offsets[1]);
    head.residuals(rows, idx)
        .into_iter()
        .map(|r| (r - median).abs())
        .collect()
}

/// The pretrained head moved to the pace and spread of the timed rows `idx`
/// (their median residual and [`interval`]); `None` under [`MIN_TIME_ROWS`].
fn moved(model: &LinearModel, rows: &Rows, idx: &[usize]) -> Option<TimeHead> {
    if idx.len() < MIN_TIME_ROWS {
        return None;
    }
    let mut head = TimeHead {
        weights: model.t_weights,
        bias: model.t_bias,
        offsets: [0.0; 3],
        scale: None,
    };
    head.offsets = interval(head.residuals(rows, idx));
    Some(head)
}

/// The app's own head on the timed rows `idx`, fitted as `linear` fits its
/// own (one interval width for every row, as the pretrained graph carries);
/// `None` with too few rows for two dozen weights.
fn own(rows: &Rows, idx: &[usize]) -> Option<TimeHead> {
    if idx.len() <= FEATURE_COUNT * 2 {
        return None;
    }
    fit_time(rows, idx, false).ok()
}

/// `w·x + b` in f64 (for fitting on the model's outputs, not reproducing the
/// exported graph's f32 arithmetic).
fn dot(w: &[f32; FEATURE_COUNT], b: f32, x: &[f32]) -> f64 {
    w.iter().zip(x).fold(f64::from(b), |acc, (w, x)| {
        acc + f64::from(*w) * f64::from(*x)
    })
}

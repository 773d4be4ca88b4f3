//! Family `linear`: an L2 logistic regression (linfa's objective and
//! optimiser, streamed over the rows: [`logistic`]) for correctness and a
//! linear model of log-seconds for time, on standardised features. The
//! standardisation and the calibration are folded back into the weights, so
//! the exported graph takes the shared feature rows as they are.
//!
//! Fitted to the data's size on the inner validation slice (the last
//! [`VALIDATION_SHARE`] of each learner's training rows, [`validation_split`],
//! the split `mlp` stops on); the hold-out is never looked at:
//!
//! - **L2 strength.** Every per-row strength of [`L2_GRID`] is fitted on the
//!   rest of the training rows and scored by log loss on the slice; the
//!   weakest whose loss is within one standard error of the best wins
//!   (`choose_l2` says why the weakest); with a slice under
//!   [`MIN_SELECTION_ROWS`] the strength is [`FALLBACK_ALPHA`] instead. The
//!   model is then refitted on every training row with that strength: the
//!   slice holds each learner's most recent attempts, the ones most like the
//!   hold-out, too good to leave out.
//! - **Calibration.** A Platt scaling of the logit, fitted on the slice's
//!   predictions ([`super::calibration`]) and folded into the weights, when the
//!   slice shows a miscalibration beyond chance
//!   ([`Platt::fit_if_significant`]): a logistic regression is calibrated on
//!   its own training rows, and on the learning curve an unconditional one
//!   raised the hold-out's ECE by 0.001–0.003 at 100 learners on every file.
//! - **Time.** The median log-time is a linear least-absolute-deviations
//!   regression (the median, which the absolute error in seconds rewards,
//!   not the mean, which the long tail of slow answers drags up); from
//!   [`MIN_SCALE_ROWS`] timed rows the interval's width is per row,
//!   `exp(v·x + c)`, a second regression on the log of the absolute residuals
//!   ([`TimeScale`]); the 10th, 50th and 90th percentiles are
//!   `median + scale·u`, `u` from the standardised training residuals
//!   (`interval`).

//!
//! The pieces: [`scaling`] (standardisation and the columns a regression may
//! use), [`logistic`] (the logistic fit), [`l2`] (the choice of strength),
//! [`time`] (the median regression, the per-row scale and the interval).

mod l2;
mod logistic;
mod scaling;
mod time;

use std::collections::BTreeMap;

use taskcast_contract::artifact::{INPUT_FEATURES, OUTPUT_LOG_SECONDS, OUTPUT_P_CORRECT};
use taskcast_contract::features::feature_index;
use taskcast_contract::linear::LinearModel;
use taskcast_contract::onnx::{Dim, GraphBuilder};
use taskcast_contract::{FEATURE_COUNT, FeatureRow};

use super::calibration::{MIN_CALIBRATION_ROWS, Platt, calibrated_losses, mean_loss};
use super::{FitError, VALIDATION_SHARE, check_both_outcomes, validation_split};
use crate::dataset::Rows;
use l2::{Split, choose_l2};
use logistic::Design;
use scaling::Scaling;
pub use time::{MIN_SCALE_ROWS, MIN_SLICE_INTERVAL_ROWS, TimeScale};
pub(crate) use time::{TimeHead, fit_time, interval, slice_interval};

/// Per-row L2 strengths tried on the inner validation slice, strongest first.
/// linfa's `alpha` weighs the penalty against the *summed* log loss, so a fit
/// on `n` rows uses `alpha = λ·n`: the same λ means the same pull towards 0
/// relative to the evidence whatever the row count. On standardised features
/// a row's curvature is about 0.2, so λ = 1 shrinks a weight about five-fold
/// and λ = 10⁻⁴ not at all.
pub const L2_GRID: [f64; 7] = [1.0, 0.3, 0.1, 0.03, 0.01, 1e-3, 1e-4];

/// Fewer inner-validation rows than this (or one outcome only on either side
/// of the split) and the strength is not chosen but [`FALLBACK_ALPHA`]. Below about 300
/// rows the slice's choice was worse on the learning curve (EVALUATION.md)
/// than a fixed strength, on all three files: the standard error of a
/// log-loss difference on it is as large as the differences between
/// strengths, and it is only 10 % of a few learners' recent attempts.
pub const MIN_SELECTION_ROWS: usize = 300;

/// The features that summarise the learner's own answer times. The
/// pretrained model's correctness head leaves them out: on the public data a
/// fast answer goes with a wrong one (guesses), so weights learned there
/// lowered p for a learner answering right and fast (six right answers in 15 s
/// each took a promoted `pretrained` model from 0.861 to 0.855 in the
/// end-to-end loop). An app's own fits keep them: they learn what times mean
/// in that app.
pub const LEARNER_TIME_FEATURES: [&str; 6] = [
    "overall_log_time",
    "topic_log_time",
    "difficulty_log_time",
    "recent_log_time",
    "speed",
    "topic_speed",
];

/// linfa's `alpha` when the slice cannot choose the strength: a fixed pull
/// on the summed loss, so the per-row strength falls as rows come in (λ = 0.3
/// at 300 rows, 0.03 at 3 000). Its curvature is that of about 500 rows'
/// log loss (a row's is about 0.2 on standardised features): the prior of a
/// model that has seen 500 rows saying nothing. Data that small is exactly
/// where an unregularised fit goes wrong (issue 13: log loss 1.18 against
/// 0.56 for a constant at 4 learners). On the learning curve's 25 disjoint
/// 4-learner groups per file (EVALUATION.md) it did best of `alpha` 30–300
/// and of a fixed λ = 0.3 on average, with a log loss 0.001 below the best
/// baseline's (0.008–0.15 above it before). With a larger slice it is the
/// weakest strength `choose_l2` tries.
pub const FALLBACK_ALPHA: f64 = 100.0;

/// L-BFGS iteration cap. On the real datasets and on 1 M simulated rows the
/// hold-out metrics agree to four decimals between 50, 100 and 200
/// iterations, while time grows linearly with them.
pub const MAX_ITERATIONS: u64 = 100;
/// Convergence: gradient norm of the summed loss below this times the rows.
pub const GRADIENT_TOLERANCE_PER_ROW: f64 = 1e-4;

/// How the linear family is fitted.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearOptions {
    /// A fixed linfa `alpha` for the final fit; `None` chooses it on the
    /// inner validation slice.
    pub alpha: Option<f64>,
    /// Fit a Platt calibration on the slice and fold it into the weights.
    pub calibrate: bool,
    /// Give the time interval a per-row width ([`TimeScale`]); without it
    /// one width for every row, as [`LinearModel`] alone can carry (the
    /// pretrained starting model is one).
    pub per_row_scale: bool,
    /// Feature indices the correctness head leaves out (weight 0); the time
    /// head keeps them. `pretrain` leaves out the learner's own times
    /// ([`LEARNER_TIME_FEATURES`]).
    pub p_excluded: Vec<usize>,
}

impl Default for LinearOptions {
    fn default() -> Self {
        LinearOptions {
            alpha: None,
            calibrate: true,
            per_row_scale: true,
            p_excluded: Vec::new(),
        }
    }
}

/// What a linear fit chose, and on how many rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinearInfo {
    /// linfa's `alpha` of the final fit.
    pub alpha: f64,
    /// The per-row strength λ it came from (`alpha / rows`).
    pub l2_per_row: f64,
    /// True when λ was chosen on the slice (else fixed or the fallback).
    pub l2_selected: bool,
    /// Rows of the inner validation slice.
    pub validation_rows: usize,
    /// The calibration folded into the weights, if one was fitted.
    pub calibration: Option<Platt>,
    /// True when the time interval's width is per row ([`TimeScale`]).
    pub time_scaled: bool,
    /// True when the interval's ends were measured on the slice
    /// ([`MIN_SLICE_INTERVAL_ROWS`]).
    pub time_interval_from_slice: bool,
    /// Per-row log loss on the slice of the logits from a fit that did not
    /// see it, before the calibration fitted on it (what `auto` compares
    /// families by); empty without a usable slice.
    pub validation_losses: Vec<f64>,
}

impl LinearInfo {
    /// The record written into the artifact's metrics, keyed `linear_*`.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::from([
            ("linear_alpha".to_string(), self.alpha),
            ("linear_l2_per_row".to_string(), self.l2_per_row),
            (
                "linear_l2_selected".to_string(),
                f64::from(u8::from(self.l2_selected)),
            ),
            ("validation_rows".to_string(), self.validation_rows as f64),
        ]);
        if let Some(c) = self.calibration {
            m.insert("calibration_scale".into(), c.scale);
            m.insert("calibration_shift".into(), c.shift);
        }
        m.insert(
            "linear_time_scaled".into(),
            f64::from(u8::from(self.time_scaled)),
        );
        m.insert(
            "time_interval_from_slice".into(),
            f64::from(u8::from(self.time_interval_from_slice)),
        );
        if let Some(v) = mean_loss(&self.validation_losses) {
            m.insert("validation_log_loss".into(), v);
        }
        m
    }
}

/// A fitted linear model.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Correctness weights (calibration folded in) and the log-time location.
    /// Without [`Linear::time_scale`] its `t_quantile_offsets` are added to the
    /// location as they are; with it they are multiples of the row's scale.
    pub model: LinearModel,
    /// The per-row interval width, when times were learned.
    pub time_scale: Option<TimeScale>,
    /// What the fit chose.
    pub info: LinearInfo,
}

/// `w·x + b` in f32, in the order [`LinearModel::predict`] sums.
fn dot(w: &[f32; FEATURE_COUNT], b: f32, row: &FeatureRow) -> f32 {
    w.iter().zip(row).fold(0f32, |acc, (w, x)| acc + w * x) + b
}

impl Linear {
    /// The forward pass in plain Rust, in f32 like ONNX Runtime:
    /// `(p_correct, [q10, q50, q90])` of log-seconds.
    pub fn predict(&self, row: &FeatureRow) -> (f32, [f32; 3]) {
        let (p, shifted) = self.model.predict(row);
        match &self.time_scale {
            None => (p, shifted),
            Some(s) => {
                let loc = dot(&self.model.t_weights, self.model.t_bias, row);
                let scale = s.at(row);
                (p, self.model.t_quantile_offsets.map(|u| loc + scale * u))
            }
        }
    }

    /// The ONNX graph: [`LinearModel::graph`], or with a per-row scale the
    /// same correctness half and `loc + exp(clip(s_w·x + s_b))·t_q`.
    pub fn graph(&self) -> GraphBuilder {
        let Some(s) = &self.time_scale else {
            return self.model.graph();
        };
        let m = &self.model;
        let f = FEATURE_COUNT as i64;
        let mut g = GraphBuilder::new("taskcast_linear");
        g.input_f32(INPUT_FEATURES, &[Dim::Batch, Dim::Fixed(f)])
            .output_f32(OUTPUT_P_CORRECT, &[Dim::Batch])
            .output_f32(OUTPUT_LOG_SECONDS, &[Dim::Batch, Dim::Fixed(3)])
            .init_f32("p_w", &[f, 1], &m.p_weights)
            .init_f32("p_b", &[1], &[m.p_bias])
            .init_f32("t_w", &[f, 1], &m.t_weights)
            .init_f32("t_b", &[1], &[m.t_bias])
            .init_f32("s_w", &[f, 1], &s.weights)
            .init_f32("s_b", &[1], &[s.bias])
            .init_f32("s_lo", &[], &[s.log_range[0]])
            .init_f32("s_hi", &[], &[s.log_range[1]])
            .init_f32("t_q", &[1, 3], &m.t_quantile_offsets)
            .init_i64("flat", &[1], &[-1])
            .node("Gemm", &[INPUT_FEATURES, "p_w", "p_b"], &["logit"], vec![])
            .node("Sigmoid", &["logit"], &["p_col"], vec![])
            .node("Reshape", &["p_col", "flat"], &[OUTPUT_P_CORRECT], vec![])
            .node("Gemm", &[INPUT_FEATURES, "t_w", "t_b"], &["loc"], vec![])
            .node(
                "Gemm",
                &[INPUT_FEATURES, "s_w", "s_b"],
                &["log_scale"],
                vec![],
            )
            .node(
                "Clip",
                &["log_scale", "s_lo", "s_hi"],
                &["log_scale_c"],
                vec![],
            )
            .node("Exp", &["log_scale_c"], &["scale"], vec![])
            .node("Mul", &["scale", "t_q"], &["spread"], vec![])
            .node("Add", &["loc", "spread"], &[OUTPUT_LOG_SECONDS], vec![]);
        g
    }
}

/// The rows of `idx` with a recorded time.
pub(crate) fn timed(rows: &Rows, idx: impl IntoIterator<Item = usize>) -> Vec<usize> {
    idx.into_iter()
        .filter(|&i| rows.log_time(i).is_some())
        .collect()
}

/// The training rows in the order the logistic fits read them: the fit rows
/// of the inner validation split, then the slice ([`validation_split`]);
/// and how many fit rows there are.
fn fit_order(rows: &Rows) -> (Vec<usize>, usize) {
    let (mut order, val_idx) = validation_split(rows, VALIDATION_SHARE);
    let n_fit = order.len();
    order.extend_from_slice(&val_idx);
    (order, n_fit)
}

/// Fits the linear family on `rows` (all the training rows: the inner
/// validation slice is split off here). Without `learn_time` (the data
/// cannot support a time head: [`crate::time_support`]) times come
/// from the item prior, which falls back to the topic and population priors.
pub fn fit(rows: &Rows, opts: &LinearOptions, learn_time: bool) -> Result<Linear, FitError> {
    if rows.is_empty() {
        return Err(FitError::Empty);
    }
    check_both_outcomes(rows)?;
    let (order, n_fit) = fit_order(rows);
    let n = rows.len() as f64;
    // Standardisation uses features only, of training rows only; one for
    // every fit below, so that they are fits of the same parameters.
    let mut scaling = Scaling::fit(rows, 0..rows.len());
    scaling.used.retain(|j| !opts.p_excluded.contains(j));
    // Every logistic fit below reads the training rows in one order, the fit
    // rows first: the grid and the slice read parts of it, the final fit all.
    let all = Design {
        rows,
        scaling: &scaling,
        idx: &order,
    };
    let (fit_rows, val_rows) = all.split_at(n_fit);
    let split = Split {
        fit: fit_rows,
        val: val_rows,
    };
    let slice_usable = split.val.len() >= MIN_SELECTION_ROWS
        && split.val.both_outcomes()
        && split.fit.both_outcomes();
    let mut info = LinearInfo {
        validation_rows: split.val.len(),
        ..LinearInfo::default()
    };
    // The slice's logits from a fit that did not see it, for the calibration;
    // with a chosen strength, also that fit's parameters, where the final fit
    // starts. Only then: a fixed strength's final fit must not depend on
    // whether a calibration was asked for (the calibration tests compare
    // the two).
    let (l2, val_logits, start) = match opts.alpha {
        None if slice_usable => {
            info.l2_selected = true;
            let c = choose_l2(&split)?;
            (c.l2, Some(c.z), Some(c.params))
        }
        None => (FALLBACK_ALPHA / n, None, None),
        Some(alpha) => (alpha / n, None, None),
    };
    let val_logits = match val_logits {
        Some(z) => Some(z),
        // A fixed or fallback strength: the slice's logits still come from
        // a fit on the other rows, with the same per-row strength.
        None if opts.calibrate
            && split.val.len() >= MIN_CALIBRATION_ROWS
            && split.fit.both_outcomes() =>
        {
            let fitted = logistic::fit(split.fit, l2 * n_fit as f64, None)?;
            Some(split.val.logits(&fitted))
        }
        None => None,
    };
    info.l2_per_row = l2;
    info.alpha = opts.alpha.unwrap_or(l2 * n);
    // Warm: the fit without the slice is most of the way there, and the
    // final fit's iterations on every row are the dearest of all.
    let logit = logistic::fit(all, info.alpha, start)?;
    let (mut p_weights, mut p_bias) = scaling.unfold(&logit.w, logit.b);
    if let Some(z) = val_logits {
        let y = split.val.outcomes();
        if opts.calibrate {
            info.calibration = Platt::fit_if_significant(&z, &y);
        }
        if let Some(c) = info.calibration {
            c.fold(p_weights.iter_mut(), &mut p_bias);
        }
        // Scored before the calibration, which was fitted on these rows:
        // with it the slice would flatter this family against `pretrained`,
        // whose calibration is fitted on other rows (see `auto`).
        info.validation_losses = calibrated_losses(&z, &y, None);
    }

    // The slice's timed rows, for the interval's ends; the order vector (8
    // bytes a training row) is freed before the time head, which comes at
    // the end of the run's peak (issue 29).
    let val_t = timed(rows, split.val.idx.iter().copied());
    drop(order);
    let all_t = timed(rows, 0..rows.len());
    let (model, time_scale) = if learn_time && all_t.len() > FEATURE_COUNT * 2 {
        let mut head = fit_time(rows, &all_t, opts.per_row_scale)?;
        info.time_scaled = head.scale.is_some();
        // The interval's ends from the slice's residuals (`slice_interval`).
        if let Some(offsets) = slice_interval(&head, rows, &val_t) {
            head.offsets = offsets;
            info.time_interval_from_slice = true;
        }
        (
            LinearModel {
                p_weights,
                p_bias,
                t_weights: head.weights,
                t_bias: head.bias,
                t_quantile_offsets: head.offsets,
            },
            head.scale,
        )
    } else {
        // Too few times to learn from: the item prior's typical time (its own,
        // else its topic's, else the population's), with the bootstrap's spread.
        let mut w = [0f32; FEATURE_COUNT];
        if let Some(i) = feature_index("prior_item_log_time") {
            w[i] = 1.0;
        }
        (
            LinearModel {
                p_weights,
                p_bias,
                t_weights: w,
                t_bias: 0.0,
                t_quantile_offsets: [-1.0, 0.0, 1.0],
            },
            None,
        )
    };
    tracing::info!(
        alpha = info.alpha,
        l2 = info.l2_per_row,
        selected = info.l2_selected,
        validation_rows = info.validation_rows,
        calibration = ?info.calibration,
        time_scaled = info.time_scaled,
        "linear fitted"
    );
    Ok(Linear {
        model,
        time_scale,
        info,
    })
}

/// linfa's own `predict_probabilities` for `eval`, standardised as [`fit`]
/// standardises, from one logistic fit on all of `train` with `alpha`; and
/// linfa's positive class (`labels().pos`). The probabilities are of that
/// class, so they are p(correct) only when it is `true`. A reference for
/// checking [`fit`]'s streamed fit and folded weights (with that `alpha` and
/// no calibration) and the exported graph against linfa itself: a design
/// matrix in f64, which [`fit`] never builds, with the rows in the order
/// [`fit`]'s final fit sums them (the fit rows, then the slice).
pub fn linfa_probabilities(
    train: &Rows,
    alpha: f64,
    eval: &Rows,
) -> Result<(Vec<f64>, bool), FitError> {
    use linfa::prelude::*;

    if train.is_empty() {
        return Err(FitError::Empty);
    }
    let (order, _) = fit_order(train);
    let scaling = Scaling::fit(train, 0..train.len());
    let x = scaling.columns(train, &order);
    let y: ndarray::Array1<bool> = order.iter().map(|&i| train.correct[i]).collect();
    let fitted = linfa_logistic::LogisticRegression::default()
        .alpha(alpha)
        .max_iterations(MAX_ITERATIONS)
        .gradient_tolerance(GRADIENT_TOLERANCE_PER_ROW * train.len() as f64)
        .fit(&linfa::DatasetBase::new(x, y))
        .map_err(|e| FitError::Optimiser(format!("linfa: {e}")))?;
    let idx: Vec<usize> = (0..eval.len()).collect();
    let p = fitted.predict_probabilities(&scaling.columns(eval, &idx));
    Ok((p.to_vec(), fitted.labels().pos.class))
}

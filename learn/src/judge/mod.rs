//! Judging a fitted model on the hold-out, against the baselines and the
//! active version, and deciding whether it goes live.
//!
//! - [`metrics`]: the hold-out metrics (AUC, log loss, calibration, time);
//! - [`evaluate`]: a model's and the baselines' scores on the same rows;
//! - [`incumbent`]: the active version, scored on the candidate's hold-out;
//! - [`gate`]: the promotion rules.

pub mod evaluate;
pub mod gate;
pub mod incumbent;
pub mod metrics;

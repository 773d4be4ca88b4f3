//! The drift check: live figures against the hold-out figures a version was
//! promoted on, with margins wide enough for the sampling noise of live
//! traffic, plus the "predictions do not move" alarm.

use std::collections::BTreeMap;

use serde::Serialize;

use super::accumulate::LiveMetrics;
use taskcast_learn::judge::metrics::STUCK_EPSILON;

/// Default `--drift-auc-margin`: live AUC this far below the hold-out AUC is
/// drift. Live AUC over a few hundred rows varies by ±0.03, so a margin at the
/// gate's scale (0.005) would flag healthy models.
pub const DEFAULT_AUC_MARGIN: f64 = 0.05;

/// Default `--drift-ece-margin`: live ECE this far above the hold-out ECE is
/// drift (ECE over 10 bins reads ≈ 0.02–0.04 high on a few hundred rows).
pub const DEFAULT_ECE_MARGIN: f64 = 0.05;

/// Below this many rows AUC and ECE are too noisy to judge; no drift is
/// claimed either way.
pub const MIN_ROWS_FOR_DRIFT: u64 = 200;

/// With at least this many learners eligible for the stuck check, a majority
/// of stuck learners is flagged as drift (a few stuck learners can be real:
/// identical tasks in a row).
pub const MIN_LEARNERS_FOR_STUCK_ALARM: u64 = 5;

/// How far live figures may move before a version is flagged.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DriftConfig {
    /// Allowed drop of AUC below the hold-out AUC.
    pub auc_margin: f64,
    /// Allowed rise of ECE above the hold-out ECE.
    pub ece_margin: f64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            auc_margin: DEFAULT_AUC_MARGIN,
            ece_margin: DEFAULT_ECE_MARGIN,
        }
    }
}

/// A stored hold-out figure, if it is a real number.
fn holdout_value(holdout: &BTreeMap<String, f64>, key: &str) -> Option<f64> {
    holdout.get(key).copied().filter(|v| v.is_finite())
}

/// Why the version is flagged; empty when it is not.
pub fn reasons(
    config: &DriftConfig,
    live: &LiveMetrics,
    holdout: &BTreeMap<String, f64>,
    stuck_window: u32,
    stuck_eligible: u64,
    stuck: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    if live.rows >= MIN_ROWS_FOR_DRIFT {
        if let (Some(l), Some(h)) = (live.auc, holdout_value(holdout, "auc"))
            && l < h - config.auc_margin
        {
            out.push(format!(
                "live AUC {l:.3} is {:.3} below the hold-out AUC {h:.3} (margin {})",
                h - l,
                config.auc_margin
            ));
        }
        if let (Some(l), Some(h)) = (live.ece, holdout_value(holdout, "ece"))
            && l > h + config.ece_margin
        {
            out.push(format!(
                "live ECE {l:.3} is {:.3} above the hold-out ECE {h:.3} (margin {})",
                l - h,
                config.ece_margin
            ));
        }
    }
    if stuck_eligible >= MIN_LEARNERS_FOR_STUCK_ALARM && stuck * 2 > stuck_eligible {
        out.push(format!(
            "predictions moved less than {STUCK_EPSILON} over the last {stuck_window} tasks \
             for {stuck} of {stuck_eligible} learners"
        ));
    }
    out
}

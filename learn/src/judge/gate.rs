//! The promotion gate: a new version goes live only if, on the same hold-out,
//! it is not worse than the active version beyond a tolerance, beats the
//! baselines when it would be the first model, and is not degenerate.

use std::collections::BTreeMap;

use crate::dataset::{HOLDOUT_SHARE, MIN_HOLDOUT_ATTEMPTS};
use crate::judge::evaluate::Scored;
use crate::judge::metrics::MetricSet;

/// Tolerances and floors, configurable per deployment.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// How much worse log loss may be than the active version's.
    pub logloss_tolerance: f64,
    /// How much lower AUC may be than the active version's.
    pub auc_tolerance: f64,
    /// How much worse MAE of log-seconds may be than the active version's.
    pub mae_log_tolerance: f64,
    /// Below this standard deviation of predicted probabilities the model is
    /// degenerate (the original app's failed model said 0.430 to everything).
    pub min_p_std: f64,
    /// The same floor for predicted median log-seconds.
    pub min_log_seconds_std: f64,
    /// Fewer hold-out rows than this cannot judge anything.
    pub min_holdout_rows: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            logloss_tolerance: 0.002,
            auc_tolerance: 0.005,
            mae_log_tolerance: 0.01,
            min_p_std: 0.01,
            min_log_seconds_std: 0.01,
            min_holdout_rows: 20,
        }
    }
}

/// The gate's decision and why.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Make it active.
    Promote(String),
    /// Store it as rejected.
    Reject(String),
}

impl Verdict {
    /// True for [`Verdict::Promote`].
    pub fn promotes(&self) -> bool {
        matches!(self, Verdict::Promote(_))
    }

    /// The reason either way.
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Promote(r) | Verdict::Reject(r) => r,
        }
    }

    /// The same decision with `note` added to its reason, e.g. what was not judged.
    pub fn noting(self, note: &str) -> Verdict {
        match self {
            Verdict::Promote(r) => Verdict::Promote(format!("{r}; {note}")),
            Verdict::Reject(r) => Verdict::Reject(format!("{r}; {note}")),
        }
    }
}

fn worse(
    name: &str,
    new: Option<f64>,
    old: Option<f64>,
    tol: f64,
    higher_better: bool,
) -> Option<String> {
    let (n, o) = (new?, old?);
    let bad = if higher_better {
        n < o - tol
    } else {
        n > o + tol
    };
    bad.then(|| format!("{name} {n:.4} vs {o:.4} (tolerance {tol})"))
}

/// Decides on `candidate` given the active version's metrics on the same
/// hold-out (`None` when nothing trained is active) and the baselines'.
pub fn decide(
    config: &GateConfig,
    candidate: &Scored,
    holdout_rows: usize,
    active: Option<&MetricSet>,
    baselines: &BTreeMap<String, MetricSet>,
) -> Verdict {
    if holdout_rows < config.min_holdout_rows {
        // Say where hold-out rows come from, so the data's owner knows what
        // is missing (data of only short learners has none at all).
        return Verdict::Reject(format!(
            "only {holdout_rows} hold-out rows, fewer than the {} needed to judge a model \
             (the hold-out is the last {:.0} % of each learner's attempts, from learners \
             with at least {min} attempts): need more learners with at least {min} attempts",
            config.min_holdout_rows,
            HOLDOUT_SHARE * 100.0,
            min = MIN_HOLDOUT_ATTEMPTS,
        ));
    }
    match candidate.p_std {
        Some(s) if s >= config.min_p_std => {}
        s => {
            return Verdict::Reject(format!(
                "degenerate: predicted probabilities barely vary (std {s:?} < {})",
                config.min_p_std
            ));
        }
    }
    if candidate.metrics.mae_log_seconds.is_some() {
        match candidate.log_seconds_std {
            Some(s) if s >= config.min_log_seconds_std => {}
            s => {
                return Verdict::Reject(format!(
                    "degenerate: predicted times barely vary (std of log-seconds {s:?} < {})",
                    config.min_log_seconds_std
                ));
            }
        }
    }
    let m = &candidate.metrics;
    match active {
        Some(a) => {
            let problems: Vec<String> = [
                worse(
                    "log loss",
                    m.logloss,
                    a.logloss,
                    config.logloss_tolerance,
                    false,
                ),
                worse("AUC", m.auc, a.auc, config.auc_tolerance, true),
                worse(
                    "MAE log-seconds",
                    m.mae_log_seconds,
                    a.mae_log_seconds,
                    config.mae_log_tolerance,
                    false,
                ),
            ]
            .into_iter()
            .flatten()
            .collect();
            if problems.is_empty() {
                Verdict::Promote(format!(
                    "not worse than the active version on the same hold-out (log loss {:.4} vs {:.4})",
                    m.logloss.unwrap_or(f64::NAN),
                    a.logloss.unwrap_or(f64::NAN)
                ))
            } else {
                Verdict::Reject(format!(
                    "worse than the active version: {}",
                    problems.join("; ")
                ))
            }
        }
        None => {
            let mut problems = Vec::new();
            for (name, b) in baselines {
                if let Some(p) = worse("log loss", m.logloss, b.logloss, 0.0, false) {
                    problems.push(format!("{name}: {p}"));
                }
                if let Some(p) = worse(
                    "MAE log-seconds",
                    m.mae_log_seconds,
                    b.mae_log_seconds,
                    0.0,
                    false,
                ) {
                    problems.push(format!("{name}: {p}"));
                }
            }
            if m.logloss.is_none() {
                problems.push("no log loss could be computed".into());
            }
            if problems.is_empty() {
                Verdict::Promote("first model: beats every baseline on the hold-out".into())
            } else {
                Verdict::Reject(format!(
                    "does not beat the baselines: {}",
                    problems.join("; ")
                ))
            }
        }
    }
}

//! Whether a dataset supports a learned time head, decided once per run and
//! used by every family, the evaluation and the gate.
//!
//! Correctness is recorded for every completed task, times often are not: an
//! app starts recording them late, records them for one task type only, or
//! loses them for a week. A time head fitted on a handful of timed rows, or
//! judged on a handful of timed hold-out rows, says nothing — and judging it
//! anyway froze promotion for good (issue 17: 5 timed rows among 941 502 made
//! every run "degenerate"). So the time head is learned and judged only when
//! both the training and the hold-out side carry enough timed rows; otherwise
//! the model predicts times from the priors (item → topic → population, the
//! best the data can back), says `time_modeled = false`, and is judged on
//! correctness alone.

use std::fmt;

/// Fewer timed training rows than this and no time head is learned: with 24
/// features a regression needs a few hundred rows before its residual
/// quantiles (the interval) mean anything.
pub const MIN_TIMED_TRAIN_ROWS: usize = 200;
/// Fewer timed hold-out rows than this and time metrics are too noisy to
/// compare two models (the standard error of MAE in log-seconds is about
/// 0.05 at 200 rows, five times the gate's tolerance at 20).
pub const MIN_TIMED_HOLDOUT_ROWS: usize = 200;
/// …and at least this share of the hold-out must be timed, so a time head is
/// not judged on a sliver of tasks that need not resemble the rest.
pub const MIN_TIMED_HOLDOUT_SHARE: f64 = 0.01;

/// How many training and hold-out rows carry a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeSupport {
    /// Timed training rows.
    pub train_timed: usize,
    /// Timed hold-out rows.
    pub holdout_timed: usize,
    /// All hold-out rows.
    pub holdout_rows: usize,
}

impl TimeSupport {
    /// True when a time head is learned and judged.
    pub fn modeled(&self) -> bool {
        self.shortfall().is_none()
    }

    /// Why times are not modelled, when they are not.
    pub fn shortfall(&self) -> Option<String> {
        if self.train_timed < MIN_TIMED_TRAIN_ROWS {
            return Some(format!(
                "only {} timed training rows (need {MIN_TIMED_TRAIN_ROWS})",
                self.train_timed
            ));
        }
        if self.holdout_timed < MIN_TIMED_HOLDOUT_ROWS {
            return Some(format!(
                "only {} timed hold-out rows (need {MIN_TIMED_HOLDOUT_ROWS})",
                self.holdout_timed
            ));
        }
        let share = self.holdout_timed as f64 / self.holdout_rows.max(1) as f64;
        if share < MIN_TIMED_HOLDOUT_SHARE {
            return Some(format!(
                "only {:.2} % of hold-out rows are timed (need {} %)",
                share * 100.0,
                MIN_TIMED_HOLDOUT_SHARE * 100.0
            ));
        }
        None
    }
}

impl fmt::Display for TimeSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shortfall() {
            None => write!(
                f,
                "time modelled ({} timed training rows, {} timed hold-out rows)",
                self.train_timed, self.holdout_timed
            ),
            Some(why) => write!(f, "time not modelled: {why}; times come from the priors"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn support(train_timed: usize, holdout_timed: usize, holdout_rows: usize) -> TimeSupport {
        TimeSupport {
            train_timed,
            holdout_timed,
            holdout_rows,
        }
    }

    #[test]
    fn thresholds() {
        assert!(support(200, 200, 20_000).modeled());
        assert!(!support(199, 5_000, 20_000).modeled());
        assert!(!support(5_000, 199, 20_000).modeled());
        // 200 timed rows in a 100 000-row hold-out is 0.2 %: too thin a slice.
        let thin = support(50_000, 200, 100_000);
        assert!(!thin.modeled());
        assert!(thin.shortfall().unwrap().contains("0.20 %"), "{thin}");
        assert!(
            support(0, 0, 0)
                .to_string()
                .starts_with("time not modelled")
        );
    }
}

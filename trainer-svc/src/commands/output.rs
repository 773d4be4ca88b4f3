//! What the offline commands print: a progress bar over a run's phases, the
//! metrics table and its JSON form, and what a CSV file held.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use taskcast_learn::judge::metrics::MetricSet;
use taskcast_learn::pipeline::Phase;
use trainer_svc::data::csv::RowSummary;

/// A progress bar over a run's phases (hidden when stderr is not a
/// terminal), which lines printed meanwhile do not garble.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar, ticking.
    pub fn start() -> Self {
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg:<12} [{bar:30}] {percent:>3}% {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar }
    }

    /// Shows what is happening outside a run's phases.
    pub fn message(&self, what: &'static str) {
        self.bar.set_message(what);
    }

    /// A callback the pipeline reports its phases to.
    pub fn on_phase(&self) -> impl FnMut(Phase, f64) + Send + '_ {
        move |phase: Phase, share: f64| {
            self.bar.set_message(phase.name());
            self.bar
                .set_position((phase.overall(share) * 1000.0) as u64);
        }
    }

    /// Prints a line above the bar: to stderr, or to stdout followed by a
    /// blank line (before the metrics table).
    pub fn say(&self, text: &str, to_stderr: bool) {
        self.bar.suspend(|| {
            if to_stderr {
                eprintln!("{text}");
            } else {
                println!("{text}\n");
            }
        });
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Writes an output file, naming it in the error.
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The `--json` object: `{"rows", "holdout_rows", "models": {name: metrics}}`,
/// every metric key present, `null` where not measured.
pub fn eval_json(rows: u64, holdout_rows: u64, models: &BTreeMap<String, MetricSet>) -> Value {
    let models: serde_json::Map<String, Value> = models
        .iter()
        .map(|(name, m)| {
            (
                name.clone(),
                json!({
                    "auc": m.auc, "logloss": m.logloss, "brier": m.brier, "ece": m.ece,
                    "accuracy": m.accuracy, "mae_seconds": m.mae_seconds,
                    "median_ae_seconds": m.median_ae_seconds, "mae_log_seconds": m.mae_log_seconds,
                    "interval_coverage": m.interval_coverage,
                }),
            )
        })
        .collect();
    json!({ "rows": rows, "holdout_rows": holdout_rows, "models": models })
}

/// What the file held, for `eval --json`: `{"rows_read", "rows_used",
/// "rows_rejected", "rejected": [{"reason", "count", "first_lines"}]}`.
pub fn summary_json(summary: &RowSummary) -> Value {
    let rejected: Vec<Value> = summary
        .rejected
        .iter()
        .map(|r| json!({ "reason": r.reason(), "count": r.count, "first_lines": r.first_lines }))
        .collect();
    json!({
        "rows_read": summary.read,
        "rows_used": summary.accepted,
        "rows_rejected": summary.rejected_total(),
        "rejected": rejected,
    })
}

/// Prints models (families first, then baselines) as an aligned table.
pub fn print_table(rows: u64, holdout_rows: u64, models: &BTreeMap<String, MetricSet>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "rows {rows}, hold-out {holdout_rows} (last 20% of each learner with >= 5 attempts)\n"
    );
    let width = models
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(22);
    let _ = writeln!(
        out,
        "{:<width$} {:>7} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9} {:>8} {:>8}",
        "model", "auc", "logloss", "brier", "ece", "acc", "mae_s", "medae_s", "mae_log", "cover80"
    );
    let f = |v: Option<f64>, w: usize, d: usize| {
        v.map_or(format!("{:>w$}", "-"), |x| format!("{x:>w$.d$}"))
    };
    let mut names: Vec<&String> = models.keys().collect();
    names.sort_by_key(|n| (n.starts_with("baseline_"), n.to_string()));
    for name in names {
        let m = &models[name];
        let _ = writeln!(
            out,
            "{:<width$} {} {} {} {} {} {} {} {} {}",
            name,
            f(m.auc, 7, 4),
            f(m.logloss, 8, 4),
            f(m.brier, 7, 4),
            f(m.ece, 7, 4),
            f(m.accuracy, 7, 4),
            f(m.mae_seconds, 9, 2),
            f(m.median_ae_seconds, 9, 2),
            f(m.mae_log_seconds, 8, 4),
            f(m.interval_coverage, 8, 3),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [&str; 9] = [
        "auc",
        "logloss",
        "brier",
        "ece",
        "accuracy",
        "mae_seconds",
        "median_ae_seconds",
        "mae_log_seconds",
        "interval_coverage",
    ];
    const TIME_KEYS: [&str; 4] = [
        "mae_seconds",
        "median_ae_seconds",
        "mae_log_seconds",
        "interval_coverage",
    ];

    /// Every metric key is present for every model: a number where
    /// measured, `null` where not (no times), so consumers need no guessing.
    #[test]
    fn eval_json_has_every_metric_and_nulls_without_times() {
        let untimed = MetricSet {
            auc: Some(0.7),
            logloss: Some(0.6),
            brier: Some(0.2),
            ece: Some(0.01),
            accuracy: Some(0.7),
            ..MetricSet::default()
        };
        let timed = MetricSet {
            mae_seconds: Some(10.0),
            median_ae_seconds: Some(8.0),
            mae_log_seconds: Some(0.5),
            interval_coverage: Some(0.8),
            ..untimed.clone()
        };
        let models = BTreeMap::from([
            ("baseline_topic".to_string(), untimed.clone()),
            ("linear".to_string(), timed),
        ]);
        let v = eval_json(100, 20, &models);
        assert_eq!(v["rows"].as_u64(), Some(100));
        assert_eq!(v["holdout_rows"].as_u64(), Some(20));
        for (name, time_null) in [("baseline_topic", true), ("linear", false)] {
            let m = v["models"][name].as_object().expect(name);
            assert_eq!(m.len(), KEYS.len(), "{name}: {m:?}");
            for k in KEYS {
                let null = time_null && TIME_KEYS.contains(&k);
                assert_eq!(m[k].is_null(), null, "{name}.{k} = {}", m[k]);
                assert_eq!(m[k].is_f64(), !null, "{name}.{k} = {}", m[k]);
            }
        }
    }
}

//! Hold-out evaluation: a model's predictions and the baselines', scored with
//! the same metrics on the same chronological hold-out rows.

use std::collections::BTreeMap;

use serde::Serialize;
use taskcast_contract::runtime::Output;

use crate::dataset::{BaselinePrediction, Dataset, Rows};
use crate::judge::metrics::{MetricSet, MetricsAccumulator, std_dev};

/// Metrics of one model plus the spread of its predictions (for the gate).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Scored {
    /// The metrics.
    pub metrics: MetricSet,
    /// Standard deviation of predicted probabilities.
    pub p_std: Option<f64>,
    /// Standard deviation of predicted median log-seconds (None without times).
    pub log_seconds_std: Option<f64>,
}

/// The `eval` report: every model and baseline on one hold-out.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Usable rows.
    pub rows: u64,
    /// Hold-out rows.
    pub holdout_rows: u64,
    /// By model name: a family, `active`, or `baseline_*`.
    pub models: BTreeMap<String, MetricSet>,
}

/// Scores model outputs against the hold-out outcomes.
pub fn score(rows: &Rows, preds: &[Output], with_times: bool) -> Scored {
    let mut acc = MetricsAccumulator::new();
    let mut ps = Vec::with_capacity(preds.len());
    let mut lts = Vec::new();
    for (i, o) in preds.iter().enumerate() {
        let p = f64::from(o.p_correct);
        ps.push(p);
        let q = o.log_seconds.map(|v| f64::from(v).exp());
        let interval = with_times.then_some((q[0], q[1], q[2]));
        if with_times {
            lts.push(f64::from(o.log_seconds[1]));
        }
        acc.push(p, rows.correct[i], interval, rows.seconds.get(i));
    }
    Scored {
        metrics: acc.finish(),
        p_std: std_dev(&ps),
        log_seconds_std: if with_times { std_dev(&lts) } else { None },
    }
}

fn score_baseline(rows: &Rows, preds: &[BaselinePrediction], with_times: bool) -> MetricSet {
    let mut acc = MetricsAccumulator::new();
    for (i, (p, q)) in preds.iter().enumerate() {
        let interval = q.filter(|_| with_times).map(|q| (q[0], q[1], q[2]));
        acc.push(*p, rows.correct[i], interval, rows.seconds.get(i));
    }
    acc.finish()
}

/// The baselines' metrics, keyed `baseline_population`, `baseline_learner`, `baseline_topic`.
pub fn baselines(ds: &Dataset) -> BTreeMap<String, MetricSet> {
    let b = &ds.holdout.baselines;
    let t = ds.time_modeled();
    BTreeMap::from([
        (
            "baseline_population".to_string(),
            score_baseline(&ds.holdout, &b.population, t),
        ),
        (
            "baseline_learner".to_string(),
            score_baseline(&ds.holdout, &b.learner, t),
        ),
        (
            "baseline_topic".to_string(),
            score_baseline(&ds.holdout, &b.topic, t),
        ),
    ])
}

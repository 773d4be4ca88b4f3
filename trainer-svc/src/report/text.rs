//! The report as text for a terminal: one block per version, live beside
//! hold-out, then diversity, stuck learners and drift.

use std::fmt::Write;

use super::{Report, VersionReport};

fn num(v: Option<f64>, decimals: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "-".to_owned(), |x| format!("{x:.decimals$}"))
}

fn window(r: &Report) -> String {
    let q = &r.request;
    let mut parts = Vec::new();
    if q.last_days > 0 {
        parts.push(format!("last {} days", q.last_days));
    }
    if q.last_rows > 0 {
        parts.push(format!("last {} rows", q.last_rows));
    }
    if parts.is_empty() {
        parts.push("all rows".into());
    }
    parts.join(", ")
}

fn version_block(out: &mut String, v: &VersionReport, stuck_window: u32) {
    let l = &v.live;
    let h = |k: &str| v.holdout.get(k).copied();
    let _ = writeln!(
        out,
        "\nversion {}  ({}{})",
        v.version,
        if v.family.is_empty() {
            String::new()
        } else {
            format!("{}, ", v.family)
        },
        v.state
    );
    if let (Some(a), Some(b)) = (v.first_completed_at, v.last_completed_at) {
        let _ = writeln!(out, "  rows {}  from {} to {}", l.rows, a, b);
    } else {
        let _ = writeln!(out, "  rows {}", l.rows);
    }
    let _ = writeln!(out, "  {:<22} {:>9} {:>9}", "", "live", "hold-out");
    for (name, live, hold, d) in [
        ("auc", l.auc, h("auc"), 4),
        ("logloss", l.logloss, h("logloss"), 4),
        ("brier", l.brier, h("brier"), 4),
        ("ece", l.ece, h("ece"), 4),
        ("mean predicted", l.mean_predicted, None, 4),
        ("observed rate", l.observed_rate, None, 4),
        ("time mae (s)", l.time_mae_seconds, h("mae_seconds"), 2),
        (
            "time mae (log s)",
            l.time_mae_log_seconds,
            h("mae_log_seconds"),
            4,
        ),
        (
            "10-90% coverage",
            l.interval_coverage,
            h("interval_coverage"),
            3,
        ),
    ] {
        let _ = writeln!(out, "  {name:<22} {:>9} {:>9}", num(live, d), num(hold, d));
    }
    let _ = writeln!(
        out,
        "  timed rows {}, rows with an interval {}",
        l.timed_rows, l.interval_rows
    );
    let _ = writeln!(
        out,
        "  diversity: {} distinct predictions overall (0.001 steps), spread {:.3}, p10-p90 {}",
        v.overall.distinct,
        v.overall.spread,
        num(v.overall.spread_p10_p90, 3)
    );
    let _ = writeln!(
        out,
        "             per learner (median of {}): {} distinct, spread {:.3}",
        v.per_learner.groups, v.per_learner.distinct, v.per_learner.spread
    );
    for t in &v.topics {
        let _ = writeln!(
            out,
            "             topic {:<20} rows {:>6}  distinct {:>4}  spread {:.3}  std {:.3}",
            t.topic, t.rows, t.distinct, t.spread, t.std_dev
        );
    }
    let _ = writeln!(
        out,
        "  stuck learners (last {stuck_window} predictions within 0.01): {} of {}",
        v.stuck_learners, v.stuck_eligible_learners
    );
    for s in &v.stuck {
        let _ = writeln!(
            out,
            "    {:<24} {:>5} tasks  p {:.4}-{:.4}",
            s.user_id, s.tasks, s.p_min, s.p_max
        );
    }
    if v.stuck_learners > v.stuck.len() as u64 {
        let _ = writeln!(
            out,
            "    ... and {} more",
            v.stuck_learners - v.stuck.len() as u64
        );
    }
    if v.drift {
        for r in &v.drift_reasons {
            let _ = writeln!(out, "  DRIFT: {r}");
        }
    } else {
        let _ = writeln!(out, "  drift: none");
    }
}

/// The whole report as text.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "live report at {} over {}: {} rows with a prediction, {} versions",
        r.generated_at,
        window(r),
        r.rows_scanned,
        r.versions.len()
    );
    let _ = writeln!(
        out,
        "drift margins: AUC -{}, ECE +{}",
        r.drift_config.auc_margin, r.drift_config.ece_margin
    );
    for v in &r.versions {
        version_block(&mut out, v, r.request.stuck_window);
    }
    out
}

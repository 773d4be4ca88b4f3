//! The live report as Prometheus gauges labelled by model version, refreshed
//! by a periodic task so a scrape never touches the database.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use prometheus::{Gauge, GaugeVec, Opts, Registry};
use taskcast_serving::shutdown::Shutdown;

use super::{DriftConfig, Report, ReportRequest, compute};
use crate::db::Db;

/// Handles to the live gauges; cheap to clone.
#[derive(Clone, Debug)]
pub struct LiveGauges {
    rows: GaugeVec,
    auc: GaugeVec,
    logloss: GaugeVec,
    ece: GaugeVec,
    mean_predicted: GaugeVec,
    observed_rate: GaugeVec,
    time_mae_seconds: GaugeVec,
    interval_coverage: GaugeVec,
    learner_spread: GaugeVec,
    stuck_learners: GaugeVec,
    drift: GaugeVec,
    /// Seconds the last refresh took.
    pub refresh_seconds: Gauge,
    /// Unix time of the last successful refresh.
    pub refreshed_at: Gauge,
}

fn vec(registry: &Registry, name: &str, help: &str) -> Result<GaugeVec, prometheus::Error> {
    let g = GaugeVec::new(Opts::new(name, help), &["version"])?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

impl LiveGauges {
    /// Creates and registers the gauges.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let refresh_seconds = Gauge::new(
            "live_report_seconds",
            "Seconds the last live-report refresh took.",
        )?;
        let refreshed_at = Gauge::new(
            "live_report_timestamp_seconds",
            "Unix time of the last successful live-report refresh.",
        )?;
        registry.register(Box::new(refresh_seconds.clone()))?;
        registry.register(Box::new(refreshed_at.clone()))?;
        Ok(LiveGauges {
            rows: vec(
                registry,
                "live_rows",
                "Completed tasks with a prediction by this version, in the report window.",
            )?,
            auc: vec(
                registry,
                "live_auc",
                "AUC of the version's predicted p_correct on live outcomes.",
            )?,
            logloss: vec(
                registry,
                "live_logloss",
                "Log loss of predicted p_correct on live outcomes.",
            )?,
            ece: vec(
                registry,
                "live_ece",
                "Expected calibration error (10 bins) on live outcomes.",
            )?,
            mean_predicted: vec(registry, "live_mean_predicted", "Mean predicted p_correct.")?,
            observed_rate: vec(
                registry,
                "live_observed_rate",
                "Observed success rate of the tasks the version predicted.",
            )?,
            time_mae_seconds: vec(
                registry,
                "live_time_mae_seconds",
                "Mean absolute error of the predicted median seconds.",
            )?,
            interval_coverage: vec(
                registry,
                "live_interval_coverage",
                "Share of recorded times inside the predicted 10-90% interval.",
            )?,
            learner_spread: vec(
                registry,
                "live_learner_spread",
                "Median over learners of max-min predicted p_correct.",
            )?,
            stuck_learners: vec(
                registry,
                "live_stuck_learners",
                "Learners whose last K predictions stayed within 0.01.",
            )?,
            drift: vec(
                registry,
                "live_drift",
                "1 when live AUC or calibration fell beyond the margin from the hold-out, or most learners are stuck.",
            )?,
            refresh_seconds,
            refreshed_at,
        })
    }

    fn all(&self) -> [&GaugeVec; 11] {
        [
            &self.rows,
            &self.auc,
            &self.logloss,
            &self.ece,
            &self.mean_predicted,
            &self.observed_rate,
            &self.time_mae_seconds,
            &self.interval_coverage,
            &self.learner_spread,
            &self.stuck_learners,
            &self.drift,
        ]
    }

    /// Replaces every gauge with the report's figures. Versions no longer in
    /// the window disappear; unmeasured figures are left out, not set to 0.
    pub fn set(&self, report: &Report) {
        for g in self.all() {
            g.reset();
        }
        for v in &report.versions {
            let label = [v.version.as_str()];
            let put = |g: &GaugeVec, value: Option<f64>| {
                if let Some(x) = value {
                    g.with_label_values(&label).set(x);
                }
            };
            let l = &v.live;
            put(&self.rows, Some(l.rows as f64));
            put(&self.auc, l.auc);
            put(&self.logloss, l.logloss);
            put(&self.ece, l.ece);
            put(&self.mean_predicted, l.mean_predicted);
            put(&self.observed_rate, l.observed_rate);
            put(&self.time_mae_seconds, l.time_mae_seconds);
            put(&self.interval_coverage, l.interval_coverage);
            put(
                &self.learner_spread,
                (v.per_learner.groups > 0).then_some(v.per_learner.spread),
            );
            put(&self.stuck_learners, Some(v.stuck_learners as f64));
            put(&self.drift, Some(if v.drift { 1.0 } else { 0.0 }));
        }
    }
}

/// Refreshes `gauges` now and then every `interval` until `shutdown`.
/// A failed refresh is logged and keeps the previous figures.
pub async fn refresh_periodically(
    db: Db,
    gauges: LiveGauges,
    request: ReportRequest,
    drift: DriftConfig,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    let mut flagged: BTreeSet<String> = BTreeSet::new();
    let mut ticker = tokio::time::interval(interval);
    // After a slow refresh, wait a full interval rather than catching up.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.recv() => return,
        }
        let started = Instant::now();
        // A refresh on a large window must not hold up shutdown.
        let result = tokio::select! {
            r = compute(&db, &request, &drift) => r,
            () = shutdown.recv() => return,
        };
        match result {
            Ok(report) => {
                gauges.set(&report);
                gauges.refresh_seconds.set(started.elapsed().as_secs_f64());
                gauges
                    .refreshed_at
                    .set(report.generated_at.timestamp() as f64);
                // Log when a version starts or stops drifting, not every refresh.
                let now: BTreeSet<String> = report
                    .versions
                    .iter()
                    .filter(|v| v.drift)
                    .map(|v| v.version.clone())
                    .collect();
                for v in report
                    .versions
                    .iter()
                    .filter(|v| v.drift && !flagged.contains(&v.version))
                {
                    tracing::warn!(version = %v.version, reasons = ?v.drift_reasons, "live report flags drift");
                }
                for v in flagged.difference(&now) {
                    tracing::info!(version = %v, "live report no longer flags drift");
                }
                flagged = now;
            }
            Err(e) => {
                tracing::warn!(error = %e, "live report refresh failed; gauges keep their last values")
            }
        }
    }
}

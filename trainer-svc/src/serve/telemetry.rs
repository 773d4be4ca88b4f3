//! The trainer's Prometheus metrics, all prefixed `taskcast_trainer_` by
//! the registry (the live-report gauges in `report::gauges` too).

use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Prefix of every metric the trainer exports.
pub const METRICS_PREFIX: &str = "taskcast_trainer";

/// Run-duration buckets: a run over a few thousand rows takes about a second,
/// 10 M rows several minutes; past an hour something is wrong.
const RUN_SECONDS_BUCKETS: [f64; 11] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
];

/// Handles to every trainer metric; cheap to clone.
#[derive(Clone, Debug)]
pub struct TrainerMetrics {
    /// Runs started, by trigger.
    pub runs_started: IntCounterVec,
    /// Runs ended, by final state.
    pub runs_finished: IntCounterVec,
    /// Completed tasks since the watermark.
    pub pending_tasks: IntGauge,
    /// Live `WatchModels` subscribers.
    pub subscribers: IntGauge,
    /// Wall time of each run, start to recorded end, by final state.
    pub run_duration: HistogramVec,
    /// Unix time the last run finished without error (promoted or not).
    pub last_success: Gauge,
}

impl TrainerMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = TrainerMetrics {
            runs_started: IntCounterVec::new(
                Opts::new("runs_started_total", "Training runs started, by trigger."),
                &["trigger"],
            )?,
            runs_finished: IntCounterVec::new(
                Opts::new("runs_finished_total", "Training runs ended, by state."),
                &["state"],
            )?,
            pending_tasks: IntGauge::new(
                "pending_tasks",
                "Completed tasks since the last training watermark.",
            )?,
            subscribers: IntGauge::new(
                "model_subscribers",
                "Inference replicas subscribed to WatchModels.",
            )?,
            run_duration: HistogramVec::new(
                HistogramOpts::new(
                    "run_duration_seconds",
                    "Wall time of training runs, start to end, by final state.",
                )
                .buckets(RUN_SECONDS_BUCKETS.to_vec()),
                &["state"],
            )?,
            last_success: Gauge::new(
                "last_success_timestamp_seconds",
                "Unix time the last training run finished without error \
                 (SUCCEEDED or REJECTED by the gate); 0 before the first.",
            )?,
        };
        registry.register(Box::new(m.runs_started.clone()))?;
        registry.register(Box::new(m.runs_finished.clone()))?;
        registry.register(Box::new(m.pending_tasks.clone()))?;
        registry.register(Box::new(m.subscribers.clone()))?;
        registry.register(Box::new(m.run_duration.clone()))?;
        registry.register(Box::new(m.last_success.clone()))?;
        Ok(m)
    }
}

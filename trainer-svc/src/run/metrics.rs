//! What runs report to Prometheus, as a handle the run layer owns: the
//! process around the runs registers it ([`RunMetrics::new`]) and hands it
//! to the [`Runner`](crate::run::runner::Runner), so runs never reach up
//! into the server for their metrics.

use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Run-duration buckets: a run over a few thousand rows takes about a second,
/// 10 M rows several minutes; past an hour something is wrong.
const RUN_SECONDS_BUCKETS: [f64; 11] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
];

/// Handles to the runs' metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct RunMetrics {
    /// Runs started, by trigger.
    pub runs_started: IntCounterVec,
    /// Runs ended, by final state.
    pub runs_finished: IntCounterVec,
    /// Completed tasks since the watermark.
    pub pending_tasks: IntGauge,
    /// Wall time of each run, start to recorded end, by final state.
    pub run_duration: HistogramVec,
    /// Unix time the last run finished without error (promoted or not).
    pub last_success: Gauge,
    /// ONNX bytes the model registry holds (set at start and after each run).
    pub registry_bytes: IntGauge,
    /// Pending tasks an automatic run needs now (`auto_threshold`; +Inf
    /// with automatic runs off), so an alert compares like with like.
    pub retrain_threshold: Gauge,
}

impl RunMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = RunMetrics {
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
            registry_bytes: IntGauge::new(
                "model_registry_bytes",
                "ONNX bytes held by the model registry (pruned versions count 0).",
            )?,
            retrain_threshold: Gauge::new(
                "retrain_threshold_tasks",
                "Pending tasks an automatic run needs now: the larger of --retrain-every \
                 and --retrain-min-growth times the last run's rows (+Inf when automatic \
                 runs are off). Exact once pending_tasks reaches --retrain-every.",
            )?,
        };
        registry.register(Box::new(m.retrain_threshold.clone()))?;
        registry.register(Box::new(m.registry_bytes.clone()))?;
        registry.register(Box::new(m.runs_started.clone()))?;
        registry.register(Box::new(m.runs_finished.clone()))?;
        registry.register(Box::new(m.pending_tasks.clone()))?;
        registry.register(Box::new(m.run_duration.clone()))?;
        registry.register(Box::new(m.last_success.clone()))?;
        Ok(m)
    }
}

//! The trainer's Prometheus metrics.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

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
}

impl TrainerMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = TrainerMetrics {
            runs_started: IntCounterVec::new(
                Opts::new(
                    "taskcast_trainer_runs_started_total",
                    "Training runs started, by trigger.",
                ),
                &["trigger"],
            )?,
            runs_finished: IntCounterVec::new(
                Opts::new(
                    "taskcast_trainer_runs_finished_total",
                    "Training runs ended, by state.",
                ),
                &["state"],
            )?,
            pending_tasks: IntGauge::new(
                "taskcast_trainer_pending_tasks",
                "Completed tasks since the last training watermark.",
            )?,
            subscribers: IntGauge::new(
                "taskcast_trainer_model_subscribers",
                "Inference replicas subscribed to WatchModels.",
            )?,
        };
        registry.register(Box::new(m.runs_started.clone()))?;
        registry.register(Box::new(m.runs_finished.clone()))?;
        registry.register(Box::new(m.pending_tasks.clone()))?;
        registry.register(Box::new(m.subscribers.clone()))?;
        Ok(m)
    }
}

//! The trainer's Prometheus metrics, all prefixed `taskcast_trainer_` by
//! the registry (the live-report gauges in `report::gauges` too): the runs'
//! own ([`RunMetrics`], owned by the run layer) and the server's.

use prometheus::{IntGauge, Registry};

use crate::fleet::FleetGauges;
use crate::run::metrics::RunMetrics;

/// Prefix of every metric the trainer exports.
pub const METRICS_PREFIX: &str = "taskcast_trainer";

/// Handles to every trainer metric; cheap to clone.
#[derive(Clone, Debug)]
pub struct TrainerMetrics {
    /// What the runs report.
    pub runs: RunMetrics,
    /// Live `WatchModels` subscribers.
    pub subscribers: IntGauge,
    /// Inference replicas by version and state.
    pub fleet: FleetGauges,
}

impl TrainerMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let subscribers = IntGauge::new(
            "model_subscribers",
            "Inference replicas subscribed to WatchModels.",
        )?;
        registry.register(Box::new(subscribers.clone()))?;
        Ok(TrainerMetrics {
            runs: RunMetrics::new(registry)?,
            subscribers,
            fleet: FleetGauges::new(registry)?,
        })
    }
}

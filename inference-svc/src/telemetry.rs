//! The service's Prometheus metrics, all prefixed `taskcast_inference_`.
//!
//! One [`Registry`] per server instance (not the global default registry) so
//! several servers in one test process never collide.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use taskcast_serving::grpc_metrics::GrpcMetricsLayer;

/// gRPC service name the health status is reported under and the gRPC
/// metrics are labelled with (the generated server's `NamedService::NAME`,
/// checked by a test in `service.rs`).
pub const INFERENCE_SERVICE: &str = "taskcast.v1.Inference";

/// Prefix of every metric this service exports.
pub const PREFIX: &str = "taskcast_inference";

/// Handles to every metric; clone-cheap pieces, shared behind an `Arc`.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Per-RPC request counts and latency (`grpc_server_*`), as a tower layer.
    pub grpc: GrpcMetricsLayer,
    /// Candidates predicted, per model version.
    pub predictions: IntCounterVec,
    /// Models put into service (including the first).
    pub model_swaps: IntCounter,
    /// Models refused, by reason (see `ModelError::reason`).
    pub model_refused: IntCounterVec,
    /// 1 for the model currently serving, labelled by version, family and sha256.
    pub model_info: IntGaugeVec,
    /// 1 while the WatchModels stream to the trainer is up.
    pub trainer_connected: IntGauge,
    /// Share of learners a canary's candidate answers here (0: no canary).
    pub canary_percent: IntGauge,
    /// Times the trainer subscription was re-established after a failure.
    pub trainer_reconnects: IntCounter,
    /// History attempts per request (before windowing).
    pub history_length: Histogram,
    /// Candidates per request.
    pub candidates: Histogram,
    /// Predict calls per ONNX Runtime run when batching.
    pub batch_requests: Histogram,
    /// `predictions` for the version last asked for (see [`Metrics::predictions_for`]).
    predictions_last: Arc<ArcSwapOption<(String, IntCounter)>>,
}

impl Metrics {
    /// Creates and registers every metric in a fresh prefixed registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some(PREFIX.to_string()), None)?;
        // Labels only for what this server routes: a made-up path, or a
        // Trainer method sent here, is counted as `unknown`.
        let grpc = GrpcMetricsLayer::for_services(&registry, &[INFERENCE_SERVICE])?;
        let predictions = IntCounterVec::new(
            Opts::new(
                "predictions_total",
                "Candidates predicted, per model version.",
            ),
            &["model_version"],
        )?;
        let model_swaps = IntCounter::new("model_swaps_total", "Models put into service.")?;
        let model_refused = IntCounterVec::new(
            Opts::new("model_refused_total", "Models refused at load, by reason."),
            &["reason"],
        )?;
        let model_info = IntGaugeVec::new(
            Opts::new("model_info", "1 for the model currently serving."),
            &["version", "family", "sha256"],
        )?;
        let trainer_connected = IntGauge::new(
            "trainer_connected",
            "1 while subscribed to the trainer's model stream.",
        )?;
        let canary_percent = IntGauge::new(
            "canary_percent",
            "Share of learners (percent) this replica answers with a canary's candidate; 0 when no canary runs.",
        )?;
        let trainer_reconnects = IntCounter::new(
            "trainer_reconnects_total",
            "Trainer subscription attempts after the first.",
        )?;
        let history_length = Histogram::with_opts(
            HistogramOpts::new("history_length", "History attempts per request.").buckets(vec![
                0.0, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
            ]),
        )?;
        let candidates = Histogram::with_opts(
            HistogramOpts::new("candidates", "Candidates per request.").buckets(vec![
                1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
            ]),
        )?;
        registry.register(Box::new(predictions.clone()))?;
        registry.register(Box::new(model_swaps.clone()))?;
        registry.register(Box::new(model_refused.clone()))?;
        registry.register(Box::new(model_info.clone()))?;
        registry.register(Box::new(trainer_connected.clone()))?;
        registry.register(Box::new(canary_percent.clone()))?;
        registry.register(Box::new(trainer_reconnects.clone()))?;
        registry.register(Box::new(history_length.clone()))?;
        let batch_requests = Histogram::with_opts(
            HistogramOpts::new(
                "batch_requests",
                "Predict calls answered by one model run (dynamic batching).",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )?;
        registry.register(Box::new(candidates.clone()))?;
        registry.register(Box::new(batch_requests.clone()))?;
        Ok(Metrics {
            registry,
            grpc,
            predictions,
            model_swaps,
            model_refused,
            model_info,
            trainer_connected,
            canary_percent,
            trainer_reconnects,
            history_length,
            candidates,
            batch_requests,
            predictions_last: Arc::default(),
        })
    }

    /// The `predictions_total` counter of `version`. The serving version
    /// changes only on a swap, so the last one asked for is kept and a
    /// request does not hash and look up its label every time.
    pub fn predictions_for(&self, version: &str) -> IntCounter {
        if let Some(last) = &*self.predictions_last.load()
            && last.0 == version
        {
            return last.1.clone();
        }
        let counter = self.predictions.with_label_values(&[version]);
        self.predictions_last
            .store(Some(Arc::new((version.to_string(), counter.clone()))));
        counter
    }
}

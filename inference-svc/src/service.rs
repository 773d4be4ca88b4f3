//! The tonic `taskcast.v1.Inference` implementation: takes one model
//! snapshot per request, hands it to [`crate::predict`] / [`crate::recommend`],
//! records metrics, and maps typed errors to gRPC statuses in exactly one
//! place ([`status`]).

use std::sync::Arc;
use std::time::SystemTime;

use taskcast_proto::inference_server::Inference;
use taskcast_proto::{
    GetModelRequest, ModelInfo, PredictRequest, PredictResponse, RecommendRequest,
    RecommendResponse,
};
use tonic::{Request, Response, Status};

use crate::model::LoadedModel;
use crate::predict::{Limits, PredictError, PredictInput, predict};
use crate::recommend::recommend;
use crate::swap::ModelSlot;
use crate::telemetry::Metrics;

/// The gRPC service; cheap to clone (shared handles).
#[derive(Clone, Debug)]
pub struct InferenceService {
    slot: Arc<ModelSlot>,
    metrics: Arc<Metrics>,
    limits: Limits,
}

impl InferenceService {
    /// A service answering from `slot`.
    pub fn new(slot: Arc<ModelSlot>, metrics: Arc<Metrics>, limits: Limits) -> Self {
        InferenceService {
            slot,
            metrics,
            limits,
        }
    }

    /// The request's model snapshot, or UNAVAILABLE before the first load
    /// (health says NOT_SERVING then, so well-behaved clients never get here).
    fn model(&self) -> Result<Arc<LoadedModel>, Status> {
        self.slot
            .current()
            .ok_or_else(|| Status::unavailable("no model loaded yet; retry shortly"))
    }

    fn observe(&self, model: &LoadedModel, input: &PredictInput<'_>) {
        self.metrics
            .history_length
            .observe(input.history.len() as f64);
        self.metrics
            .candidates
            .observe(input.candidates.len() as f64);
        self.metrics
            .predictions
            .with_label_values(&[model.version()])
            .inc_by(input.candidates.len() as u64);
    }
}

/// The one mapping from service errors to gRPC statuses.
pub fn status(e: PredictError) -> Status {
    match e {
        PredictError::InvalidArgument(m) => Status::invalid_argument(m),
        PredictError::Model(m) => {
            tracing::error!(error = %m, "model run failed on a request");
            Status::internal(format!("model run failed: {m}"))
        }
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// `ModelInfo` for a loaded model.
pub fn model_info(m: &LoadedModel) -> ModelInfo {
    let meta = m.metadata();
    let trained_at = chrono::DateTime::parse_from_rfc3339(&meta.trained_at)
        .ok()
        .map(|t| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        });
    ModelInfo {
        version: meta.version.clone(),
        family: meta.family.clone(),
        feature_schema: meta.feature_schema.clone(),
        trained_at,
        metrics: meta.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        history_window: meta.history_window,
        sha256: m.sha256.clone(),
        loaded_at: Some(timestamp(m.loaded_at)),
        features: meta.features.clone(),
        time_modeled: meta.time_modeled(),
    }
}

#[tonic::async_trait]
impl Inference for InferenceService {
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let req = request.into_inner();
        let model = self.model()?;
        let input = PredictInput::from(&req);
        let predictions = predict(&model, &input, &self.limits).map_err(status)?;
        self.observe(&model, &input);
        Ok(Response::new(PredictResponse {
            predictions,
            model_version: model.version().to_string(),
            time_modeled: model.metadata().time_modeled(),
        }))
    }

    async fn recommend(
        &self,
        request: Request<RecommendRequest>,
    ) -> Result<Response<RecommendResponse>, Status> {
        let req = request.into_inner();
        let model = self.model()?;
        let r = recommend(&model, &req, &self.limits).map_err(status)?;
        self.observe(&model, &PredictInput::from(&req));
        Ok(Response::new(RecommendResponse {
            predictions: r.predictions,
            model_version: model.version().to_string(),
            target_p_correct: r.target_p_correct,
            total_seconds: r.total_seconds,
            time_modeled: model.metadata().time_modeled(),
        }))
    }

    async fn get_model(
        &self,
        _request: Request<GetModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let model = self.model()?;
        Ok(Response::new(model_info(&model)))
    }
}

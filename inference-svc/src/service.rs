//! The tonic `taskcast.v1.Inference` implementation: takes one model
//! snapshot per request, hands it to [`crate::predict`] / [`crate::recommend`],
//! records metrics, and maps typed errors to gRPC statuses in exactly one
//! place ([`status`]).
//!
//! The server answers `Predict` with [`InferenceService::predict_into`],
//! from the received bytes to the response's bytes ([`crate::wire`], mounted
//! in front of the router by `taskcast_serving::grpc::RawUnary`), and
//! `Recommend` with [`InferenceService::recommend_into`], which reads its
//! request the same way: in memory bounded by the limits, not by what the
//! bytes claim. The generated `Inference::predict` and `recommend` give the
//! same answers and serve callers in this process (a test sends the same
//! requests down both).

use std::sync::Arc;
use std::time::SystemTime;

use prost::Message;
use taskcast_proto::inference_server::Inference;
use taskcast_proto::{
    GetModelRequest, ModelInfo, PredictRequest, PredictResponse, RecommendRequest,
    RecommendResponse,
};
use tonic::{Request, Response, Status};

use crate::model::LoadedModel;
use crate::predict::{Limits, PredictError, PredictInput, predict, score_batched};
use crate::recommend::{RecommendParams, Recommendation, recommend};
use crate::swap::ModelSlot;
use crate::telemetry::Metrics;
use crate::wire::{self, DecodeError, PredictRequestRef, RecommendRequestRef};

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
        self.slot.current().ok_or_else(not_loaded)
    }

    /// The snapshot that answers `user_id`: during a canary, the candidate
    /// for its share of learners.
    fn model_for(&self, user_id: &str) -> Result<Arc<LoadedModel>, Status> {
        self.slot.for_learner(user_id).ok_or_else(not_loaded)
    }

    fn observe(&self, model: &LoadedModel, history: usize, candidates: usize) {
        self.metrics.history_length.observe(history as f64);
        self.metrics.candidates.observe(candidates as f64);
        self.metrics
            .predictions_for(model.version())
            .inc_by(candidates as u64);
    }

    /// Predict from the request's bytes to the response's bytes, appended
    /// to `out`: the request is read in place and the answer written without
    /// building messages ([`crate::wire`]), its rows run in one batch with
    /// the calls that arrive beside it ([`crate::batch`]); what it answers,
    /// errors included, is what [`Inference::predict`] answers for the same
    /// request.
    pub async fn predict_into(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), Status> {
        let req = PredictRequestRef::decode(body, &self.limits).map_err(status)?;
        let model = self.model_for(req.user_id)?;
        let input = PredictInput::from(&req);
        let scored = score_batched(&model, &input, &self.limits)
            .await
            .map_err(status)?;
        self.observe(&model, req.history.len(), req.candidates.len());
        let ids = req.candidates.iter().map(|c| c.task_id);
        let version = model.version();
        let time_modeled = model.metadata().time_modeled();
        out.reserve(wire::predict_response_len(
            ids.clone(),
            &scored,
            version,
            time_modeled,
        ));
        wire::encode_predict_response(ids, &scored, version, time_modeled, out);
        Ok(())
    }

    /// Recommend from the request's bytes, its encoded response appended to
    /// `out`: the request is read in place, in bounded memory, like
    /// Predict's; the answer is what [`Inference::recommend`] answers.
    pub fn recommend_into(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), Status> {
        let req = RecommendRequestRef::decode(body, &self.limits).map_err(status)?;
        let input = PredictInput::from(&req.request);
        let model = self.model_for(input.user_id)?;
        let r = recommend(&model, &input, &req.params, &self.limits).map_err(status)?;
        self.observe(&model, input.history.len(), input.candidates.len());
        let response = recommend_response(&model, r);
        out.reserve(response.encoded_len());
        // A Vec grows as needed, so encoding into it cannot run out of room.
        response.encode_raw(out);
        Ok(())
    }
}

fn not_loaded() -> Status {
    Status::unavailable("no model loaded yet; retry shortly")
}

fn recommend_response(model: &LoadedModel, r: Recommendation) -> RecommendResponse {
    RecommendResponse {
        predictions: r.predictions,
        model_version: model.version().to_string(),
        target_p_correct: r.target_p_correct,
        total_seconds: r.total_seconds,
        time_modeled: model.metadata().time_modeled(),
    }
}

/// Every way a request can fail, for [`status`].
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Refused or failed after the request was read.
    #[error(transparent)]
    Predict(#[from] PredictError),
    /// Refused while it was read.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// The one mapping from service errors to gRPC statuses.
///
/// Bytes that are not the message get what tonic answers when prost cannot
/// decode one (`INTERNAL`, "failed to decode Protobuf message: …"), so the
/// raw path answers as the generated path would and clients see one
/// behaviour. A message the limits refuse while it is read is
/// `INVALID_ARGUMENT` naming the field, with the same text as when it is
/// refused after decoding.
pub fn status(e: impl Into<RequestError>) -> Status {
    match e.into() {
        RequestError::Predict(e) | RequestError::Decode(DecodeError::Invalid(e)) => match e {
            PredictError::InvalidArgument(m) => Status::invalid_argument(m),
            PredictError::Model(m) => {
                tracing::error!(error = %m, "model run failed on a request");
                Status::internal(format!("model run failed: {m}"))
            }
        },
        RequestError::Decode(DecodeError::Malformed(e)) => {
            Status::internal(format!("failed to decode Protobuf message: {e}"))
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
        let model = self.model_for(&req.user_id)?;
        let input = PredictInput::from(&req);
        let predictions = predict(&model, &input, &self.limits).map_err(status)?;
        self.observe(&model, req.history.len(), req.candidates.len());
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
        let model = self.model_for(&req.user_id)?;
        let input = PredictInput::from(&req);
        let r = recommend(&model, &input, &RecommendParams::from(&req), &self.limits)
            .map_err(status)?;
        self.observe(&model, req.history.len(), req.candidates.len());
        Ok(Response::new(recommend_response(&model, r)))
    }

    async fn get_model(
        &self,
        _request: Request<GetModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let model = self.model()?;
        Ok(Response::new(model_info(&model)))
    }
}

/// Path of the Predict method.
pub const PREDICT_PATH: &str = "/taskcast.v1.Inference/Predict";

/// Path of the Recommend method.
pub const RECOMMEND_PATH: &str = "/taskcast.v1.Inference/Recommend";

#[cfg(test)]
mod tests {
    use super::*;
    use taskcast_proto::{Attempt, Candidate};

    use crate::Config;

    #[test]
    fn health_name_is_the_generated_service_name() {
        use tonic::server::NamedService;
        type S = taskcast_proto::inference_server::InferenceServer<super::InferenceService>;
        assert_eq!(
            <S as NamedService>::NAME,
            crate::telemetry::INFERENCE_SERVICE
        );
    }

    async fn service() -> InferenceService {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/bootstrap.onnx");
        crate::init_runtime(&Config::default_for_tests(path)).unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let (health, _) = taskcast_serving::grpc::health();
        let slot = Arc::new(ModelSlot::new(Arc::clone(&metrics), health, 1));
        slot.try_swap(std::fs::read(path).unwrap(), None)
            .await
            .unwrap();
        InferenceService::new(
            slot,
            metrics,
            Limits {
                max_history: 40,
                ..Limits::default()
            },
        )
    }

    fn request(history: usize, candidates: usize, explain: bool) -> PredictRequest {
        let topics = ["algebra", "fractions", "", "géométrie"];
        PredictRequest {
            user_id: "learner-7".into(),
            history: (0..history)
                .map(|i| Attempt {
                    topic: topics[i % 4].into(),
                    difficulty: ["easy", "", "hard"][i % 3].into(),
                    correct: i % 3 != 1,
                    seconds: [12.5, 0.0, 95.0, 4000.0][i % 4],
                    completed_at: (i % 2 == 0).then_some(prost_types::Timestamp {
                        seconds: 1_700_000_000 + i as i64,
                        nanos: 5,
                    }),
                    item_id: format!("q{}", i % 5),
                })
                .collect(),
            candidates: (0..candidates)
                .map(|i| Candidate {
                    task_id: if i == 1 {
                        String::new()
                    } else {
                        format!("t{i}")
                    },
                    topic: topics[i % 4].into(),
                    difficulty: ["hard", "", "easy"][i % 3].into(),
                    item_id: format!("q{}", i % 7),
                })
                .collect(),
            explain,
            as_of: None,
        }
    }

    /// The byte path answers exactly what the generated path answers:
    /// the same response bytes, or the same status.
    #[tokio::test]
    async fn predict_into_answers_as_predict_does() {
        let svc = service().await;
        let mut cases = vec![
            request(0, 1, false),
            request(50, 1, false),
            request(50, 100, false),
            request(7, 3, true),
            request(40, 2, true),
        ];
        let mut bad = request(5, 2, false);
        bad.user_id.clear();
        cases.push(bad);
        cases.push(request(5, 0, false));
        cases.push(request(41, 1, false));
        let mut nan = request(5, 1, false);
        nan.history[3].seconds = f64::NAN;
        cases.push(nan);
        for req in cases {
            let bytes = req.encode_to_vec();
            let mut ours = Vec::new();
            let ours = svc.predict_into(&bytes, &mut ours).await.map(|()| ours);
            let theirs = svc
                .predict(Request::new(req.clone()))
                .await
                .map(|r| r.into_inner().encode_to_vec());
            same_answer(&req, ours, theirs);
        }
        // Bytes prost refuses are refused as tonic refuses them.
        let e = svc
            .predict_into(&[0x0a, 0x05, b'a'], &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal);
        assert!(e.message().starts_with("failed to decode Protobuf message"));
    }

    /// The in-place path and the generated one gave the same bytes, or the
    /// same status.
    fn same_answer(
        req: &impl std::fmt::Debug,
        ours: Result<Vec<u8>, Status>,
        theirs: Result<Vec<u8>, Status>,
    ) {
        match (ours, theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{req:?}"),
            (Err(a), Err(b)) => {
                assert_eq!((a.code(), a.message()), (b.code(), b.message()));
            }
            (a, b) => panic!("{req:?}: {a:?} vs {b:?}"),
        }
    }

    /// Recommend read in place answers what the generated path answers.
    #[tokio::test]
    async fn recommend_into_answers_as_recommend_does() {
        let svc = service().await;
        let rec = |p: PredictRequest, target: f64, budget: f64, limit: u32| RecommendRequest {
            user_id: p.user_id,
            history: p.history,
            candidates: p.candidates,
            explain: p.explain,
            target_p_correct: target,
            time_budget_seconds: budget,
            limit,
            as_of: None,
        };
        let mut cases = vec![
            rec(request(10, 20, false), 0.0, 0.0, 0),
            rec(request(30, 50, false), 0.6, 300.0, 5),
            rec(request(3, 4, true), 0.9, 0.0, 2),
            rec(request(5, 2, false), 1.5, 0.0, 0),
            rec(request(5, 2, false), 0.5, f64::NAN, 0),
            rec(request(41, 1, false), 1.5, 0.0, 0),
            rec(request(5, 0, false), 0.5, 0.0, 0),
        ];
        let mut bad = rec(request(5, 2, false), 0.5, 0.0, 0);
        bad.user_id.clear();
        cases.push(bad);
        for req in cases {
            let bytes = req.encode_to_vec();
            let mut ours = Vec::new();
            let ours = svc.recommend_into(&bytes, &mut ours).map(|()| ours);
            let theirs = svc
                .recommend(Request::new(req.clone()))
                .await
                .map(|r| r.into_inner().encode_to_vec());
            same_answer(&req, ours, theirs);
        }
    }
}

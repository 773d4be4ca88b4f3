//! A minimal `taskcast.v1.Inference` server that does no model work: it
//! decodes each request and answers one fixed prediction per candidate. The
//! load generator driven against it measures its own ceiling (plus the gRPC
//! stack's), the figure any real server's throughput is to be read against.

use std::future::Future;

use taskcast_proto::inference_server::{Inference, InferenceServer};
use taskcast_proto::{
    GetModelRequest, ModelInfo, PredictRequest, PredictResponse, Prediction, RecommendRequest,
    RecommendResponse,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// Version the null server reports, so a report can never be mistaken for a model's.
pub const NULL_VERSION: &str = "null";

/// The do-nothing implementation.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullInference;

fn fixed(candidates: Vec<taskcast_proto::Candidate>) -> Result<Vec<Prediction>, Status> {
    // The contract's one rule a load run can trip: 1..=1000 candidates.
    if candidates.is_empty() {
        return Err(Status::invalid_argument("candidates: got 0, need 1..=1000"));
    }
    Ok(candidates
        .into_iter()
        .map(|c| Prediction {
            task_id: c.task_id,
            p_correct: 0.5,
            seconds: 60.0,
            seconds_low: 20.0,
            seconds_high: 180.0,
            cold_start: false,
            reasons: Vec::new(),
        })
        .collect())
}

#[tonic::async_trait]
impl Inference for NullInference {
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let predictions = fixed(request.into_inner().candidates)?;
        Ok(Response::new(PredictResponse {
            predictions,
            model_version: NULL_VERSION.into(),
            time_modeled: false,
        }))
    }

    async fn recommend(
        &self,
        request: Request<RecommendRequest>,
    ) -> Result<Response<RecommendResponse>, Status> {
        let predictions = fixed(request.into_inner().candidates)?;
        Ok(Response::new(RecommendResponse {
            total_seconds: 60.0 * predictions.len() as f64,
            predictions,
            model_version: NULL_VERSION.into(),
            target_p_correct: 0.5,
            time_modeled: false,
        }))
    }

    async fn get_model(
        &self,
        _request: Request<GetModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        Ok(Response::new(ModelInfo {
            version: NULL_VERSION.into(),
            family: NULL_VERSION.into(),
            ..ModelInfo::default()
        }))
    }
}

/// Serves [`NullInference`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(InferenceServer::new(NullInference))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

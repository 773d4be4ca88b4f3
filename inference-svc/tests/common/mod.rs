//! Shared test support: a real server on 127.0.0.1:0, real clients, model
//! files built with the contract crate, and a fake Trainer peer (a test double
//! for the not-yet-built trainer's WatchModels stream).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inference_svc::{App, Config, Metrics, ModelSlot};
use taskcast_contract::artifact::{Artifact, ModelMetadata, sha256_hex};
use taskcast_contract::bootstrap::linear_metadata;
use taskcast_contract::linear::LinearModel;
use taskcast_contract::{FEATURE_SCHEMA, Priors};
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::trainer_server::{Trainer, TrainerServer};
use taskcast_proto::*;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The checked-in bootstrap model.
pub fn bootstrap_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/bootstrap.onnx"
    ))
}

pub fn bootstrap_bytes() -> Vec<u8> {
    std::fs::read(bootstrap_path()).expect("models/bootstrap.onnx")
}

/// Metadata like the bootstrap model's, with a given version and priors.
pub fn metadata(version: &str, priors: Priors) -> ModelMetadata {
    let mut m = linear_metadata(version, "linear", priors);
    m.trained_at = "2026-11-26T12:00:00Z".into();
    m.metrics = BTreeMap::from([("auc".to_string(), 0.71)]);
    m.training_rows = 1000;
    m
}

/// A linear model with small deterministic pseudo-random weights.
pub fn random_linear(seed: u64) -> LinearModel {
    LinearModel::pseudo_random(seed, 0.2)
}

pub fn linear_bytes(model: &LinearModel, meta: &ModelMetadata) -> Vec<u8> {
    Artifact::write(model.graph(), meta).expect("write artifact")
}

/// A running server and handles into it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub slot: Arc<ModelSlot>,
    pub metrics: Arc<Metrics>,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<Result<(), inference_svc::Error>>,
}

pub async fn start(config: Config) -> TestServer {
    try_start(config).await.expect("server starts")
}

pub async fn try_start(config: Config) -> Result<TestServer, inference_svc::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let mut app = App::new(config).await?;
    // Load up front so a startup failure is returned here, not from the task.
    app.load_startup_model().await?;
    let slot = Arc::clone(app.slot());
    let metrics = Arc::clone(app.metrics());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.serve(listener, Some(metrics_listener), async {
        let _ = rx.await;
    }));
    Ok(TestServer {
        addr,
        metrics_addr,
        slot,
        metrics,
        shutdown: Some(tx),
        handle,
    })
}

impl TestServer {
    pub async fn client(&self) -> InferenceClient<Channel> {
        let url = format!("http://{}", self.addr);
        for _ in 0..50 {
            if let Ok(c) = InferenceClient::connect(url.clone()).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot connect to {url}");
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn scrape(&self) -> String {
        scrape(self.metrics_addr).await
    }

    /// Signals shutdown and waits for the server to return.
    pub async fn stop(mut self) -> Result<(), inference_svc::Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.handle)
            .await
            .expect("server stops within 10 s")
            .expect("server task")
    }
}

/// GET /metrics over plain HTTP/1.1.
pub async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Value of a metric line starting with `prefix` (name plus labels), or 0.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn attempt(topic: &str, correct: bool, seconds: f64) -> Attempt {
    Attempt {
        topic: topic.into(),
        difficulty: String::new(),
        correct,
        seconds,
        completed_at: None,
        item_id: String::new(),
    }
}

pub fn candidate(id: &str, topic: &str) -> Candidate {
    Candidate {
        task_id: id.into(),
        topic: topic.into(),
        difficulty: String::new(),
        item_id: String::new(),
    }
}

pub fn request(history: Vec<Attempt>, candidates: Vec<Candidate>) -> PredictRequest {
    PredictRequest {
        user_id: "learner-1".into(),
        history,
        candidates,
        explain: false,
        as_of: None,
    }
}

pub fn artifact(bytes: Vec<u8>, version: &str) -> ModelArtifact {
    ModelArtifact {
        version: version.into(),
        family: "linear".into(),
        feature_schema: FEATURE_SCHEMA.into(),
        sha256: sha256_hex(&bytes),
        onnx: bytes,
        promoted_at: None,
        no_active_version: false,
        canary: None,
    }
}

/// A fake Trainer implementing only WatchModels: each subscriber gets the
/// current artifact (if any) and then every published one.
#[derive(Clone)]
pub struct FakeTrainer {
    current: Arc<Mutex<Option<ModelArtifact>>>,
    tx: broadcast::Sender<ModelArtifact>,
    pub subscribers: Arc<Mutex<Vec<String>>>,
}

impl FakeTrainer {
    pub fn new(initial: Option<ModelArtifact>) -> Self {
        let (tx, _) = broadcast::channel(256);
        FakeTrainer {
            current: Arc::new(Mutex::new(initial)),
            tx,
            subscribers: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn publish(&self, a: ModelArtifact) {
        *self.current.lock().unwrap() = Some(a.clone());
        let _ = self.tx.send(a);
    }

    /// Serves on 127.0.0.1:0; returns the URL and the server task.
    pub async fn serve(&self) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (url, self.serve_on(listener))
    }

    /// Serves on an already bound listener.
    pub fn serve_on(&self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        let svc = TrainerServer::new(self.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        })
    }
}

type ArtifactStream = Pin<Box<dyn futures::Stream<Item = Result<ModelArtifact, Status>> + Send>>;

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("fake trainer: WatchModels only"))
}

#[tonic::async_trait]
impl Trainer for FakeTrainer {
    async fn train(&self, _: Request<TrainRequest>) -> Result<Response<TrainingRun>, Status> {
        unimplemented()
    }
    async fn get_training_run(
        &self,
        _: Request<GetTrainingRunRequest>,
    ) -> Result<Response<TrainingRun>, Status> {
        unimplemented()
    }
    type WatchTrainingRunStream =
        Pin<Box<dyn futures::Stream<Item = Result<TrainingRun, Status>> + Send>>;
    async fn watch_training_run(
        &self,
        _: Request<GetTrainingRunRequest>,
    ) -> Result<Response<Self::WatchTrainingRunStream>, Status> {
        unimplemented()
    }
    async fn list_models(
        &self,
        _: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        unimplemented()
    }
    async fn promote(&self, _: Request<PromoteRequest>) -> Result<Response<ModelVersion>, Status> {
        unimplemented()
    }
    async fn rollback(
        &self,
        _: Request<RollbackRequest>,
    ) -> Result<Response<ModelVersion>, Status> {
        unimplemented()
    }
    async fn model_report(
        &self,
        _: Request<ModelReportRequest>,
    ) -> Result<Response<ModelReportResponse>, Status> {
        unimplemented()
    }
    async fn report_replica(
        &self,
        _: Request<ReplicaReport>,
    ) -> Result<Response<ReplicaReportAck>, Status> {
        Ok(Response::new(ReplicaReportAck {}))
    }
    async fn get_fleet(&self, _: Request<GetFleetRequest>) -> Result<Response<Fleet>, Status> {
        unimplemented()
    }
    type WatchModelsStream = ArtifactStream;
    async fn watch_models(
        &self,
        request: Request<WatchModelsRequest>,
    ) -> Result<Response<Self::WatchModelsStream>, Status> {
        self.subscribers
            .lock()
            .unwrap()
            .push(request.into_inner().subscriber);
        let rx = self.tx.subscribe();
        // As the real trainer: the active model first, or on a fresh
        // install word that nothing is active (the replica's cue to serve
        // its startup model).
        let first = self
            .current
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(ModelArtifact {
                no_active_version: true,
                ..ModelArtifact::default()
            });
        let head = futures::stream::iter(std::iter::once(Ok(first)));
        let tail = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(a) => return Some((Ok(a), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(futures::StreamExt::chain(
            head, tail,
        ))))
    }
}

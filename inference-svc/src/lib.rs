//! Taskcast inference service: the low-latency half of Taskcast. Given a
//! learner's history and candidate tasks, predicts the probability of a
//! correct first answer and the time each task will take.
//!
//! One idea per module:
//! - [`config`]: flags and `TASKCAST_*` environment;
//! - [`model`]: a verified, warmed-up model ([`LoadedModel`]);
//! - [`swap`]: the serving slot and atomic hot swap ([`ModelSlot`]);
//! - [`predict`]: the Predict path, validation to predictions;
//! - [`batch`]: Predict calls that arrive together share one model run;
//! - [`recommend`]: ranking and budgeting on top of Predict;
//! - [`service`]: the tonic service and the error → status mapping;
//! - [`fields`]: what the Predict path reads from an attempt or a
//!   candidate, whichever form it came in;
//! - [`wire`]: Predict's and Recommend's requests read in place, in bounded
//!   memory, and Predict's response written directly, without the
//!   generated message types;
//! - [`subscribe`]: following the trainer's model stream, and
//!   [`trainer_tls`]: the TLS files it connects with;
//! - [`telemetry`]: the Prometheus metrics (as in the trainer);
//! - this file: wiring them into a server ([`App`], [`run`]).
//!
//! Every RPC here is open to the cluster network: the callers are the app's
//! backends, and a request carries the learner history it is about. An RPC
//! that should need a role is guarded with
//! `taskcast_serving::auth::RoleAuthLayer` in [`App::serve`] (the seam is
//! marked there).

pub mod batch;
pub mod config;
pub mod fields;
pub mod model;
pub mod predict;
pub mod recommend;
pub mod service;
pub mod subscribe;
pub mod swap;
pub mod telemetry;
pub mod trainer_tls;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use taskcast_proto::inference_server::InferenceServer;
use taskcast_serving::auth::{Role, Token};
use taskcast_serving::grpc::{GrpcOptions, RawUnary};
use taskcast_serving::request_bytes::{RequestBytes, SMALL_MESSAGE_BYTES};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::ServingStatus;

pub use config::Config;
pub use model::{LoadedModel, ModelError};
pub use predict::{Limits, PredictError, PredictInput};
pub use service::InferenceService;
pub use swap::ModelSlot;
pub use telemetry::Metrics;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ONNX Runtime could not be loaded.
    #[error("ONNX Runtime: {0} (pass --ort-lib or run scripts/setup-ort.sh)")]
    Runtime(String),
    /// The startup model could not be served and no trainer will send one.
    #[error("cannot serve the startup model {path}: {source}")]
    StartupModel {
        /// The `--model` path.
        path: String,
        /// Why.
        source: ModelError,
    },
    /// The TLS flags cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] config::TlsError),
    /// The --trainer-token-file cannot be read.
    #[error(transparent)]
    TrainerToken(#[from] taskcast_serving::auth::TokenError),
    /// The server plumbing failed: metrics, reflection, TLS files, transport.
    #[error(transparent)]
    Serve(#[from] taskcast_serving::Error),
}

/// Loads ONNX Runtime once per process; later calls are no-ops.
pub fn init_runtime(config: &Config) -> Result<(), Error> {
    taskcast_contract::runtime::init(&config.ort_lib_path())
        .map_err(|e| Error::Runtime(e.to_string()))
}

/// A configured, not yet serving instance. Tests use [`App::slot`] and
/// [`App::metrics`] to reach inside; the binary just calls [`run`].
pub struct App {
    config: Config,
    /// The startup model's bytes, checked, held back while a trainer is
    /// configured: served only when the trainer says nothing is active yet.
    standby: Option<Vec<u8>>,
    metrics: Arc<Metrics>,
    slot: Arc<ModelSlot>,
    health: tonic_health::server::HealthReporter,
    health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    /// Predict and Recommend calls accepted and not yet answered: the
    /// server counts them, the batcher reads them.
    in_flight: Arc<AtomicUsize>,
}

impl App {
    /// Loads ONNX Runtime and builds the empty slot, metrics and health
    /// (NOT_SERVING until a model is in).
    pub async fn new(config: Config) -> Result<App, Error> {
        init_runtime(&config)?;
        let metrics = Arc::new(Metrics::new().map_err(taskcast_serving::Error::from)?);
        let (health, health_service) = taskcast_serving::grpc::health();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health
            .set_service_status(swap::INFERENCE_SERVICE, ServingStatus::NotServing)
            .await;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let batching = config.batching(
            Some(metrics.batch_requests.clone()),
            Some(Arc::clone(&in_flight)),
        );
        let slot = Arc::new(
            ModelSlot::new(Arc::clone(&metrics), health.clone(), config.session_pool())
                .with_batching(batching),
        );
        Ok(App {
            config,
            standby: None,
            metrics,
            slot,
            health,
            health_service,
            in_flight,
        })
    }

    /// The serving slot.
    pub fn slot(&self) -> &Arc<ModelSlot> {
        &self.slot
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Loads `--model`. Without `--trainer` it serves at once, and failure
    /// is fatal (a replica that can never serve should crash loudly, not
    /// idle NOT_SERVING). With a trainer it is checked and held back: the
    /// replica is ready only once it holds what the trainer says is active,
    /// and serves the startup model only when the trainer answers that no
    /// version is active yet (a fresh install) — never because the trainer
    /// is unreachable, which would split a fleet between the bootstrap and
    /// the trained model. A startup model that fails to load is then only a
    /// warning.
    pub async fn load_startup_model(&mut self) -> Result<(), Error> {
        let path = &self.config.model;
        let held_back = self.config.trainer.is_some();
        let pool = self.config.session_pool();
        let result = match config::resolve_model_path(path) {
            Ok(file) => match tokio::fs::read(&file).await {
                Ok(bytes) if held_back => {
                    let check = bytes.clone();
                    let checked = tokio::task::spawn_blocking(move || {
                        LoadedModel::load(&check, None, pool).map(|_| ())
                    })
                    .await
                    .unwrap_or_else(|join| {
                        Err(ModelError::Runtime(format!(
                            "model load task failed: {join}"
                        )))
                    });
                    match &checked {
                        Ok(()) => self.standby = Some(bytes),
                        Err(e) => {
                            self.metrics
                                .model_refused
                                .with_label_values(&[e.reason()])
                                .inc();
                        }
                    }
                    checked
                }
                Ok(bytes) => self.slot.try_swap(bytes, None).await.map(|_| ()),
                Err(source) => {
                    let e = ModelError::Read {
                        path: file.display().to_string(),
                        source,
                    };
                    self.metrics
                        .model_refused
                        .with_label_values(&[e.reason()])
                        .inc();
                    Err(e)
                }
            },
            Err(source) => Err(ModelError::Read {
                path: path.display().to_string(),
                source,
            }),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if self.config.trainer.is_some() => {
                tracing::warn!(model = %path.display(), error = %e,
                    "startup model unusable; NOT_SERVING until the trainer delivers one");
                Ok(())
            }
            Err(source) => Err(Error::StartupModel {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Follows the trainer if configured and serves gRPC on `listener` (and
    /// metrics on `metrics_listener`) until `shutdown` resolves; then drains
    /// in-flight requests for at most the grace period. Call
    /// [`App::load_startup_model`] first ([`run`] does both).
    pub async fn serve(
        self,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let App {
            config,
            standby,
            metrics,
            slot,
            health,
            health_service,
            in_flight,
        } = self;
        // These read files: fail before anything is spawned. The replica
        // token is read again on every connect (rotation); this read only
        // proves the path.
        let server_tls = config.server_tls().map_err(taskcast_serving::Error::from)?;
        let trainer_tls = config.trainer_tls()?;
        if let Some(path) = &config.trainer_token_file {
            Token::from_file(Role::Replica, path)?;
            for url in config.trainer_urls() {
                if taskcast_serving::cleartext::cleartext_to_remote(&url) {
                    tracing::warn!(trainer = %url, "the replica token goes to the trainer in cleartext: use an https:// trainer URL (--trainer-ca) off this machine");
                }
            }
        }
        let (stop, stopping) = taskcast_serving::shutdown::channel();

        let mut background = Vec::new();
        if let Some(l) = metrics_listener {
            let registry = metrics.registry.clone();
            let stopped = stopping.clone().wait();
            background.push(tokio::spawn(async move {
                if let Err(e) =
                    taskcast_serving::metrics_endpoint::serve_metrics(l, registry, stopped).await
                {
                    tracing::error!(error = %e, "metrics endpoint failed");
                }
            }));
        }
        let urls = config.trainer_urls();
        if !urls.is_empty() {
            background.push(tokio::spawn(subscribe::follow_trainer(
                subscribe::Follow {
                    urls,
                    tls: trainer_tls,
                    token_file: config.trainer_token_file.clone(),
                    replica: config.replica(),
                    standby,
                },
                Arc::clone(&slot),
                Arc::clone(&metrics),
                stopping.clone(),
            )));
        }

        let service = InferenceService::new(
            Arc::clone(&slot),
            Arc::clone(&metrics),
            Limits {
                max_history: config.max_history,
                max_label_bytes: config.max_label_bytes,
            },
        );
        // Predict and Recommend, the methods that carry histories, read
        // their bytes themselves: in place, in bounded memory, each message
        // taking its size from one budget of in-flight request bytes.
        let raw = {
            let (p, r) = (Arc::new(service.clone()), service.clone());
            RawUnary::new(
                service::PREDICT_PATH,
                config.max_message_bytes,
                Arc::new(move |request, mut out| {
                    let p = Arc::clone(&p);
                    Box::pin(async move { p.predict_into(&request, &mut out).await.map(|()| out) })
                }),
            )
            .route(
                service::RECOMMEND_PATH,
                Arc::new(move |request, mut out| {
                    let reply = r.recommend_into(&request, &mut out).map(|()| out);
                    Box::pin(std::future::ready(reply))
                }),
            )
            .with_budget(RequestBytes::new(config.max_inflight_request_bytes))
            .with_in_flight(in_flight)
        };
        // Over the network only GetModel (an empty message) reaches the
        // generated service; Predict and Recommend are answered above.
        let inference =
            InferenceServer::new(service).max_decoding_message_size(SMALL_MESSAGE_BYTES);
        let local = listener.local_addr().ok();
        tracing::info!(addr = ?local, replica = %config.replica(), tls = server_tls.is_some(), "inference serving gRPC");
        let options = GrpcOptions {
            tls: server_tls,
            request_timeout: Some(config.request_timeout()),
            concurrency_limit_per_connection: Some(config.concurrency_limit_per_connection),
            load_shed: true,
            tcp_keepalive: Some(Duration::from_secs(60)),
            // An RPC that needs a role is guarded here.
            auth: None,
            // Predict, the hot path, and Recommend from bytes to bytes
            // (service::predict_into, recommend_into).
            raw_unary: Some(raw),
            // So clients connected before the HPA added a replica reach it.
            max_connection_age: config.connection_age.connection_age(),
        };
        let server = taskcast_serving::grpc::serve(
            listener,
            options,
            metrics.grpc.clone(),
            health_service,
            Routes::new(inference),
            stopping.wait(),
        )?;
        tokio::pin!(server);
        tokio::pin!(shutdown);

        let result = tokio::select! {
            r = &mut server => r,
            () = &mut shutdown => {
                tracing::info!(grace = ?config.shutdown_grace(), "shutting down: draining in-flight requests");
                // Tell balancers first, then stop accepting and drain.
                slot.set_not_serving().await;
                stop.send();
                taskcast_serving::grpc::drain(&mut server, config.shutdown_grace()).await
            }
        };
        stop.send();
        drop(health);
        for task in background {
            // Background tasks watch the shutdown signal; a short bound keeps a stuck one from holding exit.
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        tracing::info!("inference stopped");
        result.map_err(Error::from)
    }
}

/// Runs the service until `shutdown` resolves: the whole program minus flag
/// parsing and listener binding (tests bind `127.0.0.1:0`).
pub async fn run(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let mut app = App::new(config).await?;
    app.load_startup_model().await?;
    app.serve(listener, metrics_listener, shutdown).await
}

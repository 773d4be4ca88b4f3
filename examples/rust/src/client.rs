//! A small typed client over both services: each RPC of taskcast.v1 with
//! its role's token (and only that one) and a deadline.

use std::time::Duration;

use anyhow::bail;
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_proto::{
    GetModelRequest, GetTrainingRunRequest, ListModelsRequest, ListModelsResponse, ModelArtifact,
    ModelInfo, ModelReportRequest, ModelReportResponse, ModelVersion, PredictRequest,
    PredictResponse, PromoteRequest, RecommendRequest, RecommendResponse, RollbackRequest,
    TrainRequest, TrainingRun, WatchModelsRequest,
};
use tokio::sync::OnceCell;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::retry::{self, Budget};
use crate::rpcs::{Rpc, rpc};
use crate::tokens::{Role, Tokens};
use crate::transport::{Address, Deadline, TlsOptions, chain, seconds};

/// Which server a health check asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Server {
    /// inference-svc (`--inference`).
    Inference,
    /// trainer-svc (`--trainer`).
    Trainer,
}

/// Everything a [`Taskcast`] client is built from.
pub struct Settings {
    /// inference-svc.
    pub inference: Address,
    /// trainer-svc.
    pub trainer: Address,
    /// Whom to trust, and who we are, on TLS addresses.
    pub tls: TlsOptions,
    /// The trainer roles' tokens.
    pub tokens: Tokens,
    /// Deadline of each unary call, connecting included.
    pub timeout: Duration,
    /// Largest message accepted from the trainer: a model artifact carries
    /// the ONNX file, whose tables grow with the data, and gRPC's default
    /// 4 MiB would refuse it with RESOURCE_EXHAUSTED.
    pub max_receive_bytes: usize,
}

/// The client. Channels open on first use, so an address that is never
/// called is never dialled, and stay open for the calls after.
pub struct Taskcast {
    settings: Settings,
    inference: OnceCell<Channel>,
    trainer: OnceCell<Channel>,
    /// Shared by every call, as gRPC's retry throttling is per client.
    budget: Budget,
}

/// How a [`Taskcast::watch_training_run`] ended.
pub enum WatchEnd {
    /// The trainer closed the stream: the run ended.
    Ended,
    /// `--wait-timeout` passed first; the run goes on in the trainer. The
    /// last state seen, if any.
    TimedOut(Option<String>),
}

impl Taskcast {
    /// A client; refuses TLS files when no address uses TLS (most likely an
    /// address meant as https://, and tokens must not go out in plaintext by
    /// mistake).
    pub fn new(settings: Settings) -> anyhow::Result<Taskcast> {
        if settings.tls.given() && !settings.inference.uses_tls() && !settings.trainer.uses_tls() {
            bail!(
                "--ca-file / --cert-file was given, but no address uses TLS: write it as https://HOST:PORT (or pass --tls for HOST:PORT and dns:/// addresses)"
            );
        }
        Ok(Taskcast {
            settings,
            inference: OnceCell::new(),
            trainer: OnceCell::new(),
            budget: Budget::default(),
        })
    }

    fn call_deadline(&self) -> Deadline {
        Deadline::after(self.settings.timeout, "--timeout")
    }

    fn address(&self, server: Server) -> &Address {
        match server {
            Server::Inference => &self.settings.inference,
            Server::Trainer => &self.settings.trainer,
        }
    }

    async fn channel(&self, server: Server, deadline: Deadline) -> anyhow::Result<Channel> {
        let cell = match server {
            Server::Inference => &self.inference,
            Server::Trainer => &self.trainer,
        };
        // A failed connection leaves the cell empty: the next call tries again.
        let channel = cell
            .get_or_try_init(|| self.address(server).connect(&self.settings.tls, deadline))
            .await?;
        Ok(channel.clone())
    }

    async fn inference_client(
        &self,
        deadline: Deadline,
    ) -> anyhow::Result<InferenceClient<Channel>> {
        Ok(InferenceClient::new(
            self.channel(Server::Inference, deadline).await?,
        ))
    }

    async fn trainer_client(&self, deadline: Deadline) -> anyhow::Result<TrainerClient<Channel>> {
        Ok(
            TrainerClient::new(self.channel(Server::Trainer, deadline).await?)
                .max_decoding_message_size(self.settings.max_receive_bytes),
        )
    }

    /// `msg` with the deadline (as `grpc-timeout`) and the role's token. An
    /// admin call without the admin token fails here: the trainer could only
    /// refuse it.
    fn request<T>(&self, rpc: Rpc, msg: T, deadline: Deadline) -> anyhow::Result<Request<T>> {
        let mut req = Request::new(msg);
        req.set_timeout(deadline.remaining());
        let Some(role) = rpc.role else {
            return Ok(req);
        };
        match self.settings.tokens.for_role(role) {
            Some(bearer) => {
                req.metadata_mut().insert("authorization", bearer.header());
            }
            None if role == Role::Admin => bail!(
                "{} needs the admin token: give it with {}",
                rpc.name,
                role.how_to_give()
            ),
            // The trainer says whether this call needs one.
            None => {}
        }
        Ok(req)
    }

    /// Makes a unary call until `deadline`, errors said plainly: `call`
    /// sends one attempt of `msg` (with its token and deadline); a safe RPC
    /// is attempted again on UNAVAILABLE (crate::retry), the others once.
    async fn finish<T, R, Fut>(
        &self,
        rpc: Rpc,
        server: Server,
        deadline: Deadline,
        msg: T,
        call: impl Fn(Request<T>) -> Fut,
    ) -> anyhow::Result<R>
    where
        T: Clone,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let what = format!("{} at {}", rpc.name, self.address(server).text);
        // Built once up front: only an admin call without the admin token
        // fails here, and that is no reason to retry.
        self.request(rpc, msg.clone(), deadline)?;
        deadline
            .run(&what, async {
                retry::run(
                    &retry::DEFAULT_POLICY,
                    &self.budget,
                    rpc.safe,
                    || deadline.remaining(),
                    || {
                        let sent = self.request(rpc, msg.clone(), deadline).map(&call);
                        async move {
                            match sent {
                                Ok(fut) => fut.await,
                                // Not reached: the same request was built above.
                                Err(e) => Err(Status::internal(e.to_string())),
                            }
                        }
                    },
                )
                .await
                .map(Response::into_inner)
                .map_err(|s| self.status_error(rpc, server, s, deadline))
            })
            .await
    }

    /// A gRPC error with what to do about it: which token went out (never
    /// the token), which deadline passed, which limit to raise.
    fn status_error(
        &self,
        rpc: Rpc,
        server: Server,
        s: Status,
        deadline: Deadline,
    ) -> anyhow::Error {
        let what = format!("{} at {}", rpc.name, self.address(server).text);
        if deadline_passed(s.code(), deadline) {
            return deadline.expired(&what);
        }
        let mut msg = format!("{what}: {:?}: {}", s.code(), s.message());
        if let Some(source) = std::error::Error::source(&s) {
            msg = format!("{msg} ({})", chain(source));
        }
        match (s.code(), rpc.role) {
            (Code::Unauthenticated | Code::PermissionDenied, Some(role)) => {
                let hint = match self.settings.tokens.for_role(role) {
                    Some(b) if b.role == role => {
                        format!("sent the {} token from {}", role.name(), b.origin)
                    }
                    Some(b) => format!(
                        "no {} token was given, so the {} token from {} went instead; give the {} token with {}",
                        role.name(),
                        b.role.name(),
                        b.origin,
                        role.name(),
                        role.how_to_give()
                    ),
                    None => format!(
                        "no token was sent: give the {} token with {}",
                        role.name(),
                        role.how_to_give()
                    ),
                };
                msg = format!("{msg} ({hint})");
            }
            (Code::ResourceExhausted, _) if s.message().contains("message length") => {
                msg = format!("{msg} (raise --max-receive-mib)");
            }
            // A connection that broke mid-call (the error is ours, not the
            // server's): over plaintext, most often a TLS server reading our
            // HTTP/2 preface as a bad TLS record. What breaks varies (a bad
            // frame, a closed stream, a broken pipe), so the hint is general.
            _ if !self.address(server).uses_tls() && std::error::Error::source(&s).is_some() => {
                msg = format!("{msg} (if the server serves TLS, write the address as https://)");
            }
            // Over TLS 1.3 a server that wants a client certificate and got
            // none says so only by closing the connection at the first call.
            _ if self.address(server).uses_tls()
                && !self.settings.tls.has_identity()
                && std::error::Error::source(&s).is_some() =>
            {
                msg = format!(
                    "{msg} (if the server asks for a client certificate, give --cert-file and --key-file)"
                );
            }
            _ => {}
        }
        anyhow::anyhow!(msg)
    }

    /// Predictions for candidate tasks given a learner's history.
    pub async fn predict(&self, req: PredictRequest) -> anyhow::Result<PredictResponse> {
        let (rpc, d) = (rpc::PREDICT, self.call_deadline());
        let c = self.inference_client(d).await?;
        self.finish(rpc, Server::Inference, d, req, |r| {
            let mut c = c.clone();
            async move { c.predict(r).await }
        })
        .await
    }

    /// Candidates ranked by closeness to a target probability within a time budget.
    pub async fn recommend(&self, req: RecommendRequest) -> anyhow::Result<RecommendResponse> {
        let (rpc, d) = (rpc::RECOMMEND, self.call_deadline());
        let c = self.inference_client(d).await?;
        self.finish(rpc, Server::Inference, d, req, |r| {
            let mut c = c.clone();
            async move { c.recommend(r).await }
        })
        .await
    }

    /// The model inference serves.
    pub async fn get_model(&self) -> anyhow::Result<ModelInfo> {
        self.get_model_within(self.call_deadline()).await
    }

    async fn get_model_within(&self, d: Deadline) -> anyhow::Result<ModelInfo> {
        let rpc = rpc::GET_MODEL;
        let c = self.inference_client(d).await?;
        self.finish(rpc, Server::Inference, d, GetModelRequest {}, |r| {
            let mut c = c.clone();
            async move { c.get_model(r).await }
        })
        .await
    }

    /// grpc.health.v1 status of `service` ("" for the server as a whole).
    pub async fn health(&self, server: Server, service: &str) -> anyhow::Result<ServingStatus> {
        self.health_within(server, service, self.call_deadline())
            .await
    }

    async fn health_within(
        &self,
        server: Server,
        service: &str,
        d: Deadline,
    ) -> anyhow::Result<ServingStatus> {
        let rpc = rpc::HEALTH;
        let c = HealthClient::new(self.channel(server, d).await?);
        let status = self
            .finish(
                rpc,
                server,
                d,
                HealthCheckRequest {
                    service: service.into(),
                },
                |r| {
                    let mut c = c.clone();
                    async move { c.check(r).await }
                },
            )
            .await?
            .status;
        Ok(ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown))
    }

    /// Waits until inference reports SERVING and, with `trained`, serves a
    /// model other than the bootstrap one; gives up after `limit`. Each probe
    /// has the call deadline (or what is left of `limit`, if less).
    pub async fn wait_ready(&self, trained: bool, limit: Duration) -> anyhow::Result<ModelInfo> {
        let overall = Deadline::after(limit, "--wait-timeout");
        loop {
            let probe = if self.settings.timeout < overall.remaining() {
                self.call_deadline()
            } else {
                overall
            };
            let ready = async {
                let status = self
                    .health_within(Server::Inference, "taskcast.v1.Inference", probe)
                    .await?;
                if status != ServingStatus::Serving {
                    bail!("health: {}", status.as_str_name());
                }
                let model = self.get_model_within(probe).await?;
                if trained && model.family == "bootstrap" {
                    bail!("still serving the bootstrap model {}", model.version);
                }
                Ok(model)
            };
            let last_problem = match ready.await {
                Ok(model) => return Ok(model),
                Err(e) => format!("{e:#}"),
            };
            if overall.remaining().is_zero() {
                bail!(
                    "{} not ready within --wait-timeout {} s; last: {last_problem}",
                    self.settings.inference.text,
                    seconds(limit)
                );
            }
            tokio::time::sleep(Duration::from_millis(300).min(overall.remaining())).await;
        }
    }

    /// Starts a training run (or returns the one going).
    pub async fn train(&self, family: &str, force: bool) -> anyhow::Result<TrainingRun> {
        let (rpc, d) = (rpc::TRAIN, self.call_deadline());
        let msg = TrainRequest {
            family: family.into(),
            force,
        };
        // The admin token is checked before connecting.
        self.request(rpc, msg.clone(), d)?;
        let c = self.trainer_client(d).await?;
        self.finish(rpc, Server::Trainer, d, msg, |r| {
            let mut c = c.clone();
            async move { c.train(r).await }
        })
        .await
    }

    /// Makes a stored version active.
    pub async fn promote(&self, version: &str) -> anyhow::Result<ModelVersion> {
        let (rpc, d) = (rpc::PROMOTE, self.call_deadline());
        let msg = PromoteRequest {
            version: version.into(),
            canary_percent: 0,
        };
        // The admin token is checked before connecting.
        self.request(rpc, msg.clone(), d)?;
        let c = self.trainer_client(d).await?;
        self.finish(rpc, Server::Trainer, d, msg, |r| {
            let mut c = c.clone();
            async move { c.promote(r).await }
        })
        .await
    }

    /// Makes the previously active version active again.
    pub async fn rollback(&self) -> anyhow::Result<ModelVersion> {
        let (rpc, d) = (rpc::ROLLBACK, self.call_deadline());
        let msg = RollbackRequest {};
        // The admin token is checked before connecting.
        self.request(rpc, msg, d)?;
        let c = self.trainer_client(d).await?;
        self.finish(rpc, Server::Trainer, d, msg, |r| {
            let mut c = c.clone();
            async move { c.rollback(r).await }
        })
        .await
    }

    /// One training run by id.
    pub async fn get_training_run(&self, id: &str) -> anyhow::Result<TrainingRun> {
        let (rpc, d) = (rpc::GET_TRAINING_RUN, self.call_deadline());
        let c = self.trainer_client(d).await?;
        self.finish(
            rpc,
            Server::Trainer,
            d,
            GetTrainingRunRequest { id: id.into() },
            |r| {
                let mut c = c.clone();
                async move { c.get_training_run(r).await }
            },
        )
        .await
    }

    /// The registry, newest first (`limit` 0: the trainer's default page).
    pub async fn list_models(&self, limit: u32) -> anyhow::Result<ListModelsResponse> {
        let (rpc, d) = (rpc::LIST_MODELS, self.call_deadline());
        let c = self.trainer_client(d).await?;
        self.finish(rpc, Server::Trainer, d, ListModelsRequest { limit }, |r| {
            let mut c = c.clone();
            async move { c.list_models(r).await }
        })
        .await
    }

    /// Live figures per served version.
    pub async fn model_report(
        &self,
        req: ModelReportRequest,
    ) -> anyhow::Result<ModelReportResponse> {
        let (rpc, d) = (rpc::MODEL_REPORT, self.call_deadline());
        let c = self.trainer_client(d).await?;
        self.finish(rpc, Server::Trainer, d, req, |r| {
            let mut c = c.clone();
            async move { c.model_report(r).await }
        })
        .await
    }

    /// Follows a run's states until it ends, calling `each` on every one as
    /// it arrives; the whole stream is bounded by `limit` (`--wait-timeout`).
    pub async fn watch_training_run(
        &self,
        id: &str,
        limit: Duration,
        mut each: impl FnMut(&TrainingRun),
    ) -> anyhow::Result<WatchEnd> {
        let (rpc, d) = (
            rpc::WATCH_TRAINING_RUN,
            Deadline::after(limit, "--wait-timeout"),
        );
        let mut c = self.trainer_client(d).await?;
        let req = self.request(rpc, GetTrainingRunRequest { id: id.into() }, d)?;
        let mut last = None;
        let follow = async {
            let mut stream = c
                .watch_training_run(req)
                .await
                .map_err(|s| (s.code(), self.status_error(rpc, Server::Trainer, s, d)))?
                .into_inner();
            while let Some(run) = stream
                .message()
                .await
                .map_err(|s| (s.code(), self.status_error(rpc, Server::Trainer, s, d)))?
            {
                each(&run);
                last = Some(run);
            }
            Ok::<_, (Code, anyhow::Error)>(())
        };
        match tokio::time::timeout_at(d.at(), follow).await {
            Ok(Ok(())) => Ok(WatchEnd::Ended),
            Ok(Err((code, e))) if !deadline_passed(code, d) => Err(e),
            _ => Ok(WatchEnd::TimedOut(last.map(|r: TrainingRun| r.state))),
        }
    }

    /// The first WatchModels message (the active model), then the stream is
    /// dropped, which cancels it. `limit` bounds the wait for that message
    /// and its transfer.
    pub async fn watch_models_first(
        &self,
        subscriber: &str,
        limit: Duration,
    ) -> anyhow::Result<ModelArtifact> {
        let (rpc, d) = (rpc::WATCH_MODELS, Deadline::after(limit, "--first-timeout"));
        let mut c = self.trainer_client(d).await?;
        let req = self.request(
            rpc,
            WatchModelsRequest {
                subscriber: subscriber.into(),
            },
            d,
        )?;
        let what = format!("{} at {}", rpc.name, self.settings.trainer.text);
        d.run(&what, async {
            let mut stream = c
                .watch_models(req)
                .await
                .map_err(|s| self.status_error(rpc, Server::Trainer, s, d))?
                .into_inner();
            match stream.message().await {
                Ok(Some(artifact)) => Ok(artifact),
                Ok(None) => bail!("{what}: the stream ended without the active model"),
                Err(s) => Err(self.status_error(rpc, Server::Trainer, s, d)),
            }
        })
        .await
    }
}

/// Whether a call failed because `deadline` passed: tonic enforces the
/// request's timeout itself and reports it as CANCELLED, the server (told by
/// `grpc-timeout`) as DEADLINE_EXCEEDED.
fn deadline_passed(code: Code, deadline: Deadline) -> bool {
    code == Code::DeadlineExceeded || (code == Code::Cancelled && deadline.remaining().is_zero())
}

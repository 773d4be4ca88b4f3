//! The `taskcast.v1.Trainer` gRPC service: thin handlers over the runner,
//! the registry and the publisher, with errors mapped to status codes here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use taskcast_proto::trainer_server::Trainer;
use taskcast_proto::{
    CanaryStatus, Fleet, FleetReplica, GetFleetRequest, GetTrainingRunRequest, ListModelsRequest,
    ListModelsResponse, ModelArtifact, ModelReportRequest, ModelReportResponse, ModelVersion,
    PromoteRequest, ReplicaReport, ReplicaReportAck, RollbackRequest, TrainRequest, TrainingRun,
    WatchModelsRequest,
};
use taskcast_serving::auth::{Caller, Role};
use taskcast_serving::shutdown::Shutdown;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::canary;
use crate::db::{
    CanaryEnd, Db, DbError, MAX_REPLICA_NAME_BYTES as MAX_NAME_BYTES, PromotionKind,
    ReplicaReportIn, Rollout, RunTrigger,
};
use crate::fleet;
use crate::report::{self, DriftConfig, ReportError, ReportRequest};
use crate::run::publisher::{Published, Publisher};
use crate::run::runner::{Runner, RunnerError};
use crate::serve::protos::{
    artifact_proto, opt_timestamp, report_proto, run_proto, timestamp, version_proto,
};
use crate::serve::pseudonym::Pseudonymiser;
use crate::serve::telemetry::TrainerMetrics;
use taskcast_learn::families::Family;

/// Every method of this service starts with this path.
pub const SERVICE_PREFIX: &str = "/taskcast.v1.Trainer/";

/// Who may call what, besides `admin`, who may call everything. Train,
/// Promote and Rollback are absent: an RPC no rule names needs `admin`.
/// RELIABILITY.md has this table for operators; the role matrix test
/// (tests/tests/faults/auth.rs) calls every RPC with every role's token.
pub const ROLE_RULES: [(&str, Role); 7] = [
    ("/taskcast.v1.Trainer/WatchModels", Role::Replica),
    ("/taskcast.v1.Trainer/ReportReplica", Role::Replica),
    ("/taskcast.v1.Trainer/GetFleet", Role::Reader),
    ("/taskcast.v1.Trainer/ListModels", Role::Reader),
    ("/taskcast.v1.Trainer/GetTrainingRun", Role::Reader),
    ("/taskcast.v1.Trainer/WatchTrainingRun", Role::Reader),
    ("/taskcast.v1.Trainer/ModelReport", Role::Reader),
];

/// The service state.
pub struct TrainerService {
    db: Db,
    runner: Arc<Runner>,
    publisher: Publisher,
    metrics: TrainerMetrics,
    drift: DriftConfig,
    pseudonyms: Pseudonymiser,
    shutdown: Shutdown,
}

impl TrainerService {
    /// Wires the handlers to their collaborators; `drift` sets the margins
    /// ModelReport judges live figures by, `pseudonyms` hides learner ids
    /// from callers other than admin.
    pub fn new(
        db: Db,
        runner: Arc<Runner>,
        publisher: Publisher,
        metrics: TrainerMetrics,
        drift: DriftConfig,
        pseudonyms: Pseudonymiser,
        shutdown: Shutdown,
    ) -> Self {
        TrainerService {
            db,
            runner,
            publisher,
            metrics,
            drift,
            pseudonyms,
            shutdown,
        }
    }

    /// `s`, ending when the server shuts down so long-lived watches never
    /// hold up a graceful drain.
    fn until_shutdown<T: Send + 'static>(
        &self,
        s: impl Stream<Item = Result<T, Status>> + Send + 'static,
    ) -> BoxStream<T> {
        Box::pin(s.take_until(self.shutdown.clone().wait()))
    }
}

impl TrainerService {
    /// A canary in progress with its figures so far.
    async fn canary_status(&self, r: Rollout) -> Result<CanaryStatus, DbError> {
        let candidate = canary::arm(&self.db, &r, &r.candidate).await?;
        let baseline = canary::arm(&self.db, &r, &r.baseline).await?;
        Ok(CanaryStatus {
            started_at: Some(timestamp(r.started_at)),
            candidate_outcomes: candidate.outcomes,
            baseline_outcomes: baseline.outcomes,
            candidate_logloss: candidate.logloss.unwrap_or(f64::NAN),
            baseline_logloss: baseline.logloss.unwrap_or(f64::NAN),
            rollout_id: r.id,
            candidate: r.candidate,
            baseline: r.baseline,
            percent: r.percent,
        })
    }
}

/// The replicas' load and warm-up checks ([`taskcast_contract::servable`])
/// on `onnx`, off the async runtime (ONNX Runtime compiles the graph);
/// `FAILED_PRECONDITION` naming `version` and why a replica would refuse it.
async fn servable(version: &str, onnx: Vec<u8>) -> Result<(), Status> {
    let checked =
        tokio::task::spawn_blocking(move || taskcast_contract::servable::check_bytes(&onnx))
            .await
            .map_err(|e| Status::internal(format!("checking model version {version:?}: {e}")))?;
    checked.map_err(|e| {
        Status::failed_precondition(format!(
            "model version {version:?} cannot be served (replicas would refuse it): {e}"
        ))
    })
}

/// The deliberate mapping of database errors to gRPC codes.
fn db_status(e: DbError) -> Status {
    match e {
        DbError::NotFound { .. } => Status::not_found(e.to_string()),
        DbError::Conflict(_) => Status::failed_precondition(e.to_string()),
        DbError::Invalid(_) => Status::invalid_argument(e.to_string()),
        DbError::Corrupt(_) => Status::internal(e.to_string()),
        DbError::UnsupportedUrl(_) => Status::internal(e.to_string()),
        DbError::Connect { .. } | DbError::Query(_) | DbError::Sqlx(_) => {
            Status::unavailable(format!("database unavailable: {e}"))
        }
    }
}

fn report_status(e: ReportError) -> Status {
    match e {
        ReportError::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
        ReportError::UnknownVersion(_) => Status::not_found(e.to_string()),
        ReportError::Db(e) => db_status(e),
    }
}

fn runner_status(e: RunnerError) -> Status {
    match e {
        RunnerError::Db(e) => db_status(e),
        RunnerError::Busy => Status::aborted(e.to_string()),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Trainer for TrainerService {
    async fn train(&self, req: Request<TrainRequest>) -> Result<Response<TrainingRun>, Status> {
        let req = req.into_inner();
        let family = match req.family.trim() {
            "" => None,
            f => Some(
                f.parse::<Family>()
                    .map_err(|e| Status::invalid_argument(format!("family: {e}")))?,
            ),
        };
        let rec = self
            .runner
            .start(RunTrigger::Operator, family, req.force)
            .await
            .map_err(runner_status)?;
        Ok(Response::new(run_proto(&rec)))
    }

    async fn get_training_run(
        &self,
        req: Request<GetTrainingRunRequest>,
    ) -> Result<Response<TrainingRun>, Status> {
        let id = req.into_inner().id;
        if id.is_empty() {
            return Err(Status::invalid_argument("id must not be empty"));
        }
        match self.db.get_run(&id).await.map_err(db_status)? {
            Some(r) => Ok(Response::new(run_proto(&r))),
            None => Err(Status::not_found(format!("training run {id:?} not found"))),
        }
    }

    type WatchTrainingRunStream = BoxStream<TrainingRun>;

    async fn watch_training_run(
        &self,
        req: Request<GetTrainingRunRequest>,
    ) -> Result<Response<Self::WatchTrainingRunStream>, Status> {
        let id = req.into_inner().id;
        if id.is_empty() {
            return Err(Status::invalid_argument("id must not be empty"));
        }
        let first = self.db.get_run(&id).await.map_err(db_status)?;
        let Some(first) = first else {
            return Err(Status::not_found(format!("training run {id:?} not found")));
        };
        if let Some(rx) = self.runner.watch_run(&id) {
            // Send the current state and every change, ending right after the
            // terminal state (the channel is never written again after it, so
            // waiting for a next value to end on would hold the stream open).
            let s =
                futures::stream::unfold((rx, true, false), |(mut rx, first, ended)| async move {
                    if ended || (!first && rx.changed().await.is_err()) {
                        return None;
                    }
                    let r = rx.borrow_and_update().clone();
                    let ended = r.state.is_terminal();
                    Some((Ok(run_proto(&r)), (rx, false, ended)))
                });
            return Ok(Response::new(self.until_shutdown(s)));
        }
        // A run of another replica (or one that ended): poll the database.
        let db = self.db.clone();
        let s = futures::stream::unfold(Some(first), move |state| {
            let db = db.clone();
            async move {
                let r = state?;
                let next = if r.state.is_terminal() {
                    None
                } else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    db.get_run(&r.id).await.ok().flatten()
                };
                Some((Ok(run_proto(&r)), next))
            }
        });
        Ok(Response::new(self.until_shutdown(s)))
    }

    async fn list_models(
        &self,
        req: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let limit = match req.into_inner().limit {
            0 => 50,
            n => n.min(1000),
        };
        let models = self
            .db
            .list_model_versions(u64::from(limit))
            .await
            .map_err(db_status)?;
        Ok(Response::new(ListModelsResponse {
            models: models.iter().map(version_proto).collect(),
        }))
    }

    async fn promote(
        &self,
        req: Request<PromoteRequest>,
    ) -> Result<Response<ModelVersion>, Status> {
        let PromoteRequest {
            version,
            canary_percent,
        } = req.into_inner();
        if version.trim().is_empty() {
            return Err(Status::invalid_argument("version must not be empty"));
        }
        // Checked before the model is loaded for the replicas' checks.
        if let Some(why) = (canary_percent > 0)
            .then(|| taskcast_contract::canary::percent_problem(canary_percent))
            .flatten()
        {
            return Err(Status::invalid_argument(why));
        }
        let onnx = self
            .db
            .get_model_onnx(&version)
            .await
            .map_err(db_status)?
            .ok_or_else(|| Status::not_found(format!("model version {version:?} not found")))?;
        // Never announce a model every replica would refuse: the replicas'
        // own load and warm-up checks, run here first.
        servable(&version, onnx).await?;
        if canary_percent > 0 {
            let rollout = self
                .db
                .start_canary(&version, canary_percent)
                .await
                .map_err(db_status)?;
            self.publisher.refresh(&self.db).await.map_err(db_status)?;
            tracing::info!(%version, rollout = %rollout.id, percent = canary_percent, "canary started by operator");
            let meta = self
                .db
                .get_model_version(&version)
                .await
                .map_err(db_status)?
                .ok_or_else(|| Status::not_found(format!("model version {version:?} not found")))?;
            return Ok(Response::new(version_proto(&meta)));
        }
        let meta = self
            .db
            .set_active(&version, PromotionKind::Promote)
            .await
            .map_err(db_status)?;
        self.publisher.refresh(&self.db).await.map_err(db_status)?;
        tracing::info!(%version, "promoted by operator");
        Ok(Response::new(version_proto(&meta)))
    }

    async fn rollback(
        &self,
        _req: Request<RollbackRequest>,
    ) -> Result<Response<ModelVersion>, Status> {
        // During a canary, Rollback stops it: the active version stays.
        if let Some(open) = self.db.open_rollout().await.map_err(db_status)? {
            let why = format!("rolled back by operator during canary {}", open.id);
            if let Some(active) = self
                .db
                .end_canary(&open.id, CanaryEnd::Reject, &why)
                .await
                .map_err(db_status)?
            {
                self.publisher.refresh(&self.db).await.map_err(db_status)?;
                tracing::info!(candidate = %open.candidate, version = %active.version, "canary rolled back by operator");
                return Ok(Response::new(version_proto(&active)));
            }
        }
        let no_previous =
            || Status::failed_precondition("no previous active version to roll back to");
        let prev = self
            .db
            .previous_active()
            .await
            .map_err(db_status)?
            .ok_or_else(no_previous)?;
        let active = self
            .db
            .active_model_version()
            .await
            .map_err(db_status)?
            .ok_or_else(no_previous)?;
        // The replicas' checks on the version rolled back to, before the
        // registry changes (an old version may predate today's checks).
        let onnx = self
            .db
            .get_model_onnx(&prev.version)
            .await
            .map_err(db_status)?
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "the previous version {:?} has no model bytes left (pruned)",
                    prev.version
                ))
            })?;
        servable(&prev.version, onnx).await?;
        // Returns to exactly the version checked, or says the registry moved.
        let meta = self
            .db
            .rollback_from(&active.version, &prev.version)
            .await
            .map_err(db_status)?;
        self.publisher.refresh(&self.db).await.map_err(db_status)?;
        tracing::info!(version = %meta.version, "rolled back by operator");
        Ok(Response::new(version_proto(&meta)))
    }

    async fn report_replica(
        &self,
        req: Request<ReplicaReport>,
    ) -> Result<Response<ReplicaReportAck>, Status> {
        let r = req.into_inner();
        if r.replica.trim().is_empty() {
            return Err(Status::invalid_argument("replica must not be empty"));
        }
        if r.replica.len() > MAX_NAME_BYTES {
            return Err(Status::invalid_argument(format!(
                "replica: at most {MAX_NAME_BYTES} bytes"
            )));
        }
        // Refusal reasons are the replicas' own error texts: keep them short.
        let clip = |s: String| s.chars().take(500).collect::<String>();
        let report = ReplicaReportIn {
            name: r.replica,
            version: clip(r.version),
            sha256: clip(r.sha256),
            refused_version: clip(r.refused_version),
            refused_reason: clip(r.refused_reason),
            canary_version: clip(r.canary_version),
        };
        self.db
            .record_replica(&report, chrono::Utc::now())
            .await
            .map_err(db_status)?;
        Ok(Response::new(ReplicaReportAck {}))
    }

    async fn get_fleet(&self, _req: Request<GetFleetRequest>) -> Result<Response<Fleet>, Status> {
        let fleet = self.db.fleet().await.map_err(db_status)?;
        let active = self.db.active_model_version().await.map_err(db_status)?;
        let active = active.map(|a| a.version).unwrap_or_default();
        let now = chrono::Utc::now();
        let replicas = fleet
            .iter()
            .map(|r| FleetReplica {
                name: r.name.clone(),
                version: r.version.clone(),
                since: Some(timestamp(r.since)),
                state: fleet::state(r, (!active.is_empty()).then_some(active.as_str()), now)
                    .as_str()
                    .into(),
                last_refused_version: r.refused_version.clone(),
                last_refusal: r.refused_reason.clone(),
                last_refused_at: opt_timestamp(r.refused_at),
                last_seen: Some(timestamp(r.last_seen)),
                canary_version: r.canary_version.clone(),
            })
            .collect();
        let canary = match self.db.open_rollout().await.map_err(db_status)? {
            Some(r) => Some(self.canary_status(r).await.map_err(db_status)?),
            None => None,
        };
        Ok(Response::new(Fleet {
            active_version: active,
            replicas,
            canary,
        }))
    }

    async fn model_report(
        &self,
        req: Request<ModelReportRequest>,
    ) -> Result<Response<ModelReportResponse>, Status> {
        // Learner ids are personal data: only admin sees them as they are.
        let is_admin = req.extensions().get::<Caller>() == Some(&Caller(Role::Admin));
        let req = req.into_inner();
        let request = ReportRequest {
            version: Some(req.version),
            last_days: req.last_days,
            last_rows: req.last_rows,
            stuck_window: req.stuck_window,
        }
        .bounded_for_rpc();
        let mut r = report::compute(&self.db, &request, &self.drift)
            .await
            .map_err(report_status)?;
        // Sorted most rows first: the versions cut are the least used.
        r.versions.truncate(report::MAX_RPC_VERSIONS);
        let pseudonyms = (!is_admin).then_some(&self.pseudonyms);
        Ok(Response::new(report_proto(&r, pseudonyms)))
    }

    type WatchModelsStream = BoxStream<ModelArtifact>;

    async fn watch_models(
        &self,
        req: Request<WatchModelsRequest>,
    ) -> Result<Response<Self::WatchModelsStream>, Status> {
        let subscriber = req.into_inner().subscriber;
        tracing::info!(%subscriber, "model subscriber joined");
        let gauge = self.metrics.subscribers.clone();
        gauge.inc();
        // Decrements when the stream is dropped, however it ends.
        let guard = SubscriberGuard(gauge);
        let s = WatchStream::new(self.publisher.subscribe()).filter_map(move |p| {
            let _keep = &guard;
            futures::future::ready(match p {
                // Say nothing until the registry has answered: a replica
                // must not take "not read yet" for "nothing is active".
                Published::Unknown => None,
                Published::Empty => Some(Ok(ModelArtifact {
                    no_active_version: true,
                    ..ModelArtifact::default()
                })),
                Published::Active(m) => Some(Ok(artifact_proto(&m))),
            })
        });
        Ok(Response::new(self.until_shutdown(s)))
    }
}

struct SubscriberGuard(prometheus::IntGauge);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

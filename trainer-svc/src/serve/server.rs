//! The trainer server, shaped as `run(listener, metrics_listener, config,
//! shutdown)` so tests bind `127.0.0.1:0` and stop it cleanly.

use std::future::Future;
use std::time::Duration;

use prometheus::Registry;
use taskcast_proto::trainer_server::TrainerServer;
use taskcast_serving::auth::{Role, RoleAuthLayer, TokenError};
use taskcast_serving::grpc::GrpcOptions;
use taskcast_serving::grpc_metrics::GrpcMetricsLayer;
use taskcast_serving::token_reload::{DEFAULT_TOKEN_POLL, TokenReloader};
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::db::{Db, DbError};
use crate::report::gauges::{LiveGauges, refresh_periodically};
use crate::run::publisher::Publisher;
use crate::run::runner::Runner;
use crate::serve::config::ServeConfig;
use crate::serve::service::{ROLE_RULES, SERVICE_PREFIX, TrainerService};
use crate::serve::telemetry::METRICS_PREFIX;
use crate::serve::telemetry::TrainerMetrics;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened or queried at startup.
    #[error(transparent)]
    Db(#[from] DbError),
    /// ONNX Runtime could not be loaded.
    #[error(transparent)]
    Runtime(#[from] taskcast_contract::runtime::RuntimeError),
    /// A role's token could not be read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The pseudonym key could not be read.
    #[error(transparent)]
    PseudonymKey(#[from] crate::serve::pseudonym::PseudonymKeyError),
    /// The server plumbing failed: metrics, reflection, TLS files, transport.
    #[error(transparent)]
    Serve(#[from] taskcast_serving::Error),
}

/// Every metric the trainer exports, in a registry prefixed like inference's
/// (`taskcast_inference_`), so every trainer series, its gRPC ones included,
/// reads `taskcast_trainer_*`.
fn register_metrics()
-> Result<(Registry, TrainerMetrics, GrpcMetricsLayer, LiveGauges), prometheus::Error> {
    let registry = Registry::new_custom(Some(METRICS_PREFIX.to_string()), None)?;
    let metrics = TrainerMetrics::new(&registry)?;
    let grpc_metrics = GrpcMetricsLayer::new(&registry)?;
    let live_gauges = LiveGauges::new(&registry)?;
    Ok((registry, metrics, grpc_metrics, live_gauges))
}

/// Runs the trainer until `shutdown` resolves, then stops the scheduler,
/// abandons any run before it publishes, ends watch streams and gives
/// in-flight calls the grace period.
pub async fn run(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let lib = taskcast_contract::runtime::library_path(config.ort_lib.as_deref());
    taskcast_contract::runtime::init(&lib)?;
    // Secrets and TLS files are read before touching the database, so a bad
    // path fails fast.
    let tokens = config.role_tokens()?;
    let pseudonyms = config.pseudonymiser()?;
    let tls = config.server_tls().map_err(taskcast_serving::Error::from)?;
    for role in Role::ALL {
        if !tokens.has(role) {
            tracing::warn!(%role, "no {role} token configured: only admin can call the {role} RPCs");
        }
    }
    let db = Db::connect(&config.database_url).await?;
    let stale = db
        .fail_stale_running_runs("the trainer stopped while this run was going")
        .await?;
    if stale > 0 {
        tracing::warn!(
            runs = stale,
            "marked runs left RUNNING by a previous process as FAILED"
        );
    }

    let (registry, metrics, grpc_metrics, live_gauges) =
        register_metrics().map_err(taskcast_serving::Error::from)?;
    let publisher = Publisher::default();
    if let Err(e) = publisher.refresh(&db).await {
        tracing::warn!(error = %e, "loading the active model at startup failed; will retry");
    }

    let (stop, stopping) = taskcast_serving::shutdown::channel();
    let runner = Runner::new(
        db.clone(),
        publisher.clone(),
        config.runner(),
        metrics.runs.clone(),
        stopping.clone(),
    );
    runner.refresh_registry_gauge().await;
    let scheduler = tokio::spawn(runner.clone().schedule());
    let fleet_watch = tokio::spawn(crate::fleet::watch(
        db.clone(),
        publisher.clone(),
        metrics.fleet.clone(),
        crate::fleet::CHECK_EVERY,
        stopping.clone(),
    ));
    let canary_watch = tokio::spawn(crate::canary::watch(
        db.clone(),
        publisher.clone(),
        config.canary(),
        Duration::from_secs(config.canary_check_seconds.max(1)),
        stopping.clone(),
    ));
    // Kept to wait for an interrupted run to record its end at shutdown.
    let runner_at_exit = runner.clone();

    let (health_reporter, health_service) = taskcast_serving::grpc::health();
    health_reporter
        .set_serving::<TrainerServer<TrainerService>>()
        .await;

    // Scrapes read gauges this task sets; they never query the database.
    let live_report = (config.report_interval > 0).then(|| {
        tokio::spawn(refresh_periodically(
            db.clone(),
            live_gauges,
            config.report_window(),
            config.drift(),
            Duration::from_secs(config.report_interval),
            stopping.clone(),
        ))
    });

    let service = TrainerService::new(
        db.clone(),
        runner,
        publisher,
        metrics,
        config.drift(),
        pseudonyms,
        stopping.clone(),
    );
    let metrics_task = metrics_listener.map(|l| {
        tokio::spawn(taskcast_serving::metrics_endpoint::serve_metrics(
            l,
            registry.clone(),
            stopping.clone().wait(),
        ))
    });

    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    if let Some(tls) = &tls {
        tracing::info!(
            mutual = tls.mutual(),
            "serving gRPC over TLS (files re-read when they change)"
        );
    }
    let auth = RoleAuthLayer::new(SERVICE_PREFIX, ROLE_RULES, tokens);
    let token_files = config.token_files();
    if !token_files.is_empty() {
        let reloader = TokenReloader::new(
            auth.tokens(),
            token_files,
            Duration::from_secs(config.token_grace_seconds),
        );
        tokio::spawn(reloader.run(DEFAULT_TOKEN_POLL, stopping.clone()));
    }
    let options = GrpcOptions {
        tls,
        auth: Some(auth),
        // Nothing bounded the trainer's calls before (issue 27): a slow
        // database or a flood on one connection held calls without end.
        request_timeout: (config.request_timeout_ms > 0)
            .then(|| Duration::from_millis(config.request_timeout_ms)),
        concurrency_limit_per_connection: (config.concurrency_limit_per_connection > 0)
            .then_some(config.concurrency_limit_per_connection),
        max_connection_age: config.connection_age.connection_age(),
        load_shed: config.concurrency_limit_per_connection > 0,
        ..GrpcOptions::default()
    };
    let server = taskcast_serving::grpc::serve(
        listener,
        options,
        grpc_metrics,
        health_service,
        Routes::new(TrainerServer::new(service)),
        stopping.wait(),
    )?;
    let server = tokio::spawn(server);

    shutdown.await;
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!("shutting down: stopping the scheduler and draining calls");
    health_reporter
        .set_not_serving::<TrainerServer<TrainerService>>()
        .await;
    stop.send();
    let server = async {
        server.await.unwrap_or_else(|join| {
            tracing::error!(error = %join, "server task failed");
            Ok(())
        })
    };
    let result = taskcast_serving::grpc::drain(server, grace)
        .await
        .map_err(ServeError::from);
    let _ = scheduler.await;
    let _ = fleet_watch.await;
    let _ = canary_watch.await;
    if let Some(t) = live_report {
        let _ = t.await;
    }
    // A run in progress saw the stop signal and abandons before publishing;
    // let it write FAILED now rather than leave the row RUNNING until the
    // next start's stale-run recovery (another replica would see it running).
    let recorded = tokio::time::timeout_at(deadline, async {
        while !runner_at_exit.idle().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if recorded.is_err() {
        tracing::warn!(
            "the interrupted run did not record its end; the next start marks it FAILED"
        );
    }
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    db.close().await.ok();
    result
}

//! The gRPC server both services run: their own services beside
//! `grpc.health.v1` and server reflection (v1 and v1alpha, so `grpcurl` needs
//! no proto files), behind the per-RPC metrics layer and, where a service has
//! guarded RPCs, the role layer; on a listener the caller bound, with
//! TLS when configured.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::Error;
use crate::auth::RoleAuthLayer;
use crate::grpc_metrics::GrpcMetricsLayer;
use crate::tls_incoming::TlsIncoming;
use crate::tls_reload::ReloadingServerTls;

/// What differs between the services' servers; the rest is the same for both.
#[derive(Clone, Debug, Default)]
pub struct GrpcOptions {
    /// Serve over TLS, each new connection with the files as they are then
    /// (mutual when they include a client CA); plaintext when `None`.
    pub tls: Option<ReloadingServerTls>,
    /// Server-side deadline of every call.
    pub request_timeout: Option<Duration>,
    /// Calls in flight per connection; with `load_shed` the excess is refused
    /// (`UNAVAILABLE`) rather than queued.
    pub concurrency_limit_per_connection: Option<usize>,
    /// Refuse calls over the concurrency limit instead of queueing them.
    pub load_shed: bool,
    /// TCP keepalive on accepted connections.
    pub tcp_keepalive: Option<Duration>,
    /// Guards the service's RPCs by role; `None` for a service open to its
    /// network.
    pub auth: Option<RoleAuthLayer>,
}

/// A health service and the reporter that sets its statuses. The overall
/// status (`""`) starts SERVING; a service that is not ready at start says so.
pub fn health() -> (HealthReporter, HealthServer<HealthService>) {
    let reporter = HealthReporter::new();
    let service = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
    (reporter, service)
}

/// Builds the server for `routes` (the service's own gRPC services) on
/// `listener`; the returned future serves until `shutdown` resolves, then
/// stops accepting and waits for the calls in flight (bound it with
/// [`drain`]). Fails before serving anything when reflection or TLS cannot be
/// set up.
pub fn serve(
    listener: TcpListener,
    options: GrpcOptions,
    metrics: GrpcMetricsLayer,
    health: HealthServer<HealthService>,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(taskcast_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    // Builder::tcp_nodelay only applies to listeners tonic binds itself;
    // ours comes from the caller, so set it here. Without it a response
    // spanning several segments waits out Nagle + delayed ACK (~40 ms).
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(options.tcp_keepalive);
    let mut builder = tonic::transport::Server::builder();
    if let Some(timeout) = options.request_timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(limit) = options.concurrency_limit_per_connection {
        builder = builder.concurrency_limit_per_connection(limit);
    }
    let router = builder
        .load_shed(options.load_shed)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Outermost, so calls the role layer refuses are counted too.
        .layer(metrics)
        .layer(tower::util::option_layer(options.auth))
        .add_routes(routes)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // Not the builder's tls_config: its settings are fixed at startup, and
    // certificates must rotate under a running server.
    let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match options.tls {
            Some(tls) => Box::pin(
                router.serve_with_incoming_shutdown(TlsIncoming::new(incoming, tls), shutdown),
            ),
            None => Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown)),
        };
    Ok(async move { server.await.map_err(Error::from) })
}

/// Waits for a server told to stop to finish its calls in flight, for at most
/// `grace`; calls still running then are dropped.
pub async fn drain<F>(server: F, grace: Duration) -> Result<(), Error>
where
    F: Future<Output = Result<(), Error>>,
{
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                grace_seconds = grace.as_secs_f64(),
                "grace period over; dropping the calls still running"
            );
            Ok(())
        }
    }
}

//! `trainer-svc serve`: the service itself, until SIGTERM or Ctrl-C.

use anyhow::Context;
use trainer_svc::serve::config::ServeConfig;

/// Binds the gRPC and metrics ports and runs the server.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    taskcast_serving::logging::init_tracing(config.log_format, "info");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let metrics = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding {}", config.metrics_listen))?;
    tracing::info!(listen = %config.listen, metrics = %config.metrics_listen, "trainer-svc starting");
    trainer_svc::serve::server::run(
        listener,
        Some(metrics),
        config,
        taskcast_serving::shutdown::shutdown_signal(),
    )
    .await?;
    Ok(())
}

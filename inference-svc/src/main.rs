//! `inference-svc` binary: parse flags, bind, run until SIGTERM / Ctrl-C.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use inference_svc::Config;

/// A Predict call allocated a few hundred times before the request was read
/// straight from its bytes (wire.rs), and still allocates for HTTP/2 frames
/// and the response; under load glibc's malloc and free were about 15 % of
/// the server's CPU then. mimalloc's
/// thread-local free lists make them cheaper (BENCHMARKS.md has the figures).
/// Built with `no_thp` (root Cargo.toml): with transparent huge pages its
/// arenas cost ~10 MB more RSS for no measured gain.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // A startup error is a message for an operator (the cause chain on one
    // line), not a backtrace, whatever RUST_BACKTRACE says.
    match serve(Config::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    taskcast_serving::logging::init_tracing(config.log_format, "info");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding gRPC listener {}", config.listen))?;
    let metrics_listener = match config.metrics_listen.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding metrics listener {addr}"))?,
        ),
    };
    inference_svc::run(
        listener,
        metrics_listener,
        config,
        taskcast_serving::shutdown::shutdown_signal(),
    )
    .await?;
    Ok(())
}

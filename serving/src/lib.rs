//! The serving plumbing both Taskcast services share, and which knows nothing
//! about models or databases:
//! - [`grpc`]: the gRPC server (health, reflection, TLS, TCP and HTTP/2
//!   options, the layers below) and its bounded drain;
//! - [`grpc_metrics`]: a tower layer counting and timing every gRPC call;
//! - [`auth`]: bearer-token roles (admin, replica, reader) guarding RPCs;
//! - [`metrics_endpoint`]: the Prometheus `/metrics` and `/healthz` endpoint;
//! - [`request_bytes`]: one budget of request bytes per server;
//! - [`pem`]: reading certificates and keys, and [`tls`]: the server's TLS
//!   settings from its flags;
//! - [`tls_reload`]: server TLS settings re-read when their files change,
//!   and [`tls_incoming`]: the accept loop that uses them;
//! - [`logging`]: tracing setup;
//! - [`shutdown`]: when to stop, one signal for every task of a server;
//! - [`backoff`]: growing pauses between retries.
//!
//! Kept out of `taskcast-proto` so that a client of the contract does not
//! compile a server.

pub mod auth;
pub mod backoff;
pub mod cleartext;
pub mod grpc;
pub mod grpc_metrics;
pub mod logging;
pub mod metrics_endpoint;
pub mod pem;
pub mod request_bytes;
pub mod shutdown;
pub mod tls;
pub mod tls_incoming;
pub mod tls_reload;
pub mod token_reload;

/// Why a server could not start or stopped abnormally; each service wraps it
/// in its own error beside what only it can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Metrics could not be registered (a programming error).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Reflection could not be built from the descriptor sets.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC transport failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The TLS certificate, key or client CA cannot be served.
    #[error("TLS: {0}")]
    Tls(#[from] tls_reload::ServerTlsError),
}

//! The `taskcast.v1` gRPC contract, generated from the `.proto` files beside
//! this crate. Clients in other languages generate from the same files.
//!
//! Beside the generated code, the serving plumbing both services share (and
//! which knows nothing about models or databases):
//! - [`serve`]: shutdown signal, the Prometheus `/metrics` endpoint, tracing setup;
//! - [`grpc_metrics`]: a tower layer counting and timing every gRPC call;
//! - [`auth`]: a bearer-token layer guarding admin RPCs.

/// Messages and services of package `taskcast.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("taskcast.v1");
}

pub mod auth;
pub mod grpc_metrics;
pub mod serve;

/// Encoded `FileDescriptorSet` of every taskcast proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("taskcast_descriptor");

pub use v1::*;

//! The `taskcast.v1` gRPC contract, generated from the `.proto` files beside
//! this crate, and nothing else: clients depend on this crate alone, and
//! clients in other languages generate from the same files. The serving
//! plumbing both services share lives in `taskcast-serving`.

/// Messages and services of package `taskcast.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("taskcast.v1");
}

/// Encoded `FileDescriptorSet` of every taskcast proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("taskcast_descriptor");

pub use v1::*;

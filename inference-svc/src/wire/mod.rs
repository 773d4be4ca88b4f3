//! Predict and Recommend on the wire without the generated message types:
//! the request is read in place from the received bytes, in memory bounded
//! by the service's limits rather than by what the bytes claim, and
//! Predict's response is written straight into the response frame's buffer.
//!
//! A `PredictRequest` with a 50-attempt history is ~150 strings; decoding it
//! into the generated `PredictRequest` allocates each of them (and the
//! vectors holding them) only for the feature code to hash them and drop
//! them. [`PredictRequestRef::decode`] borrows every string from the request
//! buffer instead (two allocations per request: the history and the
//! candidates, sized only after their counts passed the limits), and
//! [`encode_predict_response`] writes the answer without building
//! `Prediction` messages.
//!
//! Both follow protobuf's wire rules as prost applies them: unknown fields
//! (groups included) are skipped, the last value of a singular field wins,
//! strings must be UTF-8, nesting stops at prost's recursion limit, and
//! fields at their default value are not written. `tests.rs` fuzzes the
//! reader against prost (structured and raw inputs) and the writer against
//! prost's bytes; `scripts/fuzz-wire.sh` runs the long version.
//!
//! - `reader.rs`: the wire format's pieces (keys, varints, skipping);
//! - `decode.rs`: the two requests, in two passes;
//! - `encode.rs`: Predict's response.
//!
//! What a [`DecodeError`] answers is decided in `crate::service::status`,
//! with every other error.

mod decode;
mod encode;
#[cfg(test)]
mod fuzz_gen;
mod reader;
#[cfg(test)]
mod tests;

pub use decode::{AttemptRef, CandidateRef, PredictRequestRef, RecommendRequestRef};
pub use encode::{encode_predict_response, predict_response_len};

use crate::predict::PredictError;

/// Why bytes are not a message; the text matches prost's where prost has
/// one, since a client sees it in place of prost's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(&'static str);

/// Why a request could not be read: either it is not the message (the
/// bytes break the wire format) or it is one the service refuses before
/// reading it all (too many entries, bad Recommend parameters).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a well-formed message.
    #[error(transparent)]
    Malformed(#[from] WireError),
    /// A well-formed message the limits refuse; names the field.
    #[error(transparent)]
    Invalid(#[from] PredictError),
}

//! What training and serving must agree on, in one place:
//! - [`task`]: one completed task, as every source yields it (the
//!   `completed_tasks` table, a CSV file, the simulator), and what makes one
//!   unusable;
//! - [`canary`]: which learners a canary's candidate answers;
//! - [`encode`]: a label's key and an attempt's log-time, which everything below uses;
//! - [`features`]: the feature code (one pure function per row, documented formulas);
//! - [`keymap`]: fast maps keyed by label keys;
//! - [`priors`]: population / topic / difficulty / item priors and their shrinkage;
//! - [`artifact`]: the model file's contract and the checks that refuse a bad one;
//! - [`onnx`]: the ONNX writer; [`linear`]: the linear family's graph;
//! - [`bootstrap`]: the model served before any training (the weights of
//!   [`bootstrap_weights`], pretrained on public data), and [`first_contact`]:
//!   what such a model must do for a new app's learners;
//! - `runtime` (feature `runtime`): running an artifact with ONNX Runtime.
//!
//! This crate knows neither gRPC nor the database.

pub mod artifact;
pub mod bootstrap;
pub mod bootstrap_weights;
pub mod canary;
pub mod encode;
pub mod features;
pub mod first_contact;
pub mod keymap;
pub mod linear;
pub mod onnx;
pub mod priors;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "runtime")]
pub mod servable;
pub mod task;

pub use artifact::{Artifact, ArtifactError, IndexField, IndexInput, ModelMetadata};
pub use features::{
    CandidateKey, Event, FEATURE_COUNT, FEATURE_NAMES, FEATURE_SCHEMA, FeatureContext, FeatureRow,
    Features, RowKeys, Schema,
};
pub use priors::{PriorTable, Priors, Stat};
pub use task::{RowProblem, TaskRow};

//! A model ready to serve: the checked artifact, its priors and index-input
//! lookups, and a pool of ONNX Runtime sessions (all in
//! [`taskcast_contract::runtime::OnnxModel`]), plus what this replica knows
//! about when and from which bytes it was loaded.
//!
//! [`LoadedModel::load`] is the only way in, and it refuses anything that is
//! not provably safe to serve: wrong checksum, a file that breaks the
//! artifact contract, or a graph whose outputs on probe rows are not finite
//! probabilities and ordered quantiles. Refusal is a typed [`ModelError`],
//! never a panic.

use std::time::SystemTime;

use taskcast_contract::artifact::sha256_hex;
use taskcast_contract::runtime::{OnnxModel, RuntimeError};
use taskcast_contract::servable::{self, ServableError};
use taskcast_contract::{ArtifactError, ModelMetadata, PriorTable};

use crate::batch::{BatchConfig, Batcher};

pub use taskcast_contract::servable::QUANTILE_TOLERANCE;

/// Why a model was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The bytes do not hash to the sha256 the publisher announced.
    #[error("sha256 mismatch: expected {expected}, file has {actual}")]
    Sha256Mismatch {
        /// Announced.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The file breaks the artifact contract.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// ONNX Runtime could not load the graph, or is not available.
    #[error("onnxruntime refused the model: {0}")]
    Runtime(String),
    /// The graph loads but produces unusable outputs on probe rows.
    #[error("warm-up failed: {0}")]
    WarmUp(String),
    /// The model names the serving version but is a different file: every
    /// response names the version that produced it, so one name must not
    /// stand for two models.
    #[error(
        "version {version} is already serving with sha256 {serving}; refusing a different file ({offered}) under the same name"
    )]
    VersionConflict {
        /// The shared version name.
        version: String,
        /// sha256 of the serving model.
        serving: String,
        /// sha256 of the refused model.
        offered: String,
    },
    /// The model file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ModelError {
    /// Low-cardinality label for `taskcast_inference_model_refused_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            ModelError::Sha256Mismatch { .. } => "sha256",
            ModelError::Artifact(a) => match a {
                ArtifactError::NotOnnx(_)
                | ArtifactError::MissingMetadata
                | ArtifactError::BadMetadata(_) => "corrupt",
                ArtifactError::SchemaMismatch { .. } | ArtifactError::FeatureMismatch { .. } => {
                    "schema"
                }
                ArtifactError::Io { .. } => "io",
                ArtifactError::Invalid(_) | ArtifactError::NonFinite(_) => "metadata",
            },
            ModelError::Runtime(_) => "runtime",
            ModelError::WarmUp(_) => "warmup",
            ModelError::VersionConflict { .. } => "version_conflict",
            ModelError::Read { .. } => "read",
        }
    }
}

impl From<RuntimeError> for ModelError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Artifact(a) => ModelError::Artifact(a),
            RuntimeError::Output(m) => ModelError::WarmUp(m),
            other => ModelError::Runtime(other.to_string()),
        }
    }
}

/// A checked, warmed-up model and its provenance on this replica.
pub struct LoadedModel {
    /// Artifact metadata, priors, index lookups and the session pool.
    pub onnx: OnnxModel,
    /// Hex sha256 of the file.
    pub sha256: String,
    /// When this replica finished loading it.
    pub loaded_at: SystemTime,
    /// Sessions in the pool (each one is warmed up).
    pub pool: usize,
    /// Where batched Predict calls queue their rows for this model's
    /// sessions (off unless [`LoadedModel::with_batching`]).
    pub batcher: Batcher,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("version", &self.version())
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl LoadedModel {
    /// Verifies, parses, builds `pool` sessions and warms the model up.
    ///
    /// Blocking (ONNX Runtime compiles the graph): call it off the async
    /// runtime, as [`crate::swap::ModelSlot::try_swap`] does.
    pub fn load(
        bytes: &[u8],
        expected_sha256: Option<&str>,
        pool: usize,
    ) -> Result<LoadedModel, ModelError> {
        let actual = sha256_hex(bytes);
        if let Some(expected) = expected_sha256
            && !expected.trim().eq_ignore_ascii_case(&actual)
        {
            return Err(ModelError::Sha256Mismatch {
                expected: expected.to_string(),
                actual,
            });
        }
        let onnx = OnnxModel::load(bytes, pool)?;
        let model = LoadedModel {
            onnx,
            sha256: actual,
            loaded_at: SystemTime::now(),
            pool: pool.max(1),
            batcher: Batcher::new(BatchConfig::off()),
        };
        model.warm_up()?;
        Ok(model)
    }

    /// The model with Predict calls batched by `config`: each model has its
    /// own queue, since rows of two models cannot share a run.
    pub fn with_batching(mut self, config: BatchConfig) -> Self {
        self.batcher = Batcher::new(config);
        self
    }

    /// The artifact's metadata.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.onnx.artifact.metadata
    }

    /// Version id.
    pub fn version(&self) -> &str {
        &self.onnx.artifact.metadata.version
    }

    /// The priors the features are computed against.
    pub fn table(&self) -> &PriorTable {
        &self.onnx.priors
    }

    /// Runs the contract's probe rows through every session
    /// ([`taskcast_contract::servable`]): the same check the trainer makes
    /// before a version becomes active.
    fn warm_up(&self) -> Result<(), ModelError> {
        servable::check(&self.onnx, self.pool).map_err(|e| match e {
            ServableError::Runtime(r) => ModelError::from(r),
            ServableError::Output(m) => ModelError::WarmUp(m),
        })
    }
}

//! The model artifact: one ONNX file per version whose `metadata_props` carry
//! everything serving needs besides the graph, and the checks that refuse a
//! file that does not honour this contract.
//!
//! Graph contract:
//! - input `features`: float `[batch, width]`, the first `width` columns of
//!   rows from [`crate::features`], `width` set by the declared schema;
//! - optional int64 `[batch]` inputs listed in [`ModelMetadata::index_inputs`]
//!   (embedding indices: 0 is out-of-vocabulary, `i + 1` is `vocabulary[i]`);
//! - output `p_correct`: float `[batch]`, probability of a correct first answer;
//! - output `log_seconds`: float `[batch, 3]`, the 10th, 50th and 90th
//!   percentiles of log-seconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::features::{FEATURE_NAMES, Schema, label_key};
use crate::keymap::KeyMap;
use crate::onnx::{DimValue, FLOAT, GraphBuilder, INT64, ModelProto, ValueInfoProto};
use crate::priors::Priors;

/// The `metadata_props` key holding [`ModelMetadata`] as JSON.
pub const METADATA_KEY: &str = "taskcast.model";
/// Name of the feature-matrix input.
pub const INPUT_FEATURES: &str = "features";
/// Name of the probability output.
pub const OUTPUT_P_CORRECT: &str = "p_correct";
/// Name of the log-seconds quantile output.
pub const OUTPUT_LOG_SECONDS: &str = "log_seconds";
/// The quantiles of [`OUTPUT_LOG_SECONDS`], in column order.
pub const TIME_QUANTILES: [f64; 3] = [0.1, 0.5, 0.9];

/// Which request field an index input is looked up from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexField {
    /// The request's `user_id`.
    User,
    /// The candidate's topic.
    Topic,
    /// The candidate's effective difficulty (app label, or derived from the item).
    Difficulty,
    /// The candidate's item id.
    Item,
}

/// An int64 input a family needs, such as an embedding index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexInput {
    /// Graph input name.
    pub name: String,
    /// Where the label comes from.
    pub field: IndexField,
    /// Known labels; index `i + 1` is `vocabulary[i]`, 0 is out-of-vocabulary.
    pub vocabulary: Vec<String>,
}

impl IndexInput {
    /// `label_key(label) → index`, for lookups on the request path.
    pub fn lookup(&self) -> KeyMap<i64> {
        self.vocabulary
            .iter()
            .enumerate()
            .map(|(i, v)| (label_key(v), i as i64 + 1))
            .collect()
    }
}

/// Everything an artifact says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// Version id, unique in the registry.
    pub version: String,
    /// Model family ("linear", "mlp", "bootstrap").
    pub family: String,
    /// A [`Schema`] id this build knows (`taskcast.features/v1` or `/v2`).
    pub feature_schema: String,
    /// Feature names in input order; must equal the schema's
    /// ([`Schema::names`]).
    pub features: Vec<String>,
    /// How many most recent attempts the features use.
    pub history_window: u32,
    /// RFC 3339 training time.
    pub trained_at: String,
    /// Hold-out metrics at training time.
    pub metrics: BTreeMap<String, f64>,
    /// Rows the model was fitted on.
    pub training_rows: u64,
    /// A typical value per feature (training mean); explanations measure each
    /// feature's effect as the change when it is set to this value.
    pub feature_baseline: Vec<f32>,
    /// Extra int64 inputs, e.g. embedding indices.
    #[serde(default)]
    pub index_inputs: Vec<IndexInput>,
    /// Population, topic, difficulty and item priors from the training rows.
    pub priors: Priors,
    /// Whether the time outputs were learned from (and judged on) enough timed
    /// rows; `false` means predicted seconds come from the priors. Absent in
    /// files written before the field existed: see [`ModelMetadata::time_modeled`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_modeled: Option<bool>,
    /// Whether the model was trained with "now" known (rows with a recorded
    /// `started_at`), so serving should give it the request's `as_of` or
    /// the server's clock. A model trained without one gets "now unknown",
    /// as every one of its training rows had (features module docs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clock: bool,
}

/// Whether a model learned its time head: what it recorded, or for records
/// made before that was recorded, whether it has time metrics (exactly the
/// models that learned one had them).
pub fn time_modeled(recorded: Option<bool>, metrics: &BTreeMap<String, f64>) -> bool {
    recorded.unwrap_or_else(|| metrics.contains_key("mae_log_seconds"))
}

impl ModelMetadata {
    /// The feature schema the model reads. [`Artifact::parse`] refuses a file
    /// whose schema this build does not know, so for a parsed artifact this
    /// never falls back; a hand-built record with an unknown id reads as the
    /// current schema.
    pub fn schema(&self) -> Schema {
        Schema::from_id(&self.feature_schema).unwrap_or(Schema::CURRENT)
    }

    /// Whether the model wants "now" ([`ModelMetadata::clock`] on a schema
    /// that reads it).
    pub fn reads_clock(&self) -> bool {
        self.clock && self.schema().reads_clock()
    }

    /// Whether times are modelled. Older files do not say; they learned a time
    /// head exactly when they recorded time metrics.
    pub fn time_modeled(&self) -> bool {
        time_modeled(self.time_modeled, &self.metrics)
    }

    /// The first number that is not finite, by its path (`metrics.auc`,
    /// `priors.topics["fractions"].log_time_sum`, …). JSON has no NaN or
    /// infinity: serde_json would write `null`, and every reader would then
    /// refuse the whole file with an error that names nothing.
    pub fn first_non_finite(&self) -> Option<String> {
        let metric = self
            .metrics
            .iter()
            .find(|(_, v)| !v.is_finite())
            .map(|(k, v)| format!("metrics.{k} = {v}"));
        let baseline = self
            .feature_baseline
            .iter()
            .zip(FEATURE_NAMES)
            .find(|(v, _)| !v.is_finite())
            .map(|(v, name)| format!("feature_baseline.{name} = {v}"));
        let p = &self.priors;
        let stat = |group: &str, map: &BTreeMap<String, crate::priors::Stat>| {
            map.iter()
                .find(|(_, s)| !s.log_time_sum.is_finite())
                .map(|(k, s)| format!("priors.{group}[{k:?}].log_time_sum = {}", s.log_time_sum))
        };
        let cuts = p
            .difficulty_cuts
            .filter(|c| c.iter().any(|v| !v.is_finite()))
            .map(|c| format!("priors.difficulty_cuts = {c:?}"));
        let population = (!p.population.log_time_sum.is_finite()).then(|| {
            format!(
                "priors.population.log_time_sum = {}",
                p.population.log_time_sum
            )
        });
        metric
            .or(baseline)
            .or(population)
            .or_else(|| stat("topics", &p.topics))
            .or_else(|| stat("difficulties", &p.difficulties))
            .or_else(|| stat("items", &p.items))
            .or(cuts)
    }
}

/// Why an artifact is refused.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The bytes are not an ONNX protobuf.
    #[error("not an ONNX model: {0}")]
    NotOnnx(#[from] prost::DecodeError),
    /// No `taskcast.model` metadata entry.
    #[error("the ONNX file has no `{METADATA_KEY}` metadata; it was not written by taskcast")]
    MissingMetadata,
    /// The metadata entry does not parse.
    #[error("invalid `{METADATA_KEY}` metadata: {0}")]
    BadMetadata(#[from] serde_json::Error),
    /// Trained for another feature schema.
    #[error("feature schema mismatch: model has `{found}`, this build computes {expected}")]
    SchemaMismatch {
        /// What this build computes.
        expected: String,
        /// What the model declares.
        found: String,
    },
    /// Same schema id but other feature names or order.
    #[error("feature list mismatch: model expects {found:?}")]
    FeatureMismatch {
        /// What the model declares.
        found: Vec<String>,
    },
    /// The graph lacks a required input or output, or declares it with the wrong type.
    #[error("graph {kind} `{name}` is missing or not {expected}")]
    Io {
        /// "input" or "output".
        kind: &'static str,
        /// The name.
        name: String,
        /// The required type and shape.
        expected: String,
    },
    /// A metadata value is out of range.
    #[error("invalid metadata: {0}")]
    Invalid(String),
    /// A number to be written is NaN or infinite (JSON cannot carry it).
    #[error("refusing to write a model whose metadata holds a non-finite number: {0}")]
    NonFinite(String),
}

/// A parsed, contract-checked model file.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// What the file says about itself.
    pub metadata: ModelMetadata,
    /// Hex sha256 of the file.
    pub sha256: String,
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Artifact {
    /// Parses `bytes` and checks them against this build's contract: feature
    /// schema, feature list, graph inputs and outputs. Refusal is an error,
    /// never a panic, whatever the bytes.
    pub fn parse(bytes: &[u8]) -> Result<Artifact, ArtifactError> {
        let model = ModelProto::from_bytes(bytes)?;
        let json = model
            .metadata(METADATA_KEY)
            .ok_or(ArtifactError::MissingMetadata)?;
        let metadata: ModelMetadata = serde_json::from_str(json)?;
        let Some(schema) = Schema::from_id(&metadata.feature_schema) else {
            return Err(ArtifactError::SchemaMismatch {
                expected: Schema::ALL
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(" or "),
                found: metadata.feature_schema,
            });
        };
        let width = schema.width();
        if metadata.features.len() != width
            || metadata
                .features
                .iter()
                .zip(schema.names())
                .any(|(a, b)| a != b)
        {
            return Err(ArtifactError::FeatureMismatch {
                found: metadata.features,
            });
        }
        if metadata.feature_baseline.len() != width
            || metadata.feature_baseline.iter().any(|v| !v.is_finite())
        {
            return Err(ArtifactError::Invalid(format!(
                "feature_baseline must hold {width} finite values"
            )));
        }
        if metadata.history_window == 0 {
            return Err(ArtifactError::Invalid(
                "history_window must be at least 1".into(),
            ));
        }
        let graph = model.graph.as_ref().ok_or_else(|| ArtifactError::Io {
            kind: "input",
            name: INPUT_FEATURES.into(),
            expected: "present (the file has no graph)".into(),
        })?;
        check_io(
            &graph.input,
            "input",
            INPUT_FEATURES,
            FLOAT,
            &[None, Some(width as i64)],
        )?;
        for idx in &metadata.index_inputs {
            check_io(&graph.input, "input", &idx.name, INT64, &[None])?;
        }
        check_io(&graph.output, "output", OUTPUT_P_CORRECT, FLOAT, &[None])?;
        check_io(
            &graph.output,
            "output",
            OUTPUT_LOG_SECONDS,
            FLOAT,
            &[None, Some(3)],
        )?;
        Ok(Artifact {
            metadata,
            sha256: sha256_hex(bytes),
        })
    }

    /// Writes a graph and its metadata as an ONNX file.
    pub fn write(graph: GraphBuilder, metadata: &ModelMetadata) -> Result<Vec<u8>, ArtifactError> {
        if let Some(what) = metadata.first_non_finite() {
            return Err(ArtifactError::NonFinite(what));
        }
        let json = serde_json::to_string(metadata)?;
        Ok(graph
            .finish(vec![(METADATA_KEY.to_string(), json)])
            .to_bytes())
    }
}

/// Checks a declared value: element type and rank, and any fixed sizes given
/// (`None` accepts any size, symbolic or fixed).
fn check_io(
    list: &[ValueInfoProto],
    kind: &'static str,
    name: &str,
    elem: i32,
    dims: &[Option<i64>],
) -> Result<(), ArtifactError> {
    let expected = || {
        let shape: Vec<String> = dims
            .iter()
            .map(|d| d.map_or("batch".to_string(), |n| n.to_string()))
            .collect();
        format!(
            "{} [{}]",
            if elem == FLOAT { "float" } else { "int64" },
            shape.join(", ")
        )
    };
    let err = || ArtifactError::Io {
        kind,
        name: name.to_string(),
        expected: expected(),
    };
    let vi = list.iter().find(|v| v.name == name).ok_or_else(err)?;
    let tensor = vi
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(err)?;
    if tensor.elem_type != elem {
        return Err(err());
    }
    let shape = tensor.shape.as_ref().ok_or_else(err)?;
    if shape.dim.len() != dims.len() {
        return Err(err());
    }
    for (d, want) in shape.dim.iter().zip(dims) {
        if let (Some(n), Some(DimValue::Value(have))) = (want, &d.value)
            && have != n
        {
            return Err(err());
        }
        if let (Some(_), Some(DimValue::Param(_)) | None) = (want, &d.value) {
            return Err(err());
        }
    }
    Ok(())
}

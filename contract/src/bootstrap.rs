//! The bootstrap model served from a fresh clone before any training: a linear
//! model with hand-set, documented weights over empty priors (population rate
//! 0.6, 60 s). It already personalises: every completed task moves the
//! learner's topic and recent statistics, and so the prediction.
//!
//! - `logit p = prior_item_logit + (topic_rate_logit − prior_topic_logit) +
//!   0.5·(recent_rate_logit − overall_rate_logit)`: the item's prior, moved by
//!   how the learner does in the topic and, a little, by their recent form.
//! - `median log-seconds = prior_item_log_time + (topic_log_time − prior_topic_log_time)`,
//!   with the 10–90 % interval at ±1.0 in log-seconds (×/÷ e), the typical
//!   spread of response times within one learner.

use std::collections::BTreeMap;

use crate::artifact::{Artifact, ArtifactError, ModelMetadata};
use crate::features::{
    CandidateKey, DEFAULT_HISTORY_WINDOW, FEATURE_COUNT, FEATURE_NAMES, FEATURE_SCHEMA,
    FeatureContext, feature_index,
};
use crate::linear::LinearModel;
use crate::priors::{PriorTable, Priors};

/// Version id of the bootstrap model.
pub const BOOTSTRAP_VERSION: &str = "bootstrap-1";

fn weight(pairs: &[(&str, f32)]) -> [f32; FEATURE_COUNT] {
    let mut w = [0f32; FEATURE_COUNT];
    for (name, v) in pairs {
        if let Some(i) = feature_index(name) {
            w[i] += v;
        }
    }
    w
}

/// The bootstrap weights (see the module docs).
pub fn bootstrap_linear() -> LinearModel {
    LinearModel {
        p_weights: weight(&[
            ("prior_item_logit", 1.0),
            ("topic_rate_logit", 1.0),
            ("prior_topic_logit", -1.0),
            ("recent_rate_logit", 0.5),
            ("overall_rate_logit", -0.5),
        ]),
        p_bias: 0.0,
        t_weights: weight(&[
            ("prior_item_log_time", 1.0),
            ("topic_log_time", 1.0),
            ("prior_topic_log_time", -1.0),
        ]),
        t_bias: 0.0,
        t_quantile_offsets: [-1.0, 0.0, 1.0],
    }
}

/// Metadata for a linear-graph model over `priors`: the current schema and
/// window, and the baseline row (an empty history, an unknown candidate)
/// computed from those priors. The bootstrap model is this with empty priors;
/// tests and benches build their models on it too, so they stay valid when the
/// contract grows a field.
pub fn linear_metadata(version: &str, family: &str, priors: Priors) -> ModelMetadata {
    let table = PriorTable::new(&priors);
    let baseline = FeatureContext::new(&[], &table)
        .row(&CandidateKey::new("", "", "", &table), &table)
        .row
        .to_vec();
    ModelMetadata {
        version: version.into(),
        family: family.into(),
        feature_schema: FEATURE_SCHEMA.into(),
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        history_window: DEFAULT_HISTORY_WINDOW,
        trained_at: "2026-11-26T00:00:00Z".into(),
        metrics: BTreeMap::new(),
        training_rows: 0,
        feature_baseline: baseline,
        index_inputs: vec![],
        priors,
        time_modeled: None,
    }
}

/// The bootstrap model file, byte for byte (deterministic: a fixed training time).
pub fn bootstrap_model() -> Result<Vec<u8>, ArtifactError> {
    let metadata = linear_metadata(BOOTSTRAP_VERSION, "bootstrap", Priors::default());
    Artifact::write(bootstrap_linear().graph(), &metadata)
}

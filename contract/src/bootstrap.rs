//! The bootstrap model served from a fresh clone before any training: the
//! pretrained linear model ([`crate::bootstrap_weights`], fitted by
//! `trainer-svc pretrain` on public data, over features that mean the same in
//! any app) over empty priors (population rate 0.6, 60 s). It already
//! personalises: every completed task moves the learner's rates, counts,
//! times and recency, and so the prediction; [`crate::first_contact`] checks
//! that it moves them the right way. The trainer's `pretrained` family starts
//! from the same weights and recalibrates them to the app.

use std::collections::BTreeMap;

use crate::artifact::{Artifact, ArtifactError, ModelMetadata};
use crate::bootstrap_weights as w;
use crate::features::{
    CandidateKey, DEFAULT_HISTORY_WINDOW, FEATURE_COUNT, FeatureContext, Schema, feature_index,
};
use crate::linear::LinearModel;
use crate::priors::{PriorTable, Priors};

/// Version id of the bootstrap model.
pub const BOOTSTRAP_VERSION: &str = "bootstrap-3";

/// The pretrained weights as a model.
pub fn bootstrap_linear() -> LinearModel {
    let by_name = |pairs: &[(&str, f32)]| {
        let mut v = [0f32; FEATURE_COUNT];
        for (name, x) in pairs {
            if let Some(i) = feature_index(name) {
                v[i] += x;
            }
        }
        v
    };
    LinearModel {
        p_weights: by_name(w::P_WEIGHTS),
        p_bias: w::P_BIAS,
        t_weights: by_name(w::T_WEIGHTS),
        t_bias: w::T_BIAS,
        t_quantile_offsets: w::T_QUANTILE_OFFSETS,
    }
}

/// Names in [`crate::bootstrap_weights`] that are not features of this
/// schema ([`bootstrap_linear`] would drop them silently; a test refuses them).
pub fn unknown_weight_names() -> Vec<&'static str> {
    w::P_WEIGHTS
        .iter()
        .chain(w::T_WEIGHTS)
        .map(|(n, _)| *n)
        .filter(|n| feature_index(n).is_none())
        .collect()
}

/// Metadata for a linear-graph model over `priors`: the current schema and
/// window, and the baseline row (an empty history, an unknown candidate)
/// computed from those priors. The bootstrap model is this with empty priors;
/// tests and benches build their models on it too, so they stay valid when the
/// contract grows a field.
pub fn linear_metadata(version: &str, family: &str, priors: Priors) -> ModelMetadata {
    linear_metadata_for(Schema::CURRENT, version, family, priors)
}

/// [`linear_metadata`] for a model of `schema`.
pub fn linear_metadata_for(
    schema: Schema,
    version: &str,
    family: &str,
    priors: Priors,
) -> ModelMetadata {
    let table = PriorTable::new(&priors);
    let baseline = FeatureContext::new(&[], &table)
        .row(&CandidateKey::new("", "", "", &table), &table)
        .row[..schema.width()]
        .to_vec();
    ModelMetadata {
        version: version.into(),
        family: family.into(),
        feature_schema: schema.id().into(),
        features: schema.names().iter().map(|s| s.to_string()).collect(),
        history_window: DEFAULT_HISTORY_WINDOW,
        trained_at: "2026-11-26T00:00:00Z".into(),
        metrics: BTreeMap::new(),
        training_rows: 0,
        feature_baseline: baseline,
        index_inputs: vec![],
        priors,
        time_modeled: None,
        clock: false,
    }
}

/// The bootstrap model file, byte for byte (deterministic: a fixed training time).
pub fn bootstrap_model() -> Result<Vec<u8>, ArtifactError> {
    let metadata = linear_metadata(BOOTSTRAP_VERSION, "bootstrap", Priors::default());
    Artifact::write(bootstrap_linear().graph(), &metadata)
}

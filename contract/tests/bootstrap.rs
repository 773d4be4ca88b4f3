//! The committed bootstrap model is exactly what the code writes today, and it
//! honours the artifact contract.
use std::path::PathBuf;

use taskcast_contract::{Artifact, bootstrap};

#[test]
fn committed_bootstrap_model_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/bootstrap.onnx");
    let fresh = bootstrap::bootstrap_model().unwrap();
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "models/bootstrap.onnx is stale: run `cargo run -p taskcast-contract --example write_bootstrap`"
    );
    let art = Artifact::parse(&committed).unwrap();
    assert_eq!(art.metadata.version, bootstrap::BOOTSTRAP_VERSION);
}

#[test]
fn linear_weights_read_back_from_the_file() {
    let model = taskcast_contract::linear::LinearModel::pseudo_random(7, 0.5);
    let meta = bootstrap::linear_metadata("v", "linear", Default::default());
    let bytes = Artifact::write(model.graph(), &meta).unwrap();
    assert_eq!(
        taskcast_contract::linear::LinearModel::from_onnx(&bytes),
        Some(model)
    );
    assert_eq!(
        taskcast_contract::linear::LinearModel::from_onnx(b"not a model"),
        None
    );
}

#[test]
fn bootstrap_passes_the_first_contact_checks() {
    let failures =
        taskcast_contract::first_contact::check(|row| bootstrap::bootstrap_linear().predict(row));
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn first_contact_checks_refuse_weights_that_move_the_wrong_way() {
    // Right answers in a topic lower p there: what the original app's
    // learners complained of, in its plainest form.
    let mut model = bootstrap::bootstrap_linear();
    model.p_weights = [0.0; taskcast_contract::FEATURE_COUNT];
    let i = taskcast_contract::features::feature_index("topic_rate_logit").unwrap();
    model.p_weights[i] = -1.0;
    let failures = taskcast_contract::first_contact::check(|row| model.predict(row));
    assert!(
        failures.iter().any(|f| f.contains("answer 1 right")),
        "{failures:#?}"
    );
    assert!(failures.iter().any(|f| f.contains("answered 10/10")));

    // Fast answers predicted to take longer than slow ones.
    let mut model = bootstrap::bootstrap_linear();
    model.t_weights = model.t_weights.map(|w| -w);
    let failures = taskcast_contract::first_contact::check(|row| model.predict(row));
    assert!(
        failures.iter().any(|f| f.contains("median time")),
        "{failures:#?}"
    );
}

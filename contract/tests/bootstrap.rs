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

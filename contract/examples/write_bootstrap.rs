//! Regenerates `models/bootstrap.onnx` from the documented bootstrap weights:
//! `cargo run -p taskcast-contract --example write_bootstrap`.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/bootstrap.onnx");
    let bytes = taskcast_contract::bootstrap::bootstrap_model()?;
    std::fs::write(&path, &bytes)?;
    println!("wrote {} ({} bytes)", path.display(), bytes.len());
    Ok(())
}

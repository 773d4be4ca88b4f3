//! Shared helpers for the learning crate's tests: ONNX Runtime and simulated
//! learners. No database, no server: the crate knows neither.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use taskcast_sim::{SimConfig, Simulator};

/// Loads ONNX Runtime once (ORT_DYLIB_PATH comes from .cargo/config.toml).
pub fn init_ort() {
    let lib = taskcast_contract::runtime::library_path(None);
    taskcast_contract::runtime::init(&lib).expect("ONNX Runtime (run scripts/setup-ort.sh)");
}

/// A simulator small enough for debug-build tests but large enough that a
/// linear model beats the baselines on its hold-out.
pub fn simulator(learners: usize, attempts: usize, seed: u64) -> Simulator {
    Simulator::new(SimConfig {
        seed,
        learners,
        attempts_per_learner: attempts,
        ..Default::default()
    })
    .expect("simulator config")
}

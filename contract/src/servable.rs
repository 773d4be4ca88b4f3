//! Whether a loaded model is safe to serve: its outputs on probe rows are
//! finite probabilities and ordered quantiles, on every session. Replicas
//! run this before a model goes live, and the trainer runs the same check
//! before a version becomes active, so the registry never names as active a
//! model every replica would refuse.
//!
//! Probes: an empty-history learner on an unknown candidate (the cold
//! path), the artifact's own baseline row, a learner with a long perfect and
//! fast history, one with a long failing and slow one, and one with
//! unrecorded and absurd times; the histories come with and without
//! timestamps, the first back after a year away. Every row is one the feature code can really
//! produce: a model is judged on inputs it can meet, not on out-of-range
//! vectors where even a sound MLP may cross its quantiles.

use crate::FEATURE_COUNT;
use crate::features::{CandidateKey, Event, FeatureContext, FeatureRow, RowKeys, label_key};
use crate::runtime::{OnnxModel, RuntimeError};

/// Largest tolerated inversion between adjacent log-seconds quantiles (float
/// noise; a real crossing is a broken model).
pub const QUANTILE_TOLERANCE: f32 = 1e-3;

/// Why a model is not servable.
#[derive(Debug, thiserror::Error)]
pub enum ServableError {
    /// ONNX Runtime could not run the probes.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The probes ran, and an output is unusable.
    #[error("{0}")]
    Output(String),
}

/// Runs the probe rows through each of `model`'s `sessions` sessions (each
/// is a separately compiled graph) and checks every output.
pub fn check(model: &OnnxModel, sessions: usize) -> Result<(), ServableError> {
    let rows = probe_rows(model);
    let keys: Vec<RowKeys> = (0..rows.len())
        .map(|i| RowKeys {
            user: label_key("warmup"),
            topic: label_key(&format!("probe-{i}")),
            difficulty: 0,
            item: 0,
        })
        .collect();
    let x: Vec<f32> = rows.iter().flatten().copied().collect();
    // `run` tries sessions round-robin from a rotating start, so `sessions`
    // sequential runs touch every session once.
    for _ in 0..sessions.max(1) {
        let out = model.run(&x, &keys)?;
        for (i, o) in out.iter().enumerate() {
            let [q10, q50, q90] = o.log_seconds;
            if !o.p_correct.is_finite() || !(0.0..=1.0).contains(&o.p_correct) {
                return Err(ServableError::Output(format!(
                    "probe {i}: p_correct {} is not a probability",
                    o.p_correct
                )));
            }
            if q10 > q50 + QUANTILE_TOLERANCE || q50 > q90 + QUANTILE_TOLERANCE {
                return Err(ServableError::Output(format!(
                    "probe {i}: log_seconds quantiles out of order: {q10} {q50} {q90}"
                )));
            }
        }
    }
    Ok(())
}

/// Loads `bytes` in one session and checks it: what a replica would do with
/// them, short of serving. The error says why a replica would refuse.
pub fn check_bytes(bytes: &[u8]) -> Result<(), ServableError> {
    let model = OnnxModel::load(bytes, 1)?;
    check(&model, 1)
}

fn probe_rows(model: &OnnxModel) -> Vec<FeatureRow> {
    let t = &model.priors;
    let cand = CandidateKey::new("warmup-topic", "", "", t);
    let empty = FeatureContext::new(&[], t).row(&cand, t).row;
    let mut baseline = [0f32; FEATURE_COUNT];
    for (b, v) in baseline
        .iter_mut()
        .zip(&model.artifact.metadata.feature_baseline)
    {
        *b = *v;
    }
    let start = 1.7e9;
    let history = |correct: bool, seconds: f64, timed: bool| -> Vec<Event> {
        (0..256)
            .map(|i| {
                Event::resolve(
                    "warmup-topic",
                    "",
                    &format!("q{i}"),
                    correct,
                    Some(seconds),
                    t,
                )
                .at(timed.then_some(start + 30.0 * f64::from(i)))
            })
            .collect()
    };
    let good = history(true, 1.0, true);
    let bad = history(false, 1e6, false);
    let mixed: Vec<Event> = (0..64)
        .map(|i| {
            let secs = [None, Some(1e-300), Some(f64::MAX), Some(30.0)][i % 4];
            Event::resolve("warmup-topic", "hard", "q0", i % 3 == 0, secs, t)
        })
        .collect();
    let item = CandidateKey::new("warmup-topic", "hard", "q0", t);
    vec![
        empty,
        baseline,
        FeatureContext::new(&good, t)
            .at(Some(start + 4e7))
            .row(&cand, t)
            .row,
        FeatureContext::new(&bad, t).row(&cand, t).row,
        FeatureContext::new(&mixed, t).row(&item, t).row,
    ]
}

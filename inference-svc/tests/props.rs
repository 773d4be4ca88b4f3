//! Property test of the whole request path in-process (validation → features
//! → model), with arbitrary and hostile inputs: it never panics, and either
//! every prediction is finite and well-ordered or the error names a field.

use std::sync::{Arc, OnceLock};

use inference_svc::predict::{Limits, PredictError, PredictInput, predict};
use inference_svc::{Config, LoadedModel};
use proptest::prelude::*;
use taskcast_proto::{Attempt, Candidate};

fn model() -> Arc<LoadedModel> {
    static MODEL: OnceLock<Arc<LoadedModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/bootstrap.onnx");
            inference_svc::init_runtime(&Config::default_for_tests(path)).unwrap();
            let bytes = std::fs::read(path).unwrap();
            Arc::new(LoadedModel::load(&bytes, None, 2).unwrap())
        })
        .clone()
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-c]{1,2}",
        ".{0,12}",
        Just("\u{1F600}\u{202E}\u{0000}".to_string()),
    ]
}

fn seconds() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(1e-300),
        any::<f64>(),
        0.0..7200.0f64,
    ]
}

fn attempt() -> impl Strategy<Value = Attempt> {
    (label(), label(), any::<bool>(), seconds(), label()).prop_map(
        |(topic, difficulty, correct, seconds, item_id)| Attempt {
            topic,
            difficulty,
            correct,
            seconds,
            completed_at: None,
            item_id,
        },
    )
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (label(), label(), label(), label()).prop_map(|(task_id, topic, difficulty, item_id)| {
        Candidate {
            task_id,
            topic,
            difficulty,
            item_id,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn predict_never_panics_and_is_finite_or_names_a_field(
        user_id in label(),
        history in prop::collection::vec(attempt(), 0..50),
        candidates in prop::collection::vec(candidate(), 0..6),
        explain in any::<bool>(),
    ) {
        let model = model();
        let input = PredictInput { user_id: &user_id, history: &history, candidates: &candidates, explain, as_of: None };
        match predict(&model, &input, &Limits {
            max_history: 40,
            ..Limits::default()
        }) {
            Ok(preds) => {
                prop_assert_eq!(preds.len(), candidates.len());
                for (p, c) in preds.iter().zip(&candidates) {
                    prop_assert_eq!(&p.task_id, &c.task_id);
                    prop_assert!((0.0..=1.0).contains(&p.p_correct), "p {}", p.p_correct);
                    prop_assert!(p.seconds.is_finite() && p.seconds_low.is_finite() && p.seconds_high.is_finite());
                    prop_assert!(p.seconds_low <= p.seconds && p.seconds <= p.seconds_high);
                    prop_assert_eq!(p.reasons.is_empty(), !explain);
                    for r in &p.reasons {
                        prop_assert!(r.effect.is_finite() && r.seconds_effect.is_finite() && r.value.is_finite());
                    }
                }
            }
            Err(PredictError::InvalidArgument(m)) => {
                prop_assert!(
                    m.starts_with("user_id") || m.starts_with("candidates") || m.starts_with("history"),
                    "message names no field: {}", m
                );
            }
            Err(e) => prop_assert!(false, "unexpected error: {}", e),
        }
    }
}

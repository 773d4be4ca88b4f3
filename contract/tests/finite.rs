//! Every number an artifact's metadata carries is finite, or the file is not
//! written: JSON has no NaN, so serde_json would write `null` and every reader
//! would refuse the whole file with an error naming nothing (issue 13 saw
//! `invalid type: null, expected f64` on a 4-learner cut without item ids).

use taskcast_contract::bootstrap::linear_metadata;
use taskcast_contract::linear::LinearModel;
use taskcast_contract::{Artifact, ArtifactError, Priors, Stat};

fn graph() -> taskcast_contract::onnx::GraphBuilder {
    LinearModel::pseudo_random(1, 0.1).graph()
}

#[test]
fn finite_metadata_round_trips() {
    let mut meta = linear_metadata("v1", "linear", Priors::default());
    meta.metrics.insert("auc".into(), 0.7);
    meta.time_modeled = Some(false);
    let bytes = Artifact::write(graph(), &meta).expect("write");
    let back = Artifact::parse(&bytes).expect("parse").metadata;
    assert_eq!(back.metrics["auc"], 0.7);
    assert!(!back.time_modeled());
}

/// A field's path as the error names it, and how to break that field.
type Breakage = (
    &'static str,
    Box<dyn Fn(&mut taskcast_contract::ModelMetadata)>,
);

#[test]
fn each_non_finite_number_is_refused_by_name() {
    let cases: Vec<Breakage> = vec![
        (
            "metrics.ece",
            Box::new(|m| {
                m.metrics.insert("ece".into(), f64::NAN);
            }),
        ),
        (
            "feature_baseline.overall_count",
            Box::new(|m| m.feature_baseline[8] = f32::INFINITY),
        ),
        (
            "priors.topics[\"fractions\"].log_time_sum",
            Box::new(|m| {
                m.priors.topics.insert(
                    "fractions".into(),
                    Stat {
                        n: 3,
                        correct: 2,
                        n_timed: 1,
                        log_time_sum: f64::NAN,
                    },
                );
            }),
        ),
        (
            "priors.difficulty_cuts",
            Box::new(|m| m.priors.difficulty_cuts = Some([0.3, f64::NEG_INFINITY])),
        ),
    ];
    for (name, spoil) in cases {
        let mut meta = linear_metadata("v1", "linear", Priors::default());
        spoil(&mut meta);
        match Artifact::write(graph(), &meta) {
            Err(ArtifactError::NonFinite(what)) => {
                assert!(what.starts_with(name), "{name}: names {what}")
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
}

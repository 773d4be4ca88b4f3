//! No model artifact may hold a training learner's raw `user_id`: the file
//! goes to every inference replica (and into the registry, backups and
//! anything else that copies it). Every family is trained on simulated rows
//! whose user ids are distinctive strings and exported through the same
//! pipeline a training run uses; then the whole ONNX file — graph,
//! initialisers and metadata alike — is searched for each id.

mod support;

use std::collections::BTreeSet;

use taskcast_learn::dataset;
use taskcast_learn::families::mlp::MlpConfig;
use taskcast_learn::families::{Family, FitOptions};
use taskcast_learn::pipeline::{TrainSpec, fit_and_judge};
use taskcast_learn::source::MemorySource;

/// A user id no tensor name, number or other label could contain by chance.
fn probe_id(original: &str) -> String {
    format!("zq-privacy-probe-{original}")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_artifact_of_any_family_holds_a_training_user_id() {
    support::init_ort();
    // Every simulated learner has far more rows than any per-learner
    // parameter would need, so a family that kept one would keep it here.
    let mut rows = support::simulator(40, 50, 3).generate();
    for r in &mut rows {
        r.user_id = probe_id(&r.user_id);
    }
    let ids: BTreeSet<String> = rows.iter().map(|r| r.user_id.clone()).collect();
    let topic = rows[0].topic.clone();
    let mut source = MemorySource::new(rows);
    let ds = dataset::load(&mut source, None, None, &mut |_| {})
        .await
        .expect("dataset");
    assert_eq!(
        ds.users.labels.len() - 1,
        ids.len(),
        "every learner is read"
    );

    for family in Family::ALL {
        let spec = TrainSpec {
            family,
            fit: FitOptions {
                // The fit's quality is beside the point; its vocabularies are not.
                mlp: MlpConfig {
                    max_epochs: 1,
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        };
        let trained = fit_and_judge(&ds, &spec, None, &mut |_, _| {}).expect("train and export");
        // The search sees labels where the file stores them: a training
        // topic is in every artifact's priors.
        assert!(
            contains(&trained.onnx, topic.as_bytes()),
            "{family}: the scan does not see the metadata"
        );
        let leaked: Vec<&String> = ids
            .iter()
            .filter(|id| contains(&trained.onnx, id.as_bytes()))
            .collect();
        assert!(
            leaked.is_empty(),
            "{family}: the artifact holds {} of the {} training user ids, e.g. {:?}",
            leaked.len(),
            ids.len(),
            leaked.first()
        );
    }
}

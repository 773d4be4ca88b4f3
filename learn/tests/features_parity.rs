//! The binding property between training and serving: the trainer's feature
//! row for an attempt is, bit for bit, the row inference-svc computes for the
//! same candidate given the same earlier history.
//!
//! Hold-out rows use the serving priors shipped in the artifact, so they are
//! recomputed exactly as inference-svc does (`predict.rs`): resolve each
//! earlier attempt (seconds `> 0` or not recorded), cut to the window, build
//! the context, resolve the candidate. Training rows use out-of-fold priors
//! (`PriorSet::folds`), recomputed the same way with the learner's fold table.
//! The training rows `dataset::hides_items` picks are featurised as a request
//! without item ids would be, so they are recomputed from the attempts with
//! their items removed.

use proptest::prelude::*;
use taskcast_contract::TaskRow;
use taskcast_contract::features::{label_key, unix_seconds, window};
use taskcast_contract::{CandidateKey, Event, FeatureContext, PriorTable, RowKeys};
use taskcast_learn::dataset::{self, PriorSet};
use taskcast_learn::source::MemorySource;

const LEARNERS: [&str; 5] = ["a", "b", "ü-learner", "学生", "learner with space"];
const TOPICS: [&str; 6] = ["", "fractions", "Fractions", "ß", "🙂", "algebra"];
const DIFFICULTIES: [&str; 4] = ["", "easy", "hard", "très dur"];

fn seconds() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(0.0)),
        1 => Just(Some(1e-300)),
        1 => Just(Some(1e12)),
        1 => Just(Some(f64::MAX)),
        6 => (0.1f64..5000.0).prop_map(Some),
        1 => Just(Some(-1.0)),
        1 => Just(Some(f64::NAN)),
        1 => Just(Some(f64::INFINITY)),
    ]
}

fn item() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(String::new())),
        6 => (0..15u8).prop_map(|k| Some(format!("i{k}"))),
        1 => Just(Some("ядро".to_string())),
        1 => Just(Some("🙂".to_string())),
    ]
}

fn row() -> impl Strategy<Value = TaskRow> {
    (
        0..LEARNERS.len(),
        item(),
        0..TOPICS.len(),
        0..DIFFICULTIES.len(),
        any::<bool>(),
        seconds(),
        0..60_000i64,
        prop::option::of(0..5_000i64),
    )
        .prop_map(|(u, item_id, t, d, correct, seconds, ts, before)| TaskRow {
            user_id: LEARNERS[u].to_string(),
            item_id,
            topic: TOPICS[t].to_string(),
            difficulty: DIFFICULTIES[d].to_string(),
            correct,
            seconds,
            completed_at_ms: ts * 1_000_003,
            started_at_ms: before.map(|b| ts * 1_000_003 - b * 7),
        })
}

/// A stored millisecond time as the API carries it: a protobuf `Timestamp`,
/// converted as inference-svc converts one.
fn api_time(ms: i64) -> f64 {
    unix_seconds(
        ms.div_euclid(1000),
        (ms.rem_euclid(1000) * 1_000_000) as u32,
    )
}

/// One earlier attempt as inference-svc resolves it: the API carries seconds
/// as a number, 0 when not recorded, and only positive values count; its
/// `completed_at` as a `Timestamp`.
fn inference_event(r: &TaskRow, table: &PriorTable) -> Event {
    let s = r.seconds.unwrap_or(0.0);
    let seconds = (s > 0.0).then_some(s);
    Event::resolve(
        &r.topic,
        &r.difficulty,
        r.item_id.as_deref().unwrap_or(""),
        r.correct,
        seconds,
        table,
    )
    .at(Some(api_time(r.completed_at_ms)))
}

/// The row and keys inference-svc would compute for `rows[i]` after
/// `rows[..i]`, for a model that reads the clock (`as_of` = the row's start
/// time) or not.
fn inference_row(
    rows: &[&TaskRow],
    i: usize,
    table: &PriorTable,
    w: u32,
    clock: bool,
) -> (Vec<f32>, RowKeys) {
    let events: Vec<Event> = rows[..i]
        .iter()
        .map(|r| inference_event(r, table))
        .collect();
    let r = rows[i];
    let as_of = r.started_at_ms.filter(|_| clock).map(api_time);
    let ctx = FeatureContext::new(window(&events, w), table).at(as_of);
    let cand = CandidateKey::new(
        &r.topic,
        &r.difficulty,
        r.item_id.as_deref().unwrap_or(""),
        table,
    );
    let f = ctx.row(&cand, table);
    (f.row.to_vec(), RowKeys::new(label_key(&r.user_id), &cand))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn check(rows: Vec<TaskRow>, w: u32) -> Result<(), TestCaseError> {
    let mut src = MemorySource::new(rows);
    let ds = futures::executor::block_on(dataset::load(&mut src, Some(w), None, &mut |_| {}))
        .expect("dataset");
    let census = futures::executor::block_on(dataset::census(&mut src)).expect("census");
    let priors = PriorSet::new(&census);
    prop_assert_eq!(&priors.serving, &ds.priors);
    let serving = PriorTable::new(&ds.priors);
    let folds: Vec<PriorTable> = priors.folds.iter().map(PriorTable::new).collect();

    let (mut ti, mut hi) = (0usize, 0usize);
    for group in src.task_rows().chunk_by(|a, b| a.user_id == b.user_id) {
        let usable: Vec<&TaskRow> = group.iter().filter(|r| r.problem().is_none()).collect();
        if usable.is_empty() {
            continue;
        }
        let split = usable.len() - dataset::holdout_len(usable.len());
        let fold = &folds[dataset::fold_of(&usable[0].user_id)];
        let has_items = usable
            .iter()
            .any(|r| r.item_id.as_deref().is_some_and(|s| !s.is_empty()));
        let itemless_rows: Vec<TaskRow> = usable
            .iter()
            .map(|r| TaskRow {
                item_id: None,
                ..(*r).clone()
            })
            .collect();
        let itemless: Vec<&TaskRow> = itemless_rows.iter().collect();
        let user_key = label_key(&usable[0].user_id);
        for i in 0..usable.len() {
            if i < split {
                let hidden = has_items && dataset::hides_items(user_key, i);
                let view = if hidden { &itemless } else { &usable };
                let (want, keys) = inference_row(view, i, fold, w, ds.clock);
                prop_assert!(ti < ds.train.len());
                prop_assert_eq!(bits(ds.train.row(ti)), bits(&want), "training row {}", ti);
                prop_assert_eq!(ds.train.key(ti), keys);
                ti += 1;
            } else {
                let (want, keys) = inference_row(&usable, i, &serving, w, ds.clock);
                prop_assert!(hi < ds.holdout.len());
                prop_assert_eq!(
                    bits(ds.holdout.row(hi)),
                    bits(&want),
                    "hold-out row {} of learner {:?}",
                    hi,
                    &usable[0].user_id
                );
                prop_assert_eq!(ds.holdout.key(hi), keys);
                hi += 1;
            }
        }
    }
    prop_assert_eq!(ti, ds.train.len());
    prop_assert_eq!(hi, ds.holdout.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn trainer_rows_equal_inference_rows(
        rows in prop::collection::vec(row(), 0..150),
        w in prop_oneof![Just(1u32), Just(3), Just(256)],
    ) {
        check(rows, w)?;
    }
}

/// A fixed case large enough for derived difficulty classes (≥ 9 unlabelled
/// items) and long learners, so the property is known to cover them.
#[test]
fn simulated_history_parity() {
    let mut sim = taskcast_sim::Simulator::new(taskcast_sim::SimConfig {
        seed: 5,
        learners: 30,
        attempts_per_learner: 40,
        missing_seconds_prob: 0.2,
        ..Default::default()
    })
    .unwrap();
    let mut rows = sim.generate();
    // Half the rows without the app's difficulty label.
    for (i, r) in rows.iter_mut().enumerate() {
        if i % 2 == 0 {
            r.difficulty.clear();
        }
    }
    let mut src = MemorySource::new(rows.clone());
    let ds = futures::executor::block_on(dataset::load(&mut src, None, None, &mut |_| {})).unwrap();
    assert!(
        ds.priors.difficulty_cuts.is_some(),
        "derived classes engaged"
    );
    assert!(ds.holdout.len() > 100);
    check(rows, taskcast_contract::features::DEFAULT_HISTORY_WINDOW).unwrap();
}

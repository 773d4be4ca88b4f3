//! No row sees its own attempt: changing an attempt's own outcome, seconds
//! or recorded time leaves its own feature row bit for bit as it was (it
//! may change the rows after it, which is the point of a history). And an
//! export whose timestamps encode each attempt's outcome, as completion
//! times do (a wrong answer takes longer, so it finishes later), is judged
//! as well as the plain data, not better: the model cannot use the
//! timestamp of the attempt it predicts.

use proptest::prelude::*;
use taskcast_contract::TaskRow;
use taskcast_learn::dataset::{self, Dataset};
use taskcast_learn::families::{Family, FitOptions, Fitted};
use taskcast_learn::judge::evaluate;
use taskcast_learn::source::MemorySource;
use taskcast_sim::{SimConfig, Simulator};

fn simulated(seed: u64, learners: usize, attempts: usize) -> Vec<TaskRow> {
    let mut sim = Simulator::new(SimConfig {
        seed,
        learners,
        attempts_per_learner: attempts,
        missing_seconds_prob: 0.1,
        ..Default::default()
    })
    .expect("simulator");
    sim.generate()
}

fn load(rows: Vec<TaskRow>) -> (Dataset, Vec<TaskRow>) {
    let mut src = MemorySource::new(rows);
    let ds = futures::executor::block_on(dataset::load(&mut src, None, None, &mut |_| {}))
        .expect("dataset");
    (ds, src.task_rows())
}

/// The feature row of `rows[k]` (grouped as the source groups them), found
/// by its learner and position on its side of the split.
fn row_of(ds: &Dataset, rows: &[TaskRow], k: usize) -> Vec<u32> {
    let user = &rows[k].user_id;
    let first = rows
        .iter()
        .position(|r| &r.user_id == user)
        .expect("learner");
    let n = rows.iter().filter(|r| &r.user_id == user).count();
    let i = k - first;
    let split = n - dataset::holdout_len(n);
    let uid = ds.users.labels.iter().position(|l| l == user).expect("id") as u32;
    let (side, pos) = if i < split {
        (&ds.train, i)
    } else {
        (&ds.holdout, i - split)
    };
    let at = (0..side.len())
        .filter(|&j| side.user[j] == uid)
        .nth(pos)
        .expect("row");
    side.row(at).iter().map(|v| v.to_bits()).collect()
}

/// What may be changed about an attempt without moving it in its learner's
/// order.
#[derive(Clone, Copy, Debug)]
enum Change {
    Outcome,
    Seconds(f64),
    /// A share of the way from the previous attempt's time to the next's.
    Time(f64),
    StartedAt(i64),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        Just(Change::Outcome),
        (0.0f64..5000.0).prop_map(Change::Seconds),
        (0.0f64..=1.0).prop_map(Change::Time),
        (0i64..600_000).prop_map(Change::StartedAt),
    ]
}

fn apply(rows: &mut [TaskRow], k: usize, c: Change) {
    match c {
        Change::Outcome => rows[k].correct = !rows[k].correct,
        Change::Seconds(s) => rows[k].seconds = Some(s),
        Change::Time(share) => {
            let same = |j: usize| rows[j].user_id == rows[k].user_id;
            let lo = if k > 0 && same(k - 1) {
                rows[k - 1].completed_at_ms
            } else {
                rows[k].completed_at_ms - 86_400_000
            };
            let hi = if k + 1 < rows.len() && same(k + 1) {
                rows[k + 1].completed_at_ms
            } else {
                rows[k].completed_at_ms + 86_400_000
            };
            rows[k].completed_at_ms = lo + ((hi - lo) as f64 * share) as i64;
        }
        // A start time is known before the attempt, so it may reach the
        // row; the outcome must not reach it through the start time's
        // neighbour, the completion time, which this leaves alone.
        Change::StartedAt(before) => rows[k].started_at_ms = Some(rows[k].completed_at_ms - before),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Row k's features do not move when its own outcome, seconds or
    /// completion time do.
    #[test]
    fn a_row_never_sees_its_own_attempt(
        seed in 0u64..1000,
        pick in any::<prop::sample::Index>(),
        c in change().prop_filter("start times change the row by design", |c| !matches!(c, Change::StartedAt(_))),
    ) {
        let (before, rows) = load(simulated(seed, 6, 25));
        let k = pick.index(rows.len());
        let mut changed = rows.clone();
        apply(&mut changed, k, c);
        let (after, changed) = load(changed);
        prop_assert_eq!(&changed[k].user_id, &rows[k].user_id);
        prop_assert_eq!(row_of(&before, &rows, k), row_of(&after, &changed, k), "{:?} of row {}", c, k);
    }
}

/// Every attempt's own outcome written into its completion time (wrong
/// answers finish ten minutes later, and everything after them moves too):
/// the model must not score better on it than on the plain data.
#[test]
fn timestamps_that_encode_the_outcome_do_not_help() {
    let plain = simulated(7, 60, 80);
    let mut encoded = plain.clone();
    let mut shift = 0i64;
    for (i, r) in encoded.iter_mut().enumerate() {
        if i > 0 && plain[i - 1].user_id != r.user_id {
            shift = 0;
        }
        if !r.correct {
            shift += 600_000;
        }
        r.completed_at_ms += shift;
    }
    let auc = |rows: Vec<TaskRow>| {
        let (ds, _) = load(rows);
        let fitted = Fitted::fit(Family::Linear, &ds, &FitOptions::default()).expect("fit");
        let scored = evaluate::score(&ds.holdout, &fitted.predict(&ds.holdout), false);
        scored.metrics.auc.expect("auc")
    };
    let (a, b) = (auc(plain), auc(encoded));
    assert!(
        (a - b).abs() < 0.02,
        "plain AUC {a:.4}, outcome in the timestamps {b:.4}"
    );
}

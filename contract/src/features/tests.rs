//! The feature formulas' unit tests.

use super::*;
use crate::priors::{DEFAULT_LOG_TIME, DEFAULT_RATE, Priors, Stat};

fn idx(name: &str) -> usize {
    FEATURE_NAMES.iter().position(|n| *n == name).unwrap()
}

fn close(a: f32, b: f64) {
    assert!((f64::from(a) - b).abs() < 1e-5, "{a} vs {b}");
}

fn empty_table() -> PriorTable {
    PriorTable::new(&Priors::default())
}

#[test]
fn default_log_time_is_a_minute() {
    assert!((DEFAULT_LOG_TIME - 60f64.ln()).abs() < 1e-12);
}

#[test]
fn empty_history_gives_priors() {
    let t = empty_table();
    let ctx = FeatureContext::new(&[], &t);
    let f = ctx.row(&CandidateKey::new("algebra", "", "", &t), &t);
    assert!(f.cold_start);
    let l = logit(DEFAULT_RATE);
    for name in [
        "prior_item_logit",
        "prior_topic_logit",
        "prior_difficulty_logit",
        "overall_rate_logit",
        "topic_rate_logit",
        "difficulty_rate_logit",
        "recent_rate_logit",
    ] {
        close(f.row[idx(name)], l);
    }
    for name in [
        "prior_item_log_time",
        "overall_log_time",
        "topic_log_time",
        "recent_log_time",
    ] {
        close(f.row[idx(name)], DEFAULT_LOG_TIME);
    }
    for name in [
        "overall_count",
        "ability",
        "speed",
        "item_count",
        "item_last_correct",
    ] {
        close(f.row[idx(name)], 0.0);
    }
}

/// Three attempts, hand-computed with population rate 0.6 and ln 60 priors.
#[test]
fn hand_computed_history() {
    let t = empty_table();
    let h = [
        Event::resolve("algebra", "easy", "q1", true, Some(10.0), &t),
        Event::resolve("algebra", "hard", "q2", false, Some(100.0), &t),
        Event::resolve("geometry", "easy", "q3", true, None, &t),
    ];
    let ctx = FeatureContext::new(&h, &t);
    let f = ctx.row(&CandidateKey::new("algebra", "easy", "q2", &t), &t);
    assert!(!f.cold_start);
    let (k, p, m) = (4.0, 0.6, 60f64.ln());
    // overall: 2 of 3 correct, times ln10 + ln100 over 2 timed
    let r = (2.0 + k * p) / (3.0 + k);
    close(f.row[idx("overall_rate_logit")], logit(r));
    let mm = (10f64.ln() + 100f64.ln() + k * m) / (2.0 + k);
    close(f.row[idx("overall_log_time")], mm);
    close(f.row[idx("overall_count")], 4f64.ln());
    // topic algebra: 1 of 2
    close(
        f.row[idx("topic_rate_logit")],
        logit((1.0 + k * p) / (2.0 + k)),
    );
    close(f.row[idx("topic_count")], 3f64.ln());
    // difficulty easy: attempts 1 and 3, both right, one timed
    close(
        f.row[idx("difficulty_rate_logit")],
        logit((2.0 + k * p) / (2.0 + k)),
    );
    close(
        f.row[idx("difficulty_log_time")],
        (10f64.ln() + k * m) / (1.0 + k),
    );
    // recent = all three (fewer than 5), shrunk toward overall
    close(
        f.row[idx("recent_rate_logit")],
        logit((2.0 + k * r) / (3.0 + k)),
    );
    close(
        f.row[idx("recent_log_time")],
        (10f64.ln() + 100f64.ln() + k * mm) / (2.0 + k),
    );
    // ability: (1-0.6) + (0-0.6) + (1-0.6) over 3+4
    close(f.row[idx("ability")], 0.2 / 7.0);
    close(f.row[idx("topic_ability")], -0.2 / 6.0);
    // speed: (ln10 - m) + (ln100 - m) over 2+4
    close(
        f.row[idx("speed")],
        (10f64.ln() + 100f64.ln() - 2.0 * m) / 6.0,
    );
    // item q2 was attempted once, wrong
    close(f.row[idx("item_count")], 2f64.ln());
    close(f.row[idx("item_last_correct")], -1.0);
}

#[test]
fn window_keeps_most_recent() {
    let t = empty_table();
    let h: Vec<Event> = (0..10)
        .map(|i| Event::resolve("a", "", "", i >= 7, Some(5.0), &t))
        .collect();
    assert_eq!(window(&h, 3).len(), 3);
    assert!(window(&h, 3).iter().all(|e| e.correct));
    assert_eq!(window(&h, 256).len(), 10);
    assert_eq!(window(&h, 0).len(), 0);
}

#[test]
fn priors_reach_features() {
    let mut p = Priors::default();
    let mut s = Stat::default();
    for i in 0..100 {
        s.add(i < 90, Some(30.0));
    }
    p.population = s;
    let mut hard = Stat::default();
    for i in 0..40 {
        hard.add(i < 4, Some(200.0));
    }
    p.items.insert("tough".into(), hard);
    p.item_topics.insert("tough".into(), "t".into());
    let t = PriorTable::new(&p);
    let ctx = FeatureContext::new(&[], &t);
    let easy = ctx.row(&CandidateKey::new("t", "", "other", &t), &t);
    let tough = ctx.row(&CandidateKey::new("t", "", "tough", &t), &t);
    assert!(tough.row[idx("prior_item_logit")] < easy.row[idx("prior_item_logit")]);
    assert!(tough.row[idx("prior_item_log_time")] > easy.row[idx("prior_item_log_time")]);
}

proptest::proptest! {
    /// The indexed context gives exactly the scanned rows, bit for bit.
    #[test]
    fn indexed_rows_equal_scanned_rows(
        history in proptest::collection::vec(
            (0..4usize, 0..3usize, 0..6usize, proptest::bool::ANY, 0..4usize, 0..4usize),
            0..80,
        ),
        cands in proptest::collection::vec((0..4usize, 0..3usize, 0..6usize), 1..8),
        now in proptest::option::of(0.0..1e7f64),
    ) {
        let t = empty_table();
        let topics = ["", "a", "b", "c"];
        let diffs = ["", "easy", "hard"];
        let items = ["", "i1", "i2", "i3", "i4", "i5"];
        let secs = [None, Some(0.5), Some(30.0), Some(5000.0)];
        let h: Vec<Event> = history
            .iter()
            .enumerate()
            .map(|(j, &(tp, d, i, c, s, gap))| {
                let at = [None, Some(0.0), Some(90.0), Some(86_400.0 * 3.0)][gap]
                    .map(|g| g + j as f64 * 10.0);
                Event::resolve(topics[tp], diffs[d], items[i], c, secs[s], &t).at(at)
            })
            .collect();
        let plain = FeatureContext::new(&h, &t).at(now);
        let indexed = FeatureContext::indexed(&h, &t).at(now);
        for (tp, d, i) in cands {
            let key = CandidateKey::new(topics[tp], diffs[d], items[i], &t);
            let (a, b) = (plain.row(&key, &t), indexed.row(&key, &t));
            proptest::prop_assert_eq!(a.cold_start, b.cold_start);
            for (x, y) in a.row.iter().zip(&b.row) {
                proptest::prop_assert_eq!(x.to_bits(), y.to_bits());
            }
        }
    }
}

#[test]
fn every_row_is_finite_for_extreme_inputs() {
    let t = empty_table();
    let h: Vec<Event> = (0..300)
        .map(|i| {
            let secs = [Some(f64::MAX), Some(1e-300), None, Some(f64::INFINITY)][i % 4];
            let at = [Some(f64::MAX), Some(-1e300), None, Some(f64::NAN)][i % 4];
            Event::resolve("\u{1F600}", "", &i.to_string(), i % 2 == 0, secs, &t).at(at)
        })
        .collect();
    let ctx = FeatureContext::new(window(&h, 256), &t).at(Some(f64::MIN));
    let f = ctx.row(&CandidateKey::new("", "", "", &t), &t);
    assert!(f.row.iter().all(|v| v.is_finite()));
}

/// The v2 columns over three timed attempts, hand-computed.
#[test]
fn hand_computed_time_features() {
    let t = empty_table();
    let day = 86_400.0;
    let h = [
        Event::resolve("algebra", "", "q1", true, Some(10.0), &t).at(Some(0.0)),
        Event::resolve("geometry", "", "q2", false, Some(10.0), &t).at(Some(day)),
        Event::resolve("geometry", "", "q3", true, Some(10.0), &t).at(Some(2.0 * day)),
    ];
    let ctx = FeatureContext::new(&h, &t).at(Some(2.0 * day + 600.0));
    let f = ctx.row(&CandidateKey::new("algebra", "", "q1", &t), &t).row;
    let (k, p) = (4.0, 0.6);
    let d = 0.5f64.powf(0.2);
    let r = (2.0 + k * p) / (3.0 + k);
    // per attempt: weights d², d, 1 on right, wrong, right
    close(
        f[idx("decayed_rate_logit")],
        logit((d * d + 1.0 + k * r) / (d * d + d + 1.0 + k)),
    );
    close(
        f[idx("decayed_ability")],
        (0.4 * d * d - 0.6 * d + 0.4) / (d * d + d + 1.0 + k),
    );
    // topic algebra: its one attempt, toward the topic rate
    let topic_rate = (1.0 + k * p) / (1.0 + k);
    close(
        f[idx("topic_decayed_rate_logit")],
        logit((1.0 + k * topic_rate) / (1.0 + k)),
    );
    // per day, from the anchor (the last attempt): ¼, ½, 1
    close(
        f[idx("day_decayed_rate_logit")],
        logit((0.25 + 1.0 + k * r) / (1.75 + k)),
    );
    let g = |s: f64| (1.0 + s / 60.0).ln();
    close(f[idx("topic_gap_log")], g(2.0 * day));
    close(f[idx("item_gap_log")], g(2.0 * day));
    close(f[idx("idle_log")], g(600.0));
    close(f[idx("times_known")], 1.0);
    close(f[idx("clock_known")], 1.0);
    // a topic never attempted reads as a year away
    let new = ctx.row(&CandidateKey::new("calculus", "", "", &t), &t).row;
    close(new[idx("topic_gap_log")], g(GAP_CAP_SECONDS));
}

/// Without timestamps the time columns say "unknown" and nothing else
/// changes: the v1 columns are those of the same history with times.
#[test]
fn unknown_times_degrade_to_indicators() {
    let t = empty_table();
    let plain: Vec<Event> = (0..6)
        .map(|i| Event::resolve("a", "", "q", i % 2 == 0, Some(20.0), &t))
        .collect();
    let timed: Vec<Event> = plain
        .iter()
        .enumerate()
        .map(|(i, e)| e.at(Some(1000.0 * i as f64)))
        .collect();
    let cand = CandidateKey::new("a", "", "q", &t);
    let a = FeatureContext::new(&plain, &t).row(&cand, &t).row;
    let b = FeatureContext::new(&timed, &t).row(&cand, &t).row;
    assert_eq!(a[..Schema::V1.width()], b[..Schema::V1.width()]);
    for name in [
        "topic_gap_log",
        "item_gap_log",
        "idle_log",
        "times_known",
        "clock_known",
    ] {
        close(a[idx(name)], 0.0);
    }
    close(
        a[idx("day_decayed_rate_logit")],
        f64::from(a[idx("overall_rate_logit")]),
    );
    close(b[idx("times_known")], 1.0);
}

#[test]
fn schemas_are_prefixes_of_the_current_one() {
    assert_eq!(Schema::CURRENT.id(), FEATURE_SCHEMA);
    assert_eq!(Schema::CURRENT.width(), FEATURE_COUNT);
    assert_eq!(Schema::V1.names(), &FEATURE_NAMES[..24]);
    for s in Schema::ALL {
        assert_eq!(Schema::from_id(s.id()), Some(s));
    }
    assert_eq!(Schema::from_id("taskcast.features/v0"), None);
}

#[test]
fn attempt_decay_is_the_half_life() {
    assert_eq!(ATTEMPT_DECAY, 0.5f64.powf(1.0 / HALF_LIFE_ATTEMPTS));
}

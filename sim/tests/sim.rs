//! Simulator determinism, plausibility and CSV output.

use std::collections::HashMap;

use taskcast_contract::TaskRow;
use taskcast_sim::{SimConfig, SimError, Simulator, format_ts, write_csv};

fn small() -> SimConfig {
    SimConfig {
        learners: 30,
        attempts_per_learner: 40,
        ..Default::default()
    }
}

fn generate(config: SimConfig) -> Vec<TaskRow> {
    Simulator::new(config).unwrap().generate()
}

fn rate(counts: (u32, u32)) -> f64 {
    f64::from(counts.0) / f64::from(counts.1)
}

#[test]
fn same_seed_same_rows_other_seed_other_rows() {
    let a = generate(small());
    let b = generate(small());
    assert!(!a.is_empty());
    assert_eq!(a, b);
    let c = generate(SimConfig { seed: 7, ..small() });
    assert_ne!(a, c);
}

#[test]
fn iterator_matches_vec_and_generate_is_consumed() {
    let mut sim = Simulator::new(small()).unwrap();
    let lazy: Vec<TaskRow> = sim.history().collect();
    assert_eq!(lazy, generate(small()));
    assert!(
        sim.generate().is_empty(),
        "the initial history is produced once"
    );
}

#[test]
fn a_learner_does_not_depend_on_how_many_others_there_are() {
    let few = generate(SimConfig {
        learners: 3,
        ..small()
    });
    let many = generate(small());
    let first = |rows: &[TaskRow]| -> Vec<TaskRow> {
        rows.iter()
            .filter(|r| r.user_id == "learner-0002")
            .cloned()
            .collect()
    };
    assert_eq!(first(&few), first(&many));
}

#[test]
fn ids_and_shapes() {
    let rows = generate(small());
    let first = &rows[0];
    assert_eq!(first.user_id, "learner-0001");
    assert!(rows.iter().any(|r| r.user_id == "learner-0030"));
    for r in &rows {
        assert!(r.problem().is_none(), "{r:?}");
        let item = r.item_id.as_deref().unwrap();
        let (topic, number) = item.rsplit_once('-').unwrap();
        assert_eq!(topic, r.topic);
        assert_eq!(number.len(), 3);
        assert!(["easy", "medium", "hard"].contains(&r.difficulty.as_str()));
        let s = r.seconds.unwrap();
        assert!(s.is_finite() && (1.0..=3600.0).contains(&s), "{s}");
    }
    assert!(rows.iter().any(|r| r.topic == "fractions"));
}

#[test]
fn grouped_by_learner_and_chronological() {
    let rows = generate(small());
    let mut seen_users: Vec<&str> = Vec::new();
    for w in rows.windows(2) {
        if w[0].user_id == w[1].user_id {
            assert!(
                w[1].completed_at_ms > w[0].completed_at_ms,
                "{:?} then {:?}",
                w[0],
                w[1]
            );
        }
    }
    for r in &rows {
        if seen_users.last() != Some(&r.user_id.as_str()) {
            assert!(
                !seen_users.contains(&r.user_id.as_str()),
                "{} is split",
                r.user_id
            );
            seen_users.push(&r.user_id);
        }
    }
    assert_eq!(seen_users.len(), 30);

    // Gaps: tens of seconds inside sessions, hours to days between them.
    let gaps: Vec<i64> = rows
        .windows(2)
        .filter(|w| w[0].user_id == w[1].user_id)
        .map(|w| w[1].completed_at_ms - w[0].completed_at_ms)
        .collect();
    let short = gaps.iter().filter(|&&g| g < 5 * 60_000).count();
    let long = gaps.iter().filter(|&&g| g > 3_600_000).count();
    assert!(short > gaps.len() / 2, "most gaps are within a session");
    assert!(
        long > gaps.len() / 20,
        "sessions are separated by hours or days"
    );
    assert!(gaps.iter().any(|&g| g > 86_400_000));
}

#[test]
fn attempts_vary_per_learner_around_the_mean() {
    let rows = generate(SimConfig {
        learners: 200,
        attempts_per_learner: 50,
        ..Default::default()
    });
    let mut per: HashMap<&str, usize> = HashMap::new();
    for r in &rows {
        *per.entry(&r.user_id).or_default() += 1;
    }
    let mean = rows.len() as f64 / per.len() as f64;
    assert!((40.0..60.0).contains(&mean), "mean attempts {mean}");
    let min = per.values().min().unwrap();
    let max = per.values().max().unwrap();
    assert!(max > &(2 * min), "lengths vary: {min}..{max}");
}

#[test]
fn plausible_rates_learning_and_difficulty() {
    let rows = generate(SimConfig::default());
    let overall = rows.iter().filter(|r| r.correct).count() as f64 / rows.len() as f64;
    assert!(
        (0.5..0.85).contains(&overall),
        "overall correct rate {overall}"
    );

    // Practice: attempt index within a learner-topic, early (first 3) vs later (6th on).
    let mut k: HashMap<(&str, &str), u32> = HashMap::new();
    let (mut early, mut late) = ((0, 0), (0, 0));
    for r in &rows {
        let n = k.entry((&r.user_id, &r.topic)).or_default();
        let bucket = match *n {
            0..=2 => Some(&mut early),
            5.. => Some(&mut late),
            _ => None,
        };
        if let Some(b) = bucket {
            b.0 += u32::from(r.correct);
            b.1 += 1;
        }
        *n += 1;
    }
    assert!(
        rate(late) > rate(early) + 0.05,
        "practice should help: early {} late {}",
        rate(early),
        rate(late)
    );

    // Difficulty label: harder → less often correct and slower.
    let mut by_label: HashMap<&str, (u32, u32, Vec<f64>)> = HashMap::new();
    for r in &rows {
        let e = by_label.entry(&r.difficulty).or_default();
        e.0 += u32::from(r.correct);
        e.1 += 1;
        e.2.push(r.seconds.unwrap().ln());
    }
    let stats = |l: &str| {
        let (c, n, logs) = &by_label[l];
        (
            f64::from(*c) / f64::from(*n),
            logs.iter().sum::<f64>() / logs.len() as f64,
        )
    };
    let (easy, medium, hard) = (stats("easy"), stats("medium"), stats("hard"));
    assert!(
        easy.0 > medium.0 && medium.0 > hard.0,
        "{easy:?} {medium:?} {hard:?}"
    );
    assert!(
        easy.1 < medium.1 && medium.1 < hard.1,
        "{easy:?} {medium:?} {hard:?}"
    );
    // Typical task around half a minute.
    let median_log = medium.1.exp();
    assert!((10.0..90.0).contains(&median_log), "{median_log}");
}

#[test]
fn wrong_answers_take_longer() {
    let rows = generate(SimConfig::default());
    let mean_log = |c: bool| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.correct == c)
            .map(|r| r.seconds.unwrap().ln())
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!(mean_log(false) > mean_log(true));
}

#[test]
fn some_items_are_retried() {
    let rows = generate(small());
    let mut seen = std::collections::HashSet::new();
    let repeats = rows
        .iter()
        .filter(|r| !seen.insert((&r.user_id, &r.item_id)))
        .count();
    assert!(repeats > 0);
}

#[test]
fn next_attempts_continue_the_learner() {
    let mut sim = Simulator::new(small()).unwrap();
    let history = sim.generate();
    let last = history
        .iter()
        .rfind(|r| r.user_id == "learner-0005")
        .unwrap()
        .clone();
    let more = sim.next_attempts("learner-0005", 25).unwrap();
    assert_eq!(more.len(), 25);
    assert!(more.iter().all(|r| r.user_id == "learner-0005"));
    assert!(more[0].completed_at_ms > last.completed_at_ms);
    assert!(
        more.windows(2)
            .all(|w| w[1].completed_at_ms > w[0].completed_at_ms)
    );
    // Still deterministic when replayed from the same seed.
    let mut again = Simulator::new(small()).unwrap();
    again.generate();
    assert_eq!(again.next_attempts("learner-0005", 25).unwrap(), more);
    // Other learners are unaffected by one learner continuing.
    let other_a = sim.next_attempts("learner-0006", 5).unwrap();
    let other_b = again.next_attempts("learner-0006", 5).unwrap();
    assert_eq!(other_a, other_b);

    assert!(sim.next_attempts("nobody", 3).is_none());
    assert_eq!(sim.next_attempts("learner-0005", 0).unwrap(), vec![]);
}

#[test]
fn practice_raises_true_p_correct_and_new_learners_start_cold() {
    let mut sim = Simulator::new(small()).unwrap();
    let id = sim.add_learner();
    assert_eq!(id, "learner-0031");
    assert!(
        sim.generate().iter().all(|r| r.user_id != id),
        "a new learner has no history"
    );
    let first = sim.next_attempts(&id, 1).unwrap().remove(0);
    let item = first.item_id.clone().unwrap();
    let before = sim.p_correct(&id, &item).unwrap();
    let more = sim.next_attempts(&id, 30).unwrap();
    let practiced = more.iter().filter(|r| r.topic == first.topic).count();
    let after = sim.p_correct(&id, &item).unwrap();
    if practiced > 0 {
        assert!(
            after > before,
            "{before} -> {after} after {practiced} attempts"
        );
    }
    assert!(sim.median_seconds(&id, &item).unwrap() > 0.0);
    assert!(sim.p_correct(&id, "no-such-item").is_none());
    assert_eq!(sim.item(&item).unwrap().topic, first.topic);
    assert_eq!(sim.learners().len(), 31);
}

#[test]
fn labels_split_items_in_thirds() {
    let sim = Simulator::new(SimConfig::default()).unwrap();
    let n = sim.items().len();
    for label in ["easy", "medium", "hard"] {
        let c = sim.items().iter().filter(|i| i.label == label).count();
        assert!(c.abs_diff(n / 3) <= 1, "{label}: {c} of {n}");
    }
    let max_easy = sim
        .items()
        .iter()
        .filter(|i| i.label == "easy")
        .map(|i| i.difficulty);
    let min_hard = sim
        .items()
        .iter()
        .filter(|i| i.label == "hard")
        .map(|i| i.difficulty);
    assert!(max_easy.fold(f64::MIN, f64::max) < min_hard.fold(f64::MAX, f64::min));
}

#[test]
fn missing_seconds_and_bad_configs() {
    let rows = generate(SimConfig {
        missing_seconds_prob: 0.3,
        ..small()
    });
    let missing = rows.iter().filter(|r| r.seconds.is_none()).count() as f64 / rows.len() as f64;
    assert!((0.2..0.4).contains(&missing), "{missing}");

    assert_eq!(
        Simulator::new(SimConfig {
            topics: 0,
            ..small()
        })
        .unwrap_err(),
        SimError::EmptyCatalog
    );
    assert!(
        Simulator::new(SimConfig {
            items_per_topic: 0,
            ..small()
        })
        .is_err()
    );
    assert!(
        Simulator::new(SimConfig {
            repeat_prob: 1.5,
            ..small()
        })
        .is_err()
    );
    assert!(
        Simulator::new(SimConfig {
            mean_session_len: f64::NAN,
            ..small()
        })
        .is_err()
    );
    assert!(
        generate(SimConfig {
            learners: 0,
            ..small()
        })
        .is_empty()
    );
    assert!(
        generate(SimConfig {
            attempts_per_learner: 0,
            ..small()
        })
        .is_empty()
    );
    // More topics than names.
    let many = Simulator::new(SimConfig {
        topics: 14,
        ..small()
    })
    .unwrap();
    assert_eq!(many.topics()[13], "topic-14");
}

#[test]
fn csv_format() {
    let rows = vec![
        TaskRow {
            user_id: "learner-0001".into(),
            item_id: Some("fractions-017".into()),
            topic: "fractions".into(),
            difficulty: "hard".into(),
            correct: true,
            seconds: Some(12.5),
            completed_at_ms: 1_704_067_212_345,
            started_at_ms: Some(1_704_067_199_845),
        },
        TaskRow {
            user_id: "learner-0002".into(),
            item_id: None,
            topic: "algebra".into(),
            difficulty: String::new(),
            correct: false,
            seconds: None,
            completed_at_ms: 1_704_067_200_000,
            started_at_ms: None,
        },
    ];
    let mut out = Vec::new();
    write_csv(&rows, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        "user_id,item_id,topic,correct,seconds,ts,difficulty,started_at\n\
         learner-0001,fractions-017,fractions,1,12.5,2024-01-01T00:00:12.345Z,hard,2023-12-31T23:59:59.845Z\n\
         learner-0002,,algebra,0,,2024-01-01T00:00:00.000Z,,\n"
    );
    assert_eq!(format_ts(i64::MAX), i64::MAX.to_string());
}

#[test]
fn simulated_csv_has_one_line_per_row() {
    let rows = generate(small());
    let mut out = Vec::new();
    write_csv(&rows, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), rows.len() + 1);
}

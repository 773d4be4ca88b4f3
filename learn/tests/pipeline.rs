//! The training pipeline without a server: the promotion gate, the linear
//! export against linfa itself, the chronological split and out-of-fold
//! priors, and the shape of `eval --json`.

mod support;

use std::collections::BTreeMap;

use taskcast_contract::TaskRow;
use taskcast_contract::features::{feature_index, label_key, logit};
use taskcast_contract::runtime::{OnnxModel, Output};
use taskcast_contract::{
    Artifact, FEATURE_COUNT, FEATURE_NAMES, FEATURE_SCHEMA, FeatureRow, ModelMetadata, PriorTable,
};
use taskcast_learn::dataset::{self, Dataset, PriorSet, Rows};
use taskcast_learn::families::linear;
use taskcast_learn::families::{Family, FitOptions, Fitted};
use taskcast_learn::judge::evaluate::{self, Scored};
use taskcast_learn::judge::gate::{self, GateConfig, Verdict};
use taskcast_learn::judge::metrics::MetricSet;
use taskcast_learn::pipeline::{TrainSpec, fit_and_judge};
use taskcast_learn::source::MemorySource;
use taskcast_sim::{SimConfig, Simulator};

fn sim_rows(config: SimConfig) -> Vec<TaskRow> {
    Simulator::new(config).unwrap().generate()
}

async fn load(rows: Vec<TaskRow>) -> Dataset {
    let mut src = MemorySource::new(rows);
    dataset::load(&mut src, None, None, &mut |_| {})
        .await
        .expect("dataset")
}

async fn simulated(learners: usize, attempts: usize, seed: u64) -> Dataset {
    load(sim_rows(SimConfig {
        seed,
        learners,
        attempts_per_learner: attempts,
        ..Default::default()
    }))
    .await
}

/// The fixed L2 strength the export is checked with against linfa.
const ALPHA: f64 = 1.0;

fn predict(model: &linear::Linear, rows: &Rows) -> Vec<Output> {
    (0..rows.len())
        .map(|i| {
            let mut row: FeatureRow = [0.0; FEATURE_COUNT];
            row.copy_from_slice(rows.row(i));
            let (p_correct, log_seconds) = model.predict(&row);
            Output {
                p_correct,
                log_seconds,
            }
        })
        .collect()
}

fn linear_scored(ds: &Dataset) -> Scored {
    let fitted = Fitted::fit(Family::Linear, ds, &FitOptions::default()).expect("fit");
    evaluate::score(&ds.holdout, &fitted.predict(&ds.holdout), ds.time_modeled())
}

// ---------------------------------------------------------------- (a) gate

#[tokio::test]
async fn gate_rejects_a_constant_model() {
    let ds = simulated(80, 40, 11).await;
    let baselines = evaluate::baselines(&ds);
    // The original app's failure: 0.430 for everyone, with sensible times.
    let preds: Vec<Output> = (0..ds.holdout.len())
        .map(|i| Output {
            p_correct: 0.430,
            log_seconds: [2.0, 3.0 + (i % 7) as f32 * 0.1, 4.0],
        })
        .collect();
    let scored = evaluate::score(&ds.holdout, &preds, ds.time_modeled());
    assert_eq!(scored.p_std, Some(0.0));
    let good = linear_scored(&ds);
    for active in [None, Some(&good.metrics)] {
        let v = gate::decide(
            &GateConfig::default(),
            &scored,
            ds.holdout.len(),
            active,
            &baselines,
        );
        assert!(!v.promotes(), "{v:?}");
        assert!(v.reason().contains("degenerate"), "{v:?}");
    }
    // Constant times are degenerate too, even with varying probabilities.
    let fitted = Fitted::fit(Family::Linear, &ds, &FitOptions::default()).unwrap();
    let flat_times: Vec<Output> = fitted
        .predict(&ds.holdout)
        .into_iter()
        .map(|o| Output {
            log_seconds: [2.0, 3.0, 4.0],
            ..o
        })
        .collect();
    let scored = evaluate::score(&ds.holdout, &flat_times, true);
    let v = gate::decide(
        &GateConfig::default(),
        &scored,
        ds.holdout.len(),
        None,
        &baselines,
    );
    assert!(
        matches!(&v, Verdict::Reject(r) if r.contains("degenerate")),
        "{v:?}"
    );
}

#[tokio::test]
async fn gate_promotes_a_real_first_model_and_rejects_a_worse_one() {
    let ds = simulated(80, 40, 12).await;
    let baselines = evaluate::baselines(&ds);
    let good = linear_scored(&ds);
    let config = GateConfig::default();
    let n = ds.holdout.len();
    let v = gate::decide(&config, &good, n, None, &baselines);
    assert!(
        matches!(&v, Verdict::Promote(r) if r.contains("first model")),
        "{v:?}"
    );
    for (name, b) in &baselines {
        assert!(good.metrics.logloss < b.logloss, "{name}");
    }

    // Same metrics as the active version: promoted (not worse).
    let v = gate::decide(&config, &good, n, Some(&good.metrics), &baselines);
    assert!(v.promotes(), "{v:?}");

    // A genuinely worse model: predictions pulled halfway to 0.7 (they still
    // vary, so it is not degenerate).
    let fitted = Fitted::fit(Family::Linear, &ds, &FitOptions::default()).unwrap();
    let blurred: Vec<Output> = fitted
        .predict(&ds.holdout)
        .into_iter()
        .map(|o| Output {
            p_correct: 0.5 * o.p_correct + 0.35,
            ..o
        })
        .collect();
    let worse = evaluate::score(&ds.holdout, &blurred, ds.time_modeled());
    let gap = worse.metrics.logloss.unwrap() - good.metrics.logloss.unwrap();
    assert!(gap > config.logloss_tolerance, "gap {gap}");
    let v = gate::decide(&config, &worse, n, Some(&good.metrics), &baselines);
    assert!(
        matches!(&v, Verdict::Reject(r) if r.contains("worse than the active") && r.contains("log loss")),
        "{v:?}"
    );

    // The tolerance is honoured on both sides of the line.
    let ll = good.metrics.logloss.unwrap();
    let active_at = |delta: f64| MetricSet {
        logloss: Some(ll - delta),
        ..good.metrics.clone()
    };
    let within = active_at(config.logloss_tolerance * 0.5);
    assert!(gate::decide(&config, &good, n, Some(&within), &baselines).promotes());
    let beyond = active_at(config.logloss_tolerance * 2.0);
    assert!(!gate::decide(&config, &good, n, Some(&beyond), &baselines).promotes());

    // Too small a hold-out judges nothing.
    let v = gate::decide(
        &config,
        &good,
        config.min_holdout_rows - 1,
        None,
        &baselines,
    );
    assert!(!v.promotes());
}

// --------------------------------------------------- (b) export vs linfa

fn metadata(ds: &Dataset) -> ModelMetadata {
    ModelMetadata {
        version: "linear-test".into(),
        family: "linear".into(),
        feature_schema: FEATURE_SCHEMA.into(),
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        history_window: ds.history_window,
        trained_at: "2024-01-01T00:00:00.000Z".into(),
        metrics: BTreeMap::new(),
        training_rows: ds.train.len() as u64,
        feature_baseline: vec![0.0; FEATURE_COUNT],
        index_inputs: Vec::new(),
        priors: ds.priors.clone(),
        time_modeled: None,
        clock: false,
    }
}

/// linfa's p(correct) for `eval`: its positive-class probabilities, flipped
/// when linfa took `false` as the positive class.
fn linfa_p_correct(train: &Rows, eval: &Rows) -> (Vec<f64>, bool) {
    let (p, pos) = linear::linfa_probabilities(train, ALPHA, eval).unwrap();
    (
        p.into_iter()
            .map(|p| if pos { p } else { 1.0 - p })
            .collect(),
        pos,
    )
}

fn check_export_matches_linfa(ds: &Dataset) -> bool {
    support::init_ort();
    // A fixed strength and no calibration: then the weights are linfa's own.
    let opts = linear::LinearOptions {
        alpha: Some(ALPHA),
        calibrate: false,
        ..linear::LinearOptions::default()
    };
    let model = linear::fit(&ds.train, &opts, ds.time_modeled()).expect("fit");
    let onnx = Artifact::write(model.graph(), &metadata(ds)).unwrap();
    let ort = OnnxModel::load(&onnx, 1).unwrap();
    let got = ort.run(&ds.holdout.x, &ds.holdout.keys()).unwrap();
    let rust = predict(&model, &ds.holdout);
    let (want, pos) = linfa_p_correct(&ds.train, &ds.holdout);
    assert_eq!(got.len(), ds.holdout.len());
    let mut worst_ort = 0f64;
    let mut worst_rust = 0f64;
    let mut worst_time = 0f64;
    for ((g, r), w) in got.iter().zip(&rust).zip(&want) {
        worst_ort = worst_ort.max((f64::from(g.p_correct) - w).abs());
        worst_rust = worst_rust.max((f64::from(r.p_correct) - w).abs());
        for (a, b) in g.log_seconds.iter().zip(&r.log_seconds) {
            worst_time = worst_time.max(f64::from((a - b).abs()));
        }
    }
    assert!(worst_ort < 1e-5, "ONNX vs linfa: {worst_ort:e}");
    assert!(
        worst_rust < 1e-5,
        "LinearModel::predict vs linfa: {worst_rust:e}"
    );
    assert!(
        worst_time < 1e-4,
        "ONNX vs Rust log-seconds: {worst_time:e}"
    );
    // The predictions are not trivially equal: they vary across rows.
    let spread = want.iter().cloned().fold(f64::MIN, f64::max)
        - want.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 0.2, "spread {spread}");
    pos
}

#[tokio::test]
async fn linear_export_matches_linfa() {
    let rows = sim_rows(SimConfig {
        seed: 21,
        learners: 60,
        attempts_per_learner: 40,
        ..Default::default()
    });
    let ds = load(rows.clone()).await;
    let pos_majority_true = check_export_matches_linfa(&ds);

    // Inverted outcomes: most rows are now wrong, which makes linfa pick the
    // other class as "positive"; the fitted model must still predict p(correct).
    let inverted: Vec<TaskRow> = rows
        .into_iter()
        .map(|r| TaskRow {
            correct: !r.correct,
            ..r
        })
        .collect();
    let ds = load(inverted).await;
    let share_true = ds.train.correct.iter().filter(|c| **c).count() as f64 / ds.train.len() as f64;
    assert!(share_true < 0.5, "{share_true}");
    let pos_majority_false = check_export_matches_linfa(&ds);
    assert_ne!(
        pos_majority_true, pos_majority_false,
        "both label orders must be exercised"
    );
}

// ----------------------------------------- (c) split and out-of-fold priors

fn attempt(user: &str, item: &str, topic: &str, correct: bool, k: i64) -> TaskRow {
    TaskRow {
        user_id: user.into(),
        item_id: Some(item.into()),
        topic: topic.into(),
        difficulty: String::new(),
        correct,
        // Seconds encode the attempt's position so the split can be checked.
        seconds: Some((k + 1) as f64),
        completed_at_ms: 1_700_000_000_000 + k * 60_000,
        started_at_ms: None,
    }
}

#[test]
fn holdout_len_rule() {
    for n in 0..200usize {
        let want = if n < 5 {
            0
        } else {
            (n as f64 * 0.2).ceil() as usize
        };
        assert_eq!(dataset::holdout_len(n), want, "n = {n}");
    }
    assert_eq!(dataset::holdout_len(5), 1);
    assert_eq!(dataset::holdout_len(6), 2);
    assert_eq!(dataset::holdout_len(10), 2);
    assert_eq!(dataset::holdout_len(11), 3);
}

#[tokio::test]
async fn split_is_chronological_per_learner() {
    let mut rows = Vec::new();
    for n in 1..=23i64 {
        let user = format!("u{n:02}");
        // Inserted newest first: the split must follow time, not input order.
        for k in (0..n).rev() {
            rows.push(attempt(&user, &format!("i{}", k % 4), "t", k % 3 != 0, k));
        }
    }
    let ds = load(rows).await;
    for n in 1..=23usize {
        let user = format!("u{n:02}");
        let uid = ds.users.labels.iter().position(|u| *u == user).unwrap() as u32;
        let secs = |r: &Rows| -> Vec<f64> {
            (0..r.len())
                .filter(|&i| r.user[i] == uid)
                .map(|i| r.seconds.get(i).unwrap())
                .collect()
        };
        let (train, held) = (secs(&ds.train), secs(&ds.holdout));
        let h = if n < 5 {
            0
        } else {
            (0.2 * n as f64).ceil() as usize
        };
        assert_eq!(held.len(), h, "learner with {n} attempts");
        assert_eq!(train.len(), n - h);
        let want_train: Vec<f64> = (1..=(n - h)).map(|k| k as f64).collect();
        let want_held: Vec<f64> = ((n - h + 1)..=n).map(|k| k as f64).collect();
        assert_eq!(train, want_train, "training rows are the first, in order");
        assert_eq!(held, want_held, "hold-out rows are the last, in order");
    }
}

#[tokio::test]
async fn holdout_rows_never_reach_the_priors() {
    let mut rows = Vec::new();
    for u in 0..6 {
        let user = format!("u{u}");
        for k in 0..10i64 {
            // The last two of ten are hold-out: only they use "late-item"
            // and the topic "late-topic".
            let (item, topic) = if k >= 8 {
                ("late-item", "late-topic")
            } else {
                ("early-item", "t")
            };
            rows.push(attempt(&user, item, topic, (k + u) % 2 == 0, k));
        }
    }
    let ds = load(rows).await;
    assert_eq!(ds.holdout.len(), 12);
    assert_eq!(ds.train.len(), 48);
    assert!(
        !ds.priors.items.contains_key("late-item"),
        "{:?}",
        ds.priors.items
    );
    assert!(!ds.priors.topics.contains_key("late-topic"));
    assert!(!ds.priors.item_topics.contains_key("late-item"));
    assert_eq!(ds.priors.population.n, 48);
    assert_eq!(ds.priors.items["early-item"].n, 48);
    let correct_train = ds.train.correct.iter().filter(|c| **c).count() as u64;
    assert_eq!(ds.priors.population.correct, correct_train);
}

#[tokio::test]
async fn training_rows_use_out_of_fold_priors() {
    // Two learners in different folds on the same item: A always right, B
    // always wrong. Four attempts each, so all are training rows.
    let a = "learner-a".to_string();
    let b = (0..)
        .map(|i| format!("learner-b{i}"))
        .find(|b| dataset::fold_of(b) != dataset::fold_of(&a))
        .unwrap();
    let mut rows = Vec::new();
    for k in 0..4 {
        rows.push(attempt(&a, "x", "t", true, k));
        rows.push(attempt(&b, "x", "t", false, k));
    }
    let mut src = MemorySource::new(rows);
    let census = dataset::census(&mut src).await.unwrap();
    let priors = PriorSet::new(&census);
    let a_fold = &priors.folds[dataset::fold_of(&a)];
    assert_eq!(a_fold.items["x"].n, 4);
    assert_eq!(
        a_fold.items["x"].correct, 0,
        "A's own outcomes are left out"
    );
    assert_eq!(priors.serving.items["x"].n, 8);

    let ds = dataset::build(&mut src, census, 256, None, &mut |_| {})
        .await
        .unwrap();
    assert!(ds.holdout.is_empty());
    let item_logit = feature_index("prior_item_logit").unwrap();
    let a_id = ds.users.labels.iter().position(|u| *u == a).unwrap() as u32;
    let table = PriorTable::new(a_fold);
    let want = logit(table.item(label_key("x"), label_key("t")).rate) as f32;
    let serving = PriorTable::new(&priors.serving);
    let with_own = logit(serving.item(label_key("x"), label_key("t")).rate) as f32;
    assert_ne!(want, with_own);
    let mut checked = 0;
    for (i, user) in ds.train.user.iter().enumerate() {
        // Rows featurised without items (dataset::hides_items) have no item prior.
        if *user == a_id && ds.train.key(i).item != 0 {
            let v = ds.train.row(i)[item_logit];
            assert_eq!(v.to_bits(), want.to_bits(), "row {i}: {v} vs {want}");
            // B only ever failed, so A's item prior says "hard".
            assert!(v < 0.0);
            checked += 1;
        }
    }
    let shown = (0..4)
        .filter(|&k| !dataset::hides_items(label_key(&a), k))
        .count();
    assert!(shown > 0, "the check needs at least one row with its item");
    assert_eq!(checked, shown);
}

/// Issue 11: without item ids the item prior equals the topic prior, which
/// makes `topic_log_time − topic_speed = prior_item_log_time` on every row.
/// Least squares on that design gave cancelling weights of ±5·10⁴ whose f32
/// export disagreed with the f64 fit. Every family must now fit, export and
/// pass the ONNX Runtime check on such data.
#[tokio::test]
async fn rows_without_item_ids_export_for_every_family() {
    support::init_ort();
    let mut rows = sim_rows(SimConfig {
        seed: 11,
        learners: 60,
        attempts_per_learner: 60,
        ..Default::default()
    });
    for r in &mut rows {
        r.item_id = None;
    }
    let ds = load(rows).await;
    assert!(ds.train.len() > 1000, "enough rows to fit the time head");
    let mut spec = TrainSpec::default();
    spec.fit.mlp.max_epochs = 3;
    for family in Family::ALL {
        spec.family = family;
        let trained = fit_and_judge(&ds, &spec, None, &mut |_, _| {})
            .unwrap_or_else(|e| panic!("{family} on rows without item ids: {e}"));
        if let Fitted::Linear(m) = Fitted::fit(family, &ds, &spec.fit).expect("refit") {
            let largest = m
                .model
                .t_weights
                .iter()
                .chain(&m.model.p_weights)
                .fold(0f32, |a, w| a.max(w.abs()));
            assert!(largest < 100.0, "bounded weights, got {largest}");
        }
        assert!(trained.metadata.metrics.values().all(|v| v.is_finite()));
    }
}

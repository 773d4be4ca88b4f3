//! The `mlp` family: export fidelity through ONNX Runtime, OOV handling, no
//! per-learner input, learning, early stopping and determinism. Kept small: tests run our crate
//! unoptimised.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use taskcast_contract::features::label_key;
use taskcast_contract::runtime::{self, OnnxModel, Output};
use taskcast_contract::{
    Artifact, FEATURE_COUNT, FEATURE_NAMES, FEATURE_SCHEMA, IndexField, ModelMetadata, RowKeys,
};
use taskcast_learn::dataset::{Dataset, load};
use taskcast_learn::families::mlp::{self, Architecture, Mlp, MlpConfig};
use taskcast_learn::families::{Family, FitOptions, Fitted};
use taskcast_learn::judge::evaluate;
use taskcast_learn::pipeline::max_difference;
use taskcast_learn::source::MemorySource;
use taskcast_sim::{SimConfig, Simulator};

fn dataset(learners: usize, attempts: usize, missing_seconds_prob: f64) -> Dataset {
    let rows = Simulator::new(SimConfig {
        learners,
        attempts_per_learner: attempts,
        missing_seconds_prob,
        ..Default::default()
    })
    .unwrap()
    .generate();
    let mut source = MemorySource::new(rows);
    futures::executor::block_on(load(&mut source, None, None, &mut |_| {})).unwrap()
}

/// Small and quick: a few epochs, as in debug builds every step is slow.
fn quick(architecture: Architecture) -> MlpConfig {
    MlpConfig {
        architecture,
        max_epochs: 6,
        ..Default::default()
    }
}

fn metadata(m: &Mlp) -> ModelMetadata {
    ModelMetadata {
        version: "mlp-test".into(),
        family: "mlp".into(),
        feature_schema: FEATURE_SCHEMA.into(),
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        history_window: 256,
        trained_at: "2024-01-01T00:00:00Z".into(),
        metrics: Default::default(),
        training_rows: 0,
        feature_baseline: vec![0.0; FEATURE_COUNT],
        index_inputs: m.index_inputs(),
        priors: Default::default(),
        time_modeled: None,
        clock: false,
    }
}

fn load_onnx(m: &Mlp) -> OnnxModel {
    runtime::init(&runtime::library_path(None)).unwrap();
    let bytes = Artifact::write(m.graph(), &metadata(m)).unwrap();
    OnnxModel::load(&bytes, 1).unwrap()
}

/// Random raw features around the training data's range, and topic and
/// difficulty keys that are in-vocabulary or unknown in every combination.
fn random_inputs(m: &Mlp, ds: &Dataset, n: usize, seed: u64) -> (Vec<f32>, Vec<RowKeys>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * FEATURE_COUNT);
    for _ in 0..n {
        let base = rng.random_range(0..ds.train.len());
        for v in ds.train.row(base) {
            x.push(v + rng.random_range(-1.0f32..1.0));
        }
    }
    let inputs = m.index_inputs();
    let pick = |k: usize, rng: &mut StdRng| -> u64 {
        let vocab = &inputs[k].vocabulary;
        if vocab.is_empty() || rng.random::<f32>() < 0.3 {
            rng.random::<u64>() | 1 // unknown label key
        } else {
            label_key(&vocab[rng.random_range(0..vocab.len())])
        }
    };
    let keys = (0..n)
        .map(|_| RowKeys {
            user: rng.random::<u64>() | 1,
            topic: pick(0, &mut rng),
            difficulty: pick(1, &mut rng),
            item: 0,
        })
        .collect();
    (x, keys)
}

fn assert_export_matches(m: &Mlp, ds: &Dataset) {
    let onnx = load_onnx(m);
    let (x, keys) = random_inputs(m, ds, 500, 3);
    let got = onnx.run(&x, &keys).unwrap();
    let want = m.predict(&x, &keys);
    let diff = max_difference(&got, &want);
    assert!(diff < 1e-4, "ONNX vs Rust: max difference {diff:e}");
    // The dataset's own rows, looked up by their keys as serving will.
    let n = ds.holdout.len().min(500);
    let got = onnx
        .run(&ds.holdout.x[..n * FEATURE_COUNT], &ds.holdout.keys()[..n])
        .unwrap();
    let want = m.predict(&ds.holdout.x[..n * FEATURE_COUNT], &ds.holdout.keys()[..n]);
    assert!(max_difference(&got, &want) < 1e-4);
}

#[test]
fn export_reproduces_forward_pass_both_architectures_and_without_times() {
    let ds = dataset(40, 50, 0.0);
    for arch in [Architecture::Separate, Architecture::Shared] {
        let cfg = MlpConfig {
            max_epochs: 2,
            ..quick(arch)
        };
        let m = mlp::fit(&ds, &cfg, 1).unwrap();
        assert!(m.learned_time());
        assert_export_matches(&m, &ds);
    }
    // No times at all: the time output is the item prior's, finite and sane.
    let ds = dataset(30, 40, 1.0);
    assert!(!ds.time_modeled());
    let m = mlp::fit(
        &ds,
        &MlpConfig {
            max_epochs: 2,
            ..quick(Architecture::Separate)
        },
        1,
    )
    .unwrap();
    assert!(!m.learned_time());
    assert_export_matches(&m, &ds);
    let out = m.predict(&ds.holdout.x, &ds.holdout.keys());
    for o in &out {
        assert!(
            o.log_seconds
                .iter()
                .all(|v| v.is_finite() && (0.0..9.0).contains(v))
        );
        assert!(o.log_seconds[0] < o.log_seconds[1] && o.log_seconds[1] < o.log_seconds[2]);
    }
}

#[test]
fn the_learner_reaches_the_model_only_through_its_history() {
    let ds = dataset(40, 50, 0.0);
    let m = mlp::fit(&ds, &quick(Architecture::Separate), 2).unwrap();
    // Nothing is looked up from the user id, so no user id is stored.
    let inputs = m.index_inputs();
    let fields: Vec<IndexField> = inputs.iter().map(|i| i.field).collect();
    assert_eq!(fields, [IndexField::Topic, IndexField::Difficulty]);
    let onnx = load_onnx(&m);
    let x = ds.holdout.row(0).to_vec();
    let known = ds.holdout.key(0);
    let stranger = RowKeys {
        user: label_key("never-seen-learner"),
        ..known
    };
    let new_topic = RowKeys {
        topic: label_key("never-seen-topic"),
        ..known
    };
    let out = onnx
        .run(
            &[x.clone(), x.clone(), x].concat(),
            &[known, stranger, new_topic],
        )
        .unwrap();
    for o in &out {
        assert!(o.p_correct.is_finite() && o.p_correct > 0.0 && o.p_correct < 1.0);
        assert!(o.log_seconds.iter().all(|v| v.is_finite()));
    }
    assert_eq!(
        out[0], out[1],
        "same history, same prediction, whoever asks"
    );
    assert_ne!(
        out[0].p_correct, out[2].p_correct,
        "the topic embedding is used, with row 0 for an unknown topic"
    );
    // Vocabulary labels map to rows 1.., matching the artifact contract.
    for input in &inputs {
        assert!(!input.vocabulary.is_empty(), "{}", input.name);
        assert!(!input.vocabulary.iter().any(String::is_empty));
    }
}

#[test]
fn learns_a_synthetic_problem_better_than_the_population_baseline() {
    let ds = dataset(60, 60, 0.0);
    // The shipping default architecture, through the family dispatch.
    let opts = FitOptions {
        mlp: MlpConfig {
            max_epochs: 6,
            ..Default::default()
        },
        ..Default::default()
    };
    let fitted = Fitted::fit(Family::Mlp, &ds, &opts).unwrap();
    let scored = evaluate::score(&ds.holdout, &fitted.predict(&ds.holdout), true);
    let base = &evaluate::baselines(&ds)["baseline_population"];
    let (ll, base_ll) = (scored.metrics.logloss.unwrap(), base.logloss.unwrap());
    assert!(
        ll < base_ll - 0.01,
        "mlp log loss {ll} vs population {base_ll}"
    );
    let (mae, base_mae) = (
        scored.metrics.mae_log_seconds.unwrap(),
        base.mae_log_seconds.unwrap(),
    );
    assert!(
        mae < base_mae,
        "mlp MAE log-s {mae} vs population {base_mae}"
    );
    let cover = scored.metrics.interval_coverage.unwrap();
    assert!((0.6..0.95).contains(&cover), "10-90% coverage {cover}");
}

#[test]
fn early_stopping_restores_the_best_epoch() {
    let ds = dataset(30, 40, 0.0);
    // A high learning rate overfits this little data within a few epochs.
    let cfg = MlpConfig {
        learning_rate: 0.01,
        max_epochs: 12,
        patience: 3,
        // The calibration fitted afterwards changes the logit the epochs were
        // judged on.
        calibrate: false,
        ..quick(Architecture::Separate)
    };
    let m = mlp::fit(&ds, &cfg, 5).unwrap();
    let (_, val) = mlp::validation_split(&ds.train, cfg.validation_share);
    let losses = m.losses(&ds.train, &val);
    assert_eq!(losses.len(), m.report.nets.len());
    let mut stopped_early = false;
    for (net, loss) in m.report.nets.iter().zip(losses) {
        let min = net
            .epochs
            .iter()
            .map(|e| e.val_loss)
            .fold(net.initial_val_loss, f64::min);
        assert_eq!(net.best_val_loss, min, "{}: best is the minimum", net.name);
        assert!(
            (loss - net.best_val_loss).abs() < 1e-9,
            "{}: returned weights score {loss}, best recorded {}",
            net.name,
            net.best_val_loss
        );
        stopped_early |= net.epochs.len() < cfg.max_epochs;
        if net.best_epoch < net.epochs.len() {
            let last = net.epochs.last().unwrap().val_loss;
            assert!(
                last > net.best_val_loss,
                "{}: later epochs were worse",
                net.name
            );
        }
    }
    assert!(stopped_early, "{:#?}", m.report);
}

#[test]
fn validation_split_is_chronological_per_learner() {
    let ds = dataset(20, 40, 0.0);
    let (fit, val) = mlp::validation_split(&ds.train, 0.1);
    assert_eq!(fit.len() + val.len(), ds.train.len());
    // Every validation row comes after every fit row of the same learner.
    for &v in &val {
        let u = ds.train.user[v];
        assert!(fit.iter().all(|&f| ds.train.user[f] != u || f < v));
    }
    assert!(!val.is_empty());
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let ds = dataset(25, 40, 0.0);
    let cfg = MlpConfig {
        max_epochs: 2,
        ..quick(Architecture::Separate)
    };
    let run = |seed| -> Vec<Output> {
        mlp::fit(&ds, &cfg, seed)
            .unwrap()
            .predict(&ds.holdout.x, &ds.holdout.keys())
    };
    let (a, b, c) = (run(9), run(9), run(10));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

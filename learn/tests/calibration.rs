//! Fitting to the data's size (issue 13): the calibration fitted on the inner
//! validation slice is carried inside the exported graph exactly, and
//! nothing the fit chooses (L2 strength, calibration, weights) depends on the
//! hold-out.

mod support;

use taskcast_contract::Artifact;
use taskcast_contract::bootstrap::linear_metadata;
use taskcast_contract::runtime::{OnnxModel, Output};
use taskcast_learn::dataset::{self, Dataset};
use taskcast_learn::families::calibration::sigmoid64;
use taskcast_learn::families::linear::{self, LinearOptions};
use taskcast_learn::families::mlp::MlpConfig;
use taskcast_learn::families::{Family, FitOptions, Fitted, VALIDATION_SHARE, validation_split};
use taskcast_learn::pipeline::max_difference;
use taskcast_learn::source::MemorySource;

use support::*;

fn load(learners: usize, attempts: usize, seed: u64) -> Dataset {
    let rows = simulator(learners, attempts, seed).generate();
    let mut src = MemorySource::new(rows);
    futures::executor::block_on(dataset::load(&mut src, None, None, &mut |_| {})).expect("dataset")
}

/// Quick options: `mlp` trains two epochs (debug builds are slow).
fn options(calibrate: bool) -> FitOptions {
    FitOptions {
        linear: LinearOptions {
            calibrate,
            ..LinearOptions::default()
        },
        mlp: MlpConfig {
            max_epochs: 2,
            calibrate,
            ..MlpConfig::default()
        },
        ..FitOptions::default()
    }
}

/// The exported file run through ONNX Runtime on the hold-out.
fn onnx_outputs(fitted: &Fitted, ds: &Dataset) -> Vec<Output> {
    let mut meta = linear_metadata(
        "calibration-test",
        fitted.family().name(),
        ds.priors.clone(),
    );
    meta.index_inputs = fitted.index_inputs(ds);
    let bytes = Artifact::write(fitted.graph(), &meta).expect("artifact");
    let model = OnnxModel::load(&bytes, 1).expect("ONNX Runtime loads it");
    model
        .run(&ds.holdout.x, &ds.holdout.keys())
        .expect("ONNX Runtime runs it")
}

fn logit(p: f32) -> f64 {
    let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
    (p / (1.0 - p)).ln()
}

/// Both families: the calibrated model's exported graph gives exactly
/// `σ(a·z + b)` of the same model's uncalibrated logit `z` (training is the
/// same with and without calibration, which is fitted afterwards), and
/// agrees with the in-Rust forward pass.
#[test]
fn the_exported_graph_carries_the_calibration() {
    init_ort();
    let mut ds = load(60, 60, 5);
    // `linear` calibrates only when the slice is significantly off (a
    // logistic regression is calibrated on its own rows): make it so by
    // turning over a third of the slice's outcomes.
    let (_, val) = validation_split(&ds.train, VALIDATION_SHARE);
    for &i in val.iter().step_by(3) {
        ds.train.correct[i] = !ds.train.correct[i];
    }
    for family in Family::ALL {
        let plain = Fitted::fit(family, &ds, &options(false)).expect("fit");
        let calibrated = Fitted::fit(family, &ds, &options(true)).expect("fit");
        assert_eq!(plain.calibration(), None, "{family}");
        let c = calibrated
            .calibration()
            .unwrap_or_else(|| panic!("{family}: the slice is large enough to calibrate"));
        assert!(
            (c.scale, c.shift) != (1.0, 0.0),
            "{family}: a calibration that changes something: {c:?}"
        );
        let info = calibrated.training_info();
        assert_eq!(info.get("calibration_scale"), Some(&c.scale), "{family}");
        assert_eq!(info.get("calibration_shift"), Some(&c.shift), "{family}");

        let got = onnx_outputs(&calibrated, &ds);
        let rust = calibrated.predict(&ds.holdout);
        let diff = max_difference(&got, &rust);
        assert!(diff < 1e-5, "{family}: ONNX vs Rust {diff:e}");
        let uncalibrated = plain.predict(&ds.holdout);
        let mut worst = 0f64;
        for ((g, r), u) in got.iter().zip(&rust).zip(&uncalibrated) {
            let want = sigmoid64(c.apply(logit(u.p_correct)));
            worst = worst.max((f64::from(g.p_correct) - want).abs());
            // Calibration touches p(correct) only.
            assert_eq!(r.log_seconds, u.log_seconds, "{family}");
        }
        assert!(
            worst < 1e-5,
            "{family}: exported p vs σ(a·z + b): {worst:e}"
        );
    }
}

/// The hold-out's outcomes are the judge's, never the fit's: turning every
/// one of them over changes neither the chosen L2 strength nor the
/// calibration nor a single prediction.
#[test]
fn nothing_the_fit_chooses_depends_on_the_hold_out() {
    // 150 learners: an inner validation slice above
    // linear::MIN_SELECTION_ROWS, so the strength is chosen on it.
    let ds = load(150, 40, 9);
    let mut flipped = ds.clone();
    for c in &mut flipped.holdout.correct {
        *c = !*c;
    }
    for family in Family::ALL {
        let a = Fitted::fit(family, &ds, &options(true)).expect("fit");
        let b = Fitted::fit(family, &flipped, &options(true)).expect("fit");
        let info = a.training_info();
        if family == Family::Linear {
            assert_eq!(info.get("linear_l2_selected"), Some(&1.0), "{info:?}");
            assert!(
                info["validation_rows"] >= linear::MIN_SELECTION_ROWS as f64,
                "{info:?}"
            );
        }
        assert_eq!(info, b.training_info(), "{family}");
        assert_eq!(a.predict(&ds.train), b.predict(&ds.train), "{family}");
    }
}

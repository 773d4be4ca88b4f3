//! The learning curve over disjoint groups of learners (EVALUATION.md,
//! "Learning curve" and "Pretrained starting model"), release only:
//!
//! ```sh
//! TASKCAST_LC_DATA=$PWD/../shared/data/assist2009_rt.csv.gz TASKCAST_LC_SIZE=4 TASKCAST_LC_GROUPS=25 \
//!   cargo test --release -p trainer-svc --test learning_groups -- --ignored --nocapture
//! ```
//!
//! (The test runs in `trainer-svc/`: give files as absolute paths.)
//! The learners with at least 20 attempts, in file order, cut into groups of
//! `TASKCAST_LC_SIZE` (at most `TASKCAST_LC_GROUPS` of them); every group is
//! loaded on its own (`TASKCAST_LC_ITEMS=0` blanks its item ids) and every
//! family is fitted as `eval` fits it, `auto` choosing among those fits
//! (a row per family it chose). Prints means over the groups.
//!
//! - `TASKCAST_LC_PRETRAINED=FILE`: the `pretrained` family starts from the
//!   weights of this linear artifact (`trainer-svc pretrain --onnx`) instead
//!   of the shipped ones, so candidate weights are measured without a rebuild.
//! - `TASKCAST_LC_SERVED=NAME=FILE,…`: artifacts scored as they would serve
//!   (their own priors) on each group's hold-out, e.g. the bootstrap.
//! - `TASKCAST_LC_BEFORE=1`: also the fit before issue 13 (linfa's `alpha`
//!   fixed at 1, no calibration).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use taskcast_contract::TaskRow;
use taskcast_contract::linear::LinearModel;
use taskcast_learn::dataset;
use taskcast_learn::families::linear::LinearOptions;
use taskcast_learn::families::{Family, FitOptions, Fitted, auto, pretrained};
use taskcast_learn::judge::evaluate;
use taskcast_learn::judge::incumbent::Incumbent;
use taskcast_learn::judge::metrics::MetricSet;
use taskcast_learn::source::MemorySource;
use trainer_svc::data::csv::TsUnit;
use trainer_svc::data::source::load_csv_with;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn mean(v: &[f64]) -> f64 {
    // NaN (printed as such) when no group has the metric, e.g. times.
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    f.iter().sum::<f64>() / f.len() as f64
}

#[test]
#[ignore = "needs a dataset and a release build"]
fn learning_curve_over_disjoint_groups() {
    let path = var("TASKCAST_LC_DATA").expect("TASKCAST_LC_DATA");
    let size: usize = var("TASKCAST_LC_SIZE").map_or(4, |v| v.parse().expect("size"));
    let groups: usize = var("TASKCAST_LC_GROUPS").map_or(10, |v| v.parse().expect("groups"));
    let items = var("TASKCAST_LC_ITEMS").as_deref() != Some("0");
    let csv = load_csv_with(Path::new(&path), TsUnit::S).expect("csv");
    let mut learners: Vec<Vec<TaskRow>> = Vec::new();
    for r in csv.source.task_rows() {
        match learners.last_mut() {
            Some(l) if l[0].user_id == r.user_id => l.push(r.clone()),
            _ => learners.push(vec![r.clone()]),
        }
    }
    learners.retain(|l| l.len() >= 20);
    let before = FitOptions {
        linear: LinearOptions {
            alpha: Some(1.0),
            calibrate: false,
            ..LinearOptions::default()
        },
        mlp: taskcast_learn::families::mlp::MlpConfig {
            calibrate: false,
            ..Default::default()
        },
        ..FitOptions::default()
    };
    let mut variants = vec![("after", FitOptions::default())];
    if var("TASKCAST_LC_BEFORE").as_deref() == Some("1") {
        variants.insert(0, ("before", before));
    }
    let start_weights = var("TASKCAST_LC_PRETRAINED").map(|f| {
        let bytes = std::fs::read(&f).expect("TASKCAST_LC_PRETRAINED");
        LinearModel::from_onnx(&bytes).expect("a linear artifact")
    });
    let served: Vec<(String, Vec<u8>)> = var("TASKCAST_LC_SERVED")
        .iter()
        .flat_map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .map(|pair| {
            let (name, file) = pair.split_once('=').expect("NAME=FILE");
            (name.to_owned(), std::fs::read(file).expect("served model"))
        })
        .collect();
    if !served.is_empty() {
        use taskcast_contract::runtime;
        runtime::init(&runtime::library_path(None)).expect("ONNX Runtime");
    }
    // (variant, family) → per group: log loss − best baseline's, ECE, AUC,
    // beats every baseline, MAE s, median AE s, MAE ln s, coverage, log loss.
    let mut acc: BTreeMap<(&str, String), Vec<[f64; 9]>> = BTreeMap::new();
    let mut holdout = Vec::new();
    let mut choices: BTreeMap<&str, usize> = BTreeMap::new();
    for g in learners
        .chunks(size)
        .take(groups)
        .filter(|g| g.len() == size)
    {
        let mut rows: Vec<TaskRow> = g.iter().flatten().cloned().collect();
        if !items {
            rows.iter_mut().for_each(|r| r.item_id = None);
        }
        let mut src = MemorySource::new(rows.clone());
        let ds = futures::executor::block_on(dataset::load(&mut src, None, None, &mut |_| {}))
            .expect("dataset");
        holdout.push(ds.holdout.len() as f64);
        let timed = ds.time_modeled();
        let baselines = evaluate::baselines(&ds);
        let best = |f: fn(&taskcast_learn::judge::metrics::MetricSet) -> Option<f64>| {
            baselines
                .values()
                .filter_map(f)
                .fold(f64::INFINITY, f64::min)
        };
        let (best_ll, best_mae) = (best(|m| m.logloss), best(|m| m.mae_log_seconds));
        let mut record = |variant: &'static str, family: String, m: MetricSet| {
            let ll = m.logloss.unwrap_or(f64::NAN);
            let beats = ll < best_ll && (!timed || m.mae_log_seconds.unwrap_or(9.0) < best_mae);
            let nan = f64::NAN;
            acc.entry((variant, family)).or_default().push([
                ll - best_ll,
                m.ece.unwrap_or(nan),
                m.auc.unwrap_or(nan),
                f64::from(u8::from(beats)),
                m.mae_seconds.unwrap_or(nan),
                m.median_ae_seconds.unwrap_or(nan),
                m.mae_log_seconds.unwrap_or(nan),
                m.interval_coverage.unwrap_or(nan),
                ll,
            ]);
        };
        for (name, opts) in &variants {
            let mut fits = HashMap::new();
            for family in Family::ALL {
                let fitted = match (family, &start_weights) {
                    (Family::Pretrained, Some(w)) => Fitted::Pretrained(
                        pretrained::fit_from(w.clone(), &ds.train, opts.linear.calibrate, timed)
                            .expect("fit"),
                    ),
                    _ => Fitted::fit(family, &ds, opts).expect("fit"),
                };
                let m = evaluate::score(&ds.holdout, &fitted.predict(&ds.holdout), timed).metrics;
                record(name, family.name().to_string(), m);
                fits.insert(family, fitted);
            }
            let (chosen, _) =
                auto::choose_with(&auto::ORDER, &ds.train, |f| Ok(fits[&f].clone())).expect("auto");
            let m = evaluate::score(&ds.holdout, &chosen.predict(&ds.holdout), timed).metrics;
            record(name, "auto".into(), m);
            if *name == "after" {
                *choices.entry(chosen.family().name()).or_insert(0) += 1;
            }
        }
        for (name, bytes) in &served {
            let mut inc = Incumbent::try_load(bytes).expect("served model loads");
            let mut src = MemorySource::new(rows.clone());
            let ds = futures::executor::block_on(dataset::load(
                &mut src,
                None,
                Some(inc.view_mut()),
                &mut |_| {},
            ))
            .expect("dataset");
            let m = inc.score(&ds.holdout, timed).expect("score").metrics;
            record("served", name.clone(), m);
        }
    }
    println!(
        "{path}: {} groups of {size} learners, items {items}, mean hold-out {:.0} rows",
        holdout.len(),
        mean(&holdout)
    );
    println!("  auto chose {choices:?}");
    for ((name, family), rows) in acc {
        let col = |k: usize| mean(&rows.iter().map(|r| r[k]).collect::<Vec<_>>());
        println!(
            "  {name:<6} {family:<10} log loss {:.4}, − best baseline {:+.4}  ECE {:.4}  AUC {:.4}  beats all in \
             {:.0}/{}  MAE s {:.2}  median AE s {:.2}  MAE ln s {:.4}  cover {:.3}",
            col(8),
            col(0),
            col(1),
            col(2),
            col(3) * rows.len() as f64,
            rows.len(),
            col(4),
            col(5),
            col(6),
            col(7)
        );
    }
}

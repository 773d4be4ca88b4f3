//! The learning curve over disjoint groups of learners (EVALUATION.md,
//! "Learning curve"), release only:
//!
//! ```sh
//! TASKCAST_LC_DATA=$PWD/../shared/data/assist2009_rt.csv.gz TASKCAST_LC_SIZE=4 TASKCAST_LC_GROUPS=25 \
//!   cargo test --release -p trainer-svc --test learning_groups -- --ignored --nocapture
//! ```
//!
//! (The test runs in `trainer-svc/`: give the file as an absolute path.)
//! The learners with at least 20 attempts, in file order, cut into groups of
//! `TASKCAST_LC_SIZE` (at most `TASKCAST_LC_GROUPS` of them); every group is
//! loaded on its own (`TASKCAST_LC_ITEMS=0` blanks its item ids) and both
//! families are fitted as `eval` fits them, once as before issue 13 (linfa's
//! `alpha` fixed at 1, no calibration) and once as shipped. Prints means over
//! the groups.

use std::collections::BTreeMap;
use std::path::Path;

use taskcast_contract::TaskRow;
use trainer_svc::data::csv::TsUnit;
use trainer_svc::data::dataset;
use trainer_svc::data::source::{MemorySource, load_csv_with};
use trainer_svc::families::linear::LinearOptions;
use trainer_svc::families::{Family, FitOptions, Fitted};
use trainer_svc::judge::evaluate;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn mean(v: &[f64]) -> f64 {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    f.iter().sum::<f64>() / f.len().max(1) as f64
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
    for r in csv.source.rows() {
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
        mlp: trainer_svc::families::mlp::MlpConfig {
            calibrate: false,
            ..Default::default()
        },
        ..FitOptions::default()
    };
    let variants = [("before", before), ("after", FitOptions::default())];
    // (variant, family) → per group: log loss − best baseline's, ECE, AUC,
    // beats every baseline, MAE s, median AE s, MAE ln s, coverage.
    let mut acc: BTreeMap<(&str, &str), Vec<[f64; 8]>> = BTreeMap::new();
    let mut holdout = Vec::new();
    for g in learners
        .chunks(size)
        .take(groups)
        .filter(|g| g.len() == size)
    {
        let mut rows: Vec<TaskRow> = g.iter().flatten().cloned().collect();
        if !items {
            rows.iter_mut().for_each(|r| r.item_id = None);
        }
        let mut src = MemorySource::new(rows);
        let ds = futures::executor::block_on(dataset::load(&mut src, None, None, &mut |_| {}))
            .expect("dataset");
        holdout.push(ds.holdout.len() as f64);
        let timed = ds.time_modeled();
        let baselines = evaluate::baselines(&ds);
        let best = |f: fn(&trainer_svc::judge::metrics::MetricSet) -> Option<f64>| {
            baselines
                .values()
                .filter_map(f)
                .fold(f64::INFINITY, f64::min)
        };
        let (best_ll, best_mae) = (best(|m| m.logloss), best(|m| m.mae_log_seconds));
        for (name, opts) in &variants {
            for family in Family::ALL {
                let fitted = Fitted::fit(family, &ds, opts).expect("fit");
                let m = evaluate::score(&ds.holdout, &fitted.predict(&ds.holdout), timed).metrics;
                let ll = m.logloss.unwrap_or(f64::NAN);
                let beats = ll < best_ll && (!timed || m.mae_log_seconds.unwrap_or(9.0) < best_mae);
                let nan = f64::NAN;
                acc.entry((name, family.name())).or_default().push([
                    ll - best_ll,
                    m.ece.unwrap_or(nan),
                    m.auc.unwrap_or(nan),
                    f64::from(u8::from(beats)),
                    m.mae_seconds.unwrap_or(nan),
                    m.median_ae_seconds.unwrap_or(nan),
                    m.mae_log_seconds.unwrap_or(nan),
                    m.interval_coverage.unwrap_or(nan),
                ]);
            }
        }
    }
    println!(
        "{path}: {} groups of {size} learners, items {items}, mean hold-out {:.0} rows",
        holdout.len(),
        mean(&holdout)
    );
    for ((name, family), rows) in acc {
        let col = |k: usize| mean(&rows.iter().map(|r| r[k]).collect::<Vec<_>>());
        println!(
            "  {name:<6} {family:<6} log loss − best baseline {:+.4}  ECE {:.4}  AUC {:.4}  beats all in \
             {:.0}/{}  MAE s {:.2}  median AE s {:.2}  MAE ln s {:.4}  cover {:.3}",
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

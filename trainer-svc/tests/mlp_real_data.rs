//! The mlp family on a real CSV file (release only, ignored by default): it
//! reads the file with the trainer's CSV reader, which the learning crate's
//! own tests cannot use.

use taskcast_learn::dataset::load;
use taskcast_learn::families::mlp::{self, Architecture, MlpConfig};
use taskcast_learn::judge::evaluate;

/// Real-data comparison of the two architectures (release only):
/// `TASKCAST_MLP_DATA=../shared/data/assist2009_rt.csv.gz cargo test --release
/// -p trainer-svc --test mlp_real_data -- --ignored --nocapture`.
#[test]
#[ignore = "needs a dataset and a release build"]
fn compare_architectures_on_real_data() {
    let Some(path) = std::env::var_os("TASKCAST_MLP_DATA") else {
        eprintln!("set TASKCAST_MLP_DATA to a CSV file");
        return;
    };
    let csv = trainer_svc::data::source::load_csv(std::path::Path::new(&path)).unwrap();
    let mut source = csv.source;
    let ds = futures::executor::block_on(load(&mut source, None, None, &mut |_| {})).unwrap();
    let archs: Vec<Architecture> = match std::env::var("TASKCAST_MLP_ARCH").as_deref() {
        Ok("shared") => vec![Architecture::Shared],
        Ok("separate") => vec![Architecture::Separate],
        _ => vec![Architecture::Separate, Architecture::Shared],
    };
    let seeds: Vec<u64> = std::env::var("TASKCAST_MLP_SEEDS")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![7]);
    let verbose = std::env::var_os("TASKCAST_MLP_VERBOSE").is_some();
    for arch in archs {
        for &seed in &seeds {
            let started = std::time::Instant::now();
            let cfg = MlpConfig {
                architecture: arch,
                ..Default::default()
            };
            let m = mlp::fit(&ds, &cfg, seed).unwrap();
            let fit_s = started.elapsed().as_secs_f64();
            let preds = m.predict(&ds.holdout.x, &ds.holdout.keys());
            let s = evaluate::score(&ds.holdout, &preds, ds.time_modeled());
            let mm = &s.metrics;
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
            println!(
                "{arch:?} seed {seed}: fit {fit_s:.1}s auc {} logloss {} brier {} mae_log {} cover80 {}",
                f(mm.auc),
                f(mm.logloss),
                f(mm.brier),
                f(mm.mae_log_seconds),
                f(mm.interval_coverage)
            );
            for net in &m.report.nets {
                let rows: usize = net.epochs.iter().map(|e| e.rows).sum();
                let secs: f64 = net.epochs.iter().map(|e| e.seconds).sum();
                println!(
                    "  {}: fit rows {} val rows {} epochs {} best {} (val {:.4}, initial {:.4}), {:.2}s/epoch, {:.0} rows/s",
                    net.name,
                    net.fit_rows,
                    net.val_rows,
                    net.epochs.len(),
                    net.best_epoch,
                    net.best_val_loss,
                    net.initial_val_loss,
                    secs / net.epochs.len().max(1) as f64,
                    rows as f64 / secs.max(1e-9)
                );
                if !verbose {
                    continue;
                }
                for e in &net.epochs {
                    println!(
                        "    epoch {:>2} train {:.4} val {:.4} lr {:.5} {:.2}s",
                        e.epoch, e.train_loss, e.val_loss, e.lr, e.seconds
                    );
                }
            }
        }
    }
}

//! Training throughput, phase by phase, from a SQLite database of simulated
//! learners: `cargo bench -p trainer-svc --bench train`.
//!
//! For each size the rows are simulated once and inserted into a fresh
//! temporary SQLite file (not timed as training), then the run's phases are
//! timed as the service runs them:
//!
//! - `read`: one bare pass over `completed_tasks` through `DbSource` (paged);
//! - `census`: pass 1 (read + split + prior counts);
//! - `features`: pass 2 (read + feature rows for every attempt);
//! - `fit`: the linear family (linfa logistic + least squares);
//! - `export`: ONNX file + load into ONNX Runtime + scoring the hold-out.
//!
//! `rows/s` is rows over census + features + fit + export (the `read` pass is
//! shown on its own; both passes include their own reads). Peak RSS is the
//! process's VmHWM, reset before each size where the kernel allows it.
//! Sizes: `TASKCAST_BENCH_SIZES=10k,100k,1m` (default: all three under
//! `cargo bench`, only 10k when run as a test).

use std::collections::BTreeMap;
use std::time::Instant;

use taskcast_contract::runtime::OnnxModel;
use taskcast_contract::{Artifact, FEATURE_COUNT, FEATURE_NAMES, FEATURE_SCHEMA, ModelMetadata};
use taskcast_learn::dataset;
use taskcast_learn::families::{Family, FitOptions, Fitted};
use taskcast_learn::source::LearnerSource;
use taskcast_sim::{SimConfig, Simulator};
use trainer_svc::data::source::DbSource;
use trainer_svc::db::Db;

struct Size {
    name: &'static str,
    learners: usize,
    attempts: usize,
}

const SIZES: [Size; 3] = [
    Size {
        name: "10k",
        learners: 100,
        attempts: 100,
    },
    Size {
        name: "100k",
        learners: 1_000,
        attempts: 100,
    },
    Size {
        name: "1m",
        learners: 5_000,
        attempts: 200,
    },
];

/// A `VmHWM`-style field of /proc/self/status, in MiB.
fn status_mib(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak RSS counter (Linux ≥ 4.0); false when not allowed.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

struct Result {
    name: &'static str,
    rows: u64,
    insert: f64,
    read: f64,
    census: f64,
    features: f64,
    fit: f64,
    export: f64,
    peak_mib: Option<f64>,
    reset: bool,
}

async fn run(size: &Size) -> Result {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let db = Db::connect(&url).await.expect("sqlite");

    // Simulate and insert, streaming: the rows are never all in memory.
    let started = Instant::now();
    let mut sim = Simulator::new(SimConfig {
        seed: 42,
        learners: size.learners,
        attempts_per_learner: size.attempts,
        ..Default::default()
    })
    .expect("sim");
    let mut ins = db.task_inserter().await.expect("inserter");
    ins.extend(sim.history()).await.expect("insert");
    let rows = ins.commit().await.expect("commit");
    let insert = started.elapsed().as_secs_f64();
    drop(sim);

    let reset = reset_peak();
    let up_to = db.max_task_id().await.expect("max id");
    let mut source = DbSource::new(db.clone(), up_to);

    let t = Instant::now();
    let mut seen = 0u64;
    source
        .for_each_learner(&mut |rows| seen += rows.len() as u64)
        .await
        .expect("read");
    let read = t.elapsed().as_secs_f64();
    assert_eq!(seen, rows);

    let t = Instant::now();
    let census = dataset::census(&mut source).await.expect("census");
    let census_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let window = taskcast_contract::features::DEFAULT_HISTORY_WINDOW;
    let ds = dataset::build(&mut source, census, window, None, &mut |_| {})
        .await
        .expect("features");
    let features = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let fitted = Fitted::fit(Family::Linear, &ds, &FitOptions::default()).expect("fit");
    let fit = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let metadata = ModelMetadata {
        version: "bench".into(),
        family: "linear".into(),
        feature_schema: FEATURE_SCHEMA.into(),
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        history_window: window,
        trained_at: "2024-01-01T00:00:00.000Z".into(),
        metrics: BTreeMap::new(),
        training_rows: ds.train.len() as u64,
        feature_baseline: vec![0.0; FEATURE_COUNT],
        index_inputs: fitted.index_inputs(&ds),
        priors: ds.priors.clone(),
        time_modeled: None,
        clock: false,
    };
    let onnx = Artifact::write(fitted.graph(), &metadata).expect("export");
    let model = OnnxModel::load(&onnx, 1).expect("load");
    let scored = model
        .run(&ds.holdout.x, &ds.holdout.keys())
        .expect("score hold-out");
    assert_eq!(scored.len(), ds.holdout.len());
    let export = t.elapsed().as_secs_f64();

    let peak_mib = status_mib("VmHWM:");
    drop(ds);
    db.close().await.ok();
    Result {
        name: size.name,
        rows,
        insert,
        read,
        census: census_s,
        features,
        fit,
        export,
        peak_mib,
        reset,
    }
}

fn main() {
    let lib = taskcast_contract::runtime::library_path(None);
    taskcast_contract::runtime::init(&lib).expect("ONNX Runtime (run scripts/setup-ort.sh)");
    // `cargo bench` passes `--bench`; without it (`cargo test --all-targets`)
    // only the smallest size runs, as a smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let wanted: Vec<String> = match std::env::var("TASKCAST_BENCH_SIZES") {
        Ok(v) => v.split(',').map(|s| s.trim().to_lowercase()).collect(),
        Err(_) if benching => SIZES.iter().map(|s| s.name.to_string()).collect(),
        Err(_) => vec![SIZES[0].name.to_string()],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut results = Vec::new();
    for size in SIZES.iter().filter(|s| wanted.iter().any(|w| w == s.name)) {
        eprintln!("running {} ...", size.name);
        results.push(rt.block_on(run(size)));
    }

    println!(
        "\n{:<6} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>11} {:>10}",
        "size",
        "rows",
        "insert_s",
        "read_s",
        "census_s",
        "features_s",
        "fit_s",
        "export_s",
        "total_s",
        "rows/s",
        "peak_MiB"
    );
    for r in &results {
        let total = r.census + r.features + r.fit + r.export;
        println!(
            "{:<6} {:>9} {:>9.2} {:>8.2} {:>8.2} {:>10.2} {:>8.2} {:>8.2} {:>9.2} {:>11.0} {:>10}",
            r.name,
            r.rows,
            r.insert,
            r.read,
            r.census,
            r.features,
            r.fit,
            r.export,
            total,
            r.rows as f64 / total,
            r.peak_mib.map_or("-".to_string(), |m| format!(
                "{m:.0}{}",
                if r.reset { "" } else { "*" }
            )),
        );
    }
    if results.iter().any(|r| !r.reset) {
        println!("* peak RSS could not be reset between sizes: it is the process's peak so far");
    }
}

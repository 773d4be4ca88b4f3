//! The live model report: its math on small hand-computed inputs, the plots,
//! and ModelReport plus the taskcast_trainer_live_* gauges on a real server over
//! SQLite and PostgreSQL.

mod support;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use taskcast_contract::TaskRow;
use taskcast_proto::ModelReportRequest;
use tonic::Code;
use trainer_svc::db::{Db, NewModelVersion, OutcomeRow, StoredPrediction};
use trainer_svc::plots::{
    PlotData, TimePoint, reliability_bins, spread_histogram, time_band, write_all,
};
use trainer_svc::report::accumulate::VersionAccumulator;
use trainer_svc::report::drift::{DriftConfig, reasons};
use trainer_svc::report::{ReportError, ReportRequest};

use support::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn row(user: &str, topic: &str, p: f64, correct: bool, t: i64) -> OutcomeRow {
    OutcomeRow {
        id: t,
        user_id: user.into(),
        topic: topic.into(),
        correct,
        seconds: None,
        completed_at: DateTime::<Utc>::from_timestamp(1_700_000_000 + t, 0).expect("valid time"),
        prediction: StoredPrediction {
            p_correct: p,
            seconds: None,
            seconds_low: None,
            seconds_high: None,
            model_version: "v".into(),
        },
    }
}

fn feed(acc: &mut VersionAccumulator, user: &str, rows: &[OutcomeRow]) {
    let refs: Vec<&OutcomeRow> = rows.iter().collect();
    acc.add_learner(user, &refs);
}

#[test]
fn figures_by_hand() {
    // Learner a: p 0.2 (wrong), 0.8 (right); learner b: p 0.4 (right), 0.6 (wrong).
    let mut acc = VersionAccumulator::new(2);
    feed(
        &mut acc,
        "a",
        &[
            row("a", "fractions", 0.2, false, 1),
            row("a", "algebra", 0.8, true, 2),
        ],
    );
    feed(
        &mut acc,
        "b",
        &[
            row("b", "fractions", 0.4, true, 3),
            row("b", "fractions", 0.6, false, 4),
        ],
    );
    let f = acc.finish();
    let m = &f.metrics;
    assert_eq!(m.rows, 4);
    // Positives 0.8, 0.4; negatives 0.2, 0.6: pairs won 0.8>0.2, 0.8>0.6,
    // 0.4>0.2; lost 0.4<0.6 → 3/4.
    assert!(close(m.auc.unwrap(), 0.75), "{m:?}");
    assert!(close(m.mean_predicted.unwrap(), 0.5));
    assert!(close(m.observed_rate.unwrap(), 0.5));
    // Bins 0.2, 0.4, 0.6, 0.8 hold one row each: |0.2-0|+|0.4-1|+|0.6-0|+|0.8-1| over 4.
    assert!(close(m.ece.unwrap(), (0.2 + 0.6 + 0.6 + 0.2) / 4.0));
    assert_eq!(m.timed_rows, 0);
    assert_eq!(m.time_mae_seconds, None);
    assert_eq!(m.interval_coverage, None);
    // Diversity: 4 distinct values, spread 0.6; each learner 2 distinct,
    // spreads 0.6 and 0.2 → median 0.4.
    assert_eq!(f.overall.distinct, 4.0);
    assert!(close(f.overall.spread, 0.6));
    assert_eq!(f.per_learner.groups, 2);
    assert_eq!(f.per_learner.distinct, 2.0);
    assert!(close(f.per_learner.spread, 0.4));
    let fractions = f.topics.iter().find(|t| t.topic == "fractions").unwrap();
    assert_eq!(fractions.rows, 3);
    assert_eq!(fractions.distinct, 3);
    assert!(close(fractions.spread, 0.4));
    // Population std of 0.2, 0.4, 0.6.
    assert!(close(fractions.std_dev, (0.08f64 / 3.0).sqrt()));
    assert_eq!(f.stuck_learners, 0);
    assert_eq!(f.stuck_eligible_learners, 2);
}

#[test]
fn time_mae_and_interval_coverage_by_hand() {
    let mut rows = vec![
        row("a", "t", 0.5, true, 1),
        row("a", "t", 0.5, false, 2),
        row("a", "t", 0.5, true, 3),
    ];
    // Predicted 10 s, actual 20 s, interval 5..15 → outside.
    rows[0].seconds = Some(20.0);
    rows[0].prediction.seconds = Some(10.0);
    rows[0].prediction.seconds_low = Some(5.0);
    rows[0].prediction.seconds_high = Some(15.0);
    // Predicted 30 s, actual 30 s, interval 20..40 → inside.
    rows[1].seconds = Some(30.0);
    rows[1].prediction.seconds = Some(30.0);
    rows[1].prediction.seconds_low = Some(20.0);
    rows[1].prediction.seconds_high = Some(40.0);
    // An old row: median only (no interval columns) → MAE yes, coverage no.
    rows[2].seconds = Some(12.0);
    rows[2].prediction.seconds = Some(10.0);
    let mut acc = VersionAccumulator::new(5);
    feed(&mut acc, "a", &rows);
    let m = acc.finish().metrics;
    assert_eq!(m.timed_rows, 3);
    assert!(close(m.time_mae_seconds.unwrap(), (10.0 + 0.0 + 2.0) / 3.0));
    assert_eq!(m.interval_rows, 2);
    assert!(close(m.interval_coverage.unwrap(), 0.5));
}

#[test]
fn a_learner_whose_predictions_never_move_is_stuck() {
    let mut acc = VersionAccumulator::new(3);
    // Moves early, then sits at 0.4302-0.4304 for the last three tasks.
    feed(
        &mut acc,
        "stuck-1",
        &[
            row("stuck-1", "t", 0.7, true, 1),
            row("stuck-1", "t", 0.4302, false, 2),
            row("stuck-1", "t", 0.4304, true, 3),
            row("stuck-1", "t", 0.4303, false, 4),
        ],
    );
    // Moves across its last three.
    feed(
        &mut acc,
        "moving",
        &[
            row("moving", "t", 0.5, true, 5),
            row("moving", "t", 0.6, true, 6),
            row("moving", "t", 0.45, false, 7),
        ],
    );
    // Too few tasks to judge.
    feed(
        &mut acc,
        "short",
        &[
            row("short", "t", 0.5, true, 8),
            row("short", "t", 0.5, true, 9),
        ],
    );
    let f = acc.finish();
    assert_eq!(f.stuck_eligible_learners, 2);
    assert_eq!(f.stuck_learners, 1);
    assert_eq!(f.stuck.len(), 1);
    let s = &f.stuck[0];
    assert_eq!(s.user_id, "stuck-1");
    assert_eq!(s.tasks, 4);
    assert!(close(s.p_min, 0.4302) && close(s.p_max, 0.4304), "{s:?}");
    // 0.4302, 0.4303 and 0.4304 are one value at 0.001 resolution.
    assert_eq!(
        f.overall.distinct, 5.0,
        "0.7, 0.430, 0.5, 0.6, 0.45, and nothing else"
    );
}

#[test]
fn a_constant_model_has_auc_one_half_and_is_flagged() {
    let mut acc = VersionAccumulator::new(5);
    for u in 0..10 {
        let user = format!("learner-{u:02}");
        let rows: Vec<OutcomeRow> = (0..25)
            .map(|i| row(&user, "t", 0.43, (u + i) % 3 != 0, i64::from(u * 100 + i)))
            .collect();
        feed(&mut acc, &user, &rows);
    }
    let f = acc.finish();
    assert_eq!(f.metrics.rows, 250);
    assert!(close(f.metrics.auc.unwrap(), 0.5));
    assert_eq!(f.overall.distinct, 1.0);
    assert_eq!(f.overall.spread, 0.0);
    assert_eq!(f.stuck_learners, 10);
    let holdout = BTreeMap::from([("auc".to_string(), 0.75), ("ece".to_string(), 0.02)]);
    let why = reasons(
        &DriftConfig::default(),
        &f.metrics,
        &holdout,
        5,
        f.stuck_eligible_learners,
        f.stuck_learners,
    );
    assert!(why.iter().any(|r| r.contains("AUC 0.500")), "{why:?}");
    // Two thirds succeed against 0.43 predicted: ECE ≈ 0.236, above 0.02 + 0.05.
    assert!(why.iter().any(|r| r.contains("ECE")), "{why:?}");
    assert!(
        why.iter().any(|r| r.contains("10 of 10 learners")),
        "{why:?}"
    );

    // The same live figures against a hold-out they match are not drift.
    let matching = BTreeMap::from([("auc".to_string(), 0.52), ("ece".to_string(), 0.22)]);
    let mut healthy = f.metrics.clone();
    healthy.ece = Some(0.23);
    assert!(reasons(&DriftConfig::default(), &healthy, &matching, 5, 10, 0).is_empty());
    // Too few rows to judge AUC or ECE.
    healthy.rows = 50;
    assert!(reasons(&DriftConfig::default(), &healthy, &holdout, 5, 0, 0).is_empty());
}

#[test]
fn request_validation_names_the_field() {
    let bad = |r: ReportRequest| match r.validated() {
        Err(ReportError::InvalidArgument { field, .. }) => field,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert_eq!(
        bad(ReportRequest {
            stuck_window: 1,
            ..Default::default()
        }),
        "stuck_window"
    );
    assert_eq!(
        bad(ReportRequest {
            last_days: 40_000,
            ..Default::default()
        }),
        "last_days"
    );
    let ok = ReportRequest {
        version: Some("  ".into()),
        ..Default::default()
    }
    .validated()
    .unwrap();
    assert_eq!(ok.stuck_window, 5);
    assert_eq!(ok.version, None);
}

#[test]
fn plot_helpers_by_hand() {
    let bins = reliability_bins(&[0.05, 0.15, 0.12, 1.0], &[false, true, false, true], 10);
    assert_eq!(bins.len(), 3);
    assert_eq!(bins[1].count, 2);
    assert!(close(bins[1].mean_predicted, 0.135) && close(bins[1].observed, 0.5));
    assert_eq!(bins[2].count, 1, "p = 1 falls in the last bin");
    assert!(close(bins[2].lo, 0.9));

    let hist = spread_histogram(&[0.0, 0.0, 0.004, 0.3]);
    let total: u64 = hist.iter().map(|b| b.2).sum();
    assert_eq!(total, 4);
    assert!(close(hist.last().unwrap().1, 0.3));
    // Bars are 0.3 / 50 = 0.006 wide: 0, 0 and 0.004 share the first.
    assert_eq!(hist[0].2, 3);
    assert_eq!(hist[49].2, 1);

    let points: Vec<TimePoint> = (1..=40)
        .map(|i| TimePoint {
            median: f64::from(i),
            interval: Some((f64::from(i) / 2.0, f64::from(i) * 2.0)),
            actual: f64::from(i),
        })
        .collect();
    let band = time_band(&points);
    assert_eq!(band.len(), 20);
    assert!(close(band[0].median, 1.5) && close(band[0].low, 0.75) && close(band[0].high, 3.0));
}

fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

fn is_svg(text: &str) -> bool {
    text.contains("<svg") && text.trim_end().ends_with("</svg>")
}

#[test]
fn plots_are_written_as_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let data = PlotData {
        p: (0..200).map(|i| f64::from(i) / 200.0).collect(),
        y: (0..200).map(|i| i % 3 != 0).collect(),
        time: (1..100)
            .map(|i| TimePoint {
                median: f64::from(i),
                interval: Some((f64::from(i) * 0.5, f64::from(i) * 2.0)),
                actual: f64::from(i) * 1.1,
            })
            .collect(),
        learner_spreads: vec![0.0, 0.005, 0.2, 0.35],
    };
    let files = write_all(dir.path(), "test model", &data).unwrap();
    assert_eq!(files.len(), 6);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            bytes.len() > 1000,
            "{} is {} bytes",
            f.display(),
            bytes.len()
        );
        match f.extension().and_then(|e| e.to_str()) {
            Some("png") => assert!(is_png(&bytes), "{}", f.display()),
            Some("svg") => {
                let text = String::from_utf8(bytes).unwrap();
                assert!(is_svg(&text), "{}", f.display());
                assert!(
                    text.contains("test model"),
                    "the title is in {}",
                    f.display()
                );
            }
            other => panic!("unexpected file {other:?}"),
        }
    }
    // Without times the time plot says so instead of failing.
    let no_times = PlotData {
        time: vec![],
        ..data
    };
    let sub = dir.path().join("no-times");
    write_all(&sub, "no times", &no_times).unwrap();
    let svg = std::fs::read_to_string(sub.join("time.svg")).unwrap();
    assert!(svg.contains("no rows with both a predicted and a recorded time"));
}

/// Deterministic pseudo-random numbers in [0, 1).
fn unit(seed: u64) -> f64 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    s ^= s >> 31;
    s = s.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    s ^= s >> 29;
    (s >> 11) as f64 / (1u64 << 53) as f64
}

const DAY_MS: i64 = 86_400_000;

/// `good-v1`: 40 learners × 10 tasks, informative predictions with times,
/// completed in 2024. `flat-v1`: 30 learners × 8 tasks, always 0.43,
/// completed yesterday. Plus 50 rows without a prediction.
fn outcome_rows() -> Vec<(TaskRow, StoredPrediction)> {
    let mut out = Vec::new();
    let task = |user: String, i: usize, correct: bool, seconds: f64, at: i64| TaskRow {
        user_id: user,
        item_id: Some(format!("item-{i}")),
        topic: ["fractions", "algebra"][i % 2].into(),
        difficulty: "medium".into(),
        correct,
        seconds: Some(seconds),
        completed_at_ms: at,
        started_at_ms: None,
    };
    for u in 0..40u64 {
        for i in 0..10usize {
            let p = 0.15 + 0.7 * unit(u * 1000 + i as u64);
            let correct = unit(u * 7919 + i as u64 + 17) < p;
            let median = 20.0 + 40.0 * unit(u * 31 + i as u64 + 5);
            out.push((
                task(
                    format!("good-{u:02}"),
                    i,
                    correct,
                    median * 1.1,
                    1_704_067_200_000 + i as i64 * 60_000 + u as i64,
                ),
                StoredPrediction {
                    p_correct: p,
                    seconds: Some(median),
                    seconds_low: Some(median * 0.5),
                    seconds_high: Some(median * 2.0),
                    model_version: "good-v1".into(),
                },
            ));
        }
    }
    let yesterday = Utc::now().timestamp_millis() - DAY_MS;
    for u in 0..30u64 {
        for i in 0..8usize {
            out.push((
                task(
                    format!("flat-{u:02}"),
                    i,
                    unit(u * 13 + i as u64) < 0.6,
                    30.0,
                    yesterday + i as i64 * 60_000,
                ),
                StoredPrediction {
                    p_correct: 0.43,
                    seconds: Some(30.0),
                    seconds_low: None,
                    seconds_high: None,
                    model_version: "flat-v1".into(),
                },
            ));
        }
    }
    out
}

async fn seed(db: &Db) {
    let rows = outcome_rows();
    assert_eq!(db.insert_outcomes(&rows).await.unwrap(), 640);
    let plain: Vec<TaskRow> = simulator(5, 10, 3)
        .generate()
        .into_iter()
        .take(50)
        .collect();
    db.insert_tasks(&plain).await.unwrap();
    for (version, auc, ece) in [("good-v1", 0.70, 0.03), ("flat-v1", 0.75, 0.02)] {
        db.insert_model_version(&NewModelVersion {
            version: version.into(),
            family: "linear".into(),
            feature_schema: taskcast_contract::FEATURE_SCHEMA.into(),
            onnx: vec![1, 2, 3],
            metrics: BTreeMap::from([("auc".to_string(), auc), ("ece".to_string(), ece)]),
            reason: "registered by a test".into(),
            run_id: None,
            time_modeled: None,
        })
        .await
        .unwrap();
    }
}

fn request(version: &str, last_days: u32, last_rows: u32, k: u32) -> ModelReportRequest {
    ModelReportRequest {
        version: version.into(),
        last_days,
        last_rows,
        stuck_window: k,
    }
}

/// ModelReport over gRPC on both backends: figures, windows, drift and the
/// status codes of bad requests; then the gauges on /metrics.
#[tokio::test]
async fn model_report_rpc_and_gauges() {
    on_each_backend(async |url, backend| {
        let db = Db::connect(url).await.unwrap();
        seed(&db).await;
        let mut cfg = config(url, 0);
        cfg.no_startup_training = true;
        cfg.report_interval = 1;
        let server = Server::start(cfg).await;
        let mut client = server.client().await;

        let all = client
            .model_report(reader(request("", 0, 0, 0)))
            .await
            .expect("ModelReport")
            .into_inner();
        assert_eq!(all.rows_scanned, 640, "{backend}");
        assert_eq!(all.stuck_window, 5);
        let names: Vec<&str> = all.versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(names, ["good-v1", "flat-v1"], "most rows first");
        let good = &all.versions[0];
        assert_eq!(good.rows, 400);
        assert_eq!(good.state, "candidate");
        assert_eq!(good.holdout.get("auc"), Some(&0.70));
        assert!(good.auc.unwrap() > 0.6, "informative predictions: {good:?}");
        assert_eq!(good.timed_rows, 400);
        assert_eq!(good.interval_rows, 400);
        // actual = 1.1 × median inside [0.5, 2] × median every time.
        assert_eq!(good.interval_coverage, Some(1.0));
        assert_eq!(good.stuck_learners, 0);
        assert_eq!(good.stuck_eligible_learners, 40);
        assert!(!good.drift, "{:?}", good.drift_reasons);
        assert_eq!(good.topics.len(), 2);

        let flat = &all.versions[1];
        assert_eq!(flat.rows, 240);
        assert_eq!(flat.auc, Some(0.5));
        assert_eq!(flat.overall.as_ref().unwrap().distinct, 1.0);
        assert_eq!(flat.per_learner.as_ref().unwrap().spread, 0.0);
        assert_eq!(flat.stuck_learners, 30);
        assert_eq!(flat.stuck.len(), 20, "the list is capped");
        // A reader sees pseudonyms; admin sees the ids, in the same order.
        assert!(all.learner_ids_pseudonymised);
        assert!(
            flat.stuck[0].user_id.starts_with("anon-"),
            "{:?}",
            flat.stuck[0]
        );
        let as_admin = client
            .model_report(admin(request("", 0, 0, 0)))
            .await
            .expect("ModelReport as admin")
            .into_inner();
        assert!(!as_admin.learner_ids_pseudonymised);
        assert_eq!(as_admin.versions[1].stuck[0].user_id, "flat-00");
        assert_eq!(as_admin.versions[1].stuck.len(), 20);
        assert_eq!(flat.interval_rows, 0);
        assert_eq!(flat.interval_coverage, None);
        assert!(flat.drift);
        assert!(
            flat.drift_reasons.iter().any(|r| r.contains("AUC")),
            "{:?}",
            flat.drift_reasons
        );

        // Windows: the last 7 days hold only flat-v1's rows; the newest 100
        // rows are flat-v1's too (inserted last).
        let recent = client
            .model_report(reader(request("", 7, 0, 0)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(recent.versions.len(), 1);
        assert_eq!(recent.versions[0].version, "flat-v1");
        let last = client
            .model_report(reader(request("", 0, 100, 0)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(last.rows_scanned, 100);
        let one = client
            .model_report(reader(request("good-v1", 0, 0, 8)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(one.versions.len(), 1);
        assert_eq!(one.versions[0].stuck_eligible_learners, 40);
        // Registered but without rows in the window: an empty report.
        let silent = client
            .model_report(reader(request("good-v1", 7, 0, 0)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(silent.versions.len(), 1);
        assert_eq!(silent.versions[0].rows, 0);

        let err = client
            .model_report(reader(request("nope", 0, 0, 0)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        let err = client
            .model_report(reader(request("", 0, 0, 1)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("stuck_window"), "{err:?}");
        let err = client
            .model_report(reader(request("", 50_000, 0, 0)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("last_days"), "{err:?}");

        // The gauges, refreshed every second by the server's own task.
        eventually("live gauges", 20, || async {
            (metric_value(
                server.metrics_addr,
                "taskcast_trainer_live_rows{version=\"flat-v1\"}",
            )
            .await
                == Some(240.0))
            .then_some(())
        })
        .await;
        let body = get_metrics(server.metrics_addr).await;
        let value = |name: &str| -> Option<f64> {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        };
        assert_eq!(
            value("taskcast_trainer_live_drift{version=\"flat-v1\"}"),
            Some(1.0)
        );
        assert_eq!(
            value("taskcast_trainer_live_drift{version=\"good-v1\"}"),
            Some(0.0)
        );
        assert_eq!(
            value("taskcast_trainer_live_auc{version=\"flat-v1\"}"),
            Some(0.5)
        );
        assert_eq!(
            value("taskcast_trainer_live_stuck_learners{version=\"flat-v1\"}"),
            Some(30.0)
        );
        assert_eq!(
            value("taskcast_trainer_live_rows{version=\"good-v1\"}"),
            Some(400.0)
        );
        assert_eq!(
            value("taskcast_trainer_live_interval_coverage{version=\"good-v1\"}"),
            Some(1.0)
        );
        assert!(value("taskcast_trainer_live_report_timestamp_seconds").is_some_and(|t| t > 0.0));
        server.stop().await;
        db.close().await.unwrap();
    })
    .await;
}

/// A `completed_tasks` made by a backend before the interval columns existed
/// (the old contract): the migration adds them, old rows stay readable and
/// count everywhere except interval coverage.
#[tokio::test]
async fn old_rows_without_interval_columns_still_report() {
    use sea_orm::{ConnectionTrait, Database};
    let t = taskcast_testdb::TestDb::sqlite().unwrap();
    let raw = Database::connect(t.url()).await.unwrap();
    raw.execute_unprepared(
        "CREATE TABLE completed_tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, \
         topic TEXT NOT NULL, difficulty TEXT NOT NULL DEFAULT '', item_id TEXT, correct BOOLEAN NOT NULL, \
         seconds DOUBLE, completed_at TEXT NOT NULL, predicted_p_correct DOUBLE, \
         predicted_seconds DOUBLE, model_version TEXT)",
    )
    .await
    .unwrap();
    raw.execute_unprepared(
        "INSERT INTO completed_tasks (user_id, topic, correct, seconds, completed_at, \
         predicted_p_correct, predicted_seconds, model_version) VALUES \
         ('u1', 'fractions', 1, 12.0, '2024-01-01T00:00:00+00:00', 0.7, 10.0, 'old-v'), \
         ('u1', 'fractions', 0, 30.0, '2024-01-01T00:01:00+00:00', 0.4, 20.0, 'old-v')",
    )
    .await
    .unwrap();
    raw.close().await.unwrap();

    let db = Db::connect(t.url()).await.expect("migrates the old table");
    let r = trainer_svc::report::compute(&db, &ReportRequest::default(), &DriftConfig::default())
        .await
        .unwrap();
    assert_eq!(r.versions.len(), 1);
    let v = &r.versions[0];
    assert_eq!(v.version, "old-v");
    assert_eq!(v.state, trainer_svc::report::UNREGISTERED);
    assert_eq!(v.live.rows, 2);
    assert_eq!(v.live.auc, Some(1.0));
    assert_eq!(v.live.timed_rows, 2);
    assert!(close(v.live.time_mae_seconds.unwrap(), (2.0 + 10.0) / 2.0));
    assert_eq!(v.live.interval_rows, 0);
    assert_eq!(v.live.interval_coverage, None);
    db.close().await.unwrap();
}

/// Time and memory of one report over a large table (SQLite and PostgreSQL):
/// `TASKCAST_REPORT_ROWS=1000000 cargo test --release -p trainer-svc --test
/// report -- --ignored --nocapture`. Prints figures; asserts only the counts.
#[tokio::test]
#[ignore = "a measurement, minutes long; run by hand"]
async fn report_scale() {
    let n: usize = std::env::var("TASKCAST_REPORT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let peak_kib = || -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    on_each_backend(async |url, backend| {
        let db = Db::connect(url).await.unwrap();
        let started = std::time::Instant::now();
        // 2 000 learners, 4 versions in turn, 8 topics.
        let mut batch = Vec::with_capacity(20_000);
        for i in 0..n {
            let u = i % 2_000;
            let p = 0.1 + 0.8 * unit(i as u64);
            batch.push((
                TaskRow {
                    user_id: format!("learner-{u:05}"),
                    item_id: None,
                    topic: format!("topic-{}", i % 8),
                    difficulty: String::new(),
                    correct: unit(i as u64 + 7) < p,
                    seconds: Some(30.0),
                    completed_at_ms: 1_704_067_200_000 + i as i64 * 1_000,
                    started_at_ms: None,
                },
                StoredPrediction {
                    p_correct: p,
                    seconds: Some(25.0),
                    seconds_low: Some(10.0),
                    seconds_high: Some(60.0),
                    model_version: format!("v{}", (i / (n / 4).max(1)).min(3)),
                },
            ));
            if batch.len() == batch.capacity() || i + 1 == n {
                db.insert_outcomes(&batch).await.unwrap();
                batch.clear();
            }
        }
        let inserted = started.elapsed();
        let before = peak_kib();
        let started = std::time::Instant::now();
        let r =
            trainer_svc::report::compute(&db, &ReportRequest::default(), &DriftConfig::default())
                .await
                .unwrap();
        let took = started.elapsed();
        assert_eq!(r.rows_scanned, n as u64);
        assert_eq!(r.versions.len(), 4);
        eprintln!(
            "{backend}: {n} rows inserted in {:.1}s; report in {:.2}s ({:.0} rows/s); \
             peak RSS {} MiB before, {} MiB after",
            inserted.as_secs_f64(),
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            before / 1024,
            peak_kib() / 1024
        );
        let started = std::time::Instant::now();
        let last = trainer_svc::report::compute(
            &db,
            &ReportRequest {
                last_rows: 200_000,
                ..Default::default()
            },
            &DriftConfig::default(),
        )
        .await
        .unwrap();
        eprintln!(
            "{backend}: the gauges' default window (last 200 000 rows): {:.2}s",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(last.rows_scanned, n.min(200_000) as u64);
        db.close().await.unwrap();
    })
    .await;
}

#[test]
fn a_learner_with_one_prediction_is_not_counted_as_not_moving() {
    let mut acc = VersionAccumulator::new(2);
    feed(&mut acc, "once", &[row("once", "t", 0.5, true, 1)]);
    feed(
        &mut acc,
        "twice",
        &[
            row("twice", "t", 0.3, true, 2),
            row("twice", "t", 0.5, false, 3),
        ],
    );
    let f = acc.finish();
    assert_eq!(f.metrics.rows, 3);
    assert_eq!(f.per_learner.groups, 1);
    assert!(close(f.per_learner.spread, 0.2));
    assert_eq!(f.plot.learner_spreads.len(), 1);
}

//! Database layer tests, each run against a fresh SQLite file and a fresh
//! PostgreSQL database (PostgreSQL must be running; see `db::test_support`).

use std::collections::BTreeMap;
use std::time::Duration;

use taskcast_contract::TaskRow;
use taskcast_testdb::TestDb;
use trainer_svc::db::{
    Db, DbError, ModelState, NewModelVersion, NewRun, PromotionKind, RunState, RunTrigger,
    RunUpdate,
};

/// Runs `f` on a fresh SQLite database, then on a fresh PostgreSQL one.
async fn on_each_backend(f: impl AsyncFn(&str)) {
    let dbs = TestDb::all()
        .await
        .expect("test databases (is PostgreSQL running?)");
    for t in dbs {
        eprintln!("--- backend: {}", t.backend_name());
        f(t.url()).await;
        t.cleanup().await.expect("drop test database");
    }
}

async fn connect(url: &str) -> Db {
    Db::connect(url).await.expect("connect")
}

fn row(user: &str, ms: i64, correct: bool) -> TaskRow {
    TaskRow {
        user_id: user.to_owned(),
        item_id: Some(format!("item{ms}")),
        topic: "fractions".to_owned(),
        difficulty: String::new(),
        correct,
        seconds: Some(ms as f64 / 10.0),
        completed_at_ms: ms,
        started_at_ms: None,
    }
}

async fn scan_all(db: &Db, page: u64, up_to: Option<i64>) -> (Vec<(i64, TaskRow)>, usize) {
    let mut pager = db.scan_tasks(page, up_to);
    let mut all = Vec::new();
    let mut pages = 0;
    while let Some(p) = pager.next_page().await.expect("page") {
        assert!(
            !p.is_empty() && p.len() as u64 <= page,
            "page of {}",
            p.len()
        );
        pages += 1;
        all.extend(p);
    }
    // Finished pagers stay finished.
    assert!(pager.next_page().await.expect("page").is_none());
    (all, pages)
}

#[tokio::test]
async fn migrations_are_idempotent() {
    on_each_backend(async |url| {
        let db = connect(url).await;
        assert_eq!(db.insert_tasks(&[row("u1", 1, true)]).await.unwrap(), 1);
        db.close().await.unwrap();
        // Second connect re-runs the migrator over an existing schema.
        let db = connect(url).await;
        assert_eq!(db.count_tasks().await.unwrap(), 1);
        let db2 = connect(url).await;
        assert_eq!(db2.count_tasks().await.unwrap(), 1);
    })
    .await;
}

#[tokio::test]
async fn paged_scan_orders_by_learner_then_time_across_pages() {
    on_each_backend(async |url| {
        let db = connect(url).await;
        assert_eq!(db.max_task_id().await.unwrap(), None);
        // Inserted out of order, with a timestamp tie inside u2 (broken by id)
        // and several page boundaries inside one learner.
        let mut rows = vec![
            row("u2", 5_000, true),
            row("u1", 3_000, false),
            row("u3", 1_000, true),
            row("u1", 1_000, true),
            row("u2", 2_000, false),
            row("u2", 5_000, false),
            row("u1", 2_000, true),
            row("u2", 1_000, true),
            row("u3", 500, false),
            row("u1", 1_700_000_000_000, true),
        ];
        rows[3].item_id = None;
        rows[3].seconds = None;
        rows[3].difficulty = "hard".to_owned();
        assert_eq!(db.insert_tasks(&rows).await.unwrap(), 10);
        assert_eq!(db.count_tasks().await.unwrap(), 10);
        let max = db.max_task_id().await.unwrap().expect("max id");

        let (got, pages) = scan_all(&db, 3, None).await;
        assert_eq!(pages, 4);
        assert_eq!(got.len(), 10);
        let ids: Vec<i64> = got.iter().map(|(id, _)| *id).collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10, "no row twice");
        assert!(ids.iter().all(|id| *id <= max));

        // Expected: sorted by (user, time, insertion order = id order).
        let mut expected: Vec<(usize, &TaskRow)> = rows.iter().enumerate().collect();
        expected.sort_by(|a, b| {
            (&a.1.user_id, a.1.completed_at_ms, a.0).cmp(&(&b.1.user_id, b.1.completed_at_ms, b.0))
        });
        let got_rows: Vec<&TaskRow> = got.iter().map(|(_, r)| r).collect();
        let expected_rows: Vec<&TaskRow> = expected.iter().map(|(_, r)| *r).collect();
        assert_eq!(got_rows, expected_rows);
        // The u2 tie: the earlier-inserted row (correct = true) comes first.
        let ties: Vec<(i64, bool)> = got
            .iter()
            .filter(|(_, r)| r.user_id == "u2" && r.completed_at_ms == 5_000)
            .map(|(id, r)| (*id, r.correct))
            .collect();
        assert_eq!(ties.len(), 2);
        assert!(ties[0].0 < ties[1].0 && ties[0].1 && !ties[1].1);

        // Same rows through the stream adapter, with a page size of 1.
        use futures::TryStreamExt;
        let streamed: Vec<(i64, TaskRow)> = db
            .scan_tasks(1, None)
            .into_stream()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(streamed, got);
    })
    .await;
}

#[tokio::test]
async fn scan_up_to_id_reads_a_snapshot() {
    on_each_backend(async |url| {
        let db = connect(url).await;
        let first: Vec<TaskRow> = (0..7)
            .map(|i| row(&format!("u{}", i % 3), i, true))
            .collect();
        db.insert_tasks(&first).await.unwrap();
        let watermark = db.max_task_id().await.unwrap().expect("rows");
        let later: Vec<TaskRow> = (0..5).map(|i| row("u0", 100 + i, false)).collect();
        db.insert_tasks(&later).await.unwrap();

        assert_eq!(db.count_tasks_after(watermark).await.unwrap(), 5);
        assert_eq!(db.count_tasks_after(0).await.unwrap(), 12);
        let (got, _) = scan_all(&db, 3, Some(watermark)).await;
        assert_eq!(got.len(), 7);
        assert!(got.iter().all(|(id, r)| *id <= watermark && r.correct));
        let (all, _) = scan_all(&db, 3, None).await;
        assert_eq!(all.len(), 12);
        // Empty snapshot.
        let (none, pages) = scan_all(&db, 3, Some(0)).await;
        assert!(none.is_empty() && pages == 0);
    })
    .await;
}

fn version(v: &str, onnx: &[u8]) -> NewModelVersion {
    NewModelVersion {
        version: v.to_owned(),
        family: "linear".to_owned(),
        feature_schema: "taskcast.features/v1".to_owned(),
        onnx: onnx.to_vec(),
        metrics: BTreeMap::from([("auc".to_owned(), 0.75), ("nan".to_owned(), f64::NAN)]),
        reason: String::new(),
        run_id: Some(format!("run-{v}")),
        time_modeled: None,
    }
}

#[tokio::test]
async fn registry_promote_rollback_and_history() {
    on_each_backend(async |url| {
        let db = connect(url).await;
        assert!(db.active_model_version().await.unwrap().is_none());
        assert!(db.previous_active().await.unwrap().is_none());
        for v in ["v1", "v2", "v3", "v4"] {
            let m = db
                .insert_model_version(&version(v, v.as_bytes()))
                .await
                .unwrap();
            assert_eq!(m.state, ModelState::Candidate);
            assert_eq!(m.size_bytes, 2);
            assert_eq!(m.metrics["auc"], 0.75);
            assert!(m.metrics["nan"].is_nan());
        }
        assert!(matches!(
            db.insert_model_version(&version("v1", b"x")).await,
            Err(DbError::Conflict(_))
        ));
        assert_eq!(
            db.get_model_onnx("v2").await.unwrap().as_deref(),
            Some(&b"v2"[..])
        );
        let v2 = db.get_model_version("v2").await.unwrap().expect("v2");
        use sha2::Digest;
        assert_eq!(v2.sha256, hex::encode(sha2::Sha256::digest(b"v2")));
        assert_eq!(v2.run_id.as_deref(), Some("run-v2"));
        let listed: Vec<String> = db
            .list_model_versions(3)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(listed, ["v4", "v3", "v2"]);

        let a = db.set_active("v1", PromotionKind::Auto).await.unwrap();
        let b = db.set_active("v2", PromotionKind::Promote).await.unwrap();
        let c = db.set_active("v3", PromotionKind::Auto).await.unwrap();
        assert_eq!(c.state, ModelState::Active);
        assert!(c.promoted_at.is_some());
        assert!(a.seq < b.seq && b.seq < c.seq);
        assert_eq!(
            db.active_model_version().await.unwrap().unwrap().version,
            "v3"
        );
        for v in ["v1", "v2"] {
            assert_eq!(
                db.get_model_version(v).await.unwrap().unwrap().state,
                ModelState::Retired
            );
        }
        // Re-promoting the active version changes nothing.
        db.set_active("v3", PromotionKind::Promote).await.unwrap();
        assert_eq!(db.promotion_history().await.unwrap().len(), 3);

        // Rollback goes back one step at a time: v3 -> v2 -> v1.
        assert_eq!(db.previous_active().await.unwrap().unwrap().version, "v2");
        let r = db.rollback().await.unwrap().expect("rolled back");
        assert_eq!(r.version, "v2");
        assert!(r.seq > c.seq);
        assert_eq!(
            db.get_model_version("v3").await.unwrap().unwrap().state,
            ModelState::Retired
        );
        assert_eq!(db.previous_active().await.unwrap().unwrap().version, "v1");

        // A rejected version is skipped; the active one cannot be rejected.
        assert!(matches!(
            db.reject("v2", "bad").await,
            Err(DbError::Conflict(_))
        ));
        let rej = db.reject("v1", "worse than baseline").await.unwrap();
        assert_eq!(rej.state, ModelState::Rejected);
        assert_eq!(rej.reason, "worse than baseline");
        assert!(db.previous_active().await.unwrap().is_none());
        assert!(db.rollback().await.unwrap().is_none());

        // A new promotion makes the current one the rollback target again.
        db.set_active("v4", PromotionKind::Promote).await.unwrap();
        assert_eq!(db.previous_active().await.unwrap().unwrap().version, "v2");

        let kinds: Vec<(String, PromotionKind)> = db
            .promotion_history()
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.version, p.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("v1".to_owned(), PromotionKind::Auto),
                ("v2".to_owned(), PromotionKind::Promote),
                ("v3".to_owned(), PromotionKind::Auto),
                ("v2".to_owned(), PromotionKind::Rollback),
                ("v4".to_owned(), PromotionKind::Promote),
            ]
        );
        assert!(matches!(
            db.set_active("nope", PromotionKind::Promote).await,
            Err(DbError::NotFound { .. })
        ));
        assert_eq!(
            db.active_model_version().await.unwrap().unwrap().version,
            "v4"
        );
    })
    .await;
}

#[tokio::test]
async fn runs_update_and_stale_recovery() {
    on_each_backend(async |url| {
        let db = connect(url).await;
        assert!(db.running_run().await.unwrap().is_none());
        let r1 = db
            .insert_run(&NewRun {
                id: "r1".to_owned(),
                trigger: RunTrigger::Startup,
                family: "linear".to_owned(),
            })
            .await
            .unwrap();
        assert_eq!(r1.state, RunState::Running);
        assert_eq!(r1.phase, "reading");
        assert!(r1.finished_at.is_none());

        let r1 = db
            .update_run(
                "r1",
                &RunUpdate {
                    phase: Some("fitting".to_owned()),
                    progress: Some(0.4),
                    rows_used: Some(1000),
                    rows_skipped: Some(3),
                    skipped_detail: Some(BTreeMap::from([("EmptyTopic".to_owned(), 3)])),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(r1.phase, "fitting");
        assert_eq!(r1.progress, 0.4);
        assert_eq!((r1.rows_used, r1.rows_skipped), (1000, 3));
        assert_eq!(r1.skipped_detail["EmptyTopic"], 3);
        assert_eq!(r1.state, RunState::Running);

        db.insert_run(&NewRun {
            id: "r2".to_owned(),
            trigger: RunTrigger::Operator,
            family: "mlp".to_owned(),
        })
        .await
        .unwrap();
        let r2 = db
            .update_run(
                "r2",
                &RunUpdate {
                    state: Some(RunState::Succeeded),
                    phase: Some("done".to_owned()),
                    progress: Some(1.0),
                    metrics: Some(BTreeMap::from([("auc".to_owned(), 0.8)])),
                    model_version: Some("v9".to_owned()),
                    gate_reason: Some("auc +0.02".to_owned()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(r2.state, RunState::Succeeded);
        assert!(r2.finished_at.is_some());
        assert_eq!(r2.metrics["auc"], 0.8);
        assert_eq!(r2.model_version.as_deref(), Some("v9"));
        assert!(matches!(
            db.update_run("missing", &RunUpdate::default()).await,
            Err(DbError::NotFound { .. })
        ));

        assert_eq!(db.running_run().await.unwrap().unwrap().id, "r1");
        assert_eq!(db.list_runs(10).await.unwrap().len(), 2);

        // While someone holds the training lock a RUNNING run may be live:
        // it is left alone.
        let other = connect(url).await;
        let lock = other.try_training_lock().await.unwrap().expect("lock");
        assert_eq!(db.fail_stale_running_runs("too early").await.unwrap(), 0);
        assert_eq!(
            db.get_run("r1").await.unwrap().unwrap().state,
            RunState::Running
        );
        lock.release().await.unwrap();

        // A restart finds r1 RUNNING although nothing runs it any more.
        drop(db);
        let db = connect(url).await;
        assert_eq!(
            db.fail_stale_running_runs("trainer restarted")
                .await
                .unwrap(),
            1
        );
        let r1 = db.get_run("r1").await.unwrap().unwrap();
        assert_eq!(r1.state, RunState::Failed);
        assert_eq!(r1.error, "trainer restarted");
        assert!(r1.finished_at.is_some());
        assert_eq!(r1.phase, "fitting");
        assert!(db.running_run().await.unwrap().is_none());
        // The finished run is untouched.
        assert_eq!(
            db.get_run("r2").await.unwrap().unwrap().state,
            RunState::Succeeded
        );
        assert_eq!(db.fail_stale_running_runs("again").await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn watermark_persists_across_reconnect() {
    on_each_backend(async |url| {
        let db = connect(url).await;
        assert_eq!(db.get_watermark().await.unwrap(), 0);
        db.set_watermark(42).await.unwrap();
        db.close().await.unwrap();
        let db = connect(url).await;
        assert_eq!(db.get_watermark().await.unwrap(), 42);
        db.set_watermark(7).await.unwrap();
        assert_eq!(db.get_watermark().await.unwrap(), 7);
    })
    .await;
}

#[tokio::test]
async fn training_lock_excludes_a_second_holder() {
    on_each_backend(async |url| {
        // Two handles, as two replicas would have (on SQLite: same process,
        // same file).
        let a = connect(url).await;
        let b = connect(url).await;
        let guard = a.try_training_lock().await.unwrap().expect("first holder");
        assert!(b.try_training_lock().await.unwrap().is_none());
        assert!(a.try_training_lock().await.unwrap().is_none());
        // The lock's dedicated connection does not starve normal queries.
        assert_eq!(a.count_tasks().await.unwrap(), 0);
        guard.release().await.unwrap();

        let guard = b
            .try_training_lock()
            .await
            .unwrap()
            .expect("free after release");
        assert!(a.try_training_lock().await.unwrap().is_none());
        drop(guard);
        // Dropping releases in the background: wait for it.
        let mut got = None;
        for _ in 0..50 {
            got = a.try_training_lock().await.unwrap();
            if got.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            got.is_some(),
            "lock not released after the guard was dropped"
        );
    })
    .await;
}

#[tokio::test]
async fn lock_dies_with_its_holder() {
    // PostgreSQL only: a holder whose process dies (here: whose pool is closed
    // without unlocking) loses the lock because its session ends.
    let t = TestDb::postgres().await.expect("PostgreSQL test database");
    let a = connect(t.url()).await;
    let b = connect(t.url()).await;
    let guard = a.try_training_lock().await.unwrap().expect("first holder");
    // Leak the guard so no unlock is sent; closing the pool does not close
    // the detached connection, so terminate the session server-side instead.
    std::mem::forget(guard);
    use sea_orm::ConnectionTrait;
    b.connection()
        .execute_unprepared(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND pid <> pg_backend_pid() \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await
        .unwrap();
    let mut got = None;
    for _ in 0..50 {
        got = b.try_training_lock().await.unwrap();
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(got.is_some(), "lock survived its session");
    drop(got);
    t.cleanup().await.unwrap();
}

#[tokio::test]
async fn rejects_timestamps_outside_storable_range() {
    on_each_backend(async |url| {
        let db = connect(url).await;
        let bad = row("u", i64::MAX, true);
        assert!(matches!(
            db.insert_tasks(&[row("u", 1, true), bad]).await,
            Err(DbError::Invalid(_))
        ));
        assert_eq!(db.count_tasks().await.unwrap(), 0, "all or nothing");
    })
    .await;
}

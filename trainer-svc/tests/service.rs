//! The trainer service end to end: a real gRPC server on 127.0.0.1:0 over a
//! real database (every test runs on a fresh SQLite file and on a fresh
//! PostgreSQL database), driven by a real tonic client.

mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use taskcast_contract::Artifact;
use taskcast_contract::TaskRow;
use taskcast_proto::{
    GetTrainingRunRequest, ListModelsRequest, ModelArtifact, ModelVersion, PromoteRequest,
    RollbackRequest, TrainRequest, TrainingRun, WatchModelsRequest,
};
use tonic::Code;
use tonic::Streaming;
use trainer_svc::db::{Db, RunState, RunTrigger};

use support::*;

/// Simulated history every test starts from (≈ 2 400 attempts).
fn base_rows(seed: u64) -> (taskcast_sim::Simulator, Vec<TaskRow>) {
    let mut sim = simulator(60, 40, seed);
    let rows = sim.generate();
    (sim, rows)
}

async fn connect(url: &str) -> Db {
    Db::connect(url).await.expect("connect test database")
}

/// The next artifact on a WatchModels stream, within `secs`.
async fn next_message(stream: &mut Streaming<ModelArtifact>, secs: u64) -> ModelArtifact {
    tokio::time::timeout(Duration::from_secs(secs), stream.message())
        .await
        .unwrap_or_else(|_| panic!("no message within {secs} s"))
        .expect("WatchModels stream failed")
        .expect("WatchModels stream ended")
}

/// The next model announced, past the "no version is active yet" message a
/// fresh install starts the stream with.
async fn next_artifact(stream: &mut Streaming<ModelArtifact>, secs: u64) -> ModelArtifact {
    loop {
        let m = next_message(stream, secs).await;
        if !m.no_active_version {
            return m;
        }
        assert!(m.version.is_empty() && m.onnx.is_empty(), "{m:?}");
    }
}

/// The bytes are what the sha256 says and parse as a contract-valid artifact
/// of the announced version.
fn check_artifact(a: &ModelArtifact) -> Artifact {
    assert_eq!(
        taskcast_contract::artifact::sha256_hex(&a.onnx),
        a.sha256,
        "announced sha256 must match the bytes"
    );
    let parsed = Artifact::parse(&a.onnx).expect("artifact parses");
    assert_eq!(parsed.metadata.version, a.version);
    assert_eq!(parsed.metadata.family, a.family);
    assert_eq!(parsed.metadata.feature_schema, a.feature_schema);
    assert!(a.promoted_at.is_some());
    parsed
}

fn model<'a>(models: &'a [ModelVersion], version: &str) -> &'a ModelVersion {
    models
        .iter()
        .find(|m| m.version == version)
        .unwrap_or_else(|| panic!("{version} not in the registry: {models:?}"))
}

fn active_versions(models: &[ModelVersion]) -> Vec<&str> {
    models
        .iter()
        .filter(|m| m.state == "active")
        .map(|m| m.version.as_str())
        .collect()
}

/// Starts a run with the admin token and waits for its end.
async fn train_and_wait(
    client: &mut taskcast_proto::trainer_client::TrainerClient<tonic::transport::Channel>,
    db: &Db,
    force: bool,
) -> trainer_svc::db::RunRecord {
    let run = client
        .train(admin(TrainRequest {
            family: String::new(),
            force,
        }))
        .await
        .expect("Train")
        .into_inner();
    assert_eq!(run.trigger, "operator");
    let end = wait_run_end(db, &run.id, 60).await;
    // The run's task advances the watermark and then releases the training
    // lock after recording the end; a Train sent inside that window is
    // refused as ABORTED ("another replica is training"), so let it finish.
    if end.state != RunState::Failed {
        wait_watermark(db).await;
    }
    end
}

/// (a) startup run → active version → subscriber gets it → N new tasks →
/// automatic run → subscriber gets the next version, or the gate's rejection
/// is recorded identically in the run and in the registry.
#[tokio::test]
async fn full_loop_startup_then_auto_retrain() {
    on_each_backend(async |url, backend| {
        let (mut sim, rows) = base_rows(1);
        let db = connect(url).await;
        db.insert_tasks(&rows).await.unwrap();
        let n = 60;
        let server = Server::start(config(url, n)).await;
        let mut client = server.client().await;
        let mut watch = client
            .watch_models(replica(WatchModelsRequest {
                subscriber: format!("test-{backend}"),
            }))
            .await
            .expect("WatchModels")
            .into_inner();

        let first = next_artifact(&mut watch, 60).await;
        let parsed = check_artifact(&first);
        assert_eq!(parsed.metadata.family, "linear");
        let models = list_models(&mut client).await;
        assert_eq!(active_versions(&models), vec![first.version.as_str()]);
        assert_eq!(model(&models, &first.version).sha256, first.sha256);

        let all = runs(&db).await;
        assert_eq!(all.len(), 1, "{all:?}");
        let startup = wait_run_end(&db, &all[0].id, 30).await;
        assert_eq!(startup.trigger, RunTrigger::Startup);
        assert_eq!(startup.state, RunState::Succeeded, "{startup:?}");
        assert_eq!(
            startup.model_version.as_deref(),
            Some(first.version.as_str())
        );
        assert_eq!(startup.rows_used, rows.len() as u64);
        assert_eq!(startup.rows_skipped, 0);
        assert!(!startup.gate_reason.is_empty());
        wait_watermark(&db).await;

        // N new tasks: the scheduler starts an automatic run on its own.
        let more = more_rows(&mut sim, n as usize);
        db.insert_tasks(&more).await.unwrap();
        let auto = trigger_run_end(&db, RunTrigger::Auto, "an automatic run").await;
        assert_eq!(auto.rows_used, (rows.len() + more.len()) as u64);
        let version = auto
            .model_version
            .clone()
            .expect("the run produced a version");
        assert_ne!(version, first.version);
        assert!(!auto.gate_reason.is_empty(), "{auto:?}");
        let models = list_models(&mut client).await;
        let entry = model(&models, &version);
        match auto.state {
            RunState::Succeeded => {
                let next = next_artifact(&mut watch, 30).await;
                check_artifact(&next);
                assert_eq!(next.version, version);
                assert_eq!(entry.state, "active");
                assert_eq!(model(&models, &first.version).state, "retired");
                assert_eq!(active_versions(&models), vec![version.as_str()]);
            }
            RunState::Rejected => {
                eprintln!("auto run rejected: {}", auto.gate_reason);
                assert_eq!(entry.state, "rejected");
                assert_eq!(entry.reason, auto.gate_reason);
                assert_eq!(active_versions(&models), vec![first.version.as_str()]);
                // Nothing new reaches subscribers.
                let quiet = tokio::time::timeout(Duration::from_millis(500), watch.message()).await;
                assert!(quiet.is_err(), "no artifact after a rejection: {quiet:?}");
            }
            other => panic!("auto run ended {other:?}: {}", auto.error),
        }
        wait_watermark(&db).await;
        // Exactly two runs: nothing retrains without new data.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(runs(&db).await.len(), 2);
        drop(watch);
        server.stop().await;
        db.close().await.unwrap();
    })
    .await;
}

/// (b) eight Train calls at once share one run.
#[tokio::test]
async fn concurrent_train_calls_share_one_run() {
    on_each_backend(async |url, _| {
        let (_, rows) = base_rows(2);
        let db = connect(url).await;
        db.insert_tasks(&rows).await.unwrap();
        let mut c = config(url, 0);
        c.no_startup_training = true;
        let server = Server::start(c).await;
        let client = server.client().await;
        let calls = (0..8).map(|_| {
            let mut client = client.clone();
            async move {
                client
                    .train(admin(TrainRequest::default()))
                    .await
                    .map(|r| r.into_inner())
            }
        });
        let results: Vec<TrainingRun> = join_all(calls)
            .await
            .into_iter()
            .map(|r| r.expect("Train"))
            .collect();
        let id = &results[0].id;
        assert!(!id.is_empty());
        for r in &results {
            assert_eq!(&r.id, id, "every concurrent call returns the same run");
        }
        let end = wait_run_end(&db, id, 60).await;
        assert!(end.state != RunState::Failed, "{end:?}");
        let all = runs(&db).await;
        assert_eq!(all.len(), 1, "exactly one run: {all:?}");
        server.stop().await;
        db.close().await.unwrap();
    })
    .await;
}

/// (c) the watermark lives in the database: rows inserted while no trainer
/// ran (or before the running one noticed them) trigger a run after restart.
#[tokio::test]
async fn restart_keeps_the_watermark() {
    on_each_backend(async |url, _| {
        let (mut sim, rows) = base_rows(3);
        let db = connect(url).await;
        db.insert_tasks(&rows).await.unwrap();
        let n = 40u64;

        // First life: the startup run sets the watermark.
        let server = Server::start(config(url, n)).await;
        let first = eventually("the startup run to end", 60, || async {
            runs(&db).await.into_iter().find(|r| r.state.is_terminal())
        })
        .await;
        assert_eq!(first.trigger, RunTrigger::Startup);
        assert_ne!(first.state, RunState::Failed, "{first:?}");
        wait_watermark(&db).await;
        server.stop().await;

        // Rows arrive while the trainer is down; the restarted one runs
        // without any insert after the restart.
        db.insert_tasks(&more_rows(&mut sim, n as usize))
            .await
            .unwrap();
        let server = Server::start(config(url, n)).await;
        let auto = trigger_run_end(&db, RunTrigger::Auto, "an automatic run after restart").await;
        assert_ne!(auto.state, RunState::Failed, "{auto:?}");
        assert_eq!(runs(&db).await.len(), 2);
        wait_watermark(&db).await;
        server.stop().await;

        // Rows arrive while a trainer runs but before it polls again (a long
        // poll interval), then it stops: the next trainer still triggers.
        let mut slow = config(url, n);
        slow.poll_interval_ms = 600_000;
        // One row below the threshold before it starts (so its first poll,
        // which races the start, surely counts it), then wait until it has:
        // the first poll is over and the next is ten minutes off.
        db.insert_tasks(&more_rows(&mut sim, 1)).await.unwrap();
        let server = Server::start(slow).await;
        eventually("the scheduler to count the pending row", 30, || async {
            (metric_value(server.metrics_addr, "taskcast_trainer_pending_tasks").await == Some(1.0))
                .then_some(())
        })
        .await;
        db.insert_tasks(&more_rows(&mut sim, n as usize - 1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.stop().await;
        assert_eq!(runs(&db).await.len(), 2, "the slow trainer started nothing");
        let server = Server::start(config(url, n)).await;
        let again = eventually("an automatic run after the second restart", 30, || async {
            let all = runs(&db).await;
            (all.len() == 3).then(|| all[0].clone())
        })
        .await;
        assert_eq!(again.trigger, RunTrigger::Auto);
        let again = wait_run_end(&db, &again.id, 60).await;
        assert_ne!(again.state, RunState::Failed, "{again:?}");
        wait_watermark(&db).await;
        server.stop().await;
        db.close().await.unwrap();
    })
    .await;
}

/// (c2) automatic runs keep a cadence whatever the task rate: after a run,
/// none starts within the minimum interval however many rows arrive, and
/// none starts while the new rows are a negligible share of the last run's.
#[tokio::test]
async fn automatic_runs_keep_a_cadence() {
    let tdb = taskcast_testdb::TestDb::sqlite().unwrap();
    let url = tdb.url();
    let (mut sim, rows) = base_rows(7);
    let db = connect(url).await;
    db.insert_tasks(&rows).await.unwrap();
    let mut c = config(url, 5);
    c.retrain_min_interval_seconds = 3;
    // 10 % of the startup run's ~2 000 training rows: about 200 new rows.
    c.retrain_min_growth = 0.1;
    let server = Server::start(c).await;
    let first = eventually("the startup run to end", 60, || async {
        runs(&db).await.into_iter().find(|r| r.state.is_terminal())
    })
    .await;
    assert_ne!(first.state, RunState::Failed, "{first:?}");
    let needed = (0.1 * first.rows_used as f64).ceil() as usize;
    assert!(needed > 50, "{first:?}");
    let ended = std::time::Instant::now();

    // Enough rows for --retrain-every (5) but far below the growth share.
    db.insert_tasks(&more_rows(&mut sim, 50)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        runs(&db).await.len(),
        1,
        "a run started on a negligible share of new rows"
    );

    // Enough for both rules: a run, but not before the interval is over.
    db.insert_tasks(&more_rows(&mut sim, needed)).await.unwrap();
    let auto = eventually("an automatic run once the share is reached", 30, || async {
        runs(&db)
            .await
            .into_iter()
            .find(|r| r.trigger == RunTrigger::Auto)
    })
    .await;
    assert!(ended.elapsed() >= Duration::from_secs(3));
    let auto = wait_run_end(&db, &auto.id, 60).await;
    assert_ne!(auto.state, RunState::Failed, "{auto:?}");
    let auto_ended = std::time::Instant::now();

    // Right after it, a burst big enough for both rules waits out the interval.
    db.insert_tasks(&more_rows(&mut sim, 2 * needed))
        .await
        .unwrap();
    let next = eventually("the next automatic run", 30, || async {
        let all = runs(&db).await;
        (all.len() == 3).then(|| all[0].clone())
    })
    .await;
    assert!(
        next.started_at.timestamp_millis() - auto.finished_at.unwrap().timestamp_millis() >= 2_900,
        "started {:?} after the last run ended at {:?}",
        next.started_at,
        auto.finished_at
    );
    assert!(auto_ended.elapsed() >= Duration::from_millis(2_500));
    wait_run_end(&db, &next.id, 60).await;
    server.stop().await;
    db.close().await.unwrap();
}

/// (d) unusable rows are skipped, counted by reason, and the run succeeds.
#[tokio::test]
async fn bad_rows_are_skipped_and_counted() {
    on_each_backend(async |url, backend| {
        let (_, mut rows) = base_rows(4);
        let good = rows.len() as u64;
        let bad = |user: &str, topic: &str, seconds: Option<f64>, ms: i64| TaskRow {
            user_id: user.into(),
            item_id: Some("fractions-001".into()),
            topic: topic.into(),
            difficulty: String::new(),
            correct: true,
            seconds,
            completed_at_ms: 1_704_067_200_000 + ms,
            started_at_ms: None,
        };
        rows.extend([
            bad("", "fractions", Some(10.0), 1),
            bad("learner-0001", "", Some(10.0), 2),
            bad("learner-0002", "fractions", Some(-5.0), 3),
            bad("learner-0003", "fractions", Some(f64::INFINITY), 4),
            bad("learner-0004", "fractions", Some(f64::NEG_INFINITY), 5),
            bad("learner-0005", "fractions", Some(f64::NAN), 6),
        ]);
        let db = connect(url).await;
        db.insert_tasks(&rows).await.unwrap();
        // SQLite stores NaN as NULL (a row without a recorded time, which is
        // usable); PostgreSQL keeps NaN, which the trainer must skip.
        let nan_skipped = backend == "postgres";
        let (expected_skipped, expected_bad_seconds) = if nan_skipped { (6, 4) } else { (5, 3) };

        let server = Server::start(config(url, 0)).await;
        let run = eventually("the startup run to end", 60, || async {
            runs(&db).await.into_iter().find(|r| r.state.is_terminal())
        })
        .await;
        assert_eq!(run.state, RunState::Succeeded, "{run:?}");
        assert_eq!(
            run.rows_skipped, expected_skipped,
            "{:?}",
            run.skipped_detail
        );
        assert_eq!(
            run.rows_used,
            good + (rows.len() as u64 - good) - expected_skipped
        );
        assert_eq!(run.skipped_detail.get("EmptyUser"), Some(&1));
        assert_eq!(run.skipped_detail.get("EmptyTopic"), Some(&1));
        assert_eq!(
            run.skipped_detail.get("BadSeconds"),
            Some(&expected_bad_seconds)
        );
        // The API shows the same count.
        let mut client = server.client().await;
        let api = client
            .get_training_run(reader(GetTrainingRunRequest { id: run.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(api.rows_skipped, expected_skipped);
        assert_eq!(api.state, "SUCCEEDED");
        server.stop().await;
        db.close().await.unwrap();
    })
    .await;
}

/// (e) Promote and Rollback through the API reach subscribers.
#[tokio::test]
async fn promote_and_rollback() {
    on_each_backend(async |url, _| {
        let (_, rows) = base_rows(5);
        let db = connect(url).await;
        db.insert_tasks(&rows).await.unwrap();
        let mut c = config(url, 0);
        c.no_startup_training = true;
        let server = Server::start(c).await;
        let mut client = server.client().await;

        // Nothing to roll back to yet.
        let err = client
            .rollback(admin(RollbackRequest {}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        let err = client
            .promote(admin(PromoteRequest {
                version: "linear-20000101T000000000Z".into(),
                canary_percent: 0,
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");

        let mut watch = client
            .watch_models(replica(WatchModelsRequest {
                subscriber: "replica".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        // A fresh install: the trainer says so, and only then may a
        // replica serve its startup model.
        let fresh = next_message(&mut watch, 30).await;
        assert!(
            fresh.no_active_version && fresh.version.is_empty(),
            "{fresh:?}"
        );
        let r1 = train_and_wait(&mut client, &db, true).await;
        assert_eq!(r1.state, RunState::Succeeded, "{r1:?}");
        let v1 = r1.model_version.clone().unwrap();
        assert_eq!(next_artifact(&mut watch, 30).await.version, v1);
        // One version only: still nothing to roll back to.
        let err = client
            .rollback(admin(RollbackRequest {}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

        let r2 = train_and_wait(&mut client, &db, true).await;
        assert_eq!(r2.state, RunState::Succeeded, "{r2:?}");
        let v2 = r2.model_version.clone().unwrap();
        assert_ne!(v1, v2);
        assert_eq!(next_artifact(&mut watch, 30).await.version, v2);

        // Promote the older version back.
        let promoted = client
            .promote(admin(PromoteRequest {
                version: v1.clone(),
                canary_percent: 0,
            }))
            .await
            .expect("Promote")
            .into_inner();
        assert_eq!(promoted.version, v1);
        assert_eq!(promoted.state, "active");
        let got = next_artifact(&mut watch, 10).await;
        assert_eq!(got.version, v1);
        check_artifact(&got);
        let models = list_models(&mut client).await;
        assert_eq!(active_versions(&models), vec![v1.as_str()]);
        assert_eq!(model(&models, &v2).state, "retired");

        // Rollback returns to the version active before: v2.
        let back = client
            .rollback(admin(RollbackRequest {}))
            .await
            .expect("Rollback")
            .into_inner();
        assert_eq!(back.version, v2);
        assert_eq!(back.state, "active");
        assert_eq!(next_artifact(&mut watch, 10).await.version, v2);
        let models = list_models(&mut client).await;
        assert_eq!(active_versions(&models), vec![v2.as_str()]);
        assert_eq!(
            db.active_model_version().await.unwrap().unwrap().version,
            v2
        );

        drop(watch);
        server.stop().await;
        db.close().await.unwrap();
    })
    .await;
}

/// (f) admin RPCs need the admin token; reads the reader's (or admin's),
/// the model stream the replica's.
#[tokio::test]
async fn admin_rpcs_need_the_token() {
    on_each_backend(async |url, _| {
        let (_, rows) = base_rows(6);
        let db = connect(url).await;
        db.insert_tasks(&rows).await.unwrap();
        let mut c = config(url, 0);
        c.no_startup_training = true;
        let server = Server::start(c).await;
        let mut client = server.client().await;

        for auth in [
            None,
            Some("Bearer wrong-token"),
            Some("test-token"),
            Some("Basic test-token"),
        ] {
            let req = |msg| match auth {
                None => tonic::Request::new(msg),
                Some(a) => with_auth(msg, a),
            };
            let e = client
                .train(req(TrainRequest::default()))
                .await
                .unwrap_err();
            assert_eq!(
                e.code(),
                Code::Unauthenticated,
                "Train with {auth:?}: {e:?}"
            );
            let e = client
                .promote(match auth {
                    None => tonic::Request::new(PromoteRequest {
                        version: "x".into(),
                        canary_percent: 0,
                    }),
                    Some(a) => with_auth(
                        PromoteRequest {
                            version: "x".into(),
                            canary_percent: 0,
                        },
                        a,
                    ),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "Promote with {auth:?}");
            let e = client
                .rollback(match auth {
                    None => tonic::Request::new(RollbackRequest {}),
                    Some(a) => with_auth(RollbackRequest {}, a),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "Rollback with {auth:?}");
        }
        // Nothing changed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(runs(&db).await.is_empty(), "no run may start");
        assert!(db.active_model_version().await.unwrap().is_none());

        // Reads and the model stream need their roles, and have them here.
        for (auth, want) in [
            (None, Code::Unauthenticated),
            (Some("Bearer test-replica-token"), Code::PermissionDenied),
        ] {
            let req = |msg| match auth {
                None => tonic::Request::new(msg),
                Some(a) => with_auth(msg, a),
            };
            let e = client
                .list_models(req(ListModelsRequest { limit: 1 }))
                .await
                .unwrap_err();
            assert_eq!(e.code(), want, "ListModels with {auth:?}");
        }
        assert!(list_models(&mut client).await.is_empty());
        let e = client
            .get_training_run(reader(GetTrainingRunRequest { id: "run-x".into() }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let watch = client
            .watch_models(replica(WatchModelsRequest {
                subscriber: "anon".into(),
            }))
            .await;
        assert!(watch.is_ok(), "{watch:?}");
        drop(watch);

        // The right token does get through (the refusals above were about
        // the token, not something else).
        let run = train_and_wait(&mut client, &db, false).await;
        assert_ne!(run.state, RunState::Failed, "{run:?}");
        assert_eq!(runs(&db).await.len(), 1);
        server.stop().await;
        db.close().await.unwrap();
    })
    .await;
}

const PHASES: [&str; 9] = [
    "", // a run's phase before the first progress report
    "reading",
    "features",
    "fitting",
    "evaluating",
    "exporting",
    "gating",
    "publishing",
    "done",
];

/// (g) WatchTrainingRun streams phases in order and ends with the run;
/// lookups and arguments are validated.
#[tokio::test]
async fn watch_training_run_and_argument_errors() {
    on_each_backend(async |url, _| {
        let (_, rows) = base_rows(7);
        let db = connect(url).await;
        db.insert_tasks(&rows).await.unwrap();
        let mut c = config(url, 0);
        c.no_startup_training = true;
        let server = Server::start(c).await;
        let mut client = server.client().await;

        let e = client
            .get_training_run(reader(GetTrainingRunRequest {
                id: "run-19700101T000000000000Z".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = client
            .watch_training_run(reader(GetTrainingRunRequest { id: "nope".into() }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = client
            .train(admin(TrainRequest {
                family: "random-forest".into(),
                force: false,
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("family"), "{}", e.message());
        assert!(runs(&db).await.is_empty());

        let run = client
            .train(admin(TrainRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let mut stream = client
            .watch_training_run(reader(GetTrainingRunRequest { id: run.id.clone() }))
            .await
            .expect("WatchTrainingRun")
            .into_inner();
        let mut seen: Vec<TrainingRun> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.message()).await {
                Err(_) => panic!("the watch did not end; saw {seen:?}"),
                Ok(Err(e)) => panic!("watch failed: {e:?}"),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(r))) => seen.push(r),
            }
        }
        assert!(!seen.is_empty());
        let last = seen.last().unwrap();
        assert!(
            last.state == "SUCCEEDED" || last.state == "REJECTED",
            "terminal state: {last:?}"
        );
        assert_eq!(last.phase, "done");
        assert!((last.progress - 1.0).abs() < 1e-9);
        assert!(last.finished_at.is_some());
        let mut prev = (0usize, 0f64);
        for r in &seen {
            assert_eq!(r.id, run.id);
            let at = PHASES
                .iter()
                .position(|p| *p == r.phase)
                .unwrap_or_else(|| panic!("unknown phase {:?}", r.phase));
            assert!(at >= prev.0, "phases go forward: {seen:?}");
            assert!(r.progress >= prev.1 - 1e-9, "progress goes forward");
            prev = (at, r.progress);
        }
        // Only the final message is terminal.
        assert!(
            seen[..seen.len() - 1].iter().all(|r| r.state == "RUNNING"),
            "{seen:?}"
        );
        // The same run by id.
        let got = client
            .get_training_run(reader(GetTrainingRunRequest { id: run.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.state, last.state);
        assert_eq!(got.model_version, last.model_version);
        server.stop().await;
        db.close().await.unwrap();
    })
    .await;
}

/// (h) health, reflection and /metrics.
#[tokio::test]
async fn health_reflection_and_metrics() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    on_each_backend(async |url, _| {
        let (_, rows) = base_rows(8);
        let db = connect(url).await;
        db.insert_tasks(&rows).await.unwrap();
        let mut c = config(url, 0);
        c.no_startup_training = true;
        let server = Server::start(c).await;
        let channel = server.channel().await;

        let mut health = HealthClient::new(channel.clone());
        let status = health
            .check(HealthCheckRequest {
                service: "taskcast.v1.Trainer".into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32);

        let mut reflection = ServerReflectionClient::new(channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = reflection
            .server_reflection_info(futures::stream::iter([req]))
            .await
            .expect("reflection")
            .into_inner();
        let answer = answers.message().await.unwrap().expect("one answer");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("unexpected reflection answer {answer:?}");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"taskcast.v1.Trainer"), "{names:?}");
        assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

        let mut client = server.client().await;
        let run = train_and_wait(&mut client, &db, false).await;
        let body = get_metrics(server.metrics_addr).await;
        assert!(
            body.contains("taskcast_trainer_runs_finished_total"),
            "{body}"
        );
        let line = format!(
            "taskcast_trainer_runs_finished_total{{state=\"{}\"}} 1",
            run.state.as_str()
        );
        assert!(body.contains(&line), "missing {line:?} in {body}");
        assert!(body.contains("taskcast_trainer_runs_started_total{trigger=\"operator\"} 1"));
        server.stop().await;
        db.close().await.unwrap();
    })
    .await;
}

/// (i) an open WatchModels stream does not hold up shutdown.
#[tokio::test]
async fn shutdown_with_open_watch_is_prompt() {
    on_each_backend(async |url, _| {
        let (_, rows) = base_rows(9);
        let db = connect(url).await;
        db.insert_tasks(&rows).await.unwrap();
        // Grace is 10 s: a stream that held the drain would show up as ≥ 10 s.
        let server = Server::start(config(url, 0)).await;
        let mut client = server.client().await;
        let mut watch = client
            .watch_models(replica(WatchModelsRequest {
                subscriber: "replica".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        // Wait for the startup model so the stream is really carrying data.
        let first = next_artifact(&mut watch, 60).await;
        check_artifact(&first);
        let took = server.stop().await;
        assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
        // The client sees the stream end rather than hang.
        let end = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("the stream ends with the server");
        assert!(!matches!(end, Ok(Some(_))), "{end:?}");
        db.close().await.unwrap();
    })
    .await;
}

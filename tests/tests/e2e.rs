//! The whole loop as a user runs it: trainer-svc and two inference-svc
//! replicas as separate processes on 127.0.0.1, a backend writing completed
//! tasks into the database, clients in Rust and Python.
//!
//! The binaries come from the same target directory as this test
//! (`cargo build --workspace --bins` first; `scripts/test.sh` does).

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use taskcast_contract::TaskRow;
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_proto::{
    Attempt, Candidate, GetModelRequest, ListModelsRequest, PredictRequest, PromoteRequest,
    RollbackRequest,
};
use taskcast_sim::{SimConfig, Simulator};
use taskcast_testdb::TestDb;
use tonic::transport::Channel;
use trainer_svc::db::Db;

mod support;
use support::{
    InferenceProc, READER_TOKEN, REPLICA_TOKEN, TOKEN, TrainerProc, admin, binary, connect, reader,
    workspace,
};

fn attempts(rows: &[TaskRow]) -> Vec<Attempt> {
    rows.iter()
        .map(|r| Attempt {
            topic: r.topic.clone(),
            difficulty: r.difficulty.clone(),
            correct: r.correct,
            seconds: r.seconds.unwrap_or(0.0),
            completed_at: Some(prost_types::Timestamp {
                seconds: r.completed_at_ms / 1000,
                nanos: 0,
            }),
            item_id: r.item_id.clone().unwrap_or_default(),
        })
        .collect()
}

/// Waits until `cond` holds for the replica's served model, returning its version.
async fn wait_model(
    client: &mut InferenceClient<Channel>,
    what: &str,
    cond: impl Fn(&taskcast_proto::ModelInfo) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(m) = client.get_model(GetModelRequest {}).await {
            let m = m.into_inner();
            if cond(&m) {
                return Ok(m.version);
            }
        }
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn active_version(trainer: &mut TrainerClient<Channel>) -> Result<Option<String>> {
    let models = trainer
        .list_models(reader(ListModelsRequest { limit: 100 }))
        .await?
        .into_inner()
        .models;
    Ok(models
        .into_iter()
        .find(|m| m.state == "active")
        .map(|m| m.version))
}

/// The loop on one database URL.
async fn whole_loop(db_url: &str, dir: &Path) -> Result<()> {
    // The app's backend has been writing completed tasks.
    let db = Db::connect(db_url).await?;
    let mut sim = Simulator::new(SimConfig {
        seed: 11,
        learners: 60,
        attempts_per_learner: 40,
        ..Default::default()
    })?;
    let rows = sim.generate();
    db.insert_tasks(&rows).await?;

    let trainer_proc = TrainerProc::start(db_url, dir, "trainer", &["--retrain-every", "20"])?;
    let tp = trainer_proc.port;
    let replicas = [
        InferenceProc::start(dir, "r1", Some(&trainer_proc.url()), &[])?,
        InferenceProc::start(dir, "r2", Some(&trainer_proc.url()), &[])?,
    ];
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let mut trainer = TrainerClient::new(connect(tp).await?);
    let mut clients = Vec::new();
    for p in &ports {
        clients.push(InferenceClient::new(connect(*p).await?));
    }

    // Startup training promotes a model; both replicas swap to it.
    let first = loop {
        if let Some(v) = active_version(&mut trainer).await? {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for c in clients.iter_mut() {
        wait_model(c, "the first trained model", |m| m.version == first).await?;
    }

    // A learner's prediction moves after more completed tasks, with no retrain.
    let learner = rows[0].user_id.clone();
    let mut history: Vec<TaskRow> = rows
        .iter()
        .filter(|r| r.user_id == learner)
        .cloned()
        .collect();
    let topic = history.last().map(|r| r.topic.clone()).unwrap_or_default();
    let cand = Candidate {
        task_id: "next".into(),
        topic: topic.clone(),
        difficulty: "medium".into(),
        item_id: String::new(),
    };
    let predict = |h: &[TaskRow]| PredictRequest {
        user_id: learner.clone(),
        history: attempts(h),
        candidates: vec![cand.clone()],
        explain: false,
        as_of: None,
    };
    let before = clients[0]
        .predict(predict(&history))
        .await?
        .into_inner()
        .predictions[0]
        .p_correct;
    let mut newer: Vec<TaskRow> = (0..6)
        .map(|i| TaskRow {
            user_id: learner.clone(),
            item_id: None,
            topic: topic.clone(),
            difficulty: "medium".into(),
            correct: true,
            seconds: Some(15.0),
            completed_at_ms: history.last().map_or(0, |r| r.completed_at_ms) + 60_000 * (i + 1),
            started_at_ms: None,
        })
        .collect();
    db.insert_tasks(&newer).await?;
    history.append(&mut newer);
    let after = clients[1]
        .predict(predict(&history))
        .await?
        .into_inner()
        .predictions[0]
        .p_correct;
    ensure!(
        after > before,
        "six correct answers in {topic} should raise p_correct: {before} -> {after}"
    );

    // More completed tasks fire auto-training; a second version is registered.
    let more = sim
        .next_attempts(&rows[1].user_id, 30)
        .context("simulated learner")?;
    db.insert_tasks(&more).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let models = trainer
            .list_models(reader(ListModelsRequest { limit: 100 }))
            .await?
            .into_inner()
            .models;
        if models.len() >= 2 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "auto-training did not register a second version"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Clients in other languages: the Python example client's live tests.
    let venv = workspace().join(".venv/bin/pytest");
    ensure!(
        venv.exists(),
        "{} missing: run scripts/setup-python.sh",
        venv.display()
    );
    let py = Command::new(&venv)
        .args(["-q", "examples/python/test_client.py", "-k", "not rollback"])
        .current_dir(workspace())
        .env("TASKCAST_INFERENCE_ADDR", format!("127.0.0.1:{}", ports[0]))
        .env("TASKCAST_TRAINER_ADDR", format!("127.0.0.1:{tp}"))
        .env("TASKCAST_ADMIN_TOKEN", TOKEN)
        .env("TASKCAST_READER_TOKEN", READER_TOKEN)
        .env("TASKCAST_REPLICA_TOKEN", REPLICA_TOKEN)
        .output()?;
    ensure!(
        py.status.success(),
        "python client tests failed:\n{}\n{}",
        String::from_utf8_lossy(&py.stdout),
        String::from_utf8_lossy(&py.stderr)
    );
    let rust = Command::new(binary("taskcast-client")?)
        .args([
            "--inference",
            &format!("http://127.0.0.1:{}", ports[1]),
            "predict",
            "--user",
            &learner,
            "--candidate",
            &format!("t1:{topic}:easy"),
        ])
        .output()?;
    ensure!(
        rust.status.success(),
        "rust client failed: {}",
        String::from_utf8_lossy(&rust.stderr)
    );
    ensure!(
        String::from_utf8_lossy(&rust.stdout).contains("p_correct"),
        "rust client printed no prediction"
    );

    // The Python test's own Train has ended (it waits for it), so the
    // registry is settled before promotion and rollback are checked.
    let versions = trainer
        .list_models(reader(ListModelsRequest { limit: 100 }))
        .await?
        .into_inner()
        .models;
    let active_now = active_version(&mut trainer)
        .await?
        .context("an active version")?;
    for c in clients.iter_mut() {
        wait_model(c, "the active version", |m| m.version == active_now).await?;
    }

    // Promotion and rollback under load on both replicas: zero failures.
    let known: HashSet<String> = versions.iter().map(|m| m.version.clone()).collect();
    let other = versions
        .iter()
        .find(|m| m.version != active_now)
        .map(|m| m.version.clone())
        .context("a second version")?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let seen = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut load = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        for _ in 0..4 {
            let (mut c, stop, ok, failed, seen) = (
                c.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
                seen.clone(),
            );
            let req = predict(&history);
            load.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match c.predict(req.clone()).await {
                        Ok(r) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut s) = seen.lock() {
                                s.insert(r.into_inner().model_version);
                            }
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("replica {i}: {e}");
                        }
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    trainer
        .promote(admin(PromoteRequest {
            version: other.clone(),
            canary_percent: 0,
        }))
        .await?;
    for c in clients.iter_mut() {
        wait_model(c, "the promoted version", |m| m.version == other).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back = trainer
        .rollback(admin(RollbackRequest {}))
        .await?
        .into_inner()
        .version;
    ensure!(
        back == active_now,
        "rollback went to {back}, expected {active_now}"
    );
    for c in clients.iter_mut() {
        wait_model(c, "the rolled-back version", |m| m.version == active_now).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await?;
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    ensure!(
        failed == 0,
        "{failed} of {} requests failed during promotion and rollback",
        ok + failed
    );
    ensure!(ok > 100, "the load loop made only {ok} requests");
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    ensure!(
        seen.is_subset(&known),
        "responses named unknown versions: {seen:?} vs {known:?}"
    );
    ensure!(
        seen.contains(&other),
        "no response came from the promoted version"
    );
    drop(replicas);
    db.close().await?;
    Ok(())
}

async fn run_on(test_db: TestDb) -> Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "taskcast-e2e-{}-{}",
        test_db.backend_name(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let result = whole_loop(test_db.url(), &dir).await;
    if result.is_err() {
        for log in ["trainer.log", "r1.log", "r2.log"] {
            let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!(
                "--- {log} (last lines)\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    test_db.cleanup().await.ok();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_loop_on_postgres() -> Result<()> {
    run_on(TestDb::postgres().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_loop_on_embedded_sqlite() -> Result<()> {
    run_on(TestDb::sqlite()?).await
}

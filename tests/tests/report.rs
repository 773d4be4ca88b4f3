//! The live report end to end: trainer-svc (SQLite) and one inference-svc
//! as processes; simulated learners are served through Predict, a backend
//! writes each prediction onto the completed row, and ModelReport (and the
//! trainer's gauges) judge the served versions, including a deliberately
//! degenerate one.
//!
//! The binaries come from the same target directory as this test
//! (`cargo build --workspace --bins` first; `scripts/test.sh` does).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use taskcast_contract::TaskRow;
use taskcast_contract::artifact::Artifact;
use taskcast_contract::linear::LinearModel;
use taskcast_contract::{FEATURE_COUNT, FEATURE_SCHEMA};
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_proto::{
    Attempt, Candidate, GetModelRequest, ListModelsRequest, ModelReportRequest, PredictRequest,
    PromoteRequest, VersionReport,
};
use taskcast_sim::{SimConfig, Simulator};
use taskcast_testdb::TestDb;
use tonic::transport::Channel;
use trainer_svc::db::{Db, NewModelVersion, StoredPrediction};

mod support;
use support::{InferenceProc, TrainerProc, admin, connect, dump_logs, metadata, reader, test_dir};

/// Learners driven through Predict, and tasks each per served version.
const LEARNERS: usize = 40;
const ROUNDS: usize = 8;

fn attempts(rows: &[TaskRow]) -> Vec<Attempt> {
    rows.iter()
        .map(|r| Attempt {
            topic: r.topic.clone(),
            difficulty: r.difficulty.clone(),
            correct: r.correct,
            seconds: r.seconds.unwrap_or(0.0),
            completed_at: Some(prost_types::Timestamp {
                seconds: r.completed_at_ms.div_euclid(1000),
                nanos: 0,
            }),
            item_id: r.item_id.clone().unwrap_or_default(),
        })
        .collect()
}

/// Waits until the replica serves `version`.
async fn wait_serving(client: &mut InferenceClient<Channel>, version: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(m) = client.get_model(GetModelRequest {}).await
            && m.into_inner().version == version
        {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "replica never served {version}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `ROUNDS` tasks for each learner: ask Predict about the next task, let the
/// simulated learner do it, and write the completed row with the prediction
/// on it, as the app's backend does. Returns the versions that answered.
async fn serve_rounds(
    sim: &mut Simulator,
    histories: &mut BTreeMap<String, Vec<TaskRow>>,
    inference: &mut InferenceClient<Channel>,
    db: &Db,
) -> Result<Vec<String>> {
    let mut versions = Vec::new();
    for _ in 0..ROUNDS {
        let mut batch = Vec::new();
        for (user, history) in histories.iter_mut() {
            let next = sim
                .next_attempts(user, 1)
                .and_then(|mut v| v.pop())
                .context("a simulated learner")?;
            let resp = inference
                .predict(PredictRequest {
                    user_id: user.clone(),
                    history: attempts(history),
                    candidates: vec![Candidate {
                        task_id: "next".into(),
                        topic: next.topic.clone(),
                        difficulty: next.difficulty.clone(),
                        item_id: next.item_id.clone().unwrap_or_default(),
                    }],
                    explain: false,
                    as_of: None,
                })
                .await?
                .into_inner();
            let p = resp.predictions.first().context("one prediction")?;
            batch.push((
                next.clone(),
                StoredPrediction {
                    p_correct: p.p_correct,
                    seconds: Some(p.seconds),
                    seconds_low: Some(p.seconds_low),
                    seconds_high: Some(p.seconds_high),
                    model_version: resp.model_version.clone(),
                },
            ));
            if !versions.contains(&resp.model_version) {
                versions.push(resp.model_version);
            }
            history.push(next);
        }
        db.insert_outcomes(&batch).await?;
    }
    Ok(versions)
}

/// A servable model that ignores its inputs: every weight zero, so every
/// learner gets p = sigmoid(bias) for every task — the original app's bug.
fn constant_model(version: &str) -> Result<Vec<u8>> {
    let model = LinearModel {
        p_weights: [0.0; FEATURE_COUNT],
        p_bias: -0.28, // p ≈ 0.43
        t_weights: [0.0; FEATURE_COUNT],
        t_bias: 30f32.ln(),
        t_quantile_offsets: [-0.8, 0.0, 0.9],
    };
    Ok(Artifact::write(model.graph(), &metadata(version))?)
}

async fn report(trainer: &mut TrainerClient<Channel>, version: &str) -> Result<Vec<VersionReport>> {
    Ok(trainer
        .model_report(reader(ModelReportRequest {
            version: version.into(),
            last_days: 0,
            last_rows: 0,
            stuck_window: 5,
        }))
        .await?
        .into_inner()
        .versions)
}

async fn run(db_url: &str, dir: &std::path::Path) -> Result<()> {
    let db = Db::connect(db_url).await?;
    let mut sim = Simulator::new(SimConfig {
        seed: 23,
        learners: 60,
        attempts_per_learner: 40,
        ..Default::default()
    })?;
    let rows = sim.generate();
    db.insert_tasks(&rows).await?;
    let mut histories: BTreeMap<String, Vec<TaskRow>> = BTreeMap::new();
    for r in &rows {
        histories
            .entry(r.user_id.clone())
            .or_default()
            .push(r.clone());
    }
    // The first LEARNERS learners come back for more tasks.
    let mut histories: BTreeMap<String, Vec<TaskRow>> =
        histories.into_iter().take(LEARNERS).collect();

    let trainer_proc = TrainerProc::start(
        db_url,
        dir,
        "trainer",
        &["--retrain-every", "0", "--report-interval", "1"],
    )?;
    let inference_proc = InferenceProc::start(dir, "inference", Some(&trainer_proc.url()), &[])?;
    let mut trainer = TrainerClient::new(connect(trainer_proc.port).await?);
    let mut inference = InferenceClient::new(connect(inference_proc.port).await?);

    // Startup training promotes a model; the replica swaps to it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (good, holdout) = loop {
        let models = trainer
            .list_models(reader(ListModelsRequest { limit: 10 }))
            .await?
            .into_inner()
            .models;
        if let Some(m) = models.into_iter().find(|m| m.state == "active") {
            break (m.version, m.metrics);
        }
        ensure!(
            Instant::now() < deadline,
            "no model was promoted at startup"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    wait_serving(&mut inference, &good).await?;

    let served = serve_rounds(&mut sim, &mut histories, &mut inference, &db).await?;
    ensure!(served == vec![good.clone()], "served by {served:?}");
    let live = report(&mut trainer, &good).await?;
    let g = live.first().context("a report for the trained version")?;
    eprintln!("trained version live: {g:?}");
    ensure!(g.rows == (LEARNERS * ROUNDS) as u64, "rows {}", g.rows);
    ensure!(
        g.state == "active" && ["linear", "mlp", "pretrained"].contains(&g.family.as_str()),
        "a trained family ({}) is active",
        g.family
    );
    ensure!(
        g.holdout.get("auc") == holdout.get("auc"),
        "hold-out figures"
    );
    let auc = g.auc.context("live AUC")?;
    ensure!(auc > 0.6, "a trained model ranks outcomes: AUC {auc}");
    let (mean, observed) = (
        g.mean_predicted.context("mean")?,
        g.observed_rate.context("rate")?,
    );
    ensure!(
        (mean - observed).abs() < 0.1,
        "calibrated in the mean: {mean} vs {observed}"
    );
    ensure!(g.timed_rows == g.rows && g.interval_rows == g.rows);
    let coverage = g.interval_coverage.context("coverage")?;
    ensure!(
        (0.6..=0.95).contains(&coverage),
        "10-90% coverage {coverage}"
    );
    let per_learner = g.per_learner.as_ref().context("per-learner diversity")?;
    ensure!(per_learner.groups == LEARNERS as u64);
    ensure!(
        per_learner.spread > 0.05,
        "predictions move: {per_learner:?}"
    );
    ensure!(
        g.stuck_learners * 4 < g.stuck_eligible_learners,
        "few stuck learners: {} of {}",
        g.stuck_learners,
        g.stuck_eligible_learners
    );
    ensure!(
        !g.drift,
        "a healthy model is not flagged: {:?}",
        g.drift_reasons
    );

    // A broken model that claims the trained one's hold-out figures, as a
    // faulty export would, is promoted and served.
    let broken = "constant-v1";
    db.insert_model_version(&NewModelVersion {
        version: broken.into(),
        family: "linear".into(),
        feature_schema: FEATURE_SCHEMA.into(),
        onnx: constant_model(broken)?,
        metrics: holdout.clone().into_iter().collect(),
        reason: "registered by the report test".into(),
        run_id: None,
        time_modeled: None,
    })
    .await?;
    trainer
        .promote(admin(PromoteRequest {
            version: broken.into(),
            canary_percent: 0,
        }))
        .await?;
    wait_serving(&mut inference, broken).await?;
    let served = serve_rounds(&mut sim, &mut histories, &mut inference, &db).await?;
    ensure!(served == vec![broken.to_string()], "served by {served:?}");

    let both = report(&mut trainer, "").await?;
    let names: Vec<&str> = both.iter().map(|v| v.version.as_str()).collect();
    ensure!(names.len() == 2 && names.contains(&broken), "{names:?}");
    let b = both
        .iter()
        .find(|v| v.version == broken)
        .context("the broken version's report")?;
    eprintln!("constant version live: {b:?}");
    ensure!(b.rows == (LEARNERS * ROUNDS) as u64);
    ensure!(
        b.auc == Some(0.5),
        "a constant model ranks nothing: {:?}",
        b.auc
    );
    ensure!(b.overall.as_ref().is_some_and(|d| d.distinct == 1.0));
    ensure!(
        b.stuck_learners == LEARNERS as u64 && b.stuck.len() == 20,
        "every learner stuck: {} listed {}",
        b.stuck_learners,
        b.stuck.len()
    );
    ensure!(b.drift, "flagged");
    ensure!(
        b.drift_reasons.iter().any(|r| r.contains("AUC"))
            && b.drift_reasons.iter().any(|r| r.contains("learners")),
        "{:?}",
        b.drift_reasons
    );

    // The trainer's gauges say the same without anyone asking.
    let name = format!("taskcast_trainer_live_drift{{version=\"{broken}\"}}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = support::scrape(trainer_proc.metrics_port).await?;
        if support::metric(&text, &name) == 1.0 {
            let stuck = format!("taskcast_trainer_live_stuck_learners{{version=\"{broken}\"}}");
            ensure!(support::metric(&text, &stuck) == LEARNERS as f64, "{text}");
            let good_drift = format!("taskcast_trainer_live_drift{{version=\"{good}\"}}");
            ensure!(text.contains(&good_drift) && support::metric(&text, &good_drift) == 0.0);
            break;
        }
        ensure!(Instant::now() < deadline, "gauges never flagged {broken}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_report_flags_a_degenerate_model() {
    let dir = test_dir("report").expect("test dir");
    let t = TestDb::sqlite().expect("sqlite test database");
    let result = tokio::time::timeout(Duration::from_secs(120), run(t.url(), &dir)).await;
    let failure = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(_) => Some("timed out after 120 s".into()),
    };
    if let Some(f) = failure {
        dump_logs(&dir);
        panic!("{f}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

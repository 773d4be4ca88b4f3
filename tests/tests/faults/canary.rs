//! Canaries, against the real binaries on PostgreSQL: a candidate answers
//! a stable share of learners beside the active version, survives a kill -9
//! of the trainer (the replicas keep both arms; the trainer decides after its
//! restart), and is rejected or promoted by the judge on live outcomes —
//! the app backend's completed tasks, each stored with the version that
//! answered and what it predicted.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use taskcast_contract::artifact::Artifact;
use taskcast_contract::{Schema, TaskRow};
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_proto::{
    Candidate, GetFleetRequest, ListModelsRequest, PredictRequest, PromoteRequest,
};
use taskcast_testdb::TestDb;
use tonic::Code;
use tonic::transport::Channel;
use trainer_svc::db::{Db, ModelState, StoredPrediction};

use crate::support::*;
use crate::{active, wait_serving};

/// Learners asked in each canary.
const LEARNERS: usize = 10_000;

/// A servable model of `schema` whose every prediction is `p` (its logit
/// weights are zero): the simulated world below decides which of two such
/// models is better calibrated.
fn constant(version: &str, p: f32, seed: u64, schema: Schema) -> Result<Vec<u8>> {
    let mut m = random_linear(seed);
    m.p_weights = [0.0; taskcast_contract::FEATURE_COUNT];
    m.p_bias = (p / (1.0 - p)).ln();
    Ok(Artifact::write(
        m.graph_for(schema),
        &metadata_for(schema, version),
    )?)
}

/// (learner, version that answered, p) for learners `from..to`, 32 in flight.
async fn ask(
    c: &InferenceClient<Channel>,
    from: usize,
    to: usize,
) -> Result<Vec<(String, String, f64)>> {
    let answers: Vec<Result<(String, String, f64)>> = futures::stream::iter(from..to)
        .map(|i| {
            let mut c = c.clone();
            async move {
                let user_id = format!("learner-{i}");
                let r = c
                    .predict(PredictRequest {
                        user_id: user_id.clone(),
                        history: vec![],
                        candidates: vec![Candidate {
                            task_id: format!("t{i}"),
                            topic: "fractions".into(),
                            difficulty: "easy".into(),
                            item_id: String::new(),
                        }],
                        explain: false,
                        as_of: None,
                    })
                    .await?
                    .into_inner();
                let p = r.predictions.first().context("no prediction")?.p_correct;
                Ok((user_id, r.model_version, p))
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    answers.into_iter().collect()
}

/// The share of `answers` given by `version`.
fn share(answers: &[(String, String, f64)], version: &str) -> f64 {
    answers.iter().filter(|a| a.1 == version).count() as f64 / answers.len() as f64
}

/// The backend's completed tasks for `answers`: each learner got it right
/// with probability `truth` (a fixed draw per learner and round).
fn outcomes(
    answers: &[(String, String, f64)],
    truth: f64,
    round: u64,
) -> Vec<(TaskRow, StoredPrediction)> {
    let now = chrono::Utc::now().timestamp_millis();
    answers
        .iter()
        .enumerate()
        .map(|(i, (user, version, p))| {
            // splitmix64 of (round, i): a uniform draw in [0, 1).
            let mut z = (round << 32 ^ i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let u = (z ^ (z >> 31)) as f64 / u64::MAX as f64;
            let row = TaskRow {
                user_id: user.clone(),
                item_id: None,
                topic: "fractions".into(),
                difficulty: "easy".into(),
                correct: u < truth,
                seconds: Some(30.0),
                completed_at_ms: now,
                started_at_ms: None,
            };
            let prediction = StoredPrediction {
                p_correct: *p,
                seconds: Some(30.0),
                seconds_low: None,
                seconds_high: None,
                model_version: version.clone(),
            };
            (row, prediction)
        })
        .collect()
}

/// Waits until every replica in `names` reports `canary` ("" none) to the trainer.
async fn wait_fleet_canary(
    tc: &TrainerClient<Channel>,
    names: &[&str],
    canary: &str,
) -> Result<()> {
    let what = format!("replicas {names:?} to report canary {canary:?}");
    wait_for(&what, Duration::from_secs(30), || {
        let mut tc = tc.clone();
        async move {
            let f = tc
                .get_fleet(reader(GetFleetRequest {}))
                .await
                .ok()?
                .into_inner();
            names
                .iter()
                .all(|n| {
                    f.replicas
                        .iter()
                        .any(|r| r.name == *n && r.canary_version == canary)
                })
                .then_some(())
        }
    })
    .await
}

/// Waits until `version` is in `state` in the registry; its reason.
async fn wait_state(db: &Db, version: &str, state: ModelState) -> Result<String> {
    let what = format!("{version} to be {state}");
    wait_for(&what, Duration::from_secs(60), || async {
        let m = db.get_model_version(version).await.ok()??;
        (m.state == state).then_some(m.reason)
    })
    .await
}

/// A 20 % canary over 10 000 learners, twice: the share is within ±3
/// points, a learner gets one version on every replica and every call, the
/// replicas keep both arms through a kill -9 of the trainer, and the judge
/// rejects a worse candidate and promotes a better one with the figures in
/// the registry's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_splits_learners_and_is_judged_on_live_outcomes() -> Result<()> {
    scenario("canary", Duration::from_secs(240), |dir| async move {
        let tdb = TestDb::postgres().await?;
        let db = Db::connect(tdb.url()).await?;
        // The active version comes from the release before: feature schema
        // v1. The candidates are v2, so each replica serves both schemas,
        // each learner's arm computing the features its model reads.
        register(
            &db,
            "v1",
            Schema::V1.id(),
            constant("v1", 0.7, 1, Schema::V1)?,
        )
        .await?;
        db.set_active("v1", trainer_svc::db::PromotionKind::Promote)
            .await?;
        register(
            &db,
            "v2",
            taskcast_contract::FEATURE_SCHEMA,
            constant("v2", 0.95, 2, Schema::V2)?,
        )
        .await?;
        register(
            &db,
            "v3",
            taskcast_contract::FEATURE_SCHEMA,
            constant("v3", 0.9, 3, Schema::V2)?,
        )
        .await?;
        let judge = [
            "--retrain-every",
            "0",
            "--no-startup-training",
            "--canary-min-outcomes",
            "300",
            "--canary-check-seconds",
            "1",
            "--canary-logloss-tolerance",
            "0.01",
        ];
        let mut trainer = TrainerProc::start(tdb.url(), &dir, "trainer", &judge)?;
        let r1 = InferenceProc::start(&dir, "r1", Some(&trainer.url()), &[])?;
        let r2 = InferenceProc::start(&dir, "r2", Some(&trainer.url()), &[])?;
        let mut c1 = InferenceClient::new(connect(r1.port).await?);
        let mut c2 = InferenceClient::new(connect(r2.port).await?);
        wait_serving(&mut c1, "v1", Duration::from_secs(30)).await?;
        wait_serving(&mut c2, "v1", Duration::from_secs(30)).await?;
        let mut tc = TrainerClient::new(connect(trainer.port).await?);

        let canary = |version: &str, canary_percent| {
            admin(PromoteRequest {
                version: version.into(),
                canary_percent,
            })
        };
        let e = tc
            .promote(canary("v2", 100))
            .await
            .err()
            .context("100 % accepted")?;
        ensure!(
            e.code() == Code::InvalidArgument && e.message().contains("canary_percent"),
            "{e:?}"
        );
        let started = tc.promote(canary("v2", 20)).await?.into_inner();
        ensure!(started.state == "canary", "{started:?}");
        let e = tc
            .promote(canary("v3", 10))
            .await
            .err()
            .context("a second canary accepted")?;
        ensure!(e.code() == Code::FailedPrecondition, "{e:?}");
        wait_fleet_canary(&tc, &["r1", "r2"], "v2").await?;
        let fleet = tc.get_fleet(reader(GetFleetRequest {})).await?.into_inner();
        let status = fleet.canary.context("GetFleet shows no canary")?;
        ensure!(
            status.candidate == "v2" && status.baseline == "v1" && status.percent == 20,
            "{status:?}"
        );

        // The trainer dies; the replicas keep serving both arms.
        trainer.proc.kill();
        let answers = ask(&c1, 0, LEARNERS).await?;
        let v2_share = share(&answers, "v2");
        eprintln!(
            "canary v2: {:.2} % of {LEARNERS} learners",
            100.0 * v2_share
        );
        ensure!((0.17..=0.23).contains(&v2_share), "v2 answered {v2_share}");
        ensure!(answers.iter().all(|a| a.1 == "v1" || a.1 == "v2"));
        let by_learner: HashMap<&str, &str> = answers
            .iter()
            .map(|a| (a.0.as_str(), a.1.as_str()))
            .collect();
        for (name, c) in [("r1", &c1), ("r2", &c2)] {
            for (user, version, _) in ask(c, 0, 1000).await? {
                ensure!(
                    by_learner[user.as_str()] == version,
                    "{name}: {user} got {version}, first {}",
                    by_learner[user.as_str()]
                );
            }
        }
        // Learners were right 70 % of the time: v1 (0.7) is calibrated, v2 (0.95) is not.
        db.insert_outcomes(&outcomes(&answers, 0.7, 1)).await?;
        trainer.restart(&dir, "trainer-restarted")?;
        let why = wait_state(&db, "v2", ModelState::Rejected).await?;
        eprintln!("v2: {why}");
        ensure!(
            why.contains("rejected on live outcomes") && why.contains("log loss"),
            "{why}"
        );
        ensure!(active(&db).await?.as_deref() == Some("v1"));
        let mut tc = TrainerClient::new(connect(trainer.port).await?);
        wait_fleet_canary(&tc, &["r1", "r2"], "").await?;
        ensure!(
            ask(&c1, 0, 500).await?.iter().all(|a| a.1 == "v1"),
            "v2 still answers"
        );

        // The learners improved: 90 % right. v3 (0.9) beats v1 (0.7).
        tc.promote(canary("v3", 20)).await?;
        wait_fleet_canary(&tc, &["r1", "r2"], "v3").await?;
        let answers = ask(&c2, 0, LEARNERS).await?;
        let v3_share = share(&answers, "v3");
        eprintln!(
            "canary v3: {:.2} % of {LEARNERS} learners",
            100.0 * v3_share
        );
        ensure!((0.17..=0.23).contains(&v3_share), "v3 answered {v3_share}");
        let moved = answers
            .iter()
            .filter(|a| (by_learner[a.0.as_str()] == "v2") != (a.1 == "v3"))
            .count();
        ensure!(
            moved > LEARNERS / 10,
            "a new rollout draws its own learners ({moved} differ)"
        );
        db.insert_outcomes(&outcomes(&answers, 0.9, 2)).await?;
        let why = wait_state(&db, "v3", ModelState::Active).await?;
        eprintln!("v3: {why}");
        ensure!(why.contains("promoted on live outcomes"), "{why}");
        wait_serving(&mut c1, "v3", Duration::from_secs(30)).await?;
        wait_fleet_canary(&tc, &["r1", "r2"], "").await?;
        ensure!(
            ask(&c1, 0, 500).await?.iter().all(|a| a.1 == "v3"),
            "v3 is not everyone's"
        );
        let listed = tc
            .list_models(reader(ListModelsRequest { limit: 10 }))
            .await?
            .into_inner();
        let state = |v: &str| {
            listed
                .models
                .iter()
                .find(|m| m.version == v)
                .map(|m| m.state.clone())
        };
        ensure!(
            state("v1").as_deref() == Some("retired") && state("v2").as_deref() == Some("rejected"),
            "{listed:?}"
        );
        db.close().await?;
        tdb.cleanup().await?;
        Ok(())
    })
    .await
}

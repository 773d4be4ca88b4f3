//! Canaries in the trainer: the rollout policy of automatic runs, and an
//! operator ending a canary early either way, on SQLite and PostgreSQL
//! (the judge on live outcomes runs against the real binaries in
//! tests/tests/faults/canary.rs); and a run left RUNNING by a trainer
//! replica that died, closed by the next one to train.

mod support;

use std::time::Duration;

use taskcast_proto::trainer_client::TrainerClient;
use taskcast_proto::{
    GetFleetRequest, ModelArtifact, PromoteRequest, RollbackRequest, TrainRequest,
    WatchModelsRequest,
};
use tonic::Code;
use tonic::Streaming;
use tonic::transport::Channel;
use trainer_svc::canary::RolloutPolicy;
use trainer_svc::db::{Db, ModelState, RunState};

use support::*;

/// The next message on the model stream that is not `skip`'s repeat.
async fn next(stream: &mut Streaming<ModelArtifact>) -> ModelArtifact {
    tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .expect("a model message within 60 s")
        .expect("stream")
        .expect("stream ended")
}

/// One forced operator run to its end; the version it registered.
async fn run(client: &mut TrainerClient<Channel>, db: &Db) -> String {
    let r = client
        .train(admin(TrainRequest {
            family: String::new(),
            force: true,
        }))
        .await
        .expect("Train")
        .into_inner();
    let end = wait_run_end(db, &r.id, 120).await;
    assert_eq!(end.state, RunState::Succeeded, "{end:?}");
    wait_watermark(db).await;
    end.model_version.expect("a version")
}

async fn state(db: &Db, version: &str) -> ModelState {
    db.get_model_version(version).await.unwrap().unwrap().state
}

#[tokio::test]
async fn runs_start_canaries_and_operators_end_them_early() {
    on_each_backend(async |url, _| {
        let db = Db::connect(url).await.unwrap();
        db.insert_tasks(&simulator(40, 30, 3).generate())
            .await
            .unwrap();
        let mut c = config(url, 0);
        c.no_startup_training = true;
        c.rollout = RolloutPolicy::Canary(30);
        let server = Server::start(c).await;
        let mut client = server.client().await;
        let mut watch = client
            .watch_models(replica(WatchModelsRequest {
                subscriber: "r".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(next(&mut watch).await.no_active_version);

        // The first version goes live directly: nothing to compare with.
        let v1 = run(&mut client, &db).await;
        let m = next(&mut watch).await;
        assert_eq!(
            (m.version.as_str(), m.canary.is_none()),
            (v1.as_str(), true)
        );

        // The next one starts a 30 % canary, announced with the active model.
        let v2 = run(&mut client, &db).await;
        assert_eq!(state(&db, &v2).await, ModelState::Canary);
        let m = next(&mut watch).await;
        let canary = m.canary.expect("the canary is announced");
        assert_eq!((m.version.as_str(), canary.percent), (v1.as_str(), 30));
        let candidate = canary.candidate.expect("with its candidate");
        assert_eq!(candidate.version, v2);
        assert_eq!(
            candidate.sha256,
            taskcast_contract::artifact::sha256_hex(&candidate.onnx)
        );
        let fleet = client
            .get_fleet(reader(GetFleetRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fleet.canary.expect("GetFleet shows it").candidate, v2);

        // A run during a canary leaves it alone: its version waits.
        let v3 = run(&mut client, &db).await;
        let waiting = db.get_model_version(&v3).await.unwrap().unwrap();
        assert_eq!(waiting.state, ModelState::Candidate, "{waiting:?}");
        assert!(waiting.reason.contains("canary"), "{}", waiting.reason);

        // Rollback during a canary ends it: the candidate is rejected, the
        // active version stays, replicas are told the canary is over.
        let back = client
            .rollback(admin(RollbackRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(back.version, v1);
        assert_eq!(state(&db, &v2).await, ModelState::Rejected);
        let m = next(&mut watch).await;
        assert_eq!(
            (m.version.as_str(), m.canary.is_none()),
            (v1.as_str(), true)
        );

        // An operator's canary, ended early by promoting its candidate.
        let started = client
            .promote(admin(PromoteRequest {
                version: v3.clone(),
                canary_percent: 5,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(started.state, "canary");
        assert_eq!(next(&mut watch).await.canary.unwrap().percent, 5);
        let err = client
            .promote(admin(PromoteRequest {
                version: v1.clone(),
                canary_percent: 10,
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        let promoted = client
            .promote(admin(PromoteRequest {
                version: v3.clone(),
                canary_percent: 0,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(promoted.state, "active");
        let m = next(&mut watch).await;
        assert_eq!(
            (m.version.as_str(), m.canary.is_none()),
            (v3.as_str(), true)
        );
        let rollout = db.open_rollout().await.unwrap();
        assert_eq!(rollout, None);
        server.stop().await;
        db.close().await.unwrap();
    })
    .await;
}

/// A run whose trainer died (its row still RUNNING, left by another
/// replica while this one was up, so the startup clean-up never saw it) is
/// closed as FAILED by the next trainer that takes the training lock.
#[tokio::test]
async fn a_dead_trainers_run_is_closed_by_the_next_lock_holder() {
    on_each_backend(async |url, _| {
        let db = Db::connect(url).await.unwrap();
        db.insert_tasks(&simulator(20, 20, 4).generate())
            .await
            .unwrap();
        let mut c = config(url, 0);
        c.no_startup_training = true;
        let server = Server::start(c).await;
        let mut client = server.client().await;
        db.insert_run(&trainer_svc::db::NewRun {
            id: "run-of-a-dead-trainer".into(),
            trigger: trainer_svc::db::RunTrigger::Auto,
            family: "linear".into(),
        })
        .await
        .unwrap();
        run(&mut client, &db).await;
        let dead = db.get_run("run-of-a-dead-trainer").await.unwrap().unwrap();
        assert_eq!(dead.state, RunState::Failed, "{dead:?}");
        assert!(dead.error.contains("trainer stopped"), "{}", dead.error);
        server.stop().await;
        db.close().await.unwrap();
    })
    .await;
}

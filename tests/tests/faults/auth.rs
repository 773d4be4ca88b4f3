//! Who may call what, on the real binaries: every trainer RPC with no
//! credential, a wrong one and each role's token; a replica with the wrong
//! replica token; and the inference RPCs, which need none.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use taskcast_contract::TaskRow;
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_proto::{
    GetFleetRequest, GetTrainingRunRequest, ListModelsRequest, ModelReportRequest, PromoteRequest,
    ReplicaReport, RollbackRequest, TrainRequest, WatchModelsRequest,
};
use taskcast_testdb::TestDb;
use tonic::Code;
use tonic::transport::Channel;
use trainer_svc::db::{Db, StoredPrediction};

use crate::support::*;
use crate::{active, runs, scenario, served_version, sim_rows};

/// A credential a caller may present.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cred {
    None,
    Wrong,
    /// The admin token without the `Bearer` scheme.
    NoScheme,
    Admin,
    Replica,
    Reader,
}

impl Cred {
    fn request<T>(self, msg: T) -> tonic::Request<T> {
        match self {
            Cred::None => tonic::Request::new(msg),
            Cred::Wrong => with_auth(msg, "Bearer not-a-token"),
            Cred::NoScheme => with_auth(msg, TOKEN),
            Cred::Admin => admin(msg),
            Cred::Replica => replica(msg),
            Cred::Reader => reader(msg),
        }
    }
}

/// The trainer's RPCs, each called with arguments that pass authorisation
/// but change nothing (an unknown family, version or run), so the whole
/// matrix runs against one registry.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    Train,
    Promote,
    Rollback,
    WatchModels,
    ListModels,
    GetTrainingRun,
    WatchTrainingRun,
    ModelReport,
    ReportReplica,
    GetFleet,
}

impl Rpc {
    const ALL: [Rpc; 10] = [
        Rpc::Train,
        Rpc::Promote,
        Rpc::Rollback,
        Rpc::WatchModels,
        Rpc::ListModels,
        Rpc::GetTrainingRun,
        Rpc::WatchTrainingRun,
        Rpc::ModelReport,
        Rpc::ReportReplica,
        Rpc::GetFleet,
    ];

    /// The role it needs besides admin (`None`: admin only).
    fn role(self) -> Option<Cred> {
        match self {
            Rpc::Train | Rpc::Promote | Rpc::Rollback => None,
            Rpc::WatchModels | Rpc::ReportReplica => Some(Cred::Replica),
            Rpc::ListModels
            | Rpc::GetTrainingRun
            | Rpc::WatchTrainingRun
            | Rpc::ModelReport
            | Rpc::GetFleet => Some(Cred::Reader),
        }
    }

    /// What an admitted call answers with these arguments.
    fn admitted(self) -> Code {
        match self {
            Rpc::Train => Code::InvalidArgument,
            Rpc::Promote | Rpc::GetTrainingRun | Rpc::WatchTrainingRun => Code::NotFound,
            // Rollback with no earlier version to go back to.
            Rpc::Rollback => Code::FailedPrecondition,
            Rpc::WatchModels | Rpc::ListModels | Rpc::ModelReport | Rpc::GetFleet => Code::Ok,
            // An empty replica name.
            Rpc::ReportReplica => Code::InvalidArgument,
        }
    }

    async fn call(self, tc: &mut TrainerClient<Channel>, cred: Cred) -> Code {
        let code = |r: Result<(), tonic::Status>| r.map_or_else(|e| e.code(), |()| Code::Ok);
        let run = || GetTrainingRunRequest {
            id: "run-none".into(),
        };
        match self {
            Rpc::Train => code(
                tc.train(cred.request(TrainRequest {
                    family: "no-such-family".into(),
                    ..Default::default()
                }))
                .await
                .map(drop),
            ),
            Rpc::Promote => code(
                tc.promote(cred.request(PromoteRequest {
                    version: "no-such-version".into(),
                    canary_percent: 0,
                }))
                .await
                .map(drop),
            ),
            Rpc::Rollback => code(
                tc.rollback(cred.request(RollbackRequest {}))
                    .await
                    .map(drop),
            ),
            Rpc::WatchModels => code(
                tc.watch_models(cred.request(WatchModelsRequest {
                    subscriber: "auth-test".into(),
                }))
                .await
                .map(drop),
            ),
            Rpc::ListModels => code(
                tc.list_models(cred.request(ListModelsRequest { limit: 5 }))
                    .await
                    .map(drop),
            ),
            Rpc::GetTrainingRun => code(tc.get_training_run(cred.request(run())).await.map(drop)),
            Rpc::WatchTrainingRun => {
                code(tc.watch_training_run(cred.request(run())).await.map(drop))
            }
            Rpc::ModelReport => code(
                tc.model_report(cred.request(ModelReportRequest::default()))
                    .await
                    .map(drop),
            ),
            Rpc::ReportReplica => code(
                tc.report_replica(cred.request(ReplicaReport::default()))
                    .await
                    .map(drop),
            ),
            Rpc::GetFleet => code(
                tc.get_fleet(cred.request(GetFleetRequest {}))
                    .await
                    .map(drop),
            ),
        }
    }
}

/// What `cred` must get from `rpc`.
fn expected(rpc: Rpc, cred: Cred) -> Code {
    match cred {
        Cred::None | Cred::Wrong | Cred::NoScheme => Code::Unauthenticated,
        Cred::Admin => rpc.admitted(),
        c if rpc.role() == Some(c) => rpc.admitted(),
        _ => Code::PermissionDenied,
    }
}

/// 8. Every trainer RPC × no credential, a wrong one, the admin token without
/// its scheme and each role's token, on the real trainer: missing and wrong
/// credentials are UNAUTHENTICATED, a role's token on another role's RPC is
/// PERMISSION_DENIED, and none of the refusals changes anything. The
/// inference RPCs answer without any token. No token reaches the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trainer_rpc_admits_exactly_its_roles() -> Result<()> {
    scenario("auth", Duration::from_secs(90), |dir| async move {
        let tdb = TestDb::sqlite()?;
        let db = Db::connect(tdb.url()).await?;
        db.insert_tasks(&sim_rows(4, 20, 30)?).await?;
        register_active(&db, "v1", 1).await?;
        let history = db.promotion_history().await?.len();
        let trainer = TrainerProc::start_registry_only(tdb.url(), &dir, "trainer")?;
        let mut tc = TrainerClient::new(connect(trainer.port).await?);

        let creds = [
            Cred::None,
            Cred::Wrong,
            Cred::NoScheme,
            Cred::Admin,
            Cred::Replica,
            Cred::Reader,
        ];
        let mut wrong = Vec::new();
        for rpc in Rpc::ALL {
            for cred in creds {
                let (got, want) = (rpc.call(&mut tc, cred).await, expected(rpc, cred));
                if got != want {
                    wrong.push(format!("{rpc:?} with {cred:?}: got {got:?}, want {want:?}"));
                }
            }
        }
        ensure!(wrong.is_empty(), "role matrix:\n{}", wrong.join("\n"));

        tokio::time::sleep(Duration::from_millis(300)).await;
        ensure!(runs(&db).await?.is_empty(), "a run started");
        ensure!(
            active(&db).await?.as_deref() == Some("v1"),
            "the active version changed"
        );
        ensure!(
            db.promotion_history().await?.len() == history,
            "the promotion history changed"
        );

        // The inference RPCs are open to the network; a replica with the
        // wrong replica token is refused the stream and serves nothing (it
        // cannot learn what is active, so it must not guess with the
        // bootstrap), and one with the right token follows the trainer.
        let wrong_token = dir.join("wrong-replica-token");
        std::fs::write(&wrong_token, "not-the-replica-token")?;
        let url = trainer.url();
        let refused = InferenceProc::start(
            &dir,
            "refused",
            None,
            &[
                "--trainer",
                &url,
                "--trainer-token-file",
                &wrong_token.display().to_string(),
            ],
        )?;
        let follower = InferenceProc::start(&dir, "follower", Some(&url), &[])?;
        let mut ok = InferenceClient::new(connect(follower.port).await?);
        crate::wait_serving(&mut ok, "v1", Duration::from_secs(20)).await?;
        let mut no = InferenceClient::new(connect(refused.port).await?);
        ok.predict(simple_predict())
            .await
            .context("Predict without a token")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let e = no
            .predict(simple_predict())
            .await
            .err()
            .context("the refused replica answered Predict")?;
        ensure!(e.code() == Code::Unavailable, "{e:?}");
        let kept = served_version(&mut no).await;
        ensure!(kept.is_err(), "the refused replica serves {kept:?}");
        let log = std::fs::read_to_string(dir.join("refused.log"))?;
        if !log.contains("Unauthenticated") && !log.contains("invalid token") {
            bail!("the refused replica does not say why: {log}");
        }

        for name in ["trainer.log", "refused.log", "follower.log"] {
            let log = std::fs::read_to_string(dir.join(name))?;
            for secret in SECRETS.iter().chain(&["not-the-replica-token"]) {
                ensure!(!log.contains(secret), "{name} shows a token");
            }
        }
        db.close().await?;
        Ok(())
    })
    .await
}

/// 8b. Only admin sees learner ids in ModelReport; a reader gets keyed
/// pseudonyms, the same ones on every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_report_pseudonymises_learners_for_readers() -> Result<()> {
    scenario("auth-report", Duration::from_secs(90), |dir| async move {
        let tdb = TestDb::sqlite()?;
        let db = Db::connect(tdb.url()).await?;
        register_active(&db, "v1", 1).await?;
        // Tasks carrying v1's predictions, constant per learner: every learner
        // with enough of them is "stuck", so the report lists ids.
        let rows: Vec<(TaskRow, StoredPrediction)> = sim_rows(5, 6, 12)?
            .into_iter()
            .map(|r| {
                let p = StoredPrediction {
                    p_correct: 0.5,
                    seconds: Some(30.0),
                    seconds_low: None,
                    seconds_high: None,
                    model_version: "v1".into(),
                };
                (r, p)
            })
            .collect();
        db.insert_outcomes(&rows).await?;
        let learners: std::collections::BTreeSet<String> =
            rows.iter().map(|(r, _)| r.user_id.clone()).collect();
        let trainer = TrainerProc::start_registry_only(tdb.url(), &dir, "trainer")?;
        let mut tc = TrainerClient::new(connect(trainer.port).await?);

        let stuck = |r: taskcast_proto::ModelReportResponse| {
            let ids: Vec<String> = r
                .versions
                .iter()
                .flat_map(|v| v.stuck.iter().map(|s| s.user_id.clone()))
                .collect();
            (r.learner_ids_pseudonymised, ids)
        };
        let req = || ModelReportRequest {
            version: "v1".into(),
            ..Default::default()
        };
        let (flag, ids) = stuck(tc.model_report(admin(req())).await?.into_inner());
        ensure!(!flag && !ids.is_empty(), "admin: {flag} {ids:?}");
        ensure!(ids.iter().all(|id| learners.contains(id)), "admin: {ids:?}");

        let (flag, first) = stuck(tc.model_report(reader(req())).await?.into_inner());
        ensure!(flag && first.len() == ids.len(), "reader: {flag} {first:?}");
        for id in &first {
            ensure!(id.starts_with("anon-") && id.len() == 21, "pseudonym {id}");
            ensure!(!learners.iter().any(|l| id.contains(l.as_str())), "{id}");
        }
        let (_, again) = stuck(tc.model_report(reader(req())).await?.into_inner());
        ensure!(first == again, "pseudonyms changed between calls");
        db.close().await?;
        Ok(())
    })
    .await
}

//! The fleet across time: replicas added while trainers are away, and a
//! version every replica refuses.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use taskcast_contract::FEATURE_SCHEMA;
use taskcast_contract::artifact::Artifact;
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_proto::{GetFleetRequest, PromoteRequest};
use taskcast_testdb::TestDb;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use trainer_svc::db::{Db, ModelState, PromotionKind};

use crate::support::*;
use crate::{active, scenario, served_version, wait_serving};

/// Health of the whole server ("" service): 1 SERVING, 2 NOT_SERVING.
async fn health(port: u16) -> Result<i32> {
    let mut h = HealthClient::new(connect(port).await?);
    Ok(h.check(HealthCheckRequest {
        service: String::new(),
    })
    .await?
    .into_inner()
    .status)
}

/// Two trainers on one PostgreSQL registry. A replica added while one is
/// down follows the other and serves the active version, never the
/// bootstrap; one added while both are down stays NOT_SERVING, while the
/// replicas already serving keep serving. `GetFleet` on either trainer lists
/// every replica with its version and state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_with_trainers_down_never_serves_the_bootstrap() -> Result<()> {
    scenario("fleet-scale", Duration::from_secs(150), |dir| async move {
        let tdb = TestDb::postgres().await?;
        let db = Db::connect(tdb.url()).await?;
        register_active(&db, "v1", 1).await?;
        let mut t1 = TrainerProc::start_registry_only(tdb.url(), &dir, "trainer1")?;
        let mut t2 = TrainerProc::start_registry_only(tdb.url(), &dir, "trainer2")?;
        let both = format!("{},{}", t1.url(), t2.url());
        let r1 = InferenceProc::start(&dir, "r1", Some(&both), &[])?;
        let mut c1 = InferenceClient::new(connect(r1.port).await?);
        wait_serving(&mut c1, "v1", Duration::from_secs(30)).await?;

        // Whichever trainer r1 reports to, the other sees it too.
        let tc2 = TrainerClient::new(connect(t2.port).await?);
        wait_for(
            "trainer2 to list r1 as current",
            Duration::from_secs(30),
            || {
                let mut tc2 = tc2.clone();
                async move {
                    let f = tc2
                        .get_fleet(reader(GetFleetRequest {}))
                        .await
                        .ok()?
                        .into_inner();
                    f.replicas
                        .iter()
                        .any(|r| r.name == "r1" && r.version == "v1" && r.state == "current")
                        .then_some(())
                }
            },
        )
        .await?;

        t1.proc.kill();
        let r2 = InferenceProc::start(&dir, "r2", Some(&both), &[])?;
        let mut c2 = InferenceClient::new(connect(r2.port).await?);
        wait_serving(&mut c2, "v1", Duration::from_secs(30)).await?;
        eprintln!("r2, started with trainer1 down, serves v1 through trainer2");

        t2.proc.kill();
        let r3 = InferenceProc::start(&dir, "r3", Some(&both), &[])?;
        // Long enough for several reconnect attempts to both trainers.
        tokio::time::sleep(Duration::from_secs(5)).await;
        ensure!(
            health(r3.port).await? == 2,
            "r3 must be NOT_SERVING with no trainer"
        );
        let mut c3 = InferenceClient::new(connect(r3.port).await?);
        let served = served_version(&mut c3).await;
        ensure!(served.is_err(), "r3 serves {served:?} without a trainer");
        for (name, c) in [("r1", &mut c1), ("r2", &mut c2)] {
            ensure!(
                served_version(c).await? == "v1",
                "{name} stopped serving v1"
            );
            let p = c.predict(simple_predict()).await?.into_inner();
            ensure!(p.model_version == "v1", "{name}: {p:?}");
        }
        eprintln!("r3, started with both trainers down, is NOT_SERVING; r1 and r2 serve v1");

        // A trainer back: r3 catches up to the active version.
        t2.restart(&dir, "trainer2b")?;
        wait_serving(&mut c3, "v1", Duration::from_secs(30)).await?;
        ensure!(health(r3.port).await? == 1, "r3 SERVING once it holds v1");
        drop(tc2);
        db.close().await?;
        tdb.cleanup().await?;
        Ok(())
    })
    .await
}

/// A version with NaN outputs: Promote refuses it (the replicas' checks run
/// in the trainer). Forced into the registry past Promote, every replica
/// refuses it, tells the trainer, and the trainer rolls back to the previous
/// version by itself and rejects the refused one with the replicas' reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_every_replica_refuses_is_rolled_back() -> Result<()> {
    scenario(
        "fleet-refused",
        Duration::from_secs(120),
        |dir| async move {
            let tdb = TestDb::sqlite()?;
            let db = Db::connect(tdb.url()).await?;
            register_active(&db, "v1", 1).await?;
            let mut nan = random_linear(5);
            nan.p_weights[0] = f32::NAN;
            register(
                &db,
                "nan",
                FEATURE_SCHEMA,
                Artifact::write(nan.graph(), &metadata("nan"))?,
            )
            .await?;
            let trainer = TrainerProc::start_registry_only(tdb.url(), &dir, "trainer")?;
            let replicas = [
                InferenceProc::start(&dir, "r1", Some(&trainer.url()), &[])?,
                InferenceProc::start(&dir, "r2", Some(&trainer.url()), &[])?,
            ];
            let mut clients = Vec::new();
            for r in &replicas {
                let mut c = InferenceClient::new(connect(r.port).await?);
                wait_serving(&mut c, "v1", Duration::from_secs(30)).await?;
                clients.push(c);
            }
            let mut tc = TrainerClient::new(connect(trainer.port).await?);
            let e = tc
                .promote(admin(PromoteRequest {
                    version: "nan".into(),
                    canary_percent: 0,
                }))
                .await
                .err()
                .context("Promote accepted a NaN model")?;
            ensure!(e.code() == Code::FailedPrecondition, "{e:?}");
            ensure!(e.message().contains("cannot be served"), "{e:?}");
            ensure!(active(&db).await?.as_deref() == Some("v1"));

            // Past the trainer's check, straight into the registry (an operator
            // with database access, or a version stored before the check).
            db.set_active("nan", PromotionKind::Promote).await?;
            wait_for(
                "the trainer to roll back to v1",
                Duration::from_secs(60),
                || async { (active(&db).await.ok()?.as_deref() == Some("v1")).then_some(()) },
            )
            .await?;
            // Rolled back and rejected in one transaction (`rollback_rejecting`):
            // no moment shows v1 active beside a merely retired `nan`.
            let nan = db.get_model_version("nan").await?.context("nan is gone")?;
            ensure!(nan.state == ModelState::Rejected, "{nan:?}");
            ensure!(
                nan.reason.contains("every live replica (2) refused it"),
                "{}",
                nan.reason
            );
            eprintln!("rolled back: {}", nan.reason);
            for c in &mut clients {
                ensure!(served_version(c).await? == "v1");
            }
            let fleet = tc.get_fleet(reader(GetFleetRequest {})).await?.into_inner();
            ensure!(fleet.active_version == "v1", "{fleet:?}");
            ensure!(
                fleet.replicas.iter().all(|r| r.version == "v1"
                    && r.state == "current"
                    && r.last_refused_version == "nan"),
                "{fleet:?}"
            );
            db.close().await?;
            Ok(())
        },
    )
    .await
}

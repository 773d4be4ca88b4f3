//! The trainer killed under a following replica.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use taskcast_contract::FEATURE_SCHEMA;
use taskcast_proto::inference_client::InferenceClient;
use taskcast_testdb::TestDb;
use trainer_svc::db::{Db, PromotionKind};

use crate::support::*;
use crate::{Load, scenario, served_version, wait_serving};

/// 2. Trainer killed: the replica keeps serving, reports the lost
/// subscription, reconnects with backoff when the trainer returns on the same
/// port, and catches up to a version promoted while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trainer_killed_replica_serves_reconnects_and_catches_up() -> Result<()> {
    scenario("killed", Duration::from_secs(120), |dir| async move {
        let tdb = TestDb::sqlite()?;
        let db = Db::connect(tdb.url()).await?;
        register_active(&db, "v1", 1).await?;
        register(&db, "v2", FEATURE_SCHEMA, model_bytes("v2", 2)?).await?;
        let mut trainer = TrainerProc::start_registry_only(tdb.url(), &dir, "trainer")?;
        let replica = InferenceProc::start(&dir, "r1", Some(&trainer.url()), &[])?;
        let ch = connect(replica.port).await?;
        let mut ic = InferenceClient::new(ch.clone());
        wait_serving(&mut ic, "v1", Duration::from_secs(30)).await?;
        let load = Load::start(vec![ch.clone(), connect(replica.port).await?]);

        trainer.proc.kill();
        let killed = Instant::now();
        wait_for(
            "trainer_connected to drop to 0",
            Duration::from_secs(10),
            || async {
                let t = scrape(replica.metrics_port).await.ok()?;
                (metric(&t, "taskcast_inference_trainer_connected") == 0.0).then_some(())
            },
        )
        .await?;
        eprintln!("trainer_connected 0 after {:?}", killed.elapsed());
        // Promote v2 while the trainer is down, straight in the registry.
        db.set_active("v2", PromotionKind::Promote).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        ensure!(
            served_version(&mut ic).await? == "v1",
            "the replica must keep serving v1"
        );

        trainer.restart(&dir, "trainer2")?;
        let restarted = Instant::now();
        wait_serving(&mut ic, "v2", Duration::from_secs(30)).await?;
        eprintln!(
            "caught up to v2 {:?} after the trainer restarted",
            restarted.elapsed()
        );
        let (ok, failed) = load.finish().await?;
        let text = scrape(replica.metrics_port).await?;
        ensure!(
            metric(&text, "taskcast_inference_trainer_connected") == 1.0,
            "{text}"
        );
        let reconnects = metric(&text, "taskcast_inference_trainer_reconnects_total");
        ensure!(reconnects >= 1.0, "reconnects {reconnects}");
        eprintln!(
            "load during the outage: {ok} ok, {failed} failed; {reconnects} reconnect attempts"
        );
        ensure!(
            failed == 0 && ok > 50,
            "{failed} of {} requests failed",
            ok + failed
        );
        db.close().await?;
        Ok(())
    })
    .await
}

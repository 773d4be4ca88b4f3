//! Promotions in a row under load: nothing fails, nothing leaks.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use taskcast_contract::FEATURE_SCHEMA;
use taskcast_proto::PromoteRequest;
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_testdb::TestDb;
use trainer_svc::db::Db;

use crate::support::*;
use crate::{Load, scenario, wait_serving};

/// 6. 100 promotions in a row under load on a replica: zero failed requests,
/// and the replica's RSS grows less than [`RSS_GROWTH_LIMIT_KIB`] across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_promotions_under_load_fail_nothing_and_do_not_leak() -> Result<()> {
    scenario("swaps", Duration::from_secs(150), |dir| async move {
        let tdb = TestDb::sqlite()?;
        let db = Db::connect(tdb.url()).await?;
        register_active(&db, "v1", 1).await?;
        register(&db, "v2", FEATURE_SCHEMA, model_bytes("v2", 2)?).await?;
        let trainer = TrainerProc::start_registry_only(tdb.url(), &dir, "trainer")?;
        let replica = InferenceProc::start(&dir, "r1", Some(&trainer.url()), &[])?;
        let mut ic = InferenceClient::new(connect(replica.port).await?);
        wait_serving(&mut ic, "v1", Duration::from_secs(30)).await?;
        let initial = rss_kib(replica.proc.pid())?;
        let mut tc = TrainerClient::new(connect(trainer.port).await?);
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(connect(replica.port).await?);
        }
        let load = Load::start(channels);

        let mut promote = async |i: usize| -> Result<()> {
            let v = if i.is_multiple_of(2) { "v2" } else { "v1" };
            tc.promote(admin(PromoteRequest {
                version: v.into(),
                canary_percent: 0,
            })).await?;
            wait_serving(&mut ic, v, Duration::from_secs(10)).await
        };
        // Warm-up: allocator arenas and the pools settle over the first swaps.
        for i in 0..10 {
            promote(i).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib(replica.proc.pid())?;
        let started = Instant::now();
        for i in 10..110 {
            promote(i).await?;
        }
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib(replica.proc.pid())?;
        let (ok, failed) = load.finish().await?;
        let swaps = metric(&scrape(replica.metrics_port).await?, "taskcast_inference_model_swaps_total");
        eprintln!(
            "100 promotions in {took:?}: {ok} requests ok, {failed} failed; RSS {initial} KiB at first model, \
             {before} KiB after 10 warm-up swaps, {after} KiB after 100 more ({:+} KiB); {swaps} swaps",
            after as i64 - before as i64
        );
        ensure!(failed == 0, "{failed} of {} requests failed", ok + failed);
        ensure!(ok > 500, "the load loop made only {ok} requests");
        // v1, then 110 promotions (the startup model is held back while a
        // trainer is configured: it never went into service).
        ensure!(swaps >= 111.0, "swaps {swaps}");
        ensure!(
            after < before + RSS_GROWTH_LIMIT_KIB,
            "RSS grew {before} -> {after} KiB across 100 swaps (limit +{RSS_GROWTH_LIMIT_KIB} KiB)"
        );
        db.close().await?;
        Ok(())
    })
    .await
}

/// Allowed RSS growth across 100 swaps after warm-up.
/// Measured growth is 0.1-0.3 MB (RELIABILITY.md); 8 MiB leaves room for
/// allocator noise and still fails on a leak of 80 KiB or more per swap.
const RSS_GROWTH_LIMIT_KIB: u64 = 8 * 1024;

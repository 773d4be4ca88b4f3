//! Oversized requests and floods.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::{Attempt, Candidate, PredictRequest};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::*;
use crate::{scenario, wait_serving};

/// 7. Oversized requests are refused by the message limit; a burst beyond
/// the per-connection concurrency limit is shed, not queued, and the server
/// stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_and_floods_are_refused_not_queued() -> Result<()> {
    scenario("flood", Duration::from_secs(120), |dir| async move {
        let replica = InferenceProc::start(&dir, "r1", None, &["--concurrency-limit-per-connection", "2", "--sessions", "1"])?;
        let ch = connect(replica.port).await?;
        let mut c = InferenceClient::new(ch.clone());
        wait_serving(&mut c, "bootstrap-3", Duration::from_secs(30)).await?;

        let mut huge = simple_predict();
        huge.user_id = "x".repeat(5 * 1024 * 1024);
        let e = c.predict(huge).await.err().context("a 5 MiB request was accepted")?;
        eprintln!("5 MiB request: {:?} {}", e.code(), e.message());
        ensure!(matches!(e.code(), Code::ResourceExhausted | Code::OutOfRange), "{e:?}");
        c.predict(simple_predict()).await.context("after the oversized request")?;

        // 64 explain requests of 500 candidates at once on one connection.
        let history: Vec<Attempt> = (0..200)
            .map(|i| Attempt {
                topic: format!("topic-{}", i % 7),
                difficulty: "medium".into(),
                correct: i % 3 != 0,
                seconds: 20.0,
                completed_at: None,
                item_id: format!("item-{i}"),
            })
            .collect();
        let heavy = PredictRequest {
            user_id: "flood".into(),
            history,
            candidates: (0..500)
                .map(|i| Candidate {
                    task_id: format!("t{i}"),
                    topic: format!("topic-{}", i % 7),
                    difficulty: "hard".into(),
                    item_id: format!("item-{i}"),
                })
                .collect(),
            explain: true, as_of: None,
};
        // A burst is shed only if its requests overlap on the server; on a
        // loaded machine the client can send one so slowly that the server
        // keeps up, so up to five bursts are tried. A server that queues
        // instead of shedding never sheds in any of them.
        let (mut ok, mut shed, mut other) = (0, Vec::new(), Vec::new());
        for round in 1..=5 {
            let started = Instant::now();
            let burst: Vec<_> = (0..64)
                .map(|_| {
                    let mut c = c.clone();
                    let req = heavy.clone();
                    tokio::spawn(async move { c.predict(req).await.map(|_| ()).map_err(|e| e.code()) })
                })
                .collect();
            for t in burst {
                match t.await? {
                    Ok(()) => ok += 1,
                    Err(code @ (Code::ResourceExhausted | Code::Unavailable)) => shed.push(code),
                    Err(code) => other.push(code),
                }
            }
            eprintln!(
                "burst {round} of 64 at concurrency limit 2: {ok} served, {} shed so far, other {other:?}, in {:?}",
                shed.len(),
                started.elapsed()
            );
            if !shed.is_empty() || !other.is_empty() {
                break;
            }
        }
        shed.sort_by_key(|c| *c as i32);
        shed.dedup();
        eprintln!("shed with {shed:?}");
        ensure!(other.is_empty(), "unexpected codes {other:?}");
        ensure!(!shed.is_empty(), "nothing was shed in five bursts: they were queued");
        ensure!(ok > 0, "nothing was served");

        let mut health = HealthClient::new(ch.clone());
        let h = health.check(HealthCheckRequest::default()).await?.into_inner();
        ensure!(h.status == ServingStatus::Serving as i32);
        c.predict(simple_predict()).await.context("after the burst")?;
        ensure!(replica.proc.tail(50).lines().all(|l| !l.contains("panicked")));
        Ok(())
    })
    .await
}

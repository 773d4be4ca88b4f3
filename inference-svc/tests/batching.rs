//! Dynamic batching over the network: many Predict calls in flight at once
//! share model runs (the server's own histogram says so), and every answer
//! is the answer the same request gets alone, run unbatched in-process.

mod common;

use std::time::Duration;

use common::*;
use futures::future::join_all;
use inference_svc::Config;
use inference_svc::config::DEFAULT_BATCH_MAX_ROWS;
use inference_svc::predict::{Limits, PredictInput, predict};
use taskcast_proto::{Attempt, Candidate, PredictRequest, Prediction};

/// Request `i` of a varied set: histories of 0 to 60 attempts, 1 to 40
/// candidates, some explained, some with timestamps.
fn varied(i: usize) -> PredictRequest {
    let topics = ["algebra", "fractions", "geometry", ""];
    PredictRequest {
        user_id: format!("learner-{}", i % 23),
        history: (0..(i * 7) % 61)
            .map(|k| Attempt {
                topic: topics[(i + k) % 4].into(),
                difficulty: ["easy", "", "hard"][k % 3].into(),
                correct: !(i + 3 * k).is_multiple_of(5),
                seconds: [0.0, 14.0, 95.5, 620.0][(i + k) % 4],
                completed_at: i.is_multiple_of(3).then_some(prost_types::Timestamp {
                    seconds: 1_760_000_000 + 90 * k as i64,
                    nanos: 0,
                }),
                item_id: format!("q{}", (i * k) % 9),
            })
            .collect(),
        candidates: (0..1 + (i * 13) % 40)
            .map(|k| Candidate {
                task_id: format!("t{i}-{k}"),
                topic: topics[k % 4].into(),
                difficulty: ["hard", "", "easy"][k % 3].into(),
                item_id: format!("q{}", k % 11),
            })
            .collect(),
        explain: i.is_multiple_of(17),
        as_of: None,
    }
}

/// Equal up to float summation order: batching hands ONNX Runtime more rows
/// at once, and a kernel may block a longer matrix differently.
fn close(a: &[Prediction], b: &[Prediction]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} predictions vs {}", a.len(), b.len()));
    }
    let near = |x: f64, y: f64| (x - y).abs() <= 1e-6 * y.abs().max(1.0);
    for (x, y) in a.iter().zip(b) {
        let same = x.task_id == y.task_id
            && x.cold_start == y.cold_start
            && near(x.p_correct, y.p_correct)
            && near(x.seconds, y.seconds)
            && near(x.seconds_low, y.seconds_low)
            && near(x.seconds_high, y.seconds_high)
            && x.reasons.len() == y.reasons.len()
            && x.reasons.iter().zip(&y.reasons).all(|(r, s)| {
                r.feature == s.feature && near(r.effect, s.effect) && near(r.value, s.value)
            });
        if !same {
            return Err(format!("{x:?}\n vs alone\n{y:?}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_runs_and_answer_as_alone() {
    let server = start(Config::default_for_tests(bootstrap_path())).await;
    let model = server.slot.current().expect("model loaded");
    let requests: Vec<PredictRequest> = (0..240).map(varied).collect();
    let alone: Vec<Vec<Prediction>> = requests
        .iter()
        .map(|r| predict(&model, &PredictInput::from(r), &Limits::default()).expect("alone"))
        .collect();

    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(server.client().await);
    }
    // Several rounds: each sends every request at once, so batches form
    // however the scheduler interleaves them.
    for _ in 0..3 {
        let calls = requests.iter().enumerate().map(|(i, r)| {
            let mut c = clients[i % clients.len()].clone();
            let r = r.clone();
            async move { c.predict(r).await }
        });
        let answers = tokio::time::timeout(Duration::from_secs(30), join_all(calls))
            .await
            .expect("every call answered");
        for (i, answer) in answers.into_iter().enumerate() {
            let got = answer.unwrap_or_else(|s| panic!("request {i}: {s}"));
            if let Err(e) = close(&got.into_inner().predictions, &alone[i]) {
                panic!("request {i}: {e}");
            }
        }
    }

    let text = server.scrape().await;
    let runs = metric(&text, "taskcast_inference_batch_requests_count");
    let calls = metric(&text, "taskcast_inference_batch_requests_sum");
    println!("{calls} calls in {runs} model runs");
    // A call of half a batch or more runs alone, past the batcher.
    let width = model.onnx.width();
    let rows = |r: &PredictRequest| r.candidates.len() * if r.explain { 1 + width } else { 1 };
    let batched = requests
        .iter()
        .filter(|r| 2 * rows(r) <= DEFAULT_BATCH_MAX_ROWS)
        .count();
    assert!(
        batched < requests.len(),
        "some calls are too large to batch"
    );
    assert_eq!(
        calls,
        3.0 * batched as f64,
        "every smaller call went through the batcher"
    );
    assert!(
        runs < calls,
        "no run answered more than one call: {runs} runs for {calls} calls"
    );
    server.stop().await.unwrap();
}

/// With batching off (`--batch-max-rows 1`) each call runs alone, and the
/// answers are bit-for-bit those of the in-process path.
#[tokio::test]
async fn batching_off_runs_every_call_alone() {
    let mut config = Config::default_for_tests(bootstrap_path());
    config.batch_max_rows = 1;
    let server = start(config).await;
    let model = server.slot.current().expect("model loaded");
    let mut c = server.client().await;
    for i in [0, 5, 17, 34] {
        let r = varied(i);
        let got = c.predict(r.clone()).await.unwrap().into_inner().predictions;
        let alone = predict(&model, &PredictInput::from(&r), &Limits::default()).unwrap();
        assert_eq!(got, alone);
    }
    let text = server.scrape().await;
    assert_eq!(
        metric(&text, "taskcast_inference_batch_requests_count"),
        0.0
    );
    server.stop().await.unwrap();
}

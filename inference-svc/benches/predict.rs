//! Latency and throughput of the Predict path, printed as a table.
//!
//! `cargo bench -p inference-svc --bench predict`
//!
//! - in-process: validation + features + one batched ONNX run, as the gRPC
//!   handler does it, for 1 and 100 candidates with a 50-attempt history;
//! - gRPC: the real server in this process on 127.0.0.1:0 and a real tonic
//!   client over loopback, at concurrency 1 and 32 (one HTTP/2 connection).
//!
//! Fixed request counts, each run also capped at 10 s.
//!
//! Models: `TASKCAST_BENCH_MODELS=name=path,name=path` (default: the bootstrap
//! model). BENCHMARKS.md trains a `linear` and an `mlp` model with
//! `trainer-svc train` and passes both, so the families compare in one run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use inference_svc::predict::{Limits, PredictInput, predict};
use inference_svc::{Config, LoadedModel};
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::{Attempt, Candidate, PredictRequest};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/bootstrap.onnx");
const CAP: Duration = Duration::from_secs(10);

fn request(candidates: usize) -> PredictRequest {
    let topics = ["algebra", "fractions", "geometry", "probability", "vectors"];
    let history = (0..50)
        .map(|i| Attempt {
            topic: topics[i % 5].into(),
            difficulty: ["easy", "medium", "hard"][i % 3].into(),
            correct: i % 3 != 0,
            seconds: 10.0 + (i * 7 % 90) as f64,
            completed_at: None,
            item_id: format!("item-{}", i % 17),
        })
        .collect();
    let candidates = (0..candidates)
        .map(|i| Candidate {
            task_id: format!("task-{i}"),
            topic: topics[i % 5].into(),
            difficulty: ["easy", "medium", "hard"][i % 3].into(),
            item_id: format!("item-{}", i % 23),
        })
        .collect();
    PredictRequest {
        user_id: "bench-user".into(),
        history,
        candidates,
        explain: false,
        as_of: None,
    }
}

struct Row {
    what: String,
    n: usize,
    p50: Duration,
    p99: Duration,
    throughput: f64,
}

fn summarise(what: String, mut lat: Vec<Duration>, wall: Duration) -> Row {
    lat.sort();
    let q = |f: f64| lat[((lat.len() as f64 * f) as usize).min(lat.len() - 1)];
    Row {
        what,
        n: lat.len(),
        p50: q(0.5),
        p99: q(0.99),
        throughput: lat.len() as f64 / wall.as_secs_f64(),
    }
}

fn in_process(model: &LoadedModel, candidates: usize, iters: usize) -> Row {
    let req = request(candidates);
    let limits = Limits::default();
    for _ in 0..200 {
        let _ = predict(model, &PredictInput::from(&req), &limits);
    }
    let mut lat = Vec::with_capacity(iters);
    let start = Instant::now();
    for _ in 0..iters {
        let t = Instant::now();
        let out = predict(model, &PredictInput::from(&req), &limits).expect("predict");
        std::hint::black_box(out);
        lat.push(t.elapsed());
        if start.elapsed() > CAP {
            break;
        }
    }
    summarise(
        format!("in-process, {candidates} cand"),
        lat,
        start.elapsed(),
    )
}

async fn grpc(url: &str, candidates: usize, concurrency: usize, total: usize) -> Row {
    let channel = tonic::transport::Channel::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let client = InferenceClient::new(channel);
    let req = Arc::new(request(candidates));
    for _ in 0..100 {
        client
            .clone()
            .predict((*req).clone())
            .await
            .expect("warm-up");
    }
    let start = Instant::now();
    let per_task = total / concurrency;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut c = client.clone();
        let req = Arc::clone(&req);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                c.predict((*req).clone()).await.expect("predict");
                lat.push(t.elapsed());
                if start.elapsed() > CAP {
                    break;
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    summarise(
        format!("gRPC loopback, {candidates} cand, concurrency {concurrency}"),
        lat,
        start.elapsed(),
    )
}

fn models() -> Vec<(String, String)> {
    match std::env::var("TASKCAST_BENCH_MODELS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
        _ => vec![("bootstrap".into(), MODEL.into())],
    }
}

fn main() {
    let mut rows = Vec::new();
    for (name, path) in models() {
        let config = Config::default_for_tests(&path);
        inference_svc::init_runtime(&config).expect("ONNX Runtime");
        let bytes = std::fs::read(&path).expect("model");
        let model = LoadedModel::load(&bytes, None, config.session_pool()).expect("load");
        for mut r in [
            in_process(&model, 1, 20_000),
            in_process(&model, 100, 5_000),
        ] {
            r.what = format!("{name}: {}", r.what);
            rows.push(r);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(inference_svc::run(listener, None, config, async {
                let _ = rx.await;
            }));
            tokio::time::sleep(Duration::from_millis(100)).await;
            for (cands, conc, total) in [
                (1, 1, 5_000),
                (1, 32, 20_000),
                (100, 1, 2_000),
                (100, 32, 8_000),
            ] {
                let mut r = grpc(&url, cands, conc, total).await;
                r.what = format!("{name}: {}", r.what);
                rows.push(r);
            }
            let _ = tx.send(());
            let _ = server.await;
        });
    }

    println!();
    println!(
        "| {:<50} | {:>6} | {:>10} | {:>10} | {:>12} |",
        "case (50-attempt history)", "n", "p50", "p99", "req/s"
    );
    println!(
        "|{:-<52}|{:->8}|{:->12}|{:->12}|{:->14}|",
        "", "", "", "", ""
    );
    for r in rows {
        println!(
            "| {:<50} | {:>6} | {:>10.1?} | {:>10.1?} | {:>12.0} |",
            r.what, r.n, r.p50, r.p99, r.throughput
        );
    }
}

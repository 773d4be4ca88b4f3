//! The `taskcast-load` binary against a real inference server in this process
//! (127.0.0.1:0, the bootstrap model): closed and open loop produce sane
//! figures, and refused calls are counted by code instead of ending the run.
//! No timing is asserted: only that the figures are consistent.

use std::path::PathBuf;

use inference_svc::Config;
use serde_json::Value;

struct Server {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), inference_svc::Error>>,
}

async fn start() -> Server {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/bootstrap.onnx");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(inference_svc::run(
        listener,
        None,
        Config::default_for_tests(model),
        async {
            let _ = rx.await;
        },
    ));
    // `run` loads the model before serving; the generator's connect retries
    // nothing, so wait until the port answers gRPC.
    for _ in 0..100 {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
        {
            let mut c = taskcast_proto::inference_client::InferenceClient::new(ch);
            if c.get_model(taskcast_proto::GetModelRequest {})
                .await
                .is_ok()
            {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Server { url, stop, task }
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("join").expect("server");
    }
}

async fn load(args: &[&str]) -> Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskcast-load"))
        .args(args)
        .arg("--json")
        .output()
        .await
        .expect("run taskcast-load");
    assert!(
        out.status.success(),
        "taskcast-load {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

/// Successful calls, no errors, and percentiles in order.
fn assert_sane(r: &Value) {
    assert!(num(r, &["requests_ok"]) > 0.0, "{r}");
    assert_eq!(num(r, &["errors_total"]), 0.0, "{r}");
    assert!(r["errors"].as_object().is_some_and(|m| m.is_empty()), "{r}");
    assert!(num(r, &["throughput_rps"]) > 0.0, "{r}");
    for which in ["latency_us", "service_us"] {
        let q: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
            .iter()
            .map(|p| num(r, &[which, p]))
            .collect();
        assert!(q[0] > 0.0, "{which}: {q:?}");
        assert!(
            q.windows(2).all(|w| w[0] <= w[1]),
            "{which} out of order: {q:?}"
        );
    }
    let scores = num(r, &["scores_per_s"]);
    let expected = num(r, &["throughput_rps"]) * num(r, &["candidates"]);
    assert!((scores - expected).abs() <= 1e-6 * expected, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_and_open_loop_report_sane_figures() {
    let server = start().await;
    let closed = load(&[
        "--target",
        &server.url,
        "--duration",
        "2",
        "--warmup",
        "0.3",
        "--concurrency",
        "4",
        "--connections",
        "2",
        "--candidates",
        "10",
        "--history",
        "50",
        "--seed",
        "7",
    ])
    .await;
    assert_sane(&closed);
    assert_eq!(closed["mode"], "closed");
    assert_eq!(num(&closed, &["candidates"]), 10.0);
    assert_eq!(num(&closed, &["connections"]), 2.0);

    let open = load(&[
        "--target",
        &server.url,
        "--duration",
        "2",
        "--warmup",
        "0.3",
        "--rate",
        "300",
        "--concurrency",
        "8",
        "--candidates",
        "3",
    ])
    .await;
    assert_sane(&open);
    assert_eq!(open["mode"], "open");
    // Open loop sends what is scheduled, never more: 300/s over 2 s.
    assert!(num(&open, &["requests_ok"]) <= 601.0, "{open}");
    // Latency runs from the intended send time, service from the real one,
    // so no percentile of the first can be below the second's.
    for p in ["p50", "p99", "max"] {
        assert!(
            num(&open, &["latency_us", p]) >= num(&open, &["service_us", p]),
            "{open}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_are_counted_by_code() {
    let server = start().await;
    let r = load(&[
        "--target",
        &server.url,
        "--duration",
        "1",
        "--warmup",
        "0",
        "--concurrency",
        "2",
        "--candidates",
        "0",
    ])
    .await;
    assert_eq!(num(&r, &["requests_ok"]), 0.0, "{r}");
    let invalid = num(&r, &["errors", "INVALID_ARGUMENT"]);
    assert!(invalid > 0.0, "{r}");
    assert_eq!(
        num(&r, &["errors_total"]),
        invalid,
        "only INVALID_ARGUMENT: {r}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_fails_the_run() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskcast-load"))
        .args([
            "--target",
            &format!("http://127.0.0.1:{port}"),
            "--duration",
            "1",
        ])
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connecting"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn self_test_measures_the_null_server() {
    let r = load(&[
        "--self-test",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--candidates",
        "5",
    ])
    .await;
    assert_sane(&r);
    assert!(
        r["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("self-test")),
        "{r}"
    );
}

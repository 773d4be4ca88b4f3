//! Model lifecycle: hot swap under load, refusal of bad models, startup
//! without a model, and following a (fake) trainer.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use inference_svc::Config;
use taskcast_contract::artifact::{INPUT_FEATURES, OUTPUT_P_CORRECT};
use taskcast_contract::onnx::{Dim, GraphBuilder};
use taskcast_contract::{Artifact, FEATURE_COUNT, IndexField, IndexInput, Schema};
use taskcast_proto::*;
use tonic::Code;

async fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn version_of(server: &TestServer) -> Option<String> {
    server.slot.current().map(|m| m.version().to_string())
}

/// Swaps back and forth between a model of feature schema v1 (what a
/// registry holds from the release before) and one of v2 under load: no
/// request fails, and each answer has the reasons of the schema of the
/// model that gave it (v1 → v2 → v1 … as a rollout and its rollback do).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_swap_under_concurrent_load_never_fails_a_request() {
    let v1 = taskcast_contract::bootstrap::linear_metadata_for(
        Schema::V1,
        "swap-a",
        "linear",
        Default::default(),
    );
    let a = Artifact::write(random_linear(1).graph_for(Schema::V1), &v1).expect("v1 model");
    let b = linear_bytes(&random_linear(2), &metadata("swap-b", Default::default()));
    let trainer = FakeTrainer::new(None);
    let (url, _t) = trainer.serve().await;
    let mut cfg = Config::default_for_tests(bootstrap_path());
    cfg.trainer = Some(url);
    let server = start(cfg).await;
    // The startup model serves once the trainer says nothing is active.
    let ready = std::time::Instant::now();
    while server.slot.current().is_none() {
        assert!(
            ready.elapsed().as_secs() < 10,
            "the startup model never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..16 {
        let mut c = server.client().await;
        let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
        clients.push(tokio::spawn(async move {
            let mut versions = HashSet::new();
            let history: Vec<Attempt> = (0..i)
                .map(|k| Attempt {
                    completed_at: Some(prost_types::Timestamp {
                        seconds: 1_700_000_000 + 90 * k as i64,
                        nanos: 0,
                    }),
                    ..attempt("t", k % 2 == 0, 10.0 + k as f64)
                })
                .collect();
            let explain = i % 4 == 0;
            while !stop.load(Ordering::Relaxed) {
                let mut req = request(
                    history.clone(),
                    vec![candidate("x", "t"), candidate("y", "u")],
                );
                req.explain = explain;
                let resp = c
                    .predict(req)
                    .await
                    .expect("no request fails during swaps")
                    .into_inner();
                assert_eq!(resp.predictions.len(), 2);
                if explain {
                    let width = if resp.model_version == "swap-a" {
                        Schema::V1.width()
                    } else {
                        Schema::V2.width()
                    };
                    for p in &resp.predictions {
                        assert_eq!(p.reasons.len(), width, "{}", resp.model_version);
                    }
                }
                versions.insert(resp.model_version);
                ok.fetch_add(1, Ordering::Relaxed);
            }
            versions
        }));
    }

    let mut published = 0;
    for round in 0..22 {
        let (bytes, v) = if round % 2 == 0 {
            (a.clone(), "swap-a")
        } else {
            (b.clone(), "swap-b")
        };
        trainer.publish(artifact(bytes, v));
        published += 1;
        wait_for(|| version_of(&server).as_deref() == Some(v), v).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = HashSet::new();
    for c in clients {
        seen.extend(c.await.expect("client task"));
    }
    let allowed: HashSet<String> = ["bootstrap-3", "swap-a", "swap-b"].map(String::from).into();
    assert!(seen.is_subset(&allowed), "{seen:?}");
    assert!(
        seen.contains("swap-a") && seen.contains("swap-b"),
        "{seen:?}"
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
    let text = server.scrape().await;
    // The startup model plus every published one.
    assert_eq!(
        metric(&text, "taskcast_inference_model_swaps_total"),
        f64::from(published + 1)
    );
    assert_eq!(metric(&text, "taskcast_inference_trainer_connected"), 1.0);
    // Exactly one model_info label set, the serving one.
    let info: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("taskcast_inference_model_info{"))
        .collect();
    assert_eq!(info.len(), 1, "{info:?}");
    assert!(info[0].contains("swap-b"));
    assert_eq!(trainer.subscribers.lock().unwrap().as_slice(), ["test"]);
    server.stop().await.unwrap();
}

/// A graph declaring only `p_correct` (no `log_seconds`).
fn missing_output_model() -> Vec<u8> {
    let f = FEATURE_COUNT as i64;
    let mut g = GraphBuilder::new("no_time");
    g.input_f32(INPUT_FEATURES, &[Dim::Batch, Dim::Fixed(f)])
        .output_f32(OUTPUT_P_CORRECT, &[Dim::Batch])
        .init_f32("p_w", &[f, 1], &[0.0; FEATURE_COUNT])
        .init_f32("p_b", &[1], &[0.0])
        .init_i64("flat", &[1], &[-1])
        .node("Gemm", &[INPUT_FEATURES, "p_w", "p_b"], &["logit"], vec![])
        .node("Sigmoid", &["logit"], &["p_col"], vec![])
        .node("Reshape", &["p_col", "flat"], &[OUTPUT_P_CORRECT], vec![]);
    Artifact::write(g, &metadata("no-time", Default::default())).unwrap()
}

#[tokio::test]
async fn bad_models_are_refused_and_the_old_one_keeps_serving() {
    let server = start(Config::default_for_tests(bootstrap_path())).await;
    let mut c = server.client().await;
    let good = linear_bytes(&random_linear(3), &metadata("good-3", Default::default()));

    let mut nan = random_linear(4);
    nan.p_weights[0] = f32::NAN;
    nan.t_weights[3] = f32::NAN;
    let mut other_schema = metadata("other-schema", Default::default());
    other_schema.feature_schema = "taskcast.features/v0".into();
    let mut crossing = random_linear(5);
    crossing.t_quantile_offsets = [1.0, 0.0, -1.0];
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();

    let cases: Vec<(&str, Vec<u8>, Option<String>, &str)> = vec![
        ("random bytes", random, None, "corrupt"),
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            None,
            "corrupt",
        ),
        ("empty", Vec::new(), None, "corrupt"),
        (
            "other schema",
            linear_bytes(&random_linear(6), &other_schema),
            None,
            "schema",
        ),
        (
            "wrong sha256",
            good.clone(),
            Some("00".repeat(32)),
            "sha256",
        ),
        (
            "NaN weights",
            linear_bytes(&nan, &metadata("nan", Default::default())),
            None,
            "warmup",
        ),
        (
            "crossing quantiles",
            linear_bytes(&crossing, &metadata("cross", Default::default())),
            None,
            "warmup",
        ),
        ("missing output", missing_output_model(), None, "io"),
    ];
    for (name, bytes, sha, reason) in &cases {
        let err = server
            .slot
            .try_swap(bytes.clone(), sha.clone())
            .await
            .expect_err(name);
        assert_eq!(err.reason(), *reason, "{name}: {err}");
        assert_eq!(
            version_of(&server).as_deref(),
            Some("bootstrap-3"),
            "{name}"
        );
        let resp = c
            .predict(request(vec![], vec![candidate("x", "t")]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            resp.model_version, "bootstrap-3",
            "{name}: old model keeps serving"
        );
    }
    let text = server.scrape().await;
    for (reason, n) in [
        ("corrupt", 3.0),
        ("schema", 1.0),
        ("sha256", 1.0),
        ("warmup", 2.0),
        ("io", 1.0),
    ] {
        let line = format!("taskcast_inference_model_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &line), n, "{reason}\n{text}");
    }
    // And the right checksum is accepted.
    let sha = taskcast_contract::artifact::sha256_hex(&good);
    server
        .slot
        .try_swap(good, Some(sha.to_uppercase()))
        .await
        .expect("good model");
    assert_eq!(version_of(&server).as_deref(), Some("good-3"));
    // Another file under the serving version's name is refused; the same
    // file again is harmless.
    let impostor = linear_bytes(&random_linear(7), &metadata("good-3", Default::default()));
    let err = server
        .slot
        .try_swap(impostor, None)
        .await
        .expect_err("same version, other bytes");
    assert_eq!(err.reason(), "version_conflict", "{err}");
    let again = linear_bytes(&random_linear(3), &metadata("good-3", Default::default()));
    server.slot.try_swap(again, None).await.expect("same file");
    assert_eq!(version_of(&server).as_deref(), Some("good-3"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn not_serving_until_the_trainer_delivers_a_model() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"garbage").unwrap();
    let trainer = FakeTrainer::new(None);
    let (url, _t) = trainer.serve().await;
    let mut cfg = Config::default_for_tests(&corrupt);
    cfg.trainer = Some(url);
    let server = start(cfg).await;
    let ch = server.channel().await;
    let mut h = HealthClient::new(ch.clone());
    let status = |s: &str| HealthCheckRequest { service: s.into() };
    for s in ["", "taskcast.v1.Inference"] {
        let r = h.check(status(s)).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::NotServing as i32, "{s:?}");
    }
    let mut c = server.client().await;
    let e = c
        .predict(request(vec![], vec![candidate("x", "t")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    let text = server.scrape().await;
    assert_eq!(
        metric(
            &text,
            r#"taskcast_inference_model_refused_total{reason="corrupt"}"#
        ),
        1.0
    );

    // A bad artifact from the trainer is refused too, and the stream continues.
    let good = linear_bytes(
        &random_linear(9),
        &metadata("from-trainer", Default::default()),
    );
    let mut wrong = artifact(good.clone(), "from-trainer");
    wrong.sha256 = "ab".repeat(32);
    trainer.publish(wrong);
    trainer.publish(artifact(good, "from-trainer"));
    wait_for(
        || version_of(&server).as_deref() == Some("from-trainer"),
        "trainer model",
    )
    .await;
    for s in ["", "taskcast.v1.Inference"] {
        let r = h.check(status(s)).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{s:?}");
    }
    let resp = c
        .predict(request(vec![], vec![candidate("x", "t")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.model_version, "from-trainer");
    let text = server.scrape().await;
    assert_eq!(
        metric(
            &text,
            r#"taskcast_inference_model_refused_total{reason="sha256"}"#
        ),
        1.0
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reconnects_to_a_trainer_that_comes_up_late() {
    // Reserve a port, free it, point the replica at it, then start the trainer there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = Config::default_for_tests(bootstrap_path());
    cfg.trainer = Some(format!("http://127.0.0.1:{port}"));
    let server = start(cfg).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let text = server.scrape().await;
    assert_eq!(metric(&text, "taskcast_inference_trainer_connected"), 0.0);
    assert!(
        metric(&text, "taskcast_inference_trainer_reconnects_total") >= 1.0,
        "{text}"
    );

    let good = linear_bytes(&random_linear(11), &metadata("late", Default::default()));
    let trainer = FakeTrainer::new(Some(artifact(good, "late")));
    let _t = trainer.serve_on(
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap(),
    );
    wait_for(
        || version_of(&server).as_deref() == Some("late"),
        "late trainer's model",
    )
    .await;
    let text = server.scrape().await;
    assert_eq!(metric(&text, "taskcast_inference_trainer_connected"), 1.0);
    server.stop().await.unwrap();
}

/// A linear model plus a per-topic logit offset looked up through an
/// embedding-style int64 input, exercising `index_inputs`.
#[tokio::test]
async fn index_inputs_are_looked_up_from_the_vocabulary() {
    let mut lin = random_linear(12);
    // Random weights on the v2 columns would move the three candidates'
    // logits apart by more than the offsets tested here (a topic never
    // attempted reads as a year away).
    lin.p_weights[taskcast_contract::Schema::V1.width()..].fill(0.0);
    // The linear graph with logit' = logit + emb[topic_idx].
    let f = FEATURE_COUNT as i64;
    let mut g2 = GraphBuilder::new("linear_topic_emb");
    g2.input_f32(INPUT_FEATURES, &[Dim::Batch, Dim::Fixed(f)])
        .input_i64("topic_idx", &[Dim::Batch])
        .output_f32(OUTPUT_P_CORRECT, &[Dim::Batch])
        .output_f32("log_seconds", &[Dim::Batch, Dim::Fixed(3)])
        .init_f32("p_w", &[f, 1], &lin.p_weights)
        .init_f32("p_b", &[1], &[lin.p_bias])
        .init_f32("t_w", &[f, 1], &lin.t_weights)
        .init_f32("t_b", &[1], &[lin.t_bias])
        .init_f32("t_q", &[1, 3], &lin.t_quantile_offsets)
        // index 0 = OOV (no offset), 1 = "boost" (+3 logits), 2 = "sink" (−3)
        .init_f32("emb", &[3, 1], &[0.0, 3.0, -3.0])
        .init_i64("flat", &[1], &[-1])
        .node("Gemm", &[INPUT_FEATURES, "p_w", "p_b"], &["logit0"], vec![])
        .node("Gather", &["emb", "topic_idx"], &["offset"], vec![])
        .node("Add", &["logit0", "offset"], &["logit"], vec![])
        .node("Sigmoid", &["logit"], &["p_col"], vec![])
        .node("Reshape", &["p_col", "flat"], &[OUTPUT_P_CORRECT], vec![])
        .node("Gemm", &[INPUT_FEATURES, "t_w", "t_b"], &["loc"], vec![])
        .node("Add", &["loc", "t_q"], &["log_seconds"], vec![]);
    let g = g2;
    let mut meta = metadata("emb-1", Default::default());
    meta.index_inputs = vec![IndexInput {
        name: "topic_idx".into(),
        field: IndexField::Topic,
        vocabulary: vec!["boost".into(), "sink".into()],
    }];
    let bytes = Artifact::write(g, &meta).unwrap();
    let server = start(Config::default_for_tests(bootstrap_path())).await;
    server
        .slot
        .try_swap(bytes, None)
        .await
        .expect("embedding model loads");
    let mut c = server.client().await;
    let resp = c
        .predict(request(
            vec![],
            vec![
                candidate("b", "boost"),
                candidate("o", "oov"),
                candidate("s", "sink"),
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    let p: Vec<f64> = resp.predictions.iter().map(|p| p.p_correct).collect();
    assert_eq!(resp.model_version, "emb-1");
    assert!(p[0] > p[1] + 0.2 && p[1] > p[2] + 0.2, "{p:?}");
    server.stop().await.unwrap();
}

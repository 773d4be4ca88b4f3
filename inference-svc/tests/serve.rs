//! The Inference API over a real server on 127.0.0.1:0 with a real client.

mod common;

use std::time::Duration;

use common::*;
use inference_svc::Config;
use taskcast_contract::features::{CandidateKey, Event, FeatureContext, window};
use taskcast_contract::{Artifact, FEATURE_NAMES, PriorTable};
use taskcast_proto::*;
use tonic::Code;

fn config() -> Config {
    Config::default_for_tests(bootstrap_path())
}

#[tokio::test]
async fn predictions_respond_to_history() {
    let server = start(config()).await;
    let mut c = server.client().await;
    let cands = vec![candidate("t1", "fractions"), candidate("t2", "geometry")];
    let base = c
        .predict(request(vec![], cands.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(base.model_version, "bootstrap-3");
    assert_eq!(base.predictions.len(), 2);
    assert_eq!(base.predictions[0].task_id, "t1");
    assert!(
        base.predictions.iter().all(|p| p.cold_start),
        "empty history is cold start"
    );

    let correct: Vec<Attempt> = (0..6).map(|_| attempt("fractions", true, 20.0)).collect();
    let after = c
        .predict(request(correct.clone(), cands.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(after.predictions[0].p_correct > base.predictions[0].p_correct + 0.01);
    assert!(
        !after.predictions[0].cold_start,
        "an attempt in the topic ends cold start"
    );
    assert!(after.predictions[1].cold_start, "unseen topic stays cold");

    let slow: Vec<Attempt> = (0..6).map(|_| attempt("fractions", true, 600.0)).collect();
    let slower = c
        .predict(request(slow, cands.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(slower.predictions[0].seconds > after.predictions[0].seconds * 1.5);
    for p in &slower.predictions {
        assert!(p.seconds_low <= p.seconds && p.seconds <= p.seconds_high);
    }

    let again = c
        .predict(request(correct, cands))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, after, "same request, same answer");
    server.stop().await.unwrap();
}

/// Served outputs equal an independent computation: the contract's feature
/// code plus `LinearModel::predict` in plain Rust, for the bootstrap model
/// and a random-weight linear model.
#[tokio::test]
async fn model_output_matches_reference() {
    let random = random_linear(7);
    let mut meta = metadata("random-7", Default::default());
    meta.history_window = 8;
    let random_bytes = linear_bytes(&random, &meta);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.onnx");
    std::fs::write(&path, &random_bytes).unwrap();

    let history: Vec<Attempt> = (0..20)
        .map(|i| {
            let mut a = attempt(
                ["algebra", "fractions", ""][i % 3],
                i % 4 != 0,
                [0.0, 12.5, 300.0, 4000.0][i % 4],
            );
            a.difficulty = ["easy", "", "hard"][i % 3].into();
            a.item_id = format!("q{}", i % 5);
            a
        })
        .collect();
    let cands: Vec<Candidate> = ["algebra", "fractions", "new-topic", ""]
        .iter()
        .enumerate()
        .map(|(i, t)| Candidate {
            task_id: format!("c{i}"),
            topic: t.to_string(),
            difficulty: ["easy", "hard", "", "medium"][i].into(),
            item_id: format!("q{}", i + 2),
        })
        .collect();

    for (model_path, reference) in [
        (
            bootstrap_path(),
            taskcast_contract::bootstrap::bootstrap_linear(),
        ),
        (path.clone(), random.clone()),
    ] {
        let bytes = std::fs::read(&model_path).unwrap();
        let art = Artifact::parse(&bytes).unwrap();
        let table = PriorTable::new(&art.metadata.priors);
        let events: Vec<Event> = history
            .iter()
            .map(|a| {
                let s = (a.seconds > 0.0).then_some(a.seconds);
                Event::resolve(&a.topic, &a.difficulty, &a.item_id, a.correct, s, &table)
            })
            .collect();
        let ctx = FeatureContext::new(window(&events, art.metadata.history_window), &table);

        let server = start(Config::default_for_tests(&model_path)).await;
        let mut c = server.client().await;
        let resp = c
            .predict(request(history.clone(), cands.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.model_version, art.metadata.version);
        for (cand, got) in cands.iter().zip(&resp.predictions) {
            let key = CandidateKey::new(&cand.topic, &cand.difficulty, &cand.item_id, &table);
            let f = ctx.row(&key, &table);
            let (p, q) = reference.predict(&f.row);
            let secs = f64::from(q[1]).exp();
            assert!(
                (got.p_correct - f64::from(p)).abs() < 1e-5,
                "{}: p {} vs {p}",
                art.metadata.version,
                got.p_correct
            );
            assert!(
                (got.seconds - secs).abs() / secs < 1e-5,
                "seconds {} vs {secs}",
                got.seconds
            );
            assert!((got.seconds_low - f64::from(q[0]).exp()).abs() / secs < 1e-5);
            assert!((got.seconds_high - f64::from(q[2]).exp()).abs() / secs < 1e-5);
            assert_eq!(got.cold_start, f.cold_start);
        }
        server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn bad_inputs_are_invalid_argument_naming_the_field() {
    let mut cfg = config();
    cfg.max_history = 10;
    let server = start(cfg).await;
    let mut c = server.client().await;
    let ok = || request(vec![attempt("a", true, 5.0)], vec![candidate("x", "a")]);
    let mut cases: Vec<(PredictRequest, &str)> = Vec::new();
    let mut r = ok();
    r.user_id.clear();
    cases.push((r, "user_id must not be empty"));
    let mut r = ok();
    r.candidates.clear();
    cases.push((r, "candidates: got 0, need 1..=1000"));
    let mut r = ok();
    r.candidates = (0..1001).map(|i| candidate(&i.to_string(), "a")).collect();
    cases.push((r, "candidates: over the limit of 1000"));
    let mut r = ok();
    r.history = (0..15).map(|_| attempt("a", true, 1.0)).collect();
    cases.push((r, "history: over the limit of 10 attempts"));
    for (i, bad) in [f64::NAN, f64::INFINITY, -1.0].into_iter().enumerate() {
        let mut r = ok();
        r.history = vec![attempt("a", true, 1.0); 4];
        r.history[3].seconds = bad;
        cases.push((r, "history[3].seconds must be finite and >= 0"));
        let _ = i;
    }
    let stamp = |seconds, nanos| Some(prost_types::Timestamp { seconds, nanos });
    for (seconds, nanos) in [
        (0, -1),
        (0, 1_000_000_000),
        (i64::MAX, 0),
        (-62_135_596_801, 0),
    ] {
        let mut r = ok();
        r.as_of = stamp(seconds, nanos);
        cases.push((r, "as_of: not a valid timestamp"));
        let mut r = ok();
        r.history = vec![attempt("a", true, 1.0); 4];
        r.history[3].completed_at = stamp(seconds, nanos);
        cases.push((r, "history[3].completed_at: not a valid timestamp"));
    }
    for (req, want) in cases {
        let e = c.predict(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{want}: {e:?}");
        assert!(
            e.message().contains(want),
            "{} does not contain {want}",
            e.message()
        );
    }
    // Recommend-only fields.
    let rec = |target: f64, budget: f64| RecommendRequest {
        user_id: "u".into(),
        history: vec![],
        candidates: vec![candidate("x", "a")],
        explain: false,
        target_p_correct: target,
        time_budget_seconds: budget,
        limit: 0,
        as_of: None,
    };
    for (req, want) in [
        (rec(1.0, 0.0), "target_p_correct"),
        (rec(-0.5, 0.0), "target_p_correct"),
        (rec(f64::NAN, 0.0), "target_p_correct"),
        (rec(0.5, -1.0), "time_budget_seconds"),
        (rec(0.5, f64::NAN), "time_budget_seconds"),
    ] {
        let e = c.recommend(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(want), "{}", e.message());
    }
    // Odd but valid inputs are fine: unicode, empty labels, huge and tiny times.
    let mut r = ok();
    r.user_id = "\u{1F600}\u{0000}ü".into();
    r.history = vec![
        attempt("", false, 1e308),
        attempt("\u{202E}", true, 1e-300),
        attempt("x", true, 0.0),
    ];
    r.candidates = vec![candidate("", ""), candidate("\u{1F600}", "\u{202E}")];
    let resp = c.predict(r).await.unwrap().into_inner();
    assert!(
        resp.predictions
            .iter()
            .all(|p| p.p_correct.is_finite() && p.seconds.is_finite())
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn explain_returns_finite_reasons_from_the_schema() {
    let server = start(config()).await;
    let mut c = server.client().await;
    let history: Vec<Attempt> = (0..8)
        .map(|i| attempt("algebra", i % 2 == 0, 30.0 + i as f64))
        .collect();
    let mut req = request(
        history,
        vec![candidate("a", "algebra"), candidate("b", "other")],
    );
    req.explain = true;
    let resp = c.predict(req.clone()).await.unwrap().into_inner();
    req.explain = false;
    let plain = c.predict(req).await.unwrap().into_inner();
    for (p, q) in resp.predictions.iter().zip(&plain.predictions) {
        assert_eq!(
            p.p_correct, q.p_correct,
            "explaining does not change the prediction"
        );
        assert!(q.reasons.is_empty());
        assert_eq!(p.reasons.len(), FEATURE_NAMES.len());
        for w in p.reasons.windows(2) {
            assert!(w[0].effect.abs() >= w[1].effect.abs(), "sorted by |effect|");
        }
        for r in &p.reasons {
            assert!(FEATURE_NAMES.contains(&r.feature.as_str()), "{}", r.feature);
            assert!(r.effect.is_finite() && r.seconds_effect.is_finite() && r.value.is_finite());
        }
    }
    // The bootstrap model's p depends on the topic rate; with a 50% learner
    // in algebra against a 0.6 prior, that feature must matter.
    let top = &resp.predictions[0].reasons[0];
    assert!(top.effect.abs() > 1e-4, "{top:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn recommend_respects_target_budget_and_limit() {
    let server = start(config()).await;
    let mut c = server.client().await;
    // Strong in "easy-topic", weak in "hard-topic", fresh in the rest.
    let mut history = Vec::new();
    for _ in 0..10 {
        history.push(attempt("easy-topic", true, 10.0));
        history.push(attempt("hard-topic", false, 100.0));
    }
    let cands = vec![
        candidate("easy", "easy-topic"),
        candidate("hard", "hard-topic"),
        candidate("new", "new-topic"),
    ];
    let base = RecommendRequest {
        user_id: "u".into(),
        history,
        candidates: cands,
        explain: false,
        target_p_correct: 0.0,
        time_budget_seconds: 0.0,
        limit: 0,
        as_of: None,
    };
    let all = c.recommend(base.clone()).await.unwrap().into_inner();
    assert_eq!(all.target_p_correct, 0.7);
    assert_eq!(all.predictions.len(), 3);
    let d: Vec<f64> = all
        .predictions
        .iter()
        .map(|p| (p.p_correct - 0.7).abs())
        .collect();
    assert!(
        d.windows(2).all(|w| w[0] <= w[1]),
        "ranked by distance to target"
    );
    let sum: f64 = all.predictions.iter().map(|p| p.seconds).sum();
    assert!((all.total_seconds - sum).abs() < 1e-9);

    let high = c
        .recommend(RecommendRequest {
            target_p_correct: 0.95,
            ..base.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(high.predictions[0].task_id, "easy");
    let low = c
        .recommend(RecommendRequest {
            target_p_correct: 0.05,
            ..base.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(low.predictions[0].task_id, "hard");

    let one = c
        .recommend(RecommendRequest {
            limit: 1,
            ..base.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.predictions.len(), 1);
    assert_eq!(one.predictions[0].task_id, all.predictions[0].task_id);

    // A budget that fits only the shortest candidate.
    let shortest = all
        .predictions
        .iter()
        .map(|p| p.seconds)
        .fold(f64::INFINITY, f64::min);
    let tight = c
        .recommend(RecommendRequest {
            time_budget_seconds: shortest * 1.01,
            ..base.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tight.predictions.len(), 1);
    assert!(tight.total_seconds <= shortest * 1.01);
    let none = c
        .recommend(RecommendRequest {
            time_budget_seconds: 0.001,
            ..base
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.predictions.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn get_model_describes_the_serving_model() {
    let server = start(config()).await;
    let mut c = server.client().await;
    let info = c.get_model(GetModelRequest {}).await.unwrap().into_inner();
    assert_eq!(info.version, "bootstrap-3");
    assert_eq!(info.family, "bootstrap");
    assert_eq!(info.feature_schema, "taskcast.features/v2");
    assert_eq!(info.history_window, 256);
    assert_eq!(info.features.len(), FEATURE_NAMES.len());
    assert_eq!(
        info.sha256,
        taskcast_contract::artifact::sha256_hex(&bootstrap_bytes())
    );
    assert!(info.trained_at.is_some() && info.loaded_at.is_some());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn health_serving_and_reflection_v1_and_v1alpha() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let server = start(config()).await;
    let ch = server.channel().await;
    let mut h = HealthClient::new(ch.clone());
    for service in ["", "taskcast.v1.Inference"] {
        let s = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.status, ServingStatus::Serving as i32, "{service:?}");
    }

    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut r = ServerReflectionClient::new(ch.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = r
            .server_reflection_info(futures::stream::iter([req]))
            .await
            .unwrap()
            .into_inner();
        let msg = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
            panic!("{msg:?}")
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"taskcast.v1.Inference"), "{names:?}");
        assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut r = ServerReflectionClient::new(ch.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = r
            .server_reflection_info(futures::stream::iter([req]))
            .await
            .unwrap()
            .into_inner();
        let msg = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
            panic!("{msg:?}")
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "taskcast.v1.Inference")
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_per_rpc() {
    let server = start(config()).await;
    let mut c = server.client().await;
    c.predict(request(
        vec![],
        vec![candidate("a", "t"), candidate("b", "t")],
    ))
    .await
    .unwrap();
    let _ = c.predict(request(vec![], vec![])).await.unwrap_err();
    let text = server.scrape().await;
    assert!(text.starts_with("HTTP/1.1 200"));
    let ok = r#"taskcast_inference_grpc_server_requests_total{code="OK",method="Predict",service="taskcast.v1.Inference"}"#;
    assert_eq!(metric(&text, ok), 1.0, "{text}");
    let bad = r#"taskcast_inference_grpc_server_requests_total{code="INVALID_ARGUMENT",method="Predict",service="taskcast.v1.Inference"}"#;
    assert_eq!(metric(&text, bad), 1.0);
    assert_eq!(
        metric(
            &text,
            r#"taskcast_inference_predictions_total{model_version="bootstrap-3"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(&text, r#"taskcast_inference_model_info{family="bootstrap""#),
        1.0
    );
    assert!(text.contains("taskcast_inference_grpc_server_request_duration_seconds_bucket"));
    assert!(text.contains("taskcast_inference_history_length_count"));
    assert!(text.contains("taskcast_inference_candidates_count"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_is_prompt_and_stops_accepting() {
    let server = start(config()).await;
    let mut c = server.client().await;
    c.predict(request(vec![], vec![candidate("a", "t")]))
        .await
        .unwrap();
    let addr = server.addr;
    let t = std::time::Instant::now();
    server.stop().await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

/// The public entry point the binary uses: loads the startup model, serves, stops.
#[tokio::test]
async fn run_serves_the_startup_model_and_returns_on_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(inference_svc::run(listener, None, config(), async {
        let _ = rx.await;
    }));
    let mut c = loop {
        if let Ok(c) =
            taskcast_proto::inference_client::InferenceClient::connect(format!("http://{addr}"))
                .await
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let resp = c
        .predict(request(vec![], vec![candidate("a", "t")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.model_version, "bootstrap-3");
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // And a bad startup model without a trainer is an error from `run` itself.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = inference_svc::run(
        listener,
        None,
        Config::default_for_tests("/nonexistent/m.onnx"),
        async {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/m.onnx"), "{err}");
}

#[tokio::test]
async fn corrupt_startup_model_without_trainer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.onnx");
    std::fs::write(&p, b"definitely not onnx").unwrap();
    let err = try_start(Config::default_for_tests(&p))
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("cannot serve the startup model") && msg.contains("bad.onnx"),
        "{msg}"
    );
    let missing = try_start(Config::default_for_tests(dir.path().join("nope.onnx")))
        .await
        .err()
        .expect("refused");
    assert!(missing.to_string().contains("nope.onnx"), "{missing}");
    // A directory serves its newest .onnx.
    std::fs::write(dir.path().join("z-good.onnx"), bootstrap_bytes()).unwrap();
    let server = start(Config::default_for_tests(dir.path())).await;
    assert_eq!(server.slot.current().unwrap().version(), "bootstrap-3");
    server.stop().await.unwrap();
}

/// A model trained with a clock is served "now" from the request's `as_of`,
/// measured from the last attempt's `completed_at`; a model trained without
/// one gets "now unknown" whatever the request says, as its training rows had.
#[tokio::test]
async fn as_of_reaches_only_a_model_that_reads_the_clock() {
    let server = start(config()).await;
    let mut c = server.client().await;
    let last = 1_700_000_000;
    let mut req = request(
        (0..3)
            .map(|k| Attempt {
                completed_at: Some(prost_types::Timestamp {
                    seconds: last - 60 * (2 - k),
                    nanos: 0,
                }),
                ..attempt("a", true, 10.0)
            })
            .collect(),
        vec![candidate("x", "a")],
    );
    req.explain = true;
    req.as_of = Some(prost_types::Timestamp {
        seconds: last + 600,
        nanos: 0,
    });
    let value = |resp: &PredictResponse, name: &str| {
        resp.predictions[0]
            .reasons
            .iter()
            .find(|r| r.feature == name)
            .map(|r| r.value)
            .unwrap_or_else(|| panic!("no reason {name}"))
    };
    // The bootstrap model reads no clock.
    let resp = c.predict(req.clone()).await.unwrap().into_inner();
    assert_eq!(value(&resp, "clock_known"), 0.0);
    assert_eq!(value(&resp, "idle_log"), 0.0);
    assert_eq!(value(&resp, "times_known"), 1.0);

    let mut meta = metadata("clocked", Default::default());
    meta.clock = true;
    server
        .slot
        .try_swap(linear_bytes(&random_linear(3), &meta), None)
        .await
        .unwrap();
    let resp = c.predict(req.clone()).await.unwrap().into_inner();
    assert_eq!(resp.model_version, "clocked");
    assert_eq!(value(&resp, "clock_known"), 1.0);
    // g(600 s) = ln(1 + 10 minutes)
    assert!((value(&resp, "idle_log") - 11f64.ln()).abs() < 1e-5);
    // Without `as_of`, the server's clock: years after `last`.
    req.as_of = None;
    let resp = c.predict(req).await.unwrap().into_inner();
    assert!(value(&resp, "idle_log") > 11f64.ln() + 5.0);
    server.stop().await.unwrap();
}

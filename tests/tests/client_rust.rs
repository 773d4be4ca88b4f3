//! The Rust example client (`taskcast-client`, examples/rust) as a user runs
//! it: the built binary against real trainer-svc / inference-svc processes,
//! an https:// replica, an in-process mutual-TLS server, a recorder of the
//! `authorization` header each call carries, and a port that accepts
//! connections but never answers.
//!
//! The binaries come from the same target directory as this test
//! (`cargo build --workspace --bins` first; `scripts/test.sh` does).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use taskcast_sim::{SimConfig, Simulator};
use taskcast_testdb::TestDb;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use trainer_svc::db::Db;

mod support;
use support::{
    InferenceProc, READER_TOKEN, REPLICA_TOKEN, TOKEN, TrainerProc, binary, connect, free_port,
    register_active, scenario,
};

/// What one run of the client did.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok {} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.ok, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs `taskcast-client args` to its end (killed after 60 s), without any
/// `TASKCAST_*` variable of the test's own environment, so only the flags
/// given here count.
async fn client(args: &[&str]) -> Result<Out> {
    let mut cmd = tokio::process::Command::new(binary("taskcast-client")?);
    cmd.args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .env("RUST_BACKTRACE", "0");
    for (key, _) in std::env::vars() {
        if key.starts_with("TASKCAST_") {
            cmd.env_remove(key);
        }
    }
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .map_err(|_| anyhow!("taskcast-client {args:?} did not finish within 60 s"))??;
    Ok(Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    })
}

/// Runs `taskcast-client args` and fails unless it succeeded.
async fn client_ok(args: &[&str]) -> Result<Out> {
    let out = client(args).await?;
    ensure!(out.ok, "taskcast-client {args:?} failed:\n{out}");
    Ok(out)
}

/// Runs `taskcast-client args` and fails unless it failed.
async fn client_err(args: &[&str]) -> Result<Out> {
    let out = client(args).await?;
    ensure!(!out.ok, "taskcast-client {args:?} succeeded:\n{out}");
    Ok(out)
}

/// Writes `text` to `dir/name`; the path as an argument.
fn file(dir: &Path, name: &str, text: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

/// Fails when a token value shows up in anything the client printed.
fn no_token_in(out: &Out, tokens: &[&str]) -> Result<()> {
    for t in tokens {
        ensure!(
            !out.stdout.contains(t) && !out.stderr.contains(t),
            "a token was printed:\n{out}"
        );
    }
    Ok(())
}

/// The real loop: a trainer with admin, reader and replica tokens and a
/// replica. Inference calls need no token; reads go with the reader token,
/// or the admin token when only that is given; admin calls need the admin
/// token and never fall back to the reader's; no token is ever printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_carries_its_roles_token_against_the_real_services() -> Result<()> {
    scenario(
        "client-rust-roles",
        Duration::from_secs(240),
        |dir| async move {
            let tdb = TestDb::sqlite()?;
            let db = Db::connect(tdb.url()).await?;
            let rows = Simulator::new(SimConfig {
                seed: 7,
                learners: 30,
                attempts_per_learner: 30,
                ..Default::default()
            })?
            .generate();
            db.insert_tasks(&rows).await?;
            register_active(&db, "v1", 1).await?;
            let trainer = TrainerProc::start_registry_only(tdb.url(), &dir, "trainer")?;
            let replica = InferenceProc::start(&dir, "r1", None, &[])?;
            let (admin, reader, replica_token) = (
                file(&dir, "admin", TOKEN)?,
                file(&dir, "reader", READER_TOKEN)?,
                file(&dir, "replica", REPLICA_TOKEN)?,
            );
            let wrong = file(&dir, "wrong", "not-the-reader-token")?;
            let secrets = [TOKEN, READER_TOKEN, REPLICA_TOKEN, "not-the-reader-token"];
            let inference = format!("http://127.0.0.1:{}", replica.port);
            let trainer_url = trainer.url();
            let at = ["--inference", &inference, "--trainer", &trainer_url];
            let with = |extra: &[&str]| -> Vec<String> {
                at.iter().chain(extra).map(|s| s.to_string()).collect()
            };
            let run = |extra: &[&str]| {
                let a = with(extra);
                async move { client(&a.iter().map(String::as_str).collect::<Vec<_>>()).await }
            };
            drop(connect(trainer.port).await?);

            // Inference: no token needed, none sent (even with every token given).
            let ready = run(&["wait", "--wait-timeout", "60"]).await?;
            ensure!(
                ready.ok && ready.stdout.contains("ready: serving"),
                "{ready}"
            );
            let p = run(&["predict", "--candidate", "t1:fractions:easy"]).await?;
            ensure!(p.ok && p.stdout.contains("p_correct"), "{p}");
            // The balanced channel (dns:///), as clients in a cluster dial the replicas.
            let balanced = format!("dns:///127.0.0.1:{}", replica.port);
            let p = client(&[
                "--inference",
                &balanced,
                "predict",
                "--candidate",
                "t1:fractions",
            ])
            .await?;
            ensure!(p.ok && p.stdout.contains("p_correct"), "{p}");
            let p = run(&[
                "--admin-token-file",
                &admin,
                "--reader-token-file",
                &reader,
                "recommend",
                "--candidate",
                "a:fractions:easy",
                "--candidate",
                "b:algebra:hard",
            ])
            .await?;
            ensure!(p.ok && p.stdout.contains("p_correct"), "{p}");
            no_token_in(&p, &secrets)?;

            // Reads: the reader token, or the admin token alone.
            let m = run(&["--reader-token-file", &reader, "models"]).await?;
            ensure!(m.ok && m.stdout.contains(r#""version":"v1""#), "{m}");
            let m = run(&["--admin-token-file", &admin, "models", "--limit", "1"]).await?;
            ensure!(m.ok && m.stdout.contains(r#""state":"active""#), "{m}");
            let r = run(&["--reader-token", READER_TOKEN, "report"]).await?;
            ensure!(r.ok && r.stdout.contains(r#""versions":"#), "{r}");
            no_token_in(&r, &secrets)?;

            // Without a token a read is refused, and the message says what to give.
            let m = run(&["models"]).await?;
            ensure!(
                !m.ok
                    && m.stderr.contains("Unauthenticated")
                    && m.stderr.contains("--reader-token-file"),
                "{m}"
            );
            // Given both, the reader token goes, not the admin one: a wrong
            // reader token is refused although the admin token is right.
            let m = run(&[
                "--admin-token-file",
                &admin,
                "--reader-token-file",
                &wrong,
                "models",
            ])
            .await?;
            ensure!(
                !m.ok
                    && m.stderr.contains("Unauthenticated")
                    && m.stderr.contains("sent the reader token"),
                "{m}"
            );
            no_token_in(&m, &secrets)?;

            // Admin calls: the reader token never stands in for admin.
            let t = run(&["--reader-token-file", &reader, "train"]).await?;
            ensure!(!t.ok && t.stderr.contains("needs the admin token"), "{t}");
            let promoted = run(&["--token-file", &admin, "promote", "v1"]).await?;
            ensure!(
                promoted.ok && promoted.stdout.contains(r#""version":"v1""#),
                "{promoted}"
            );

            // Train and follow the run: Train with the admin token, the stream
            // with the reader token, every state a JSON line, within --wait-timeout.
            let t = run(&[
                "--admin-token-file",
                &admin,
                "--reader-token-file",
                &reader,
                "train",
                "--wait",
                "--wait-timeout",
                "120",
            ])
            .await?;
            ensure!(t.ok, "{t}");
            let states: Vec<serde_json::Value> = t
                .stdout
                .lines()
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()
                .with_context(|| {
                    format!("train --wait printed something else than JSON lines:\n{t}")
                })?;
            let last = states.last().context("no state printed")?;
            ensure!(last["state"] != "RUNNING", "the run had not ended:\n{t}");
            let id = last["id"].as_str().context("a run id")?;
            let got = run(&["--reader-token-file", &reader, "run", id]).await?;
            ensure!(got.ok && got.stdout.contains(id), "{got}");

            // WatchModels: the replica token, or the admin token alone; the
            // artifact arrives within --first-timeout, its bytes counted.
            for token in [&replica_token, &admin] {
                let flag = if token == &admin {
                    "--admin-token-file"
                } else {
                    "--replica-token-file"
                };
                let w = run(&[flag, token, "watch-models", "--first-timeout", "30"]).await?;
                ensure!(w.ok && w.stdout.contains(r#""onnx_bytes":"#), "{w}");
            }
            let h = run(&["health", "trainer"]).await?;
            ensure!(h.ok && h.stdout.trim() == "SERVING", "{h}");
            db.close().await?;
            Ok(())
        },
    )
    .await
}

/// An https:// replica: the right CA works; a wrong CA, or the system roots
/// for a self-signed certificate, fail at once with a message that says
/// the certificate is not trusted and what it was checked against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fails_with_a_clear_message() -> Result<()> {
    scenario(
        "client-rust-tls",
        Duration::from_secs(120),
        |dir| async move {
            let server =
                rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
            let other =
                rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
            let cert = file(&dir, "cert.pem", &server.cert.pem())?;
            let key = file(&dir, "key.pem", &server.signing_key.serialize_pem())?;
            let wrong_ca = file(&dir, "other-ca.pem", &other.cert.pem())?;
            let replica =
                InferenceProc::start(&dir, "r1", None, &["--tls-cert", &cert, "--tls-key", &key])?;
            let url = format!("https://127.0.0.1:{}", replica.port);

            // `wait` retries while the replica starts, over TLS.
            client_ok(&[
                "--inference",
                &url,
                "--ca-file",
                &cert,
                "wait",
                "--wait-timeout",
                "60",
            ])
            .await?;
            let m = client_ok(&["--inference", &url, "--ca-file", &cert, "model"]).await?;
            ensure!(m.stdout.contains(r#""version":"#), "{m}");

            let bad = client_err(&["--inference", &url, "--ca-file", &wrong_ca, "model"]).await?;
            ensure!(
                bad.stderr.contains("certificate is not trusted")
                    && bad.stderr.contains(&format!("--ca-file {wrong_ca}")),
                "unclear error for a wrong CA:\n{bad}"
            );
            ensure!(
                bad.took < Duration::from_secs(5),
                "a wrong CA took {:?}",
                bad.took
            );

            // No --ca-file: the system roots, which do not know a self-signed certificate.
            let bad = client_err(&["--inference", &url, "model"]).await?;
            ensure!(
                bad.stderr.contains("system root"),
                "unclear error without a CA:\n{bad}"
            );

            // A plaintext client gets no answer from the TLS port, does not
            // hang, and is told why.
            let plain = format!("http://127.0.0.1:{}", replica.port);
            let bad = client_err(&["--inference", &plain, "--timeout", "3", "model"]).await?;
            ensure!(
                bad.took < Duration::from_secs(8),
                "plaintext to TLS took {:?}",
                bad.took
            );
            ensure!(
                bad.stderr.contains("https://"),
                "no hint to use https://:\n{bad}"
            );
            Ok(())
        },
    )
    .await
}

/// Mutual TLS: a server that asks for a client certificate gets the one in
/// --cert-file / --key-file, and refuses the client without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_for_mutual_tls() -> Result<()> {
    scenario(
        "client-rust-mtls",
        Duration::from_secs(60),
        |dir| async move {
            let server = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()])?;
            let me = rcgen::generate_simple_self_signed(vec!["taskcast-client".into()])?;
            let server_cert = file(&dir, "server.pem", &server.cert.pem())?;
            let my_cert = file(&dir, "client.pem", &me.cert.pem())?;
            let my_key = file(&dir, "client-key.pem", &me.signing_key.serialize_pem())?;

            let port = free_port()?;
            let tls = ServerTlsConfig::new()
                .identity(Identity::from_pem(
                    server.cert.pem(),
                    server.signing_key.serialize_pem(),
                ))
                .client_ca_root(Certificate::from_pem(me.cert.pem()));
            let (_reporter, health) = tonic_health::server::health_reporter();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let serving = tokio::spawn(
                Server::builder()
                    .tls_config(tls)?
                    .add_service(health)
                    .serve(addr),
            );

            let url = format!("https://127.0.0.1:{port}");
            let mut with_cert = None;
            for _ in 0..50 {
                let out = client(&[
                    "--inference",
                    &url,
                    "--ca-file",
                    &server_cert,
                    "--cert-file",
                    &my_cert,
                    "--key-file",
                    &my_key,
                    "health",
                    "inference",
                ])
                .await?;
                if out.ok {
                    with_cert = Some(out);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let out = with_cert
                .context("the mutual-TLS server never answered the client with its certificate")?;
            ensure!(out.stdout.trim() == "SERVING", "{out}");
            let without = client_err(&[
                "--inference",
                &url,
                "--ca-file",
                &server_cert,
                "health",
                "inference",
            ])
            .await?;
            ensure!(without.stderr.contains("client certificate"), "{without}");
            serving.abort();
            Ok(())
        },
    )
    .await
}

/// --timeout bounds a call to a port that accepts connections and never
/// answers; --wait-timeout and --first-timeout bound the streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_bound_calls_to_a_port_that_never_answers() -> Result<()> {
    scenario(
        "client-rust-deadlines",
        Duration::from_secs(60),
        |_dir| async move {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let port = listener.local_addr()?.port();
            // Accepts and holds every connection, reading nothing, answering nothing.
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for conn in listener.incoming().flatten() {
                    held.push(conn);
                }
            });
            let url = format!("http://127.0.0.1:{port}");
            let cases: [(&[&str], &str, Duration); 4] = [
                (
                    &[
                        "--inference",
                        &url,
                        "--timeout",
                        "2",
                        "predict",
                        "--candidate",
                        "t1:fractions",
                    ],
                    "no answer within 2 s (--timeout 2)",
                    Duration::from_secs(2),
                ),
                (
                    &[
                        "--trainer",
                        &url,
                        "--timeout",
                        "1.5",
                        "--reader-token",
                        "r",
                        "models",
                    ],
                    "no answer within 1.5 s (--timeout 1.5)",
                    Duration::from_millis(1500),
                ),
                (
                    &[
                        "--trainer",
                        &url,
                        "--reader-token",
                        "r",
                        "run",
                        "x",
                        "--wait",
                        "--wait-timeout",
                        "2",
                    ],
                    "did not end within --wait-timeout 2 s",
                    Duration::from_secs(2),
                ),
                (
                    &[
                        "--trainer",
                        &url,
                        "--replica-token",
                        "p",
                        "watch-models",
                        "--first-timeout",
                        "2",
                    ],
                    "no answer within 2 s (--first-timeout 2)",
                    Duration::from_secs(2),
                ),
            ];
            for (args, says, limit) in cases {
                let out = client_err(args).await?;
                ensure!(
                    out.stderr.contains(says),
                    "{args:?}: expected `{says}`:\n{out}"
                );
                ensure!(
                    out.took >= limit && out.took < limit + Duration::from_secs(5),
                    "{args:?} gave up after {:?}, not about {limit:?}",
                    out.took
                );
            }
            Ok(())
        },
    )
    .await
}

/// Which `authorization` header each command sends, seen by a server that
/// records it and refuses every call: trainer calls carry their role's
/// token (reads and WatchModels the admin one when theirs is missing);
/// inference and health calls carry none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_go_only_to_the_calls_of_their_role() -> Result<()> {
    scenario(
        "client-rust-headers",
        Duration::from_secs(120),
        |_dir| async move {
            let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
            let record = {
                let seen = seen.clone();
                move |req: tonic::Request<()>| {
                    let auth = req
                        .metadata()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    seen.lock()
                        .map_err(|_| tonic::Status::internal("poisoned"))?
                        .push(auth);
                    Err(tonic::Status::unimplemented("a recorder"))
                }
            };
            let port = free_port()?;
            let (_reporter, health) = tonic_health::server::health_reporter();
            let serving = tokio::spawn(
                Server::builder()
                    .layer(tonic::service::InterceptorLayer::new(record))
                    .add_service(health)
                    .serve(SocketAddr::from(([127, 0, 0, 1], port))),
            );
            drop(connect(port).await?);
            let url = format!("http://127.0.0.1:{port}");
            let all = [
                "--admin-token",
                "A",
                "--reader-token",
                "R",
                "--replica-token",
                "P",
            ];
            let admin_only = ["--admin-token", "A"];
            let cases: Vec<(&[&str], &[&str], Option<&str>)> = vec![
                (&all, &["predict", "--candidate", "t1:fractions"], None),
                (&all, &["recommend", "--candidate", "t1:fractions"], None),
                (&all, &["model"], None),
                (&all, &["health", "inference"], None),
                (&all, &["health", "trainer"], None),
                (&all, &["train"], Some("Bearer A")),
                (&all, &["promote", "v1"], Some("Bearer A")),
                (&all, &["rollback"], Some("Bearer A")),
                (&all, &["models"], Some("Bearer R")),
                (&all, &["run", "x"], Some("Bearer R")),
                (&all, &["run", "x", "--wait"], Some("Bearer R")),
                (&all, &["report"], Some("Bearer R")),
                (&all, &["watch-models"], Some("Bearer P")),
                (&admin_only, &["models"], Some("Bearer A")),
                (&admin_only, &["report"], Some("Bearer A")),
                (&admin_only, &["watch-models"], Some("Bearer A")),
                (&[], &["models"], None),
            ];
            for (tokens, command, expected) in cases {
                seen.lock().map_err(|_| anyhow!("poisoned"))?.clear();
                let args: Vec<&str> = ["--inference", &url, "--trainer", &url]
                    .into_iter()
                    .chain(tokens.iter().copied())
                    .chain(command.iter().copied())
                    .collect();
                let out = client_err(&args).await?;
                ensure!(
                    out.stderr.contains("a recorder"),
                    "{command:?} did not reach the server:\n{out}"
                );
                let got = seen.lock().map_err(|_| anyhow!("poisoned"))?.clone();
                ensure!(
                    !got.is_empty() && got.iter().all(|g| g.as_deref() == expected),
                    "{tokens:?} {command:?}: expected {expected:?}, the server saw {got:?}"
                );
            }
            serving.abort();
            Ok(())
        },
    )
    .await
}

//! Mutual TLS between replicas and the trainer, and certificates rotated
//! under running processes: a CA, server and client certificates generated
//! here, laid out like a mounted Kubernetes Secret (files behind a `..data`
//! symlink that an update swaps), the real binaries with `--tls-client-ca`
//! and `--trainer-cert`/`--trainer-key`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use taskcast_contract::FEATURE_SCHEMA;
use taskcast_proto::PromoteRequest;
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_testdb::TestDb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use trainer_svc::db::Db;

use crate::support::proxy::{Mode, Proxy};
use crate::support::*;
use crate::{scenario, served_version, wait_serving};

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ok(Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses).
    fn issue(&self, names: &[&str]) -> Result<Leaf> {
        let key = KeyPair::generate()?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)?.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// A server certificate valid for how the processes and test clients
    /// reach the trainer.
    fn server(&self) -> Result<Leaf> {
        self.issue(&["localhost", "127.0.0.1"])
    }
}

/// Files as Kubernetes mounts a Secret: `name -> ..data/name`, `..data ->
/// ..vN`; an update writes `..vN+1` and swaps `..data` in one rename, so a
/// reader sees the old set or the new one, never a mix.
struct Secret {
    dir: PathBuf,
    version: u32,
}

impl Secret {
    fn new(dir: &Path, files: &[(&str, &str)]) -> Result<Secret> {
        std::fs::create_dir_all(dir)?;
        let mut secret = Secret {
            dir: dir.to_path_buf(),
            version: 0,
        };
        secret.update(files)?;
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name))?;
        }
        Ok(secret)
    }

    /// Replaces every file at once (the names stay those given to `new`).
    fn update(&mut self, files: &[(&str, &str)]) -> Result<()> {
        self.version += 1;
        let version = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.join(&version))?;
        for (name, contents) in files {
            std::fs::write(self.dir.join(&version).join(name), contents)?;
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp)?;
        std::fs::rename(&tmp, self.dir.join("..data"))?;
        Ok(())
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// One new connection to `https://127.0.0.1:{port}`, trusting `ca_pem`
/// only and presenting `identity` if given.
async fn channel(port: u16, ca_pem: &str, identity: Option<&Leaf>) -> Result<Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    let endpoint = Channel::from_shared(format!("https://127.0.0.1:{port}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5));
    Ok(endpoint.connect().await?)
}

/// A health check over a new connection: whether the trainer lets this
/// client in. With TLS 1.3 a refused client certificate may only show at
/// the first call, so this makes one.
async fn health(port: u16, ca_pem: &str, identity: Option<&Leaf>) -> Result<()> {
    let attempt = async {
        let ch = channel(port, ca_pem, identity).await?;
        HealthClient::new(ch)
            .check(HealthCheckRequest::default())
            .await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .map_err(|_| anyhow!("no answer within 5 s"))?
}

/// Fails when the client gets in; prints why it did not.
async fn ensure_refused(
    what: &str,
    port: u16,
    ca_pem: &str,
    identity: Option<&Leaf>,
) -> Result<()> {
    match health(port, ca_pem, identity).await {
        Ok(()) => Err(anyhow!("{what}: let in")),
        Err(e) => {
            eprintln!("{what}: refused ({e:#})");
            Ok(())
        }
    }
}

/// Waits until the client gets in (the trainer starting, or a rotation
/// reaching new connections).
async fn wait_admitted(what: &str, port: u16, ca_pem: &str, identity: &Leaf) -> Result<()> {
    wait_for(what, Duration::from_secs(30), || async move {
        health(port, ca_pem, Some(identity)).await.ok()
    })
    .await
}

fn trainer_tls_args(secret: &Secret) -> Vec<String> {
    args(&[
        "--retrain-every",
        "0",
        "--no-startup-training",
        "--tls-cert",
        &secret.path("tls.crt"),
        "--tls-key",
        &secret.path("tls.key"),
        "--tls-client-ca",
        &secret.path("ca.crt"),
    ])
}

fn replica_tls_args(secret: &Secret) -> Vec<String> {
    args(&[
        "--trainer-ca",
        &secret.path("ca.crt"),
        "--trainer-cert",
        &secret.path("tls.crt"),
        "--trainer-key",
        &secret.path("tls.key"),
    ])
}

fn strs(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

/// A registry with `v1` active and `v2` ready to promote.
async fn registry() -> Result<(TestDb, Db)> {
    let tdb = TestDb::sqlite()?;
    let db = Db::connect(tdb.url()).await?;
    register_active(&db, "v1", 1).await?;
    register(&db, "v2", FEATURE_SCHEMA, model_bytes("v2", 2)?).await?;
    Ok((tdb, db))
}

/// (a) a replica with a client certificate from the trainer's client CA
/// receives the active model; (b) replicas and clients without a
/// certificate, or with one from another CA, are refused (health checks
/// included) and keep serving what they had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_admits_replicas_with_a_client_certificate_and_refuses_the_rest() -> Result<()> {
    scenario("mtls", Duration::from_secs(120), |dir| async move {
        let (ca, stranger_ca) = (Ca::new("taskcast")?, Ca::new("stranger")?);
        let server = ca.server()?;
        let trainer_secret = Secret::new(
            &dir.join("trainer-tls"),
            &[
                ("tls.crt", &server.cert),
                ("tls.key", &server.key),
                ("ca.crt", &ca.pem()),
            ],
        )?;
        let (tdb, db) = registry().await?;
        let trainer = TrainerProc::start(
            tdb.url(),
            &dir,
            "trainer",
            &strs(&trainer_tls_args(&trainer_secret)),
        )?;
        let url = format!("https://localhost:{}", trainer.port);

        let client = ca.issue(&["r1.replicas"])?;
        let r1_secret = Secret::new(
            &dir.join("r1-tls"),
            &[
                ("tls.crt", &client.cert),
                ("tls.key", &client.key),
                ("ca.crt", &ca.pem()),
            ],
        )?;
        let r1 =
            InferenceProc::start(&dir, "r1", Some(&url), &strs(&replica_tls_args(&r1_secret)))?;
        // A replica without a certificate, and one whose certificate another CA signed.
        let anon = InferenceProc::start(
            &dir,
            "anon",
            Some(&url),
            &["--trainer-ca", &r1_secret.path("ca.crt")],
        )?;
        let stranger = stranger_ca.issue(&["r1.replicas"])?;
        let stranger_secret = Secret::new(
            &dir.join("stranger-tls"),
            &[
                ("tls.crt", &stranger.cert),
                ("tls.key", &stranger.key),
                ("ca.crt", &ca.pem()),
            ],
        )?;
        let intruder = InferenceProc::start(
            &dir,
            "intruder",
            Some(&url),
            &strs(&replica_tls_args(&stranger_secret)),
        )?;

        // (a) The admitted replica serves the trainer's active version.
        let mut ic = InferenceClient::new(connect(r1.port).await?);
        wait_serving(&mut ic, "v1", Duration::from_secs(30)).await?;
        let text = scrape(r1.metrics_port).await?;
        ensure!(
            metric(&text, "taskcast_inference_trainer_connected") == 1.0,
            "r1 not subscribed:\n{text}"
        );

        // (b) The other two tried more than once and serve nothing: a replica
        // that cannot reach its trainer never falls back to the bootstrap.
        for p in [&anon, &intruder] {
            let name = &p.proc.name;
            wait_for(
                &format!("{name} to retry its subscription"),
                Duration::from_secs(30),
                || async move {
                    let text = scrape(p.metrics_port).await.ok()?;
                    (metric(&text, "taskcast_inference_trainer_reconnects_total") >= 2.0)
                        .then_some(())
                },
            )
            .await?;
            let text = scrape(p.metrics_port).await?;
            ensure!(
                metric(&text, "taskcast_inference_trainer_connected") == 0.0,
                "{name} subscribed:\n{text}"
            );
            let served = served_version(&mut InferenceClient::new(connect(p.port).await?)).await;
            ensure!(served.is_err(), "{name} serves {served:?}");
            ensure!(
                p.proc.tail(20).contains("trainer subscription failed"),
                "{name} logged no failure:\n{}",
                p.proc.tail(20)
            );
            eprintln!("{name}: refused; serves nothing");
        }

        // Plain clients: the right certificate gets in, the rest do not.
        wait_admitted(
            "a client with a certificate",
            trainer.port,
            &ca.pem(),
            &client,
        )
        .await?;
        ensure_refused("no client certificate", trainer.port, &ca.pem(), None).await?;
        ensure_refused(
            "a certificate from another CA",
            trainer.port,
            &ca.pem(),
            Some(&stranger),
        )
        .await?;
        // A client trusting another CA rejects the trainer in turn.
        ensure_refused(
            "a client trusting another CA",
            trainer.port,
            &stranger_ca.pem(),
            Some(&client),
        )
        .await?;
        db.close().await?;
        Ok(())
    })
    .await
}

/// (c) Certificates rotated under a running trainer and replica, as a
/// Secret update does it: a new CA signs a new server certificate and is
/// added to the client CA; new connections see the new certificate while
/// the replica's open stream keeps delivering; then the replica's own
/// certificate moves to the new CA and the old CA is dropped, and the
/// replica's next reconnect (its connection cut by a proxy) reads the new
/// files. Neither process restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_certificates_rotate_without_a_restart() -> Result<()> {
    scenario("mtls-rotate", Duration::from_secs(150), |dir| async move {
        let old_ca = Ca::new("taskcast-2025")?;
        let (old_server, old_client) = (old_ca.server()?, old_ca.issue(&["r1.replicas"])?);
        let mut trainer_secret = Secret::new(
            &dir.join("trainer-tls"),
            &[
                ("tls.crt", &old_server.cert),
                ("tls.key", &old_server.key),
                ("ca.crt", &old_ca.pem()),
            ],
        )?;
        let mut replica_secret = Secret::new(
            &dir.join("r1-tls"),
            &[
                ("tls.crt", &old_client.cert),
                ("tls.key", &old_client.key),
                ("ca.crt", &old_ca.pem()),
            ],
        )?;
        let (tdb, db) = registry().await?;
        let mut trainer = TrainerProc::start(
            tdb.url(),
            &dir,
            "trainer",
            &strs(&trainer_tls_args(&trainer_secret)),
        )?;
        // Through a proxy, so the test can cut the replica's connection.
        let proxy = Proxy::start(&format!("127.0.0.1:{}", trainer.port)).await?;
        let url = format!("https://localhost:{}", proxy.port);
        let mut r1 = InferenceProc::start(
            &dir,
            "r1",
            Some(&url),
            &strs(&replica_tls_args(&replica_secret)),
        )?;
        let mut ic = InferenceClient::new(connect(r1.port).await?);
        wait_serving(&mut ic, "v1", Duration::from_secs(30)).await?;
        wait_admitted("the trainer", trainer.port, &old_ca.pem(), &old_client).await?;

        // 1. New CA, new server certificate; the client CA trusts both for the switch.
        let new_ca = Ca::new("taskcast-2026")?;
        let (new_server, new_client) = (new_ca.server()?, new_ca.issue(&["r1.replicas"])?);
        let both = format!("{}{}", old_ca.pem(), new_ca.pem());
        trainer_secret.update(&[
            ("tls.crt", &new_server.cert),
            ("tls.key", &new_server.key),
            ("ca.crt", &both),
        ])?;
        wait_admitted(
            "a new connection to present the new certificate",
            trainer.port,
            &new_ca.pem(),
            &new_client,
        )
        .await?;
        ensure_refused(
            "a client trusting only the old CA, after the rotation",
            trainer.port,
            &old_ca.pem(),
            Some(&old_client),
        )
        .await?;
        health(trainer.port, &new_ca.pem(), Some(&old_client))
            .await
            .map_err(|e| {
                anyhow!("the old client certificate was refused during the switch: {e:#}")
            })?;

        // The replica's stream, opened before the rotation, still delivers.
        let mut tc =
            TrainerClient::new(channel(trainer.port, &new_ca.pem(), Some(&new_client)).await?);
        tc.promote(admin(PromoteRequest {
            version: "v2".into(),
            canary_percent: 0,
        }))
        .await?;
        wait_serving(&mut ic, "v2", Duration::from_secs(15)).await?;
        let text = scrape(r1.metrics_port).await?;
        ensure!(
            metric(&text, "taskcast_inference_trainer_reconnects_total") == 0.0,
            "the replica reconnected during the server rotation:\n{text}"
        );

        // 2. The replica's files move to the new CA, then the trainer drops the old one.
        replica_secret.update(&[
            ("tls.crt", &new_client.cert),
            ("tls.key", &new_client.key),
            ("ca.crt", &new_ca.pem()),
        ])?;
        trainer_secret.update(&[
            ("tls.crt", &new_server.cert),
            ("tls.key", &new_server.key),
            ("ca.crt", &new_ca.pem()),
        ])?;
        let (port, new_pem, old) = (trainer.port, new_ca.pem(), &old_client);
        let new_pem = new_pem.as_str();
        wait_for(
            "the old client certificate to be refused",
            Duration::from_secs(30),
            || async move {
                health(port, new_pem, Some(old))
                    .await
                    .is_err()
                    .then_some(())
            },
        )
        .await?;

        // Cut the replica's connection: it reconnects with the files as they are now.
        proxy.cut(Mode::Open);
        let metrics_port = r1.metrics_port;
        wait_for(
            "the replica to resubscribe",
            Duration::from_secs(30),
            || async move {
                let text = scrape(metrics_port).await.ok()?;
                (metric(&text, "taskcast_inference_trainer_reconnects_total") >= 1.0
                    && metric(&text, "taskcast_inference_trainer_connected") == 1.0)
                    .then_some(())
            },
        )
        .await?;
        tc.promote(admin(PromoteRequest {
            version: "v1".into(),
            canary_percent: 0,
        }))
        .await?;
        wait_serving(&mut ic, "v1", Duration::from_secs(15)).await?;
        ensure!(
            trainer
                .proc
                .tail(200)
                .contains("TLS files changed: new connections use them"),
            "the trainer logged no reload:\n{}",
            trainer.proc.tail(40)
        );
        ensure!(trainer.proc.exited().is_none() && r1.proc.exited().is_none());
        drop(r1);
        db.close().await?;
        Ok(())
    })
    .await
}

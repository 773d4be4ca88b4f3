//! TLS for the whole loop: a self-signed certificate, the replica subscribing over https, plaintext refused.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use taskcast_proto::ListModelsRequest;
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_testdb::TestDb;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use trainer_svc::db::Db;

use crate::support::*;
use crate::{scenario, sim_rows, wait_serving};

/// 1. The whole loop over TLS: a trainer and a replica serving TLS with a
/// self-signed certificate, the replica subscribing over https; plaintext
/// clients are refused at both ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_loop_with_a_generated_certificate() -> Result<()> {
    scenario("tls", Duration::from_secs(120), |dir| async move {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
        let (cert_pem, key_pem) = (ck.cert.pem(), ck.signing_key.serialize_pem());
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &cert_pem)?;
        std::fs::write(&key, &key_pem)?;
        let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());

        let tdb = TestDb::sqlite()?;
        let db = Db::connect(tdb.url()).await?;
        db.insert_tasks(&sim_rows(3, 40, 40)?).await?;
        // Startup training (rows, no active model) produces the model.
        let trainer = TrainerProc::start(
            tdb.url(),
            &dir,
            "trainer",
            &[
                "--retrain-every",
                "0",
                "--tls-cert",
                &cert_s,
                "--tls-key",
                &key_s,
            ],
        )?;
        // The subscription uses the DNS name, the test clients the IP: both SANs work.
        let trainer_url = format!("https://localhost:{}", trainer.port);
        let replica = InferenceProc::start(
            &dir,
            "r1",
            Some(&trainer_url),
            &[
                "--trainer-ca",
                &cert_s,
                "--tls-cert",
                &cert_s,
                "--tls-key",
                &key_s,
            ],
        )?;

        let mut tc =
            TrainerClient::new(connect_tls("127.0.0.1", trainer.port, cert_pem.as_bytes()).await?);
        let trained = wait_for(
            "startup training to promote a model",
            Duration::from_secs(60),
            || {
                let mut tc = tc.clone();
                async move {
                    let models = tc
                        .list_models(reader(ListModelsRequest { limit: 10 }))
                        .await
                        .ok()?
                        .into_inner()
                        .models;
                    models
                        .into_iter()
                        .find(|m| m.state == "active")
                        .map(|m| m.version)
                }
            },
        )
        .await?;
        let mut ic = InferenceClient::new(
            connect_tls("127.0.0.1", replica.port, cert_pem.as_bytes()).await?,
        );
        wait_serving(&mut ic, &trained, Duration::from_secs(30)).await?;
        let r = ic.predict(simple_predict()).await?.into_inner();
        ensure!(
            r.model_version == trained && r.predictions.len() == 1,
            "{r:?}"
        );
        let text = scrape(replica.metrics_port).await?;
        ensure!(
            metric(&text, "taskcast_inference_trainer_connected") == 1.0,
            "not subscribed:\n{text}"
        );

        // Plaintext against the TLS ports: no answer.
        for (what, port) in [("inference", replica.port), ("trainer", trainer.port)] {
            let attempt = async {
                let ch = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
                    .connect()
                    .await?;
                let mut h = HealthClient::new(ch);
                h.check(HealthCheckRequest::default()).await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => bail!("a plaintext client got an answer from the TLS {what} port"),
                Ok(Err(e)) => eprintln!("plaintext to TLS {what}: refused ({e})"),
                Err(_) => eprintln!("plaintext to TLS {what}: no answer within 5 s"),
            }
        }
        drop(
            tc.list_models(reader(ListModelsRequest { limit: 1 }))
                .await?,
        );

        // An https:// trainer without a CA is a startup error, not a silent retry loop.
        let mut bad = InferenceProc::start(&dir, "no-ca", Some(&trainer_url), &[])?;
        let status = wait_for(
            "inference without --trainer-ca to exit",
            Duration::from_secs(20),
            || {
                let s = bad.proc.exited();
                async move { s }
            },
        )
        .await?;
        ensure!(
            !status.success(),
            "inference with an https trainer and no CA started"
        );
        ensure!(
            bad.proc.tail(3).contains("no --trainer-ca was given"),
            "unclear error: {}",
            bad.proc.tail(3)
        );
        db.close().await?;
        Ok(())
    })
    .await
}

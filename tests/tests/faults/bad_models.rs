//! Bad models announced to the replicas.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use taskcast_contract::FEATURE_SCHEMA;
use taskcast_contract::artifact::Artifact;
use taskcast_proto::PromoteRequest;
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_testdb::TestDb;
use tonic::Code;
use trainer_svc::db::{Db, PromotionKind};

use crate::support::*;
use crate::{active, scenario, served_version, wait_serving};

/// 5. Bad models announced to two replicas: NaN outputs with valid metadata,
/// another feature schema, bytes that are not ONNX. The trainer's Promote
/// refuses all three itself (it runs the replicas' own checks); put into
/// the registry past it, both replicas refuse each, keep serving the
/// previous version and count the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_models_are_refused_on_every_replica() -> Result<()> {
    scenario("badmodels", Duration::from_secs(120), |dir| async move {
        let tdb = TestDb::sqlite()?;
        let db = Db::connect(tdb.url()).await?;
        register_active(&db, "v1", 1).await?;
        let trainer = TrainerProc::start_registry_only(tdb.url(), &dir, "trainer")?;
        let url = trainer.url();
        let replicas = [
            InferenceProc::start(&dir, "r1", Some(&url), &[])?,
            InferenceProc::start(&dir, "r2", Some(&url), &[])?,
        ];
        let mut clients = Vec::new();
        for r in &replicas {
            let mut c = InferenceClient::new(connect(r.port).await?);
            wait_serving(&mut c, "v1", Duration::from_secs(30)).await?;
            clients.push(c);
        }
        let mut tc = TrainerClient::new(connect(trainer.port).await?);

        let mut nan = random_linear(3);
        nan.p_weights[0] = f32::NAN;
        nan.t_bias = f32::NAN;
        let nan_bytes = Artifact::write(nan.graph(), &metadata("nan-a"))?;
        let mut other = metadata("schema-b");
        other.feature_schema = "taskcast.features/v0".into();
        let other_bytes = Artifact::write(random_linear(4).graph(), &other)?;
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let cases = [
            ("nan-a", FEATURE_SCHEMA, nan_bytes, "warmup"),
            ("schema-b", "taskcast.features/v0", other_bytes, "schema"),
            ("junk-c", FEATURE_SCHEMA, junk, "corrupt"),
        ];
        for (version, schema, bytes, reason) in cases {
            register(&db, version, schema, bytes).await?;
            let sample = format!("taskcast_inference_model_refused_total{{reason=\"{reason}\"}}");
            let mut before = Vec::new();
            for r in &replicas {
                before.push(metric(&scrape(r.metrics_port).await?, &sample));
            }
            let e = tc
                .promote(admin(PromoteRequest {
                    version: version.into(),
                    canary_percent: 0,
                }))
                .await
                .err()
                .context("Promote accepted a bad model")?;
            ensure!(e.code() == Code::FailedPrecondition, "{version}: {e:?}");
            ensure!(active(&db).await?.as_deref() != Some(version));
            // Past the trainer's check, straight into the registry.
            db.set_active(version, PromotionKind::Promote).await?;
            for (i, r) in replicas.iter().enumerate() {
                let b = before[i];
                wait_for(
                    &format!("{} to refuse {version}", r.proc.name),
                    Duration::from_secs(20),
                    || async {
                        let t = scrape(r.metrics_port).await.ok()?;
                        (metric(&t, &sample) > b).then_some(())
                    },
                )
                .await?;
                let c = &mut clients[i];
                ensure!(
                    served_version(c).await? == "v1",
                    "{} swapped to {version}",
                    r.proc.name
                );
                let p = c.predict(simple_predict()).await?.into_inner();
                ensure!(p.model_version == "v1" && p.predictions[0].p_correct.is_finite());
            }
            eprintln!("{version}: refused ({reason}) on both replicas; v1 serving");
        }
        for r in &replicas {
            let t = scrape(r.metrics_port).await?;
            // v1 alone: no bad model ever went into service (and the
            // startup model waits for the trainer's word, which was v1).
            ensure!(
                metric(&t, "taskcast_inference_model_swaps_total") == 1.0,
                "{}:\n{t}",
                r.proc.name
            );
        }
        db.close().await?;
        Ok(())
    })
    .await
}

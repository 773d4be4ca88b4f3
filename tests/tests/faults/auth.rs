//! Admin RPCs without the right token.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use taskcast_contract::FEATURE_SCHEMA;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_proto::{
    GetTrainingRunRequest, ListModelsRequest, PromoteRequest, RollbackRequest, TrainRequest,
};
use tonic::Code;
use trainer_svc::db::test_support::TestDb;
use trainer_svc::db::{Db, PromotionKind};

use crate::support::*;
use crate::{active, runs, scenario, sim_rows};

/// 8. Admin RPCs on the real trainer: a missing or wrong token is
/// UNAUTHENTICATED and changes nothing; reads need no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rpcs_refuse_missing_or_wrong_tokens() -> Result<()> {
    scenario("auth", Duration::from_secs(60), |dir| async move {
        let tdb = TestDb::sqlite()?;
        let db = Db::connect(tdb.url()).await?;
        db.insert_tasks(&sim_rows(4, 20, 30)?).await?;
        register_active(&db, "v1", 1).await?;
        register(&db, "v2", FEATURE_SCHEMA, model_bytes("v2", 2)?).await?;
        db.set_active("v2", PromotionKind::Promote).await?;
        let history = db.promotion_history().await?.len();
        let trainer = TrainerProc::start_registry_only(tdb.url(), &dir, "trainer")?;
        let mut tc = TrainerClient::new(connect(trainer.port).await?);

        let wrong = [
            None,
            Some("Bearer wrong-token".to_string()),
            Some(TOKEN.to_string()),
            Some(format!("Basic {TOKEN}")),
            Some(format!("Bearer {TOKEN}x")),
            Some("Bearer ".to_string()),
        ];
        for auth in &wrong {
            let req = |m| match auth {
                None => tonic::Request::new(m),
                Some(a) => with_auth(m, a),
            };
            let e = tc
                .train(req(TrainRequest::default()))
                .await
                .err()
                .context("Train without the token")?;
            ensure!(e.code() == Code::Unauthenticated, "Train {auth:?}: {e:?}");
            let e = match auth {
                None => {
                    tc.promote(PromoteRequest {
                        version: "v1".into(),
                    })
                    .await
                }
                Some(a) => {
                    tc.promote(with_auth(
                        PromoteRequest {
                            version: "v1".into(),
                        },
                        a,
                    ))
                    .await
                }
            }
            .err()
            .context("Promote without the token")?;
            ensure!(e.code() == Code::Unauthenticated, "Promote {auth:?}: {e:?}");
            let e = match auth {
                None => tc.rollback(RollbackRequest {}).await,
                Some(a) => tc.rollback(with_auth(RollbackRequest {}, a)).await,
            }
            .err()
            .context("Rollback without the token")?;
            ensure!(
                e.code() == Code::Unauthenticated,
                "Rollback {auth:?}: {e:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        ensure!(runs(&db).await?.is_empty(), "a run started");
        ensure!(
            active(&db).await?.as_deref() == Some("v2"),
            "the active version changed"
        );
        ensure!(
            db.promotion_history().await?.len() == history,
            "the promotion history changed"
        );

        // Reads are open.
        let models = tc
            .list_models(ListModelsRequest { limit: 10 })
            .await?
            .into_inner()
            .models;
        ensure!(models.len() == 2, "{models:?}");
        let e = tc
            .get_training_run(GetTrainingRunRequest { id: "run-x".into() })
            .await
            .err()
            .context("no such run")?;
        ensure!(e.code() == Code::NotFound, "{e:?}");
        // And the right token gets through (the refusals were about the token).
        let back = tc.rollback(admin(RollbackRequest {})).await?.into_inner();
        ensure!(back.version == "v1", "{back:?}");
        db.close().await?;
        Ok(())
    })
    .await
}

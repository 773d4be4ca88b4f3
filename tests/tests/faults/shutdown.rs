//! SIGTERM in the middle of a run and of a fit.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use taskcast_testdb::TestDb;
use trainer_svc::db::{Db, RunState};

use crate::support::*;
use crate::{active, runs, scenario, sim_rows, version_count};

/// 4. SIGTERM during a run: a clean exit within the grace period, nothing
/// registered, the run FAILED, and after a restart the unmoved watermark
/// triggers the missed training with no new rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_publishes_nothing_and_the_watermark_retrains() -> Result<()> {
    scenario("sigterm", Duration::from_secs(150), |dir| async move {
        let tdb = TestDb::sqlite()?;
        let db = Db::connect(tdb.url()).await?;
        db.insert_tasks(&sim_rows(9, 250, 80)?).await?;
        register_active(&db, "seed-v1", 7).await?;
        // `linear`, not the default `auto`: what is tested is the watermark
        // and the shutdown, and `auto` fits `mlp` too, which in this debug
        // build took over the 90 s below once on a loaded CI machine.
        let mut trainer = TrainerProc::start(
            tdb.url(),
            &dir,
            "trainer",
            &["--retrain-every", "1000", "--family", "linear"],
        )?;
        // Mid-way: past the first pass, computing features.
        let run = wait_for(
            "an automatic run in the features phase",
            Duration::from_secs(60),
            || async {
                let rs = runs(&db).await.ok()?;
                rs.into_iter()
                    .find(|r| r.state == RunState::Running && r.phase == "features")
            },
        )
        .await?;
        let (status, took) = trainer.proc.stop(Duration::from_secs(8))?;
        eprintln!(
            "SIGTERM during {} ({} {:.0}%): exit {status} after {took:?}",
            run.id,
            run.phase,
            run.progress * 100.0
        );
        ensure!(status.success(), "unclean exit {status}");
        ensure!(
            took < Duration::from_secs(6),
            "exit took {took:?}, grace is 5 s"
        );
        ensure!(
            version_count(&db).await? == 1,
            "a version was written by the interrupted run"
        );
        ensure!(active(&db).await?.as_deref() == Some("seed-v1"));
        // The stopping process records the abandoned run itself.
        let after_stop = db.get_run(&run.id).await?.context("run row")?;
        eprintln!(
            "run after SIGTERM: {} {:?}",
            after_stop.state.as_str(),
            after_stop.error
        );
        ensure!(
            after_stop.state == RunState::Failed,
            "left {}",
            after_stop.state.as_str()
        );
        ensure!(
            after_stop.error.contains("interrupted"),
            "{}",
            after_stop.error
        );

        trainer.restart(&dir, "trainer2")?;
        let missed = wait_for(
            "the missed training to run",
            Duration::from_secs(90),
            || async {
                let rs = runs(&db).await.ok()?;
                rs.into_iter()
                    .find(|r| r.id != run.id && r.state.is_terminal())
            },
        )
        .await?;
        ensure!(missed.state == RunState::Succeeded, "{missed:?}");
        ensure!(
            missed.trigger.as_str() == "auto",
            "trigger {}",
            missed.trigger.as_str()
        );
        // Every version that names a run names a finished one.
        for m in db.list_model_versions(100).await? {
            if let Some(r) = &m.run_id {
                let r = db.get_run(r).await?.context("run of a version")?;
                ensure!(
                    r.state.is_terminal() && r.state != RunState::Failed,
                    "{} from {r:?}",
                    m.version
                );
            }
        }
        ensure!(version_count(&db).await? == 2);
        db.close().await?;
        Ok(())
    })
    .await
}

/// 4b. SIGTERM while the model is being fitted (a blocking thread that
/// cannot be interrupted): the process still exits within the grace period,
/// the run is FAILED and no version is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_fit_exits_within_the_grace_period() -> Result<()> {
    scenario("sigterm-fit", Duration::from_secs(150), |dir| async move {
        let tdb = TestDb::sqlite()?;
        let db = Db::connect(tdb.url()).await?;
        // Enough rows that the MLP fit lasts well past the grace period.
        db.insert_tasks(&sim_rows(11, 400, 100)?).await?;
        let mut trainer = TrainerProc::start(
            tdb.url(),
            &dir,
            "trainer",
            &["--retrain-every", "1000", "--family", "mlp"],
        )?;
        let run = wait_for(
            "the startup run to reach the fitting phase",
            Duration::from_secs(90),
            || async {
                let rs = runs(&db).await.ok()?;
                rs.into_iter()
                    .find(|r| r.state == RunState::Running && r.phase == "fitting")
            },
        )
        .await?;
        let (status, took) = trainer.proc.stop(Duration::from_secs(8))?;
        eprintln!(
            "SIGTERM while fitting {}: exit {status} after {took:?}",
            run.id
        );
        ensure!(status.success(), "unclean exit {status}");
        ensure!(
            took < Duration::from_secs(6),
            "exit took {took:?}, grace is 5 s"
        );
        ensure!(
            version_count(&db).await? == 0,
            "the interrupted fit registered a version"
        );
        let after = db.get_run(&run.id).await?.context("run row")?;
        ensure!(
            after.state == RunState::Failed,
            "left {}",
            after.state.as_str()
        );
        db.close().await?;
        Ok(())
    })
    .await
}

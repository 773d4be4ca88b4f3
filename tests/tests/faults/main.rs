//! Faults, bad input and access control against the real binaries: each test
//! starts trainer-svc / inference-svc processes on 127.0.0.1, breaks
//! something (a killed trainer, a cut database, SIGTERM mid-run, bad models,
//! a flood, a missing token) and checks that nothing is lost and no one gets
//! in. RELIABILITY.md lists what each one tried and what happened.
//!
//! One file per fault family: [`tls`], [`mtls`] (client certificates and
//! rotation), [`trainer_down`], [`database`],
//! [`shutdown`], [`bad_models`], [`swaps`] (promotions under load),
//! [`fleet`] (replicas across trainer outages), [`canary`] (canaries judged on live outcomes),
//! [`floods`], [`auth`]; here, what they share.
//!
//! Every test has its own ports, its own database and a time bound.
//! The binaries come from the same target directory as this test
//! (`cargo build --workspace --bins` first).

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod bad_models;
mod canary;
mod database;
mod fleet;
mod floods;
mod mtls;
mod shutdown;
mod swaps;
mod tls;
mod trainer_down;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use support::*;
use taskcast_proto::GetModelRequest;
use taskcast_proto::inference_client::InferenceClient;
use taskcast_sim::{SimConfig, Simulator};
use tonic::transport::Channel;
use trainer_svc::db::{Db, RunRecord};

/// Simulated completed tasks: about `learners * attempts` rows.
fn sim_rows(
    seed: u64,
    learners: usize,
    attempts: usize,
) -> Result<Vec<taskcast_contract::TaskRow>> {
    Ok(Simulator::new(SimConfig {
        seed,
        learners,
        attempts_per_learner: attempts,
        ..Default::default()
    })?
    .generate())
}

async fn runs(db: &Db) -> Result<Vec<RunRecord>> {
    Ok(db.list_runs(100).await?)
}

async fn active(db: &Db) -> Result<Option<String>> {
    Ok(db.active_model_version().await?.map(|m| m.version))
}

async fn version_count(db: &Db) -> Result<usize> {
    Ok(db.list_model_versions(1000).await?.len())
}

/// Waits until the replica serves `version`.
async fn wait_serving(
    c: &mut InferenceClient<Channel>,
    version: &str,
    limit: Duration,
) -> Result<()> {
    let what = format!("the replica to serve {version}");
    wait_for(&what, limit, || {
        let mut c = c.clone();
        async move {
            match c.get_model(GetModelRequest {}).await {
                Ok(m) if m.get_ref().version == version => Some(()),
                _ => None,
            }
        }
    })
    .await
}

async fn served_version(c: &mut InferenceClient<Channel>) -> Result<String> {
    Ok(c.get_model(GetModelRequest {}).await?.into_inner().version)
}

/// A load loop: `clients` tasks sending Predict until `stop`; counts
/// successes and failures (printing the first few failures).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(channels: Vec<Channel>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let tasks = channels
            .into_iter()
            .map(|ch| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut c = InferenceClient::new(ch);
                    while !stop.load(Ordering::Relaxed) {
                        match c.predict(simple_predict()).await {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                                    eprintln!("load: {e}");
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Stops the loop: (ok, failed).
    async fn finish(self) -> Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await?;
        }
        Ok((
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        ))
    }
}

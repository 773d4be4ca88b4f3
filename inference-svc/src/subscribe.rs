//! Following the trainer: subscribe to `Trainer.WatchModels` and hot-swap
//! every model it announces, forever, reconnecting with capped exponential
//! backoff and jitter so a fleet of replicas does not stampede a restarting
//! trainer.
//!
//! The trainer sends the active model first on every (re)connection; when it
//! is the model already serving (same version and sha256) it is not reloaded.
//! On a fresh install it says instead that no version is active yet, and only
//! then does the replica serve its startup model (the bootstrap). During a
//! canary the message also carries the candidate, served beside the active
//! model to the canary's share of learners.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use taskcast_proto::trainer_client::TrainerClient;
use taskcast_proto::{Canary, ModelArtifact, ReplicaReport, WatchModelsRequest};
use taskcast_serving::auth::{Role, Token, TokenError};
use taskcast_serving::backoff::Backoff;
use taskcast_serving::shutdown::Shutdown;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::swap::ModelSlot;
use crate::telemetry::Metrics;
use crate::trainer_tls::TrainerTls;

/// First reconnect delay.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// How often a replica tells the trainer what it serves when nothing
/// changes: the trainer calls a replica silent for several of these gone.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Which trainer to follow, and how.
pub struct Follow {
    /// The trainers' URLs: one is followed; losing it, the next (two
    /// trainer replicas, so the trainer is no single point of failure).
    pub urls: Vec<String>,
    /// For an https:// trainer ([`crate::Config::trainer_tls`]); read again
    /// on every connect.
    pub tls: Option<TrainerTls>,
    /// The replica token to present; read again on every connect.
    pub token_file: Option<PathBuf>,
    /// This replica's name.
    pub replica: String,
    /// The startup model's bytes, served only when the trainer says no
    /// version is active yet.
    pub standby: Option<Vec<u8>>,
}

/// What outlives one connection: the reconnect backoff and the last load
/// this replica refused (reported to every trainer it talks to).
struct FollowState {
    backoff: Backoff,
    refused: Option<(String, String)>,
}

/// Follows the trainer until `shutdown`.
pub async fn follow_trainer(
    follow: Follow,
    slot: Arc<ModelSlot>,
    metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
) {
    let mut state = FollowState {
        backoff: Backoff::new(BACKOFF_START, BACKOFF_CAP).with_jitter(),
        refused: None,
    };
    let mut attempts: u64 = 0;
    loop {
        if shutdown.is_shutdown() {
            break;
        }
        if attempts > 0 {
            metrics.trainer_reconnects.inc();
        }
        let n = follow.urls.len().max(1);
        let Some(url) = follow.urls.get((attempts as usize) % n).cloned() else {
            tracing::error!("no trainer URL to follow");
            break;
        };
        attempts += 1;
        let session = watch_once(&follow, &url, &slot, &metrics, &mut state);
        tokio::select! {
            result = session => {
                metrics.trainer_connected.set(0);
                match result {
                    Ok(()) => tracing::warn!(trainer = %url, "trainer closed the model stream; reconnecting"),
                    Err(e) => tracing::warn!(trainer = %url, error = %e, "trainer subscription failed; reconnecting"),
                }
            }
            () = shutdown.recv() => break,
        }
        let delay = state.backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.recv() => break,
        }
    }
    metrics.trainer_connected.set(0);
    tracing::debug!("trainer subscription stopped");
}

/// Errors ending one subscription.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error("bad trainer URL: {0}")]
    Url(String),
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream: {0}")]
    Stream(#[from] tonic::Status),
    #[error("TLS files: {0}")]
    Tls(#[from] taskcast_serving::tls::TlsFileError),
    #[error("replica token: {0}")]
    Token(#[from] TokenError),
    #[error("the replica token has characters a header cannot carry")]
    TokenNotAscii,
}

/// One connection's lifetime: connect, subscribe, swap each artifact, and
/// report to the trainer what this replica serves after every change and
/// every [`REPORT_EVERY`].
async fn watch_once(
    follow: &Follow,
    url: &str,
    slot: &ModelSlot,
    metrics: &Metrics,
    state: &mut FollowState,
) -> Result<(), WatchError> {
    let mut endpoint =
        Endpoint::from_shared(url.to_string()).map_err(|e| WatchError::Url(e.to_string()))?;
    let https = url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    if let Some(tls) = follow.tls.as_ref().filter(|_| https) {
        // Read now, not at start: rotated files apply from this connect on.
        endpoint = endpoint.tls_config(tls.load()?)?;
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let channel = endpoint.connect().await?;
    // Artifacts are whole ONNX files; allow far more than the 4 MiB default.
    let mut client = TrainerClient::new(channel).max_decoding_message_size(256 * 1024 * 1024);
    // Read on every connect: a rotated token applies from this connect on.
    let auth = match &follow.token_file {
        Some(path) => {
            let token = Token::from_file(Role::Replica, path)?;
            Some(token.bearer_metadata().ok_or(WatchError::TokenNotAscii)?)
        }
        None => None,
    };
    let mut request = tonic::Request::new(WatchModelsRequest {
        subscriber: follow.replica.clone(),
    });
    if let Some(h) = &auth {
        request.metadata_mut().insert("authorization", h.clone());
    }
    let mut stream = client.watch_models(request).await?.into_inner();
    metrics.trainer_connected.set(1);
    state.backoff.reset();
    tracing::info!(trainer = %url, "subscribed to trainer model stream");
    let mut reporter = Reporter {
        client: client.clone(),
        auth,
        replica: follow.replica.clone(),
    };
    let mut heartbeat = tokio::time::interval(REPORT_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let artifact = tokio::select! {
            m = stream.message() => match m? {
                Some(a) => a,
                None => return Ok(()),
            },
            _ = heartbeat.tick() => {
                reporter.send(slot, &state.refused).await;
                continue;
            }
        };
        take(artifact, follow.standby.as_deref(), slot, state).await;
        reporter.send(slot, &state.refused).await;
    }
}

/// Acts on one message of the model stream: the active model, then the
/// canary (started, kept, or ended).
async fn take(
    mut artifact: ModelArtifact,
    standby: Option<&[u8]>,
    slot: &ModelSlot,
    state: &mut FollowState,
) {
    if artifact.no_active_version {
        match (slot.current(), standby) {
            (Some(cur), _) => tracing::warn!(
                serving = cur.version(),
                "the trainer has no active version; keeping the model this replica serves"
            ),
            (None, Some(bytes)) => {
                tracing::info!("the trainer has no active version yet: serving the startup model");
                let _ = slot.try_swap(bytes.to_vec(), None).await;
            }
            (None, None) => tracing::warn!(
                "the trainer has no active version and this replica has no startup model: NOT_SERVING until one is promoted"
            ),
        }
        return;
    }
    let canary = artifact.canary.take().map(|c| *c);
    take_active(artifact, slot, state).await;
    take_canary(canary, slot, state).await;
}

/// Swaps in the active model unless it is the one serving.
async fn take_active(artifact: ModelArtifact, slot: &ModelSlot, state: &mut FollowState) {
    if let Some(cur) = slot.current()
        && cur.version() == artifact.version
        && cur.sha256.eq_ignore_ascii_case(&artifact.sha256)
    {
        tracing::debug!(version = %artifact.version, "already serving this model");
        return;
    }
    tracing::info!(version = %artifact.version, bytes = artifact.onnx.len(), "trainer announced a model");
    // A refusal is logged and counted by the slot, and reported to the
    // trainer; keep following.
    if let Err(e) = slot.try_swap(artifact.onnx, Some(artifact.sha256)).await {
        state.refused = Some((artifact.version, e.to_string()));
    }
}

/// Starts, keeps or ends the canary the trainer announced (`None`: none).
async fn take_canary(canary: Option<Canary>, slot: &ModelSlot, state: &mut FollowState) {
    let Some(Canary {
        rollout_id,
        percent,
        candidate: Some(candidate),
        ..
    }) = canary
    else {
        slot.clear_canary().await;
        return;
    };
    if let Some(arm) = slot.canary()
        && arm.rollout_id == rollout_id
        && arm.model.sha256.eq_ignore_ascii_case(&candidate.sha256)
    {
        return;
    }
    tracing::info!(rollout = %rollout_id, candidate = %candidate.version, percent, "trainer announced a canary");
    let version = candidate.version;
    if let Err(e) = slot
        .try_canary(&rollout_id, percent, candidate.onnx, candidate.sha256)
        .await
    {
        state.refused = Some((version, e.to_string()));
    }
}

/// Sends `ReportReplica`: what this replica serves and its last refusal.
struct Reporter {
    client: TrainerClient<Channel>,
    auth: Option<AsciiMetadataValue>,
    replica: String,
}

impl Reporter {
    /// One report; a failure is only logged (a trainer that predates the RPC
    /// answers UNIMPLEMENTED, and the stream itself says whether it is alive).
    async fn send(&mut self, slot: &ModelSlot, refused: &Option<(String, String)>) {
        let (version, sha256) = slot
            .current()
            .map(|m| (m.version().to_string(), m.sha256.clone()))
            .unwrap_or_default();
        let (refused_version, refused_reason) = refused.clone().unwrap_or_default();
        let canary_version = slot
            .canary()
            .map(|arm| arm.model.version().to_string())
            .unwrap_or_default();
        let mut request = tonic::Request::new(ReplicaReport {
            replica: self.replica.clone(),
            version,
            sha256,
            refused_version,
            refused_reason,
            canary_version,
        });
        request.set_timeout(Duration::from_secs(5));
        if let Some(h) = &self.auth {
            request.metadata_mut().insert("authorization", h.clone());
        }
        if let Err(status) = self.client.report_replica(request).await {
            tracing::debug!(code = ?status.code(), "reporting to the trainer failed");
        }
    }
}

//! Following the trainer: subscribe to `Trainer.WatchModels` and hot-swap
//! every model it announces, forever, reconnecting with capped exponential
//! backoff and jitter so a fleet of replicas does not stampede a restarting
//! trainer.
//!
//! The trainer sends the active model first on every (re)connection; when it
//! is the model already serving (same version and sha256) it is not reloaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use taskcast_proto::WatchModelsRequest;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_serving::auth::{Role, Token, TokenError};
use taskcast_serving::backoff::Backoff;
use taskcast_serving::shutdown::Shutdown;
use tonic::transport::Endpoint;

use crate::swap::ModelSlot;
use crate::telemetry::Metrics;
use crate::trainer_tls::TrainerTls;

/// First reconnect delay.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Follows the trainer at `url` until `shutdown`; `tls` (from
/// [`crate::Config::trainer_tls`]) for an https:// trainer and `token_file`
/// the replica token to present; both read again on every connect.
pub async fn follow_trainer(
    url: String,
    tls: Option<TrainerTls>,
    token_file: Option<PathBuf>,
    replica: String,
    slot: Arc<ModelSlot>,
    metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
) {
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_CAP).with_jitter();
    let mut attempts: u64 = 0;
    loop {
        if shutdown.is_shutdown() {
            break;
        }
        if attempts > 0 {
            metrics.trainer_reconnects.inc();
        }
        attempts += 1;
        let session = watch_once(
            &url,
            tls.as_ref(),
            token_file.as_deref(),
            &replica,
            &slot,
            &metrics,
            &mut backoff,
        );
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
        let delay = backoff.next_delay();
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

/// One connection's lifetime: connect, subscribe, swap each artifact.
async fn watch_once(
    url: &str,
    tls: Option<&TrainerTls>,
    token_file: Option<&Path>,
    replica: &str,
    slot: &ModelSlot,
    metrics: &Metrics,
    backoff: &mut Backoff,
) -> Result<(), WatchError> {
    let mut endpoint =
        Endpoint::from_shared(url.to_string()).map_err(|e| WatchError::Url(e.to_string()))?;
    if let Some(tls) = tls {
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
    let mut request = tonic::Request::new(WatchModelsRequest {
        subscriber: replica.to_string(),
    });
    if let Some(path) = token_file {
        let token = Token::from_file(Role::Replica, path)?;
        let header = token.bearer_metadata().ok_or(WatchError::TokenNotAscii)?;
        request.metadata_mut().insert("authorization", header);
    }
    let mut stream = client.watch_models(request).await?.into_inner();
    metrics.trainer_connected.set(1);
    backoff.reset();
    tracing::info!(trainer = %url, "subscribed to trainer model stream");
    while let Some(artifact) = stream.message().await? {
        if let Some(cur) = slot.current()
            && cur.version() == artifact.version
            && cur.sha256.eq_ignore_ascii_case(&artifact.sha256)
        {
            tracing::debug!(version = %artifact.version, "already serving this model");
            continue;
        }
        tracing::info!(version = %artifact.version, bytes = artifact.onnx.len(), "trainer announced a model");
        // A refusal is logged and counted by the slot; keep following.
        let _ = slot.try_swap(artifact.onnx, Some(artifact.sha256)).await;
    }
    Ok(())
}

//! Command-line and environment configuration. Every flag has a `TASKCAST_*`
//! environment fallback so the same binary runs from a shell or a pod spec.
//!
//! Tests build a [`Config`] directly ([`Config::default_for_tests`]) rather
//! than through the process environment, which is shared between test threads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use clap::Parser;
use taskcast_serving::grpc::ConnectionAgeArgs;
use taskcast_serving::logging::LogFormat;
use taskcast_serving::tls::{self, TlsFileError};
use taskcast_serving::tls_reload::{ReloadingServerTls, ServerTlsError};
use tonic::transport::Endpoint;

use crate::batch::BatchConfig;
use crate::trainer_tls::{ClientIdentity, TrainerTls};

/// `--batch-max-rows`' default: room for a few 100-candidate calls and many
/// one-candidate ones, while a run of it stays well under a millisecond.
pub const DEFAULT_BATCH_MAX_ROWS: usize = 1024;

/// `--batch-max-delay-us`' default.
pub const DEFAULT_BATCH_MAX_DELAY_US: u64 = 200;

/// Taskcast inference service: predicts, before a learner starts a task, how
/// likely they are to get it right and how long it will take.
#[derive(Parser, Clone, Debug)]
#[command(name = "inference-svc", version, about, long_about = None)]
pub struct Config {
    /// gRPC listen address (Inference, grpc.health.v1, server reflection).
    #[arg(
        long = "listen",
        env = "TASKCAST_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,

    /// Prometheus scrape address: GET /metrics and GET /healthz. Empty disables it.
    #[arg(
        long = "metrics-listen",
        env = "TASKCAST_METRICS_LISTEN",
        default_value = "127.0.0.1:9101"
    )]
    pub metrics_listen: Option<String>,

    /// Model to serve at startup: an .onnx file, or a directory whose newest
    /// .onnx file is taken. With --trainer, a model that fails to load is only
    /// a warning (the replica waits NOT_SERVING for the trainer's model).
    #[arg(
        long = "model",
        env = "TASKCAST_MODEL",
        default_value = "models/bootstrap.onnx"
    )]
    pub model: PathBuf,

    /// Trainer gRPC URL (e.g. http://trainer:50052), or several separated
    /// by commas (one per trainer replica): the replica follows one, and on
    /// losing it reconnects to the next. When set, the replica subscribes to
    /// Trainer.WatchModels, hot-swaps each promoted model, and is ready only
    /// once it holds the version the trainer says is active.
    #[arg(long = "trainer", env = "TASKCAST_TRAINER_URL")]
    pub trainer: Option<String>,

    /// ONNX Runtime shared library. Falls back to $ORT_DYLIB_PATH, then .ort/libonnxruntime.so.
    #[arg(long = "ort-lib", env = "TASKCAST_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,

    /// Most history attempts a request may carry; more is INVALID_ARGUMENT.
    /// (Only the model's history_window most recent ones are used.)
    #[arg(
        long = "max-history",
        env = "TASKCAST_MAX_HISTORY",
        default_value_t = 1000
    )]
    pub max_history: usize,

    /// Per-request deadline on the server side, in milliseconds.
    #[arg(
        long = "request-timeout-ms",
        env = "TASKCAST_REQUEST_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub request_timeout_ms: u64,

    /// Concurrent requests per HTTP/2 connection; excess requests are shed
    /// with RESOURCE_EXHAUSTED instead of queueing (clients retry on another replica).
    #[arg(
        long = "concurrency-limit-per-connection",
        env = "TASKCAST_CONCURRENCY_LIMIT_PER_CONNECTION",
        default_value_t = 256
    )]
    pub concurrency_limit_per_connection: usize,

    /// Largest request message accepted, in bytes.
    #[arg(long = "max-message-bytes", env = "TASKCAST_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Request bytes this replica holds at once, over all connections
    /// (Predict and Recommend messages, counted from their declared size
    /// before they are read). A quarter is kept for messages up to 64 KiB
    /// (an app's requests), which wait for room within their deadline;
    /// larger ones that do not fit are refused with RESOURCE_EXHAUSTED, so
    /// a flood of big requests neither exhausts the pod's memory nor delays
    /// the ordinary ones. The default (64 MiB: twelve 4 MiB messages beside
    /// 16 MiB of small ones) sits well inside the manifest's 512 MiB limit.
    #[arg(
        long = "max-inflight-request-bytes",
        env = "TASKCAST_MAX_INFLIGHT_REQUEST_BYTES",
        default_value_t = 64 * 1024 * 1024
    )]
    pub max_inflight_request_bytes: usize,

    /// Longest id or label a request may carry (user_id, topic, difficulty,
    /// item_id, task_id), in bytes; longer is INVALID_ARGUMENT naming the field.
    #[arg(
        long = "max-label-bytes",
        env = "TASKCAST_MAX_LABEL_BYTES",
        default_value_t = 4096
    )]
    pub max_label_bytes: usize,

    /// On SIGTERM, how long in-flight requests may take before the server exits anyway.
    #[arg(
        long = "shutdown-grace-seconds",
        env = "TASKCAST_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 20
    )]
    pub shutdown_grace_seconds: u64,

    /// Name of this replica, sent to the trainer and put in logs. Defaults to the hostname.
    #[arg(long = "replica-name", env = "TASKCAST_REPLICA_NAME")]
    pub replica_name: Option<String>,

    /// Log line format: text or json. The filter comes from TASKCAST_LOG or RUST_LOG (default info).
    #[arg(
        long = "log-format",
        env = "TASKCAST_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// ONNX Runtime sessions per loaded model (0 = one per CPU core). Each
    /// runs one request at a time with one thread.
    #[arg(long = "sessions", env = "TASKCAST_SESSIONS", default_value_t = 0)]
    pub sessions: usize,

    /// Most model rows one ONNX Runtime run takes (a row per candidate; 1 +
    /// the model's width per candidate when explaining). Predict calls that
    /// arrive together share one run, which pays the runtime's fixed cost
    /// per run once; a call larger than this runs alone. 0 or 1 runs every
    /// call alone.
    #[arg(
        long = "batch-max-rows",
        env = "TASKCAST_BATCH_MAX_ROWS",
        default_value_t = DEFAULT_BATCH_MAX_ROWS
    )]
    pub batch_max_rows: usize,

    /// Longest a batch keeps gathering while more calls keep arriving, in
    /// microseconds. It stops at the first turn of the scheduler in which
    /// none arrived, so a lone call never waits.
    #[arg(
        long = "batch-max-delay-us",
        env = "TASKCAST_BATCH_MAX_DELAY_US",
        default_value_t = DEFAULT_BATCH_MAX_DELAY_US
    )]
    pub batch_max_delay_us: u64,

    /// PEM certificate chain: serve gRPC over TLS (with --tls-key). Plaintext
    /// when unset; the metrics endpoint stays plaintext either way. Both
    /// files are re-read when they change on disk (a rotated Secret): new
    /// connections get the new certificate, open ones keep theirs.
    #[arg(long = "tls-cert", env = "TASKCAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long = "tls-key", env = "TASKCAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s) that sign the trainer's TLS certificate; needed
    /// when --trainer is an https:// URL (this build carries no system roots).
    #[arg(long = "trainer-ca", env = "TASKCAST_TRAINER_CA")]
    pub trainer_ca: Option<PathBuf>,

    /// PEM client certificate this replica presents to an https:// trainer
    /// that requires mutual TLS (the trainer's --tls-client-ca signs it);
    /// with --trainer-key. Read again on every reconnect, so a rotated
    /// Secret is used from the next reconnect on.
    #[arg(
        long = "trainer-cert",
        env = "TASKCAST_TRAINER_CERT",
        requires = "trainer_key"
    )]
    pub trainer_cert: Option<PathBuf>,

    /// PEM private key for --trainer-cert.
    #[arg(
        long = "trainer-key",
        env = "TASKCAST_TRAINER_KEY",
        requires = "trainer_cert"
    )]
    pub trainer_key: Option<PathBuf>,

    /// File holding the trainer's replica bearer token, sent on WatchModels
    /// (the trainer's --replica-token-file). Read again on every reconnect,
    /// so a rotated Secret is picked up without a restart.
    #[arg(long = "trainer-token-file", env = "TASKCAST_TRAINER_TOKEN_FILE")]
    pub trainer_token_file: Option<PathBuf>,

    /// --max-connection-age-seconds / --max-connection-age-grace-seconds.
    #[command(flatten)]
    pub connection_age: ConnectionAgeArgs,
}

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error(transparent)]
    Read(#[from] TlsFileError),
    /// An https:// trainer without a CA to verify it against.
    #[error("--trainer {0} is https:// but no --trainer-ca was given")]
    MissingTrainerCa(String),
    /// The trainer CA, client certificate or key do not parse or do not
    /// belong together.
    #[error("--trainer-ca / --trainer-cert / --trainer-key: {0}")]
    Unusable(#[source] tonic::transport::Error),
}

impl Config {
    /// The trainer URLs of --trainer, in order (empty without one).
    pub fn trainer_urls(&self) -> Vec<String> {
        self.trainer
            .as_deref()
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Defaults as the binary would have them, but with `model` as given and
    /// without reading any `TASKCAST_*` variable; for tests.
    pub fn default_for_tests(model: impl Into<PathBuf>) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: None,
            model: model.into(),
            trainer: None,
            ort_lib: None,
            max_history: 1000,
            request_timeout_ms: 2000,
            concurrency_limit_per_connection: 256,
            max_message_bytes: 4 * 1024 * 1024,
            max_inflight_request_bytes: 64 * 1024 * 1024,
            max_label_bytes: 4096,
            shutdown_grace_seconds: 20,
            replica_name: Some("test".into()),
            log_format: LogFormat::Text,
            sessions: 0,
            batch_max_rows: DEFAULT_BATCH_MAX_ROWS,
            batch_max_delay_us: DEFAULT_BATCH_MAX_DELAY_US,
            tls_cert: None,
            tls_key: None,
            trainer_ca: None,
            trainer_cert: None,
            trainer_key: None,
            trainer_token_file: None,
            connection_age: ConnectionAgeArgs {
                max_connection_age_seconds: 300,
                max_connection_age_grace_seconds: 30,
            },
        }
    }

    /// The gRPC server's TLS settings, re-read when the files change; `None`
    /// serves plaintext. Clap makes --tls-cert and --tls-key require each
    /// other; a struct built in code with only one of them also serves
    /// plaintext.
    pub fn server_tls(&self) -> Result<Option<ReloadingServerTls>, ServerTlsError> {
        tls::server_tls(self.tls_cert.as_deref(), self.tls_key.as_deref(), None)
    }

    /// TLS for the trainer subscription: `Some` for an https:// --trainer
    /// (verified against --trainer-ca, presenting --trainer-cert when given),
    /// `None` for plaintext http://. The files are read and parsed here so a
    /// bad one stops the replica at start, and again on every reconnect.
    pub fn trainer_tls(&self) -> Result<Option<TrainerTls>, TlsError> {
        let urls = self.trainer_urls();
        let Some(first) = urls.first() else {
            return Ok(None);
        };
        // With several trainers, any https:// one needs the TLS files.
        let https_url = urls.iter().find(|u| {
            u.get(..8)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        });
        let https = https_url.is_some();
        let url = https_url.unwrap_or(first).as_str();
        if !https {
            if self.trainer_ca.is_some() || self.trainer_cert.is_some() {
                tracing::warn!(
                    trainer = url,
                    "--trainer-ca, --trainer-cert and --trainer-key are ignored for a plaintext http:// trainer"
                );
            }
            return Ok(None);
        }
        let ca = self
            .trainer_ca
            .clone()
            .ok_or_else(|| TlsError::MissingTrainerCa(url.to_string()))?;
        let identity = match (&self.trainer_cert, &self.trainer_key) {
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let tls = TrainerTls { ca, identity };
        // The same check a connect makes, minus the network.
        Endpoint::from_static("https://trainer.invalid")
            .tls_config(tls.load()?)
            .map_err(TlsError::Unusable)?;
        Ok(Some(tls))
    }

    /// The ONNX Runtime library: `--ort-lib`, else `$ORT_DYLIB_PATH`, else `.ort/libonnxruntime.so`.
    /// (The fallback rule is shared with the trainer in `taskcast_contract::runtime`.)
    pub fn ort_lib_path(&self) -> PathBuf {
        taskcast_contract::runtime::library_path(self.ort_lib.as_deref())
    }

    /// Server-side request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How long shutdown waits for in-flight requests.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    /// This replica's name: `--replica-name`, else `$HOSTNAME`, else "inference".
    pub fn replica(&self) -> String {
        self.replica_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "inference".into())
    }

    /// How Predict calls are batched, counting requests per run in
    /// `requests_per_run` and reading the calls in flight from `in_flight`.
    pub fn batching(
        &self,
        requests_per_run: Option<prometheus::Histogram>,
        in_flight: Option<Arc<AtomicUsize>>,
    ) -> BatchConfig {
        BatchConfig {
            max_rows: self.batch_max_rows,
            max_delay: Duration::from_micros(self.batch_max_delay_us),
            requests_per_run,
            in_flight,
        }
    }

    /// Session pool size: `--sessions`, or one per available core.
    pub fn session_pool(&self) -> usize {
        if self.sessions > 0 {
            self.sessions
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }
}

/// Resolves `--model`: a file is itself; a directory yields its newest `.onnx`
/// file (by modification time, then name, so the choice is deterministic).
pub fn resolve_model_path(path: &Path) -> std::io::Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "onnx") && p.is_file() {
            let modified = entry
                .metadata()?
                .modified()
                .unwrap_or(std::time::UNIX_EPOCH);
            let newer = match &best {
                None => true,
                Some((t, bp)) => (modified, &p) > (*t, bp),
            };
            if newer {
                best = Some((modified, p));
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no .onnx file in directory {}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let c = Config::try_parse_from([
            "inference-svc",
            "--listen",
            "0.0.0.0:1",
            "--max-history",
            "5",
            "--max-inflight-request-bytes",
            "1000000",
            "--log-format",
            "json",
            "--trainer",
            "http://t:1",
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 1);
        assert_eq!(c.max_history, 5);
        assert_eq!(c.max_inflight_request_bytes, 1_000_000);
        assert_eq!(c.max_label_bytes, 4096);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.trainer.as_deref(), Some("http://t:1"));
        assert!(Config::try_parse_from(["inference-svc", "--log-format", "yaml"]).is_err());
    }

    #[test]
    fn connection_age_defaults_to_five_minutes_and_zero_turns_it_off() {
        let c = Config::try_parse_from(["inference-svc"]).unwrap();
        let age = c.connection_age.connection_age().unwrap();
        assert_eq!(age.max, Duration::from_secs(300));
        assert_eq!(age.grace, Duration::from_secs(30));
        let c =
            Config::try_parse_from(["inference-svc", "--max-connection-age-seconds", "0"]).unwrap();
        assert_eq!(c.connection_age.connection_age(), None);
    }

    #[test]
    fn tls_flags_pair_up_and_https_needs_a_ca() {
        assert!(Config::try_parse_from(["inference-svc", "--tls-cert", "c.pem"]).is_err());
        assert!(Config::try_parse_from(["inference-svc", "--tls-key", "k.pem"]).is_err());
        let c = Config::try_parse_from(["inference-svc", "--trainer", "https://t:1"]).unwrap();
        assert!(matches!(
            c.trainer_tls(),
            Err(TlsError::MissingTrainerCa(_))
        ));
        let c = Config::try_parse_from(["inference-svc", "--trainer", "http://t:1"]).unwrap();
        assert!(c.trainer_tls().unwrap().is_none());
        assert!(
            c.server_tls().unwrap().is_none(),
            "plaintext is the default"
        );
        let c = Config::try_parse_from([
            "inference-svc",
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ])
        .unwrap();
        let e = c.server_tls().unwrap_err().to_string();
        assert!(
            e.contains("--tls-cert") && e.contains("/nonexistent/c.pem"),
            "{e}"
        );
    }

    #[test]
    fn trainer_client_identity_pairs_up_and_bad_files_stop_the_start() {
        let base = ["inference-svc", "--trainer", "https://t:1"];
        let with = |extra: &[&str]| Config::try_parse_from(base.iter().chain(extra).copied());
        assert!(with(&["--trainer-cert", "c.pem"]).is_err());
        assert!(with(&["--trainer-key", "k.pem"]).is_err());

        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk = junk.display().to_string();
        let c = with(&["--trainer-ca", &junk]).unwrap();
        let e = c.trainer_tls().unwrap_err().to_string();
        assert!(
            e.contains("--trainer-ca") && e.contains("no PEM certificate"),
            "{e}"
        );
        let c = with(&[
            "--trainer-ca",
            &junk,
            "--trainer-cert",
            "c.pem",
            "--trainer-key",
            "k.pem",
        ])
        .unwrap();
        assert!(c.trainer_cert.is_some() && c.trainer_key.is_some());
    }

    #[test]
    fn directory_model_is_newest_onnx() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.onnx"), b"a").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("b.onnx"), b"b").unwrap();
        std::fs::write(dir.path().join("c.txt"), b"c").unwrap();
        assert_eq!(
            resolve_model_path(dir.path()).unwrap(),
            dir.path().join("b.onnx")
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(resolve_model_path(empty.path()).is_err());
    }
}

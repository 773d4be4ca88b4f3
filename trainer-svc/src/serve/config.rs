//! `trainer-svc serve` configuration: flags with `TASKCAST_*` environment
//! fallbacks. Tests build a [`ServeConfig`] directly instead of touching the
//! process environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use taskcast_serving::auth::{AdminToken, AdminTokenError};
use taskcast_serving::logging::LogFormat;
use taskcast_serving::tls::TlsFileError;
use tonic::transport::ServerTlsConfig;

use crate::families::{Family, FitOptions};
use crate::judge::gate::GateConfig;
use crate::report::{DriftConfig, ReportRequest};
use crate::run::pipeline::TrainSpec;
use crate::run::runner::RunnerConfig;

/// Everything `serve` needs.
#[derive(Args, Clone, Debug)]
pub struct ServeConfig {
    /// gRPC listen address.
    #[arg(long, env = "TASKCAST_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// Prometheus /metrics listen address.
    #[arg(
        long,
        env = "TASKCAST_METRICS_LISTEN",
        default_value = "127.0.0.1:9102"
    )]
    pub metrics_listen: SocketAddr,
    /// Database URL: sqlite://FILE?mode=rwc (embedded default) or postgres://USER@HOST/DB.
    #[arg(
        long,
        env = "TASKCAST_DATABASE_URL",
        default_value = "sqlite://taskcast.db?mode=rwc"
    )]
    pub database_url: String,
    /// Retrain after this many newly completed tasks (0 disables automatic runs).
    #[arg(long, env = "TASKCAST_RETRAIN_EVERY", default_value_t = 5)]
    pub retrain_every: u64,
    /// How often to check for new tasks and registry changes, in milliseconds.
    #[arg(long, env = "TASKCAST_POLL_INTERVAL_MS", default_value_t = 500)]
    pub poll_interval_ms: u64,
    /// Model family trained by automatic runs and by Train without a family.
    #[arg(long, env = "TASKCAST_FAMILY", default_value = "linear")]
    pub family: Family,
    /// Attempts of history the features look back over.
    #[arg(long, env = "TASKCAST_HISTORY_WINDOW", default_value_t = taskcast_contract::features::DEFAULT_HISTORY_WINDOW)]
    pub history_window: u32,
    /// Do not train at startup when data exists but no model is active.
    #[arg(long, env = "TASKCAST_NO_STARTUP_TRAINING")]
    pub no_startup_training: bool,
    /// Gate: how much worse log loss may be than the active version's.
    #[arg(long, env = "TASKCAST_GATE_LOGLOSS_TOLERANCE", default_value_t = 0.002)]
    pub gate_logloss_tolerance: f64,
    /// Gate: how much lower AUC may be than the active version's.
    #[arg(long, env = "TASKCAST_GATE_AUC_TOLERANCE", default_value_t = 0.005)]
    pub gate_auc_tolerance: f64,
    /// Live report: how far live AUC may fall below the hold-out AUC a
    /// version was promoted on before it is flagged as drifting.
    #[arg(long, env = "TASKCAST_DRIFT_AUC_MARGIN", default_value_t = crate::report::drift::DEFAULT_AUC_MARGIN)]
    pub drift_auc_margin: f64,
    /// Live report: how far live expected calibration error may rise above
    /// the hold-out ECE before the version is flagged as drifting.
    #[arg(long, env = "TASKCAST_DRIFT_ECE_MARGIN", default_value_t = crate::report::drift::DEFAULT_ECE_MARGIN)]
    pub drift_ece_margin: f64,
    /// Seconds between refreshes of the live-report gauges (taskcast_trainer_live_*);
    /// each refresh is one paged read of the window. 0 disables them.
    #[arg(long, env = "TASKCAST_REPORT_INTERVAL", default_value_t = 60)]
    pub report_interval: u64,
    /// Window of the live-report gauges: only tasks completed in the last N
    /// days (0: no limit).
    #[arg(long, env = "TASKCAST_REPORT_LAST_DAYS", default_value_t = 0)]
    pub report_last_days: u32,
    /// Window of the live-report gauges: only the newest N tasks with a
    /// prediction (0: no limit). Bounds each refresh's time and memory.
    #[arg(long, env = "TASKCAST_REPORT_LAST_ROWS", default_value_t = 200_000)]
    pub report_last_rows: u32,
    /// ONNX Runtime library (default: $ORT_DYLIB_PATH, else .ort/libonnxruntime.so).
    #[arg(long, env = "TASKCAST_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
    /// File holding the admin bearer token for Train, Promote and Rollback.
    #[arg(long, env = "TASKCAST_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The admin token itself (prefer --admin-token-file; environment values
    /// can leak through process listings). Without a token, admin RPCs are refused.
    #[arg(long, env = "TASKCAST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Seconds in-flight calls get to finish after SIGTERM.
    #[arg(long, env = "TASKCAST_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
    /// Log format.
    #[arg(long, env = "TASKCAST_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// PEM certificate chain: serve gRPC over TLS (with --tls-key). Plaintext
    /// when unset; the metrics endpoint stays plaintext either way.
    #[arg(long, env = "TASKCAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "TASKCAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ServeConfig {
    /// Defaults for `database_url`, as `--help` shows them; tests override fields.
    pub fn for_database(database_url: &str) -> Self {
        ServeConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            metrics_listen: ([127, 0, 0, 1], 0).into(),
            database_url: database_url.into(),
            retrain_every: 5,
            poll_interval_ms: 500,
            family: Family::Linear,
            history_window: taskcast_contract::features::DEFAULT_HISTORY_WINDOW,
            no_startup_training: false,
            gate_logloss_tolerance: 0.002,
            gate_auc_tolerance: 0.005,
            drift_auc_margin: crate::report::drift::DEFAULT_AUC_MARGIN,
            drift_ece_margin: crate::report::drift::DEFAULT_ECE_MARGIN,
            report_interval: 60,
            report_last_days: 0,
            report_last_rows: 200_000,
            ort_lib: None,
            admin_token_file: None,
            admin_token: None,
            shutdown_grace_seconds: 20,
            log_format: LogFormat::Text,
            tls_cert: None,
            tls_key: None,
        }
    }

    /// The gRPC server's TLS settings; `None` serves plaintext (also when a
    /// struct built in code sets only one of cert and key; clap requires both).
    pub fn server_tls(&self) -> Result<Option<ServerTlsConfig>, TlsFileError> {
        taskcast_serving::tls::server_tls(self.tls_cert.as_deref(), self.tls_key.as_deref())
    }

    /// The admin token, from the file or the value; `None` when neither is set.
    pub fn admin_token(&self) -> Result<Option<AdminToken>, AdminTokenError> {
        match (&self.admin_token_file, &self.admin_token) {
            (Some(path), _) => AdminToken::from_file(path).map(Some),
            (None, Some(v)) => AdminToken::from_value(v).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The live report's drift margins.
    pub fn drift(&self) -> DriftConfig {
        DriftConfig {
            auc_margin: self.drift_auc_margin,
            ece_margin: self.drift_ece_margin,
        }
    }

    /// The window the live-report gauges cover.
    pub fn report_window(&self) -> ReportRequest {
        ReportRequest {
            version: None,
            last_days: self.report_last_days,
            last_rows: self.report_last_rows,
            stuck_window: 0,
        }
    }

    /// The runner's settings.
    pub fn runner(&self) -> RunnerConfig {
        RunnerConfig {
            spec: TrainSpec {
                family: self.family,
                fit: FitOptions::default(),
                history_window: self.history_window,
                gate: GateConfig {
                    logloss_tolerance: self.gate_logloss_tolerance,
                    auc_tolerance: self.gate_auc_tolerance,
                    ..GateConfig::default()
                },
            },
            retrain_every: self.retrain_every,
            poll_interval: Duration::from_millis(self.poll_interval_ms.max(10)),
            train_on_startup: !self.no_startup_training,
            ..RunnerConfig::default()
        }
    }
}

//! `trainer-svc serve` configuration: flags with `TASKCAST_*` environment
//! fallbacks. Tests build a [`ServeConfig`] directly instead of touching the
//! process environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use taskcast_serving::auth::{Role, RoleTokens, Token, TokenError};
use taskcast_serving::logging::LogFormat;
use taskcast_serving::tls_reload::{ReloadingServerTls, ServerTlsError};

use crate::report::{DriftConfig, ReportRequest};
use crate::run::runner::RunnerConfig;
use crate::serve::pseudonym::{PseudonymKeyError, Pseudonymiser};
use taskcast_learn::families::{Family, FitOptions};
use taskcast_learn::judge::gate::GateConfig;
use taskcast_learn::pipeline::TrainSpec;

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
    /// Least seconds between the end of one automatic run and the start of
    /// the next, whatever the task rate (operator Train calls are not held).
    #[arg(long, env = "TASKCAST_RETRAIN_MIN_INTERVAL_SECONDS", default_value_t = crate::run::runner::DEFAULT_MIN_INTERVAL_SECONDS)]
    pub retrain_min_interval_seconds: u64,
    /// New tasks, as a share of the last run's training rows, needed before
    /// an automatic run as well as --retrain-every: on a large table a few
    /// new tasks cannot move the model (0 turns this rule off).
    #[arg(long, env = "TASKCAST_RETRAIN_MIN_GROWTH", default_value_t = crate::run::runner::DEFAULT_MIN_GROWTH)]
    pub retrain_min_growth: f64,
    /// How often to check for new tasks and registry changes, in milliseconds.
    #[arg(long, env = "TASKCAST_POLL_INTERVAL_MS", default_value_t = 500)]
    pub poll_interval_ms: u64,
    /// Model family trained by automatic runs and by Train without a family:
    /// auto fits pretrained, linear and mlp and keeps the first no later one
    /// clearly beats on the inner validation slice (the gate then judges the
    /// choice on the hold-out as any other); or linear, mlp or pretrained by
    /// name.
    #[arg(long, env = "TASKCAST_FAMILY", default_value = "auto")]
    pub family: Family,
    /// Attempts of history the features look back over.
    #[arg(long, env = "TASKCAST_HISTORY_WINDOW", default_value_t = taskcast_contract::features::DEFAULT_HISTORY_WINDOW)]
    pub history_window: u32,
    /// Training budget: each run reads about this many rows at most, whole
    /// histories of the most recently active learners (ordered by their
    /// latest completed_at, taken while the learners before them hold fewer
    /// rows than this), so a run's time and memory have a ceiling whatever
    /// completed_tasks holds. Whole histories, not rows after a date, because
    /// a row's features depend on the learner's earlier attempts. At the
    /// default a run peaks near 400 MiB (about 220 bytes per row read);
    /// 0 reads every row. The retrain trigger still counts every new row.
    #[arg(long, env = "TASKCAST_MAX_TRAINING_ROWS", default_value_t = taskcast_learn::budget::DEFAULT_MAX_TRAINING_ROWS)]
    pub max_training_rows: u64,
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
    /// File holding the admin bearer token: Train, Promote, Rollback, and
    /// every other RPC. Without an admin token those three are refused.
    #[arg(long, env = "TASKCAST_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The admin token itself (prefer --admin-token-file; environment values
    /// can leak through process listings).
    #[arg(long, env = "TASKCAST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the replica bearer token: WatchModels, the model stream
    /// inference replicas follow (their --trainer-token-file). Without it
    /// only the admin token opens the stream.
    #[arg(long, env = "TASKCAST_REPLICA_TOKEN_FILE")]
    pub replica_token_file: Option<PathBuf>,
    /// The replica token itself (prefer --replica-token-file).
    #[arg(long, env = "TASKCAST_REPLICA_TOKEN", hide_env_values = true)]
    pub replica_token: Option<String>,
    /// File holding the reader bearer token: ListModels, GetTrainingRun,
    /// WatchTrainingRun and ModelReport (learner ids pseudonymised; only
    /// admin sees them). Without it only the admin token can read.
    #[arg(long, env = "TASKCAST_READER_TOKEN_FILE")]
    pub reader_token_file: Option<PathBuf>,
    /// The reader token itself (prefer --reader-token-file).
    #[arg(long, env = "TASKCAST_READER_TOKEN", hide_env_values = true)]
    pub reader_token: Option<String>,
    /// File holding the key (at least 16 bytes) of the learner pseudonyms
    /// ModelReport shows callers other than admin. Without it a key is drawn
    /// at start, so pseudonyms change when the trainer restarts.
    #[arg(long, env = "TASKCAST_PSEUDONYM_KEY_FILE")]
    pub pseudonym_key_file: Option<PathBuf>,
    /// Refuse to start without --pseudonym-key-file (production: two
    /// trainers, or one restarted, must show learners the same pseudonyms).
    #[arg(long, env = "TASKCAST_REQUIRE_PSEUDONYM_KEY")]
    pub require_pseudonym_key: bool,
    /// Seconds a token replaced in its file (a rotated Secret) is still
    /// accepted, so pods that have not re-read it yet are not cut off. The
    /// token files are looked at every few seconds.
    #[arg(long, env = "TASKCAST_TOKEN_GRACE_SECONDS", default_value_t = taskcast_serving::token_reload::DEFAULT_TOKEN_GRACE.as_secs())]
    pub token_grace_seconds: u64,
    /// How automatic runs put a model that passed the gate into service:
    /// `direct` (active for everyone at once) or `canary:PERCENT` (a canary
    /// on that share of learners, judged on live outcomes). A canary needs
    /// traffic: pick it when each arm can gather --canary-min-outcomes
    /// completed tasks within --canary-max-seconds.
    #[arg(long, env = "TASKCAST_ROLLOUT", default_value = "direct")]
    pub rollout: crate::canary::RolloutPolicy,
    /// Completed tasks each arm of a canary needs before it is judged.
    #[arg(long, env = "TASKCAST_CANARY_MIN_OUTCOMES", default_value_t = 1000)]
    pub canary_min_outcomes: u64,
    /// Longest a canary runs: past it without enough outcomes, its
    /// candidate goes back to "candidate" unjudged.
    #[arg(long, env = "TASKCAST_CANARY_MAX_SECONDS", default_value_t = 86_400)]
    pub canary_max_seconds: u64,
    /// How much worse (live log loss) a canary's candidate may be than the
    /// active version and still be promoted.
    #[arg(
        long,
        env = "TASKCAST_CANARY_LOGLOSS_TOLERANCE",
        default_value_t = 0.005
    )]
    pub canary_logloss_tolerance: f64,
    /// How often a canary in progress is judged, in seconds.
    #[arg(long, env = "TASKCAST_CANARY_CHECK_SECONDS", default_value_t = 30)]
    pub canary_check_seconds: u64,
    /// Registry retention, applied after every run: the newest N versions
    /// never active keep their ONNX bytes; older rejected ones keep their
    /// metadata only (versions ever active and unrejected candidates keep
    /// everything). 0 turns automatic pruning off (`trainer-svc prune` still works).
    #[arg(long, env = "TASKCAST_KEEP_CANDIDATES", default_value_t = crate::db::DEFAULT_KEEP_CANDIDATES)]
    pub keep_candidates: u64,
    /// Server-side deadline of every unary call, in milliseconds
    /// (DEADLINE_EXCEEDED past it; streams are not cut). 0: none.
    #[arg(long, env = "TASKCAST_REQUEST_TIMEOUT_MS", default_value_t = 60_000)]
    pub request_timeout_ms: u64,
    /// Calls in flight per HTTP/2 connection; the excess is refused with
    /// UNAVAILABLE instead of queueing (each call may hold a database
    /// connection or scan a window of outcomes). 0: no limit.
    #[arg(
        long,
        env = "TASKCAST_CONCURRENCY_LIMIT_PER_CONNECTION",
        default_value_t = 32
    )]
    pub concurrency_limit_per_connection: usize,
    /// Maximum connection age (as inference's): replicas' WatchModels
    /// streams are closed with a graceful GOAWAY and reopened, so with two
    /// trainer replicas they spread over both again after one came back.
    #[command(flatten)]
    pub connection_age: taskcast_serving::grpc::ConnectionAgeArgs,
    /// Seconds in-flight calls get to finish after SIGTERM.
    #[arg(long, env = "TASKCAST_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
    /// Log format.
    #[arg(long, env = "TASKCAST_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// PEM certificate chain: serve gRPC over TLS (with --tls-key). Plaintext
    /// when unset; the metrics endpoint stays plaintext either way. Both
    /// files are re-read when they change on disk: new connections get the
    /// new certificate, open ones keep theirs.
    #[arg(long, env = "TASKCAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "TASKCAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): require mutual TLS, admitting only clients
    /// (inference replicas, operators' tools) whose certificate one of them
    /// signed. Every call on the gRPC port then needs a client certificate,
    /// gRPC health checks included: probe the metrics port's /healthz
    /// instead. The cert, key and this file are re-read when they change on
    /// disk (a rotated Secret); open connections keep their session.
    #[arg(long, env = "TASKCAST_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServeConfig {
    /// Defaults for `database_url`, as `--help` shows them; tests override fields.
    pub fn for_database(database_url: &str) -> Self {
        ServeConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            metrics_listen: ([127, 0, 0, 1], 0).into(),
            database_url: database_url.into(),
            retrain_every: 5,
            retrain_min_interval_seconds: crate::run::runner::DEFAULT_MIN_INTERVAL_SECONDS,
            retrain_min_growth: crate::run::runner::DEFAULT_MIN_GROWTH,
            poll_interval_ms: 500,
            family: Family::Linear,
            history_window: taskcast_contract::features::DEFAULT_HISTORY_WINDOW,
            max_training_rows: taskcast_learn::budget::DEFAULT_MAX_TRAINING_ROWS,
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
            replica_token_file: None,
            replica_token: None,
            reader_token_file: None,
            reader_token: None,
            pseudonym_key_file: None,
            require_pseudonym_key: false,
            token_grace_seconds: taskcast_serving::token_reload::DEFAULT_TOKEN_GRACE.as_secs(),
            connection_age: taskcast_serving::grpc::ConnectionAgeArgs {
                max_connection_age_seconds: 300,
                max_connection_age_grace_seconds: 30,
            },
            keep_candidates: crate::db::DEFAULT_KEEP_CANDIDATES,
            rollout: crate::canary::RolloutPolicy::Direct,
            canary_min_outcomes: 1000,
            canary_max_seconds: 86_400,
            canary_logloss_tolerance: 0.005,
            canary_check_seconds: 30,
            request_timeout_ms: 60_000,
            concurrency_limit_per_connection: 32,
            shutdown_grace_seconds: 20,
            log_format: LogFormat::Text,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }

    /// The gRPC server's TLS settings, mutual with --tls-client-ca and
    /// re-read when the files change; `None` serves plaintext (also when a
    /// struct built in code sets only one of cert and key; clap requires both).
    pub fn server_tls(&self) -> Result<Option<ReloadingServerTls>, ServerTlsError> {
        taskcast_serving::tls::server_tls(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_client_ca.as_deref(),
        )
    }

    /// Each role's token, from its file or its value (the file winning).
    pub fn role_tokens(&self) -> Result<RoleTokens, TokenError> {
        let token = |role, file: &Option<PathBuf>, value: &Option<String>| {
            Token::from_file_or_value(role, file.as_deref(), value.as_deref())
        };
        RoleTokens::none()
            .with(
                Role::Admin,
                token(Role::Admin, &self.admin_token_file, &self.admin_token)?,
            )?
            .with(
                Role::Replica,
                token(Role::Replica, &self.replica_token_file, &self.replica_token)?,
            )?
            .with(
                Role::Reader,
                token(Role::Reader, &self.reader_token_file, &self.reader_token)?,
            )
    }

    /// The learner pseudonyms' key: from --pseudonym-key-file, else drawn
    /// now (with a warning), or an error with --require-pseudonym-key.
    pub fn pseudonymiser(&self) -> Result<Pseudonymiser, PseudonymKeyError> {
        match &self.pseudonym_key_file {
            Some(path) => Pseudonymiser::from_file(path),
            None if self.require_pseudonym_key => Err(PseudonymKeyError::Required),
            None => {
                tracing::warn!(
                    "no --pseudonym-key-file: a key was drawn at start, so ModelReport's learner \
                     pseudonyms change on restart and differ between trainers"
                );
                Ok(Pseudonymiser::random())
            }
        }
    }

    /// Each role's token file, re-read while serving (token rotation).
    pub fn token_files(&self) -> Vec<(Role, PathBuf)> {
        [
            (Role::Admin, &self.admin_token_file),
            (Role::Replica, &self.replica_token_file),
            (Role::Reader, &self.reader_token_file),
        ]
        .into_iter()
        .filter_map(|(role, file)| file.clone().map(|f| (role, f)))
        .collect()
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

    /// When a canary is decided.
    pub fn canary(&self) -> crate::canary::CanaryPolicy {
        crate::canary::CanaryPolicy {
            min_outcomes: self.canary_min_outcomes,
            max_duration: Duration::from_secs(self.canary_max_seconds),
            logloss_tolerance: self.canary_logloss_tolerance,
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
                max_training_rows: self.max_training_rows,
            },
            retrain_every: self.retrain_every,
            min_interval: Duration::from_secs(self.retrain_min_interval_seconds),
            min_growth: self.retrain_min_growth,
            poll_interval: Duration::from_millis(self.poll_interval_ms.max(10)),
            train_on_startup: !self.no_startup_training,
            retention: (self.keep_candidates > 0).then_some(crate::db::RetentionPolicy {
                keep_candidates: self.keep_candidates,
            }),
            rollout: self.rollout,
            ..RunnerConfig::default()
        }
    }
}

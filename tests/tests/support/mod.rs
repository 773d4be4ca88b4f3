//! Shared harness for the process-level tests (`e2e.rs`, `faults.rs`): the
//! real binaries as child processes on 127.0.0.1, clients, metric scraping,
//! and model files built with the contract crate.
//!
//! The binaries come from the same target directory as the test executable
//! (`cargo build --workspace --bins` first; `scripts/test.sh` does).
#![allow(dead_code)]

pub mod proxy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use taskcast_contract::artifact::{Artifact, ModelMetadata};
use taskcast_contract::linear::LinearModel;
use taskcast_contract::{FEATURE_SCHEMA, Priors, Schema};
use taskcast_proto::{Candidate, PredictRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Request;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use trainer_svc::db::{Db, NewModelVersion, PromotionKind};

/// The admin token every test trainer is started with.
pub const TOKEN: &str = "e2e-admin-token";
/// The replica token every test trainer accepts and every test replica sends.
pub const REPLICA_TOKEN: &str = "e2e-replica-token";
/// The reader token every test trainer accepts.
pub const READER_TOKEN: &str = "e2e-reader-token";
/// The password put into every PostgreSQL URL a test trainer is given (the
/// server trusts loopback and ignores it): it must never reach a log.
pub const DB_PASSWORD: &str = "e2e-db-password";
/// What no process log may contain, whatever its level.
pub const SECRETS: [&str; 4] = [TOKEN, REPLICA_TOKEN, READER_TOKEN, DB_PASSWORD];
/// Log filter of every process a test starts: our crates at debug, so the
/// secret scan ([`secrets_in_logs`]) covers what an operator who turns
/// logging up would see; dependencies at info.
pub const SPAWN_LOG_FILTER: &str =
    "info,trainer_svc=debug,inference_svc=debug,taskcast_serving=debug,taskcast_learn=debug";

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A workspace binary next to this test's own executable.
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no target dir")?;
    let path = dir.join(name);
    ensure!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` first",
        path.display()
    );
    Ok(path)
}

/// A port that was free a moment ago (the child binds it itself).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Strings to an argument vector.
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// A child process killed (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, bin: &Path, args: &[String], log: &Path) -> Result<Proc> {
        let out = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .args(args)
            .env("ORT_DYLIB_PATH", workspace().join(".ort/libonnxruntime.so"))
            .env("TASKCAST_LOG", SPAWN_LOG_FILTER)
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            child,
            name: name.into(),
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait up to `limit` for the exit; the status and how long it took.
    pub fn stop(&mut self, limit: Duration) -> Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("{} did not exit within {limit:?} of SIGTERM", self.name)
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn terminate(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if self.stop(Duration::from_secs(10)).is_err() {
            eprintln!("{} did not stop on SIGTERM; killed", self.name);
        }
    }

    /// The last `n` lines of the process's log.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// What a command run to its end printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `bin` with `args` to its end, stdout and stderr kept apart (in
/// `dir/{name}.out` and `.err`); killed after `limit`, or when the caller
/// unwinds, so no run outlives its test.
pub fn run_to_end(
    name: &str,
    bin: &Path,
    args: &[String],
    dir: &Path,
    limit: Duration,
) -> Result<Finished> {
    let (out_path, err_path) = (
        dir.join(format!("{name}.out")),
        dir.join(format!("{name}.err")),
    );
    let child = Command::new(bin)
        .args(args)
        .env("ORT_DYLIB_PATH", workspace().join(".ort/libonnxruntime.so"))
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    // Killed on drop unless it exited.
    let mut proc = Proc {
        child,
        name: name.into(),
        log: err_path.clone(),
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = proc.child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            proc.kill();
            bail!("{name} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Finished {
        status,
        stdout: std::fs::read_to_string(&out_path)?,
        stderr: std::fs::read_to_string(&err_path)?,
    })
}

/// Prints the tail of every log in `dir` (on failure).
pub fn dump_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- {} (last lines)\n{}",
                p.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// Every `.log` file in `dir` holding one of [`SECRETS`], with the line.
pub fn secrets_in_logs(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "log") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            if SECRETS.iter().any(|s| line.contains(s)) {
                found.push(format!("{}: {line}", path.display()));
            }
        }
    }
    found
}

/// `url` with [`DB_PASSWORD`] as its user's password when it is a
/// PostgreSQL URL without one.
pub fn with_db_password(url: &str) -> String {
    match url.strip_prefix("postgres://") {
        Some(rest) => match rest.split_once('@') {
            Some((user, host)) if !user.contains(':') => {
                format!("postgres://{user}:{DB_PASSWORD}@{host}")
            }
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A fresh temporary directory for one test's logs and files.
pub fn test_dir(name: &str) -> Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("taskcast-{name}-{}-{n}", std::process::id()));
    // Leftovers of an earlier process with the same pid would mix logs.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Connects (plaintext), retrying while the server starts.
pub async fn connect(port: u16) -> Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Channel::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await
        {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => bail!("port {port}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Connects over TLS to `https://{host}:{port}`, trusting `ca_pem`.
pub async fn connect_tls(host: &str, port: u16, ca_pem: &[u8]) -> Result<Channel> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    let endpoint = Channel::from_shared(format!("https://{host}:{port}"))?.tls_config(tls)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match endpoint.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => bail!("{host}:{port} over TLS: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Runs one test body in its own directory with a time bound; on failure
/// prints the tail of every process log (and keeps the directory).
pub async fn scenario<F, Fut>(name: &str, limit: Duration, body: F) -> Result<()>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let dir = test_dir(name)?;
    let mut result = match tokio::time::timeout(limit, body(dir.clone())).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("{name} did not finish within {limit:?}")),
    };
    let leaks = secrets_in_logs(&dir);
    if result.is_ok() && !leaks.is_empty() {
        result = Err(anyhow::anyhow!(
            "secrets in process logs:\n{}",
            leaks.join("\n")
        ));
    }
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(e) => {
            eprintln!("{name} failed: {e:#}");
            dump_logs(&dir);
        }
    }
    result
}

/// `msg` with the admin token attached.
pub fn admin<T>(msg: T) -> Request<T> {
    with_auth(msg, &format!("Bearer {TOKEN}"))
}

/// `msg` with the reader token attached.
pub fn reader<T>(msg: T) -> Request<T> {
    with_auth(msg, &format!("Bearer {READER_TOKEN}"))
}

/// `msg` with the replica token attached.
pub fn replica<T>(msg: T) -> Request<T> {
    with_auth(msg, &format!("Bearer {REPLICA_TOKEN}"))
}

/// `msg` with an arbitrary `authorization` header value.
pub fn with_auth<T>(msg: T, value: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", value.parse().expect("ascii header value"));
    r
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        ensure!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET /metrics from a service's metrics port.
pub async fn scrape(port: u16) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The value of the sample `name` (with its labels, e.g.
/// `x_total{reason="schema"}`) in a Prometheus text page; 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Resident set size of a process in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    line.split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()
        .context("VmRSS number")
}

/// Metadata like the bootstrap model's, with a given version and empty priors.
pub fn metadata(version: &str) -> ModelMetadata {
    metadata_for(Schema::CURRENT, version)
}

/// [`metadata`] for a model of `schema` (an older one: what a registry
/// holds from the release before).
pub fn metadata_for(schema: Schema, version: &str) -> ModelMetadata {
    let mut m = taskcast_contract::bootstrap::linear_metadata_for(
        schema,
        version,
        "linear",
        Priors::default(),
    );
    m.trained_at = "2026-11-26T12:00:00Z".into();
    m.metrics = BTreeMap::from([("auc".to_string(), 0.6)]);
    m.training_rows = 1000;
    m
}

/// A linear model with small deterministic pseudo-random weights.
pub fn random_linear(seed: u64) -> LinearModel {
    LinearModel::pseudo_random(seed, 0.1)
}

/// A servable model file named `version`.
pub fn model_bytes(version: &str, seed: u64) -> Result<Vec<u8>> {
    Ok(Artifact::write(
        random_linear(seed).graph(),
        &metadata(version),
    )?)
}

/// Registers `onnx` as a candidate straight in the registry (no checks: the
/// trainer's Promote is what refuses unservable files).
pub async fn register(db: &Db, version: &str, schema: &str, onnx: Vec<u8>) -> Result<()> {
    db.insert_model_version(&NewModelVersion {
        version: version.into(),
        family: "linear".into(),
        feature_schema: schema.into(),
        onnx,
        metrics: BTreeMap::new(),
        reason: "registered by a test".into(),
        run_id: None,
        time_modeled: None,
    })
    .await?;
    Ok(())
}

/// Registers a good model `version` and makes it active.
pub async fn register_active(db: &Db, version: &str, seed: u64) -> Result<()> {
    register(db, version, FEATURE_SCHEMA, model_bytes(version, seed)?).await?;
    db.set_active(version, PromotionKind::Promote).await?;
    Ok(())
}

/// A trainer process on `db_url` with the admin token file written in `dir`.
pub struct TrainerProc {
    pub proc: Proc,
    pub port: u16,
    pub metrics_port: u16,
    pub args: Vec<String>,
}

/// `trainer-svc serve` arguments: fixed ports, fast polling, a token file
/// per role, then `extra` (later flags win).
pub fn trainer_args(
    db_url: &str,
    port: u16,
    metrics_port: u16,
    dir: &Path,
    extra: &[&str],
) -> Result<Vec<String>> {
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN)?;
    let replica_file = dir.join("replica-token");
    std::fs::write(&replica_file, REPLICA_TOKEN)?;
    let reader_file = dir.join("reader-token");
    std::fs::write(&reader_file, READER_TOKEN)?;
    let db_url = with_db_password(db_url);
    let mut a = args(&[
        "serve",
        "--database-url",
        &db_url,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
        "--poll-interval-ms",
        "100",
        // Tests expect a run as soon as their rows arrive.
        "--retrain-min-interval-seconds",
        "0",
        "--retrain-min-growth",
        "0",
        "--admin-token-file",
        &token_file.display().to_string(),
        "--replica-token-file",
        &replica_file.display().to_string(),
        "--reader-token-file",
        &reader_file.display().to_string(),
        "--shutdown-grace-seconds",
        "5",
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    Ok(a)
}

impl TrainerProc {
    pub fn start(db_url: &str, dir: &Path, name: &str, extra: &[&str]) -> Result<TrainerProc> {
        let (port, metrics_port) = (free_port()?, free_port()?);
        let args = trainer_args(db_url, port, metrics_port, dir, extra)?;
        let proc = Proc::spawn(
            name,
            &binary("trainer-svc")?,
            &args,
            &dir.join(format!("{name}.log")),
        )?;
        Ok(TrainerProc {
            proc,
            port,
            metrics_port,
            args,
        })
    }

    /// A trainer that never trains on its own (no startup run, no row
    /// trigger): it only serves the registry, for tests that drive promotions.
    pub fn start_registry_only(db_url: &str, dir: &Path, name: &str) -> Result<TrainerProc> {
        Self::start(
            db_url,
            dir,
            name,
            &["--retrain-every", "0", "--no-startup-training"],
        )
    }

    /// The URL inference replicas follow it at.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The same trainer again (same ports and flags) after it stopped.
    pub fn restart(&mut self, dir: &Path, name: &str) -> Result<()> {
        self.proc = Proc::spawn(
            name,
            &binary("trainer-svc")?,
            &self.args,
            &dir.join(format!("{name}.log")),
        )?;
        Ok(())
    }
}

/// An inference replica process.
pub struct InferenceProc {
    pub proc: Proc,
    pub port: u16,
    pub metrics_port: u16,
}

impl InferenceProc {
    /// A replica serving the bootstrap model, following `trainer` if given
    /// with the replica token.
    pub fn start(dir: &Path, name: &str, trainer: Option<&str>, extra: &[&str]) -> Result<Self> {
        let (port, metrics_port) = (free_port()?, free_port()?);
        let mut a = args(&[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
            "--model",
            &workspace()
                .join("models/bootstrap.onnx")
                .display()
                .to_string(),
            "--replica-name",
            name,
            "--shutdown-grace-seconds",
            "5",
        ]);
        if let Some(t) = trainer {
            let token_file = dir.join(format!("{name}-replica-token"));
            std::fs::write(&token_file, REPLICA_TOKEN)?;
            a.extend(args(&[
                "--trainer",
                t,
                "--trainer-token-file",
                &token_file.display().to_string(),
            ]));
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(
            name,
            &binary("inference-svc")?,
            &a,
            &dir.join(format!("{name}.log")),
        )?;
        Ok(InferenceProc {
            proc,
            port,
            metrics_port,
        })
    }
}

/// A small Predict request any model answers.
pub fn simple_predict() -> PredictRequest {
    PredictRequest {
        user_id: "learner-1".into(),
        history: vec![],
        candidates: vec![Candidate {
            task_id: "t1".into(),
            topic: "fractions".into(),
            difficulty: "easy".into(),
            item_id: String::new(),
        }],
        explain: false,
        as_of: None,
    }
}

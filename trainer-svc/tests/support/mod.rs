//! Shared helpers for the trainer's integration tests: throwaway databases on
//! both backends, simulated data, and a real trainer server on 127.0.0.1:0.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use taskcast_contract::TaskRow;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_sim::{SimConfig, Simulator};
use taskcast_testdb::TestDb;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use trainer_svc::db::{Db, RunRecord, RunTrigger};
use trainer_svc::serve::config::ServeConfig;
use trainer_svc::serve::server::ServeError;

/// The admin token every test server is configured with.
pub const TOKEN: &str = "test-token";
/// The replica token test servers accept.
pub const REPLICA_TOKEN: &str = "test-replica-token";
/// The reader token test servers accept.
pub const READER_TOKEN: &str = "test-reader-token";

/// Loads ONNX Runtime once (ORT_DYLIB_PATH comes from .cargo/config.toml).
pub fn init_ort() {
    let lib = taskcast_contract::runtime::library_path(None);
    taskcast_contract::runtime::init(&lib).expect("ONNX Runtime (run scripts/setup-ort.sh)");
}

/// Runs `f` on a fresh SQLite file, then on a fresh PostgreSQL database.
/// PostgreSQL being unreachable fails the test.
pub async fn on_each_backend(f: impl AsyncFn(&str, &'static str)) {
    let dbs = TestDb::all()
        .await
        .expect("test databases (is PostgreSQL running on 127.0.0.1:5432?)");
    for t in dbs {
        eprintln!("--- backend: {}", t.backend_name());
        f(t.url(), t.backend_name()).await;
        t.cleanup().await.expect("drop test database");
    }
}

/// A simulator small enough for debug-build tests but large enough that a
/// linear model beats the baselines on its hold-out.
pub fn simulator(learners: usize, attempts: usize, seed: u64) -> Simulator {
    Simulator::new(SimConfig {
        seed,
        learners,
        attempts_per_learner: attempts,
        ..Default::default()
    })
    .expect("simulator config")
}

/// `n` further attempts spread over the simulator's learners, round robin.
pub fn more_rows(sim: &mut Simulator, n: usize) -> Vec<TaskRow> {
    let ids: Vec<String> = sim.learners().map(|l| l.user_id.clone()).collect();
    let mut out = Vec::with_capacity(n);
    let mut k = 0;
    while out.len() < n {
        let id = &ids[k % ids.len()];
        out.extend(sim.next_attempts(id, 1).expect("known learner"));
        k += 1;
    }
    out
}

/// Test configuration: admin token set, fast polling.
pub fn config(url: &str, retrain_every: u64) -> ServeConfig {
    let mut c = ServeConfig::for_database(url);
    c.admin_token = Some(TOKEN.into());
    c.replica_token = Some(REPLICA_TOKEN.into());
    c.reader_token = Some(READER_TOKEN.into());
    c.poll_interval_ms = 50;
    c.retrain_every = retrain_every;
    // Tests add a few rows and expect the next run at once; the cadence
    // rules have their own test (service.rs::automatic_runs_keep_a_cadence).
    c.retrain_min_interval_seconds = 0;
    c.retrain_min_growth = 0.0;
    c.shutdown_grace_seconds = 10;
    c
}

/// A trainer server running in this process.
pub struct Server {
    /// gRPC address.
    pub addr: SocketAddr,
    /// /metrics address.
    pub metrics_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Server {
    /// Binds 127.0.0.1:0 twice and starts `server::run`.
    pub async fn start(config: ServeConfig) -> Server {
        init_ort();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(trainer_svc::serve::server::run(
            listener,
            Some(metrics),
            config,
            async move {
                let _ = rx.await;
            },
        ));
        Server {
            addr,
            metrics_addr,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// A client, retrying until the server accepts connections.
    pub async fn client(&self) -> TrainerClient<Channel> {
        let channel = self.channel().await;
        TrainerClient::new(channel).max_decoding_message_size(64 << 20)
    }

    /// A connected channel to the gRPC port.
    pub async fn channel(&self) -> Channel {
        let url = format!("http://{}", self.addr);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match Channel::from_shared(url.clone()).unwrap().connect().await {
                Ok(c) => return c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot connect to the trainer at {url}: {e}"),
            }
        }
    }

    /// Signals shutdown and waits for `run` to return; returns how long it took.
    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let handle = self.handle.take().expect("server handle");
        let res = tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("server stops within 30 s")
            .expect("server task panicked");
        res.expect("server returned an error");
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A request carrying the admin token.
pub fn admin<T>(msg: T) -> tonic::Request<T> {
    with_auth(msg, &format!("Bearer {TOKEN}"))
}

/// `msg` with the reader token attached.
pub fn reader<T>(msg: T) -> tonic::Request<T> {
    with_auth(msg, &format!("Bearer {READER_TOKEN}"))
}

/// `msg` with the replica token attached.
pub fn replica<T>(msg: T) -> tonic::Request<T> {
    with_auth(msg, &format!("Bearer {REPLICA_TOKEN}"))
}

/// A request with an arbitrary `authorization` value.
pub fn with_auth<T>(msg: T, value: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", value.parse().expect("ascii metadata"));
    req
}

/// Polls `check` every 25 ms until it returns `Some`, failing after `secs`.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every run, newest first, read straight from the database.
pub async fn runs(db: &Db) -> Vec<RunRecord> {
    db.list_runs(1000).await.expect("list runs")
}

/// Waits until run `id` is in a terminal state and returns it.
pub async fn wait_run_end(db: &Db, id: &str, secs: u64) -> RunRecord {
    eventually(&format!("run {id} to end"), secs, || async {
        db.get_run(id)
            .await
            .expect("get run")
            .filter(|r| r.state.is_terminal())
    })
    .await
}

/// Waits for the newest run started by `trigger` to appear (within 30 s)
/// and then for its end (within 60 s), and returns it.
pub async fn trigger_run_end(db: &Db, trigger: RunTrigger, what: &str) -> RunRecord {
    let run = eventually(what, 30, || async {
        runs(db).await.into_iter().find(|r| r.trigger == trigger)
    })
    .await;
    wait_run_end(db, &run.id, 60).await
}

/// Waits until the trainer's watermark reaches the last task in the table.
pub async fn wait_watermark(db: &Db) {
    let max_id = db.max_task_id().await.expect("max id").expect("rows");
    eventually("the watermark to reach the last task", 10, || async {
        (db.get_watermark().await.expect("watermark") == max_id).then_some(())
    })
    .await;
}

/// Fetches `GET /metrics` with a bare HTTP/1.1 request.
pub async fn get_metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("metrics answer within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "metrics answer: {text}");
    text
}

/// The value of an unlabelled metric on /metrics, if present.
pub async fn metric_value(addr: SocketAddr, name: &str) -> Option<f64> {
    let body = get_metrics(addr).await;
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Every registered version, newest first, as ListModels returns them.
pub async fn list_models(client: &mut TrainerClient<Channel>) -> Vec<taskcast_proto::ModelVersion> {
    client
        .list_models(reader(taskcast_proto::ListModelsRequest { limit: 0 }))
        .await
        .expect("ListModels")
        .into_inner()
        .models
}

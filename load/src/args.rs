//! Flags and their `TASKCAST_LOAD_*` environment fallbacks.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Drives a `taskcast.v1.Inference` server with Predict calls built from the
/// learner simulator and prints throughput, latency percentiles and errors by
/// gRPC status code.
///
/// Closed loop by default: `--concurrency` workers each send a request, wait
/// for the answer, and send the next. With `--rate` the loop is open: request
/// `i` is due at `start + i / rate` whatever happened to earlier ones, and its
/// latency is measured from that intended send time, so time a request spent
/// waiting for a free worker (queueing behind a slow server) is counted
/// instead of silently omitted. `--concurrency` then caps requests in flight.
///
/// To measure this tool's own ceiling, point it at `--serve-null` (a minimal
/// Inference server doing no model work) or use `--self-test`.
#[derive(Clone, Debug, Parser)]
#[command(name = "taskcast-load", version, about, long_about)]
pub struct Args {
    /// Server to drive, e.g. `http://127.0.0.1:50051`. Required unless
    /// `--self-test` or `--serve-null` is given.
    #[arg(long, env = "TASKCAST_LOAD_TARGET")]
    pub target: Option<String>,

    /// Workers (closed loop) or most requests in flight (open loop).
    #[arg(long, env = "TASKCAST_LOAD_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,

    /// Seconds measured, after the warm-up.
    #[arg(long, env = "TASKCAST_LOAD_DURATION", default_value_t = 10.0)]
    pub duration: f64,

    /// Seconds of traffic sent first and not recorded (connections, caches,
    /// allocator and the server's session pool settle).
    #[arg(long, env = "TASKCAST_LOAD_WARMUP", default_value_t = 1.0)]
    pub warmup: f64,

    /// Candidate tasks per Predict call. 0 sends requests the server must
    /// refuse (INVALID_ARGUMENT), which is how error counting is checked.
    #[arg(long, env = "TASKCAST_LOAD_CANDIDATES", default_value_t = 1)]
    pub candidates: usize,

    /// Completed attempts in each request's history.
    #[arg(long, env = "TASKCAST_LOAD_HISTORY", default_value_t = 50)]
    pub history: usize,

    /// Open loop: requests per second, scheduled at fixed intervals. Absent:
    /// closed loop.
    #[arg(long, env = "TASKCAST_LOAD_RATE")]
    pub rate: Option<f64>,

    /// HTTP/2 connections; workers are spread over them round-robin. One
    /// connection serialises all framing on one server task, so use several
    /// when measuring throughput.
    #[arg(long, env = "TASKCAST_LOAD_CONNECTIONS", default_value_t = 1)]
    pub connections: usize,

    /// Simulator seed; the same seed sends the same requests.
    #[arg(long, env = "TASKCAST_LOAD_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Distinct simulated learners (and so distinct requests) cycled through.
    #[arg(long, env = "TASKCAST_LOAD_LEARNERS", default_value_t = 256)]
    pub learners: usize,

    /// Ask for explanations (`explain = true`): 25 model rows per candidate.
    #[arg(long, env = "TASKCAST_LOAD_EXPLAIN")]
    pub explain: bool,

    /// Worker threads of this tool's runtime (0: one per core). Client and
    /// server share the machine, so fewer client threads can mean more
    /// server throughput.
    #[arg(long, env = "TASKCAST_LOAD_THREADS", default_value_t = 0)]
    pub threads: usize,

    /// Per-call deadline in milliseconds; a call past it counts as
    /// DEADLINE_EXCEEDED.
    #[arg(long, env = "TASKCAST_LOAD_TIMEOUT_MS", default_value_t = 5000)]
    pub timeout_ms: u64,

    /// Print the figures as one JSON object instead of a table.
    #[arg(long, env = "TASKCAST_LOAD_JSON")]
    pub json: bool,

    /// Start a null Inference server inside this process (its own runtime
    /// thread) and drive it: this tool's ceiling, with no model work.
    #[arg(long, conflicts_with_all = ["target", "serve_null"])]
    pub self_test: bool,

    /// Only serve the null Inference server on this address until Ctrl-C
    /// (measure the ceiling with the server in its own process, as a real
    /// one would be).
    #[arg(long, value_name = "ADDR", conflicts_with = "target")]
    pub serve_null: Option<SocketAddr>,
}

/// A flag combination that cannot run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ArgsError(pub String);

impl Args {
    /// Checks the numeric ranges clap cannot express.
    pub fn validate(&self) -> Result<(), ArgsError> {
        let bad = |m: &str| Err(ArgsError(m.to_string()));
        if self.concurrency == 0 {
            return bad("--concurrency must be at least 1");
        }
        if self.connections == 0 {
            return bad("--connections must be at least 1");
        }
        if !(self.duration.is_finite() && self.duration > 0.0) {
            return bad("--duration must be a positive number of seconds");
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            return bad("--warmup must be a non-negative number of seconds");
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            return bad("--rate must be a positive number of requests per second");
        }
        if self.learners == 0 {
            return bad("--learners must be at least 1");
        }
        if self.target.is_none() && !self.self_test && self.serve_null.is_none() {
            return bad("--target URL is required (or --self-test / --serve-null ADDR)");
        }
        Ok(())
    }

    /// The measured span.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }

    /// The unrecorded span before it.
    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }

    /// The per-call deadline.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

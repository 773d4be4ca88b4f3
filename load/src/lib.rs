//! `taskcast-load`: a load generator for any server implementing
//! `taskcast.v1.Inference`.
//!
//! One idea per module:
//! - [`args`]: flags and `TASKCAST_LOAD_*` environment;
//! - [`workload`]: Predict requests from the learner simulator, pre-encoded;
//! - [`codec`]: sending those bytes without re-encoding them;
//! - [`drive`]: closed and open loop over several HTTP/2 connections;
//! - [`tally`]: HDR latency histograms and errors by gRPC code;
//! - [`report`]: the table and the JSON;
//! - [`null_server`]: a do-nothing Inference server for measuring this tool's ceiling;
//! - this file: one run from flags to [`Report`] ([`run`]).

pub mod args;
pub mod codec;
pub mod drive;
pub mod null_server;
pub mod report;
pub mod tally;
pub mod workload;

use std::sync::Arc;
use std::time::Instant;

pub use args::Args;
pub use report::Report;

use crate::drive::{DriveError, Plan};
use crate::report::{Setup, cpu_seconds};
use crate::workload::{Shape, Workload};

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The flags do not make a run.
    #[error(transparent)]
    Args(#[from] args::ArgsError),
    /// The simulator refused its configuration.
    #[error("simulator: {0}")]
    Sim(#[from] taskcast_sim::SimError),
    /// Connecting or pacing failed.
    #[error(transparent)]
    Drive(#[from] DriveError),
}

/// One run against `target`: builds the requests, connects, drives, and
/// reports. Calls that fail are counted in the report, not returned as errors.
pub async fn run(args: &Args, target: &str) -> Result<Report, Error> {
    args.validate()?;
    let workload = Arc::new(Workload::build(Shape {
        seed: args.seed,
        learners: args.learners,
        history: args.history,
        candidates: args.candidates,
        explain: args.explain,
    })?);
    let channels = drive::connect(target, args.connections).await?;
    let plan = Plan {
        concurrency: args.concurrency,
        warmup: args.warmup(),
        duration: args.duration(),
        rate: args.rate,
        timeout: args.timeout(),
        candidates: args.candidates,
    };
    let cpu_before = cpu_seconds();
    let wall = Instant::now();
    let tally = drive::run(&channels, Arc::clone(&workload), plan).await?;
    let wall = wall.elapsed().as_secs_f64();
    let cpu = match (cpu_before, cpu_seconds()) {
        (Some(a), Some(b)) if wall > 0.0 => Some(100.0 * (b - a) / wall),
        _ => None,
    };
    let setup = Setup {
        target: if args.self_test {
            "self-test (in-process null server)".into()
        } else {
            target.to_string()
        },
        rate: args.rate,
        concurrency: args.concurrency,
        connections: args.connections,
        candidates: args.candidates,
        history: args.history,
        explain: args.explain,
        seed: args.seed,
        distinct_requests: workload.len(),
        request_bytes: workload.mean_request_bytes,
        duration_s: args.duration,
        warmup_s: args.warmup,
    };
    Ok(Report::new(setup, &tally, cpu))
}

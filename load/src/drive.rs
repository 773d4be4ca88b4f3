//! Sending the requests: closed loop (each worker waits for its answer before
//! the next call) or open loop (calls due at fixed intervals regardless of
//! answers, latency measured from the due time).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use tokio::sync::{Semaphore, mpsc};
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};

use crate::codec::PreEncoded;
use crate::tally::{Outcome, Tally, code_name};
use crate::workload::Workload;

const PREDICT: &str = "/taskcast.v1.Inference/Predict";

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// The target is not a usable URL.
    #[error("target {target}: {source}")]
    Target {
        /// As given.
        target: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// A connection could not be established.
    #[error("connecting to {target}: {source}")]
    Connect {
        /// As given.
        target: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The pacing thread could not be started.
    #[error("starting the open-loop pacer: {0}")]
    Pacer(std::io::Error),
}

/// How to drive.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Workers (closed loop) or most calls in flight (open loop).
    pub concurrency: usize,
    /// Unrecorded lead-in.
    pub warmup: Duration,
    /// Recorded span.
    pub duration: Duration,
    /// Open loop at this many calls per second; closed loop when `None`.
    pub rate: Option<f64>,
    /// Per-call deadline.
    pub timeout: Duration,
    /// Predictions a correct answer carries.
    pub candidates: usize,
}

/// When the run starts, when recording starts, and when sending stops.
#[derive(Clone, Copy, Debug)]
struct Clock {
    start: Instant,
    record_from: Instant,
    end: Instant,
}

/// Opens `n` HTTP/2 connections to `target`. Each `Endpoint::connect` is its
/// own TCP connection, so workers spread over them do not share one
/// connection's framing and flow control.
pub async fn connect(target: &str, n: usize) -> Result<Vec<Channel>, DriveError> {
    let endpoint = Endpoint::from_shared(target.to_string())
        .map_err(|source| DriveError::Target {
            target: target.to_string(),
            source,
        })?
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(
            endpoint
                .connect()
                .await
                .map_err(|source| DriveError::Connect {
                    target: target.to_string(),
                    source,
                })?,
        );
    }
    Ok(channels)
}

/// One Predict call with pre-encoded bytes, classified.
async fn call(client: &mut Grpc<Channel>, body: Bytes, plan: &Plan) -> Outcome {
    let attempt = async {
        client
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
        let mut req = tonic::Request::new(body);
        // Tell the server the deadline too, so it can give up as well.
        req.set_timeout(plan.timeout);
        client
            .unary(req, PathAndQuery::from_static(PREDICT), PreEncoded)
            .await
    };
    match tokio::time::timeout(plan.timeout, attempt).await {
        Err(_) => Outcome::Error("DEADLINE_EXCEEDED"),
        Ok(Err(status)) => Outcome::Error(code_name(status.code())),
        Ok(Ok(resp)) if resp.get_ref().predictions.len() == plan.candidates => Outcome::Ok,
        Ok(Ok(_)) => Outcome::Error("BAD_RESPONSE"),
    }
}

/// Runs the plan over `channels` and returns everything recorded after the warm-up.
pub async fn run(
    channels: &[Channel],
    workload: Arc<Workload>,
    plan: Plan,
) -> Result<Tally, DriveError> {
    // A short lead so every worker is spawned before the first call is due.
    let start = Instant::now() + Duration::from_millis(5);
    let clock = Clock {
        start,
        record_from: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
    };
    match plan.rate {
        None => Ok(closed_loop(channels, workload, plan, clock).await),
        Some(rate) => open_loop(channels, workload, plan, clock, rate).await,
    }
}

async fn closed_loop(
    channels: &[Channel],
    workload: Arc<Workload>,
    plan: Plan,
    clock: Clock,
) -> Tally {
    let mut workers = Vec::with_capacity(plan.concurrency);
    for w in 0..plan.concurrency {
        let mut client = Grpc::new(channels[w % channels.len()].clone());
        let workload = Arc::clone(&workload);
        workers.push(tokio::spawn(async move {
            tokio::time::sleep_until(clock.start.into()).await;
            let mut tally = Tally::default();
            // Workers start at different requests so they do not move in step.
            let mut i = w;
            loop {
                let sent = Instant::now();
                if sent >= clock.end {
                    break;
                }
                let outcome = call(&mut client, workload.get(i), &plan).await;
                if sent >= clock.record_from {
                    let took = sent.elapsed();
                    tally.record(outcome, took, took);
                }
                i += plan.concurrency;
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for w in workers {
        // A worker only ends by returning its tally; a panic in one is a bug
        // worth surfacing as lost samples rather than a crashed report.
        if let Ok(t) = w.await {
            total.merge(&t);
        }
    }
    total
}

/// One finished call on its way to the collector.
struct Sample {
    outcome: Outcome,
    due: Instant,
    sent: Instant,
    done: Instant,
}

/// Open loop. Call `k` is due at `start + k / rate`. A dedicated OS thread
/// paces the due times with `thread::sleep` (tens of microseconds late at
/// worst, where the async timer rounds up to whole milliseconds) and hands
/// them to a dispatcher, which spawns each call once one of `concurrency`
/// slots is free. Latency runs from the due time, so waiting for a slot, the
/// symptom of a server that cannot keep up, is part of the figure.
async fn open_loop(
    channels: &[Channel],
    workload: Arc<Workload>,
    plan: Plan,
    clock: Clock,
    rate: f64,
) -> Result<Tally, DriveError> {
    let (due_tx, mut due_rx) = mpsc::unbounded_channel::<Instant>();
    let stop = Arc::new(AtomicBool::new(false));
    let pacer_stop = Arc::clone(&stop);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let pacer = std::thread::Builder::new()
        .name("taskcast-load-pacer".into())
        .spawn(move || {
            let mut k: u32 = 0;
            loop {
                let due = clock.start + interval * k;
                if due >= clock.end || pacer_stop.load(Ordering::Relaxed) {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if due_tx.send(due).is_err() {
                    break;
                }
                k = k.saturating_add(1);
            }
        })
        .map_err(DriveError::Pacer)?;

    let (sample_tx, mut sample_rx) = mpsc::unbounded_channel::<Sample>();
    let collector = tokio::spawn(async move {
        let mut tally = Tally::default();
        while let Some(s) = sample_rx.recv().await {
            if s.due >= clock.record_from {
                tally.record(s.outcome, s.done - s.due, s.done - s.sent);
            }
        }
        tally
    });

    let slots = Arc::new(Semaphore::new(plan.concurrency));
    let clients: Vec<Grpc<Channel>> = channels.iter().cloned().map(Grpc::new).collect();
    let mut k = 0usize;
    while let Some(due) = due_rx.recv().await {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let mut client = clients[k % clients.len()].clone();
        let body = workload.get(k);
        let tx = sample_tx.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let outcome = call(&mut client, body, &plan).await;
            let _ = tx.send(Sample {
                outcome,
                due,
                sent,
                done: Instant::now(),
            });
            drop(permit);
        });
        k += 1;
    }
    stop.store(true, Ordering::Relaxed);
    // The pacer exits on its own at `end`; joining only fails if it panicked.
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    // The collector ends when the last in-flight call drops its sender.
    drop(sample_tx);
    Ok(collector.await.unwrap_or_default())
}

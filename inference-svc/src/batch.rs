//! Dynamic batching: Predict requests that arrive together share one ONNX
//! Runtime run, as Triton's and TF Serving's batchers do.
//!
//! Why: a `Session::run` costs a fixed ~10 µs of executor overhead
//! whatever the row count, as much as the rest of a one-candidate call. Under
//! concurrency, paying it once per batch instead of once per request is the
//! largest single saving on the request path (BENCHMARKS.md).
//!
//! How, without a batching thread (a hand-off to one costs two cross-thread
//! wake-ups, more than the run it would save): the first request to arrive
//! becomes the batch's *collector*. It queues nothing; it yields its async
//! task once, so the requests already ready on this worker compute their
//! features and queue their rows behind it, and keeps yielding while more
//! keep arriving, up to `max_delay` or `max_rows`. Then it takes the queue,
//! runs every row in one session run and hands each request its outputs. A
//! call alone on the server (the accepted-calls count says so) runs at once,
//! without the queue: at concurrency 1 nothing waits, not even a turn of
//! the scheduler, which costs a parked worker's wake-up.
//!
//! Only the gathering awaits; taking the queue, the run and the hand-out are
//! one synchronous step, so a cancelled collector (a client gone, a
//! deadline) can only be cancelled while gathering, and then hands the
//! collector's role to the next request in the queue ([`Collecting`]'s
//! `Drop`): no request is left waiting on a batch nobody runs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::Histogram;
use taskcast_contract::features::RowKeys;
use taskcast_contract::runtime::{OnnxModel, Output};
use tokio::sync::oneshot;

/// How requests are batched (`--batch-max-rows`, `--batch-max-delay-us`).
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Most rows one run may take; a request's rows are never split, so a
    /// single request larger than this runs alone. 0 or 1 turns batching off.
    pub max_rows: usize,
    /// How long a collector keeps gathering while requests keep arriving.
    /// It stops at the first yield in which none arrived, whatever this is.
    pub max_delay: Duration,
    /// Requests per run (`taskcast_inference_batch_requests`), when set.
    pub requests_per_run: Option<Histogram>,
    /// Calls the server has accepted and not yet answered (counted by
    /// `taskcast_serving::grpc::RawUnary::with_in_flight`). A lone call
    /// runs at once, without the queue; without a count every call takes
    /// the queue.
    pub in_flight: Option<Arc<AtomicUsize>>,
}

impl BatchConfig {
    /// No batching: every request runs its own rows (tests, the bench,
    /// the trainer-side callers of the model).
    pub fn off() -> Self {
        BatchConfig {
            max_rows: 0,
            max_delay: Duration::ZERO,
            requests_per_run: None,
            in_flight: None,
        }
    }

    /// Whether a call of `rows` rows joins a batch. One with half the room
    /// or more runs alone at once: no other call of its size could join it,
    /// and at that size the run's fixed cost is a small share of its own.
    fn batches(&self, rows: usize) -> bool {
        self.max_rows > 1 && rows * 2 <= self.max_rows
    }

    /// Whether a collector has anyone to wait for.
    fn others_in_flight(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_none_or(|n| n.load(Ordering::Relaxed) > 1)
    }
}

/// A model run's outcome as every request of a batch receives it (the
/// runtime's error is not `Clone`, so requests share its message).
pub type RunResult = Result<Vec<Output>, String>;

/// One queued request: its rows and where its outputs go.
struct Job {
    x: Vec<f32>,
    keys: Vec<RowKeys>,
    reply: oneshot::Sender<Reply>,
}

/// What a queued request is told.
enum Reply {
    /// Its rows ran: here are its outputs.
    Done(RunResult),
    /// The collector it queued behind was cancelled: it collects now, with
    /// its own rows handed back.
    Collect(Vec<f32>, Vec<RowKeys>),
}

#[derive(Default)]
struct State {
    /// A collector is gathering; new requests queue behind it.
    collecting: bool,
    queue: VecDeque<Job>,
}

/// One model's batching queue.
pub struct Batcher {
    config: BatchConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("max_rows", &self.config.max_rows)
            .field("max_delay", &self.config.max_delay)
            .finish_non_exhaustive()
    }
}

/// One request's rows in a run of their own.
fn run_alone(model: &OnnxModel, x: &[f32], keys: &[RowKeys]) -> RunResult {
    model.run(x, keys).map_err(|e| e.to_string())
}

impl Batcher {
    /// A queue batching by `config`.
    pub fn new(config: BatchConfig) -> Self {
        Batcher {
            config,
            state: Mutex::default(),
        }
    }

    /// Runs `x` (row-major, the model's width) with `keys`, in one run with
    /// whatever other requests arrive at the same time. The outputs are this
    /// request's rows', in order. A call that runs alone gets exactly what
    /// an unbatched run gives; in a batch, a graph whose kernels block a
    /// longer matrix differently (the `mlp`'s GEMMs) may differ in the last
    /// bits (at most 4.8e-7 measured; `tests/batching.rs` allows 1e-6).
    pub async fn run(&self, model: &OnnxModel, x: Vec<f32>, keys: Vec<RowKeys>) -> RunResult {
        if !self.config.batches(keys.len()) {
            return run_alone(model, &x, &keys);
        }
        if !self.config.others_in_flight() {
            // Alone on the server, so no collector exists to join: run at
            // once, without the queue's lock.
            self.observe(1);
            return run_alone(model, &x, &keys);
        }
        let queued = {
            let mut state = self.lock();
            if state.collecting {
                let (reply, rx) = oneshot::channel();
                state.queue.push_back(Job { x, keys, reply });
                Err(rx)
            } else {
                state.collecting = true;
                Ok((x, keys))
            }
        };
        let (x, keys) = match queued {
            Ok(own) => own,
            Err(rx) => match rx.await {
                Ok(Reply::Done(result)) => return result,
                Ok(Reply::Collect(x, keys)) => (x, keys),
                // The sender is only dropped unanswered by a collector that
                // panicked mid-run (a synchronous run cannot be cancelled).
                Err(_) => return Err("the request's batch was abandoned".into()),
            },
        };
        self.collect(model, x, keys).await
    }

    /// The collector's part: gather, take the queue, run, hand out.
    async fn collect(&self, model: &OnnxModel, x: Vec<f32>, keys: Vec<RowKeys>) -> RunResult {
        let mut guard = Collecting(Some(self));
        self.gather(keys.len()).await;
        // From here to the end nothing awaits, so nothing can cancel it.
        guard.0 = None;
        let batch = self.take(keys.len());
        self.observe(1 + batch.len());
        if batch.is_empty() {
            return run_alone(model, &x, &keys);
        }
        let rows = keys.len() + batch.iter().map(|j| j.keys.len()).sum::<usize>();
        let mut all_x = x;
        let mut all_keys = keys;
        let own = all_keys.len();
        all_x.reserve(all_x.len() / own.max(1) * (rows - own));
        all_keys.reserve(rows - own);
        for job in &batch {
            all_x.extend_from_slice(&job.x);
            all_keys.extend_from_slice(&job.keys);
        }
        match model.run(&all_x, &all_keys) {
            Ok(out) => {
                // Each output is moved once, into its request's vector.
                let mut out = out.into_iter();
                let mine = out.by_ref().take(own).collect();
                for job in batch {
                    let theirs = out.by_ref().take(job.keys.len()).collect();
                    // A request that went away has dropped its receiver.
                    let _ = job.reply.send(Reply::Done(Ok(theirs)));
                }
                Ok(mine)
            }
            Err(e) => {
                let message = e.to_string();
                for job in batch {
                    let _ = job.reply.send(Reply::Done(Err(message.clone())));
                }
                Err(message)
            }
        }
    }

    /// Yields while requests keep arriving, within the configured bounds.
    async fn gather(&self, own_rows: usize) {
        let start = Instant::now();
        let mut seen = 0;
        loop {
            tokio::task::yield_now().await;
            let (jobs, rows) = {
                let state = self.lock();
                let rows: usize = state.queue.iter().map(|j| j.keys.len()).sum();
                (state.queue.len(), own_rows + rows)
            };
            if jobs == seen
                || rows >= self.config.max_rows
                || start.elapsed() >= self.config.max_delay
            {
                return;
            }
            seen = jobs;
        }
    }

    /// Takes the queued requests that fit beside `own_rows`, oldest first.
    /// Requests left over get a collector of their own at once, so they run
    /// beside this batch on another session instead of after it.
    fn take(&self, own_rows: usize) -> Vec<Job> {
        let mut state = self.lock();
        let mut rows = own_rows;
        let mut batch = Vec::new();
        while let Some(job) = state.queue.front() {
            if job.reply.is_closed() {
                state.queue.pop_front();
                continue;
            }
            if rows + job.keys.len() > self.config.max_rows {
                break;
            }
            rows += job.keys.len();
            batch.extend(state.queue.pop_front());
        }
        hand_over(&mut state);
        batch
    }

    /// Counts one model run answering `calls` calls.
    fn observe(&self, calls: usize) {
        if let Some(h) = &self.config.requests_per_run {
            h.observe(calls as f64);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a queue and a flag, consistent after every step that
        // holds the lock; a panic elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Ends a collector's turn: the oldest live queued request becomes the next
/// collector, or, with none, the next request to arrive does.
fn hand_over(state: &mut State) {
    while let Some(job) = state.queue.pop_front() {
        if job.reply.send(Reply::Collect(job.x, job.keys)).is_ok() {
            return; // `collecting` stays set: the role moved
        }
    }
    state.collecting = false;
}

/// Held by a collector while it gathers: dropped there (the request was
/// cancelled), it passes the role on so queued requests are not stranded.
/// Disarmed (`None`) once the gathering is over and `take` ends the turn.
struct Collecting<'a>(Option<&'a Batcher>);

impl Drop for Collecting<'_> {
    fn drop(&mut self) {
        if let Some(batcher) = self.0 {
            hand_over(&mut batcher.lock());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::OnceLock;
    use std::task::{Context, Poll, Waker};

    use taskcast_contract::runtime;

    use super::*;

    fn model() -> &'static OnnxModel {
        static MODEL: OnceLock<OnnxModel> = OnceLock::new();
        MODEL.get_or_init(|| {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/bootstrap.onnx");
            runtime::init(&runtime::library_path(None)).expect("ONNX Runtime");
            OnnxModel::load(&std::fs::read(path).expect("bootstrap"), 1).expect("load")
        })
    }

    /// `n` rows whose features differ, so a mixed-up hand-out shows.
    fn rows(n: usize, seed: usize) -> (Vec<f32>, Vec<RowKeys>) {
        let width = model().width();
        let x = (0..n * width)
            .map(|k| ((k * 7 + seed * 13) % 23) as f32 / 23.0)
            .collect();
        let keys = (0..n)
            .map(|k| RowKeys {
                user: (seed * 31 + k) as u64,
                topic: k as u64 % 3,
                difficulty: 0,
                item: 0,
            })
            .collect();
        (x, keys)
    }

    fn batcher(max_rows: usize) -> Batcher {
        Batcher::new(BatchConfig {
            max_rows,
            max_delay: Duration::from_millis(50),
            requests_per_run: None,
            in_flight: None,
        })
    }

    fn poll<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    /// A collector's queue is answered in one run, each request its own rows.
    #[tokio::test]
    async fn queued_requests_get_their_own_rows() {
        let b = batcher(64);
        let (xa, ka) = rows(3, 1);
        let (xb, kb) = rows(5, 2);
        let alone_a = model().run(&xa, &ka).unwrap();
        let alone_b = model().run(&xb, &kb).unwrap();
        let mut a = pin!(b.run(model(), xa, ka));
        assert!(poll(a.as_mut()).is_pending(), "the collector yields once");
        let mut q = pin!(b.run(model(), xb, kb));
        assert!(poll(q.as_mut()).is_pending(), "queued behind the collector");
        assert!(
            poll(a.as_mut()).is_pending(),
            "a request arrived during the yield: it gathers once more"
        );
        let Poll::Ready(out_a) = poll(a.as_mut()) else {
            panic!("none arrived during the second yield: the collector runs");
        };
        let Poll::Ready(out_b) = poll(q.as_mut()) else {
            panic!("its rows ran in the collector's batch");
        };
        assert_eq!(out_a.unwrap().len(), alone_a.len());
        let out_b = out_b.unwrap();
        assert_eq!(out_b.len(), alone_b.len());
        for (got, want) in out_b.iter().zip(&alone_b) {
            assert!((got.p_correct - want.p_correct).abs() <= 1e-6);
        }
    }

    /// A collector cancelled while gathering hands its role on: the request
    /// queued behind it still gets an answer, and the next caller starts
    /// afresh rather than queueing behind nobody.
    #[tokio::test]
    async fn a_cancelled_collector_does_not_strand_the_queue() {
        let b = batcher(64);
        let (xb, kb) = rows(2, 2);
        let want = model().run(&xb, &kb).unwrap();
        {
            let (xa, ka) = rows(1, 1);
            let mut a = Box::pin(b.run(model(), xa, ka));
            assert!(poll(a.as_mut()).is_pending());
            let mut q = Box::pin(b.run(model(), xb, kb));
            assert!(poll(q.as_mut()).is_pending());
            drop(a);
            let got = loop {
                if let Poll::Ready(r) = poll(q.as_mut()) {
                    break r.unwrap();
                }
            };
            assert_eq!(got, want, "the new collector ran its own rows alone");
        }
        let (xc, kc) = rows(1, 3);
        let mut c = pin!(b.run(model(), xc, kc));
        assert!(poll(c.as_mut()).is_pending(), "collects: nobody else is");
        assert!(poll(c.as_mut()).is_ready());
    }

    /// No run takes more rows than `max_rows`: what does not fit is handed
    /// to a collector of its own; and a call of half a batch or more runs
    /// alone at once.
    #[tokio::test]
    async fn a_batch_stops_at_max_rows() {
        let b = batcher(10);
        let (xa, ka) = rows(4, 1);
        let (xb, kb) = rows(4, 2);
        let (xc, kc) = rows(4, 3);
        let mut a = pin!(b.run(model(), xa, ka));
        assert!(poll(a.as_mut()).is_pending());
        let mut q = pin!(b.run(model(), xb, kb));
        assert!(poll(q.as_mut()).is_pending());
        let mut r = pin!(b.run(model(), xc, kc));
        assert!(poll(r.as_mut()).is_pending());
        assert!(
            poll(a.as_mut()).is_ready(),
            "12 rows queued: gathering ends"
        );
        assert!(poll(q.as_mut()).is_ready(), "4 + 4 rows fit: it ran with a");
        assert!(poll(r.as_mut()).is_pending(), "left over: it collects now");
        let Poll::Ready(out) = poll(r.as_mut()) else {
            panic!("it ran its own batch");
        };
        assert_eq!(out.unwrap().len(), 4);

        let (xd, kd) = rows(6, 4);
        let mut d = pin!(b.run(model(), xd, kd));
        assert!(
            poll(d.as_mut()).is_ready(),
            "6 of 10 rows: runs alone, no yield"
        );
    }
}

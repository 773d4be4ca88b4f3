//! Retries of safe calls: a call that changes nothing (Predict, Recommend,
//! GetModel, health, the trainer's reads) and ends `UNAVAILABLE` — a replica
//! stopping, a connection the server closed at its maximum age, a trainer
//! restarting — is tried again after a growing, randomised pause, within the
//! call's one deadline and a budget shared by all calls of the client. Train,
//! Promote and Rollback are never retried: one that reached the trainer
//! before the connection broke would run twice. The same policy as the
//! Python client's `grpc.service_config` (examples/python/client.py).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use tonic::{Code, Status};

/// How often and how far apart a safe call is tried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Upper bound of the pause before the first retry.
    pub initial_backoff: Duration,
    /// Upper bound of any pause.
    pub max_backoff: Duration,
}

/// gRPC's usual values, as the Python client's service config has them.
pub const DEFAULT_POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    initial_backoff: Duration::from_millis(100),
    max_backoff: Duration::from_secs(1),
};

impl RetryPolicy {
    /// The pause before retry `n` (1 for the first): uniform in
    /// [0, min(initial x 2^(n-1), max)], so clients that failed together do
    /// not come back together.
    pub fn backoff(&self, n: u32) -> Duration {
        let cap = self
            .initial_backoff
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(16))
            .min(self.max_backoff);
        let mut h = RandomState::new().build_hasher();
        h.write_u32(n);
        cap.mul_f64((h.finish() % 10_000) as f64 / 10_000.0)
    }
}

/// The retry budget (gRPC's retry throttling): each failed attempt costs a
/// token, each success earns back `ratio`, and no retry is made while half
/// of `max` or less is left. A server that is down therefore gets about one
/// attempt per call, not `max_attempts`.
#[derive(Debug)]
pub struct Budget {
    tokens: Mutex<f64>,
    max: f64,
    ratio: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(10.0, 0.1)
    }
}

impl Budget {
    /// A full budget of `max` tokens, earning `ratio` per success.
    pub fn new(max: f64, ratio: f64) -> Self {
        Budget {
            tokens: Mutex::new(max),
            max,
            ratio,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut f64) -> T) -> T {
        // A panic elsewhere while holding the lock leaves a number that is
        // still a number: keep using it.
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut t)
    }

    /// A call succeeded.
    pub fn success(&self) {
        let (max, ratio) = (self.max, self.ratio);
        self.with(|t| *t = (*t + ratio).min(max));
    }

    /// An attempt failed with a retryable code; whether a retry may follow.
    pub fn failure(&self) -> bool {
        let max = self.max;
        self.with(|t| {
            *t = (*t - 1.0).max(0.0);
            *t > max / 2.0
        })
    }
}

/// Whether `status` means the call was not served and may be sent again:
/// `UNAVAILABLE`, or the connection closing under a call that got no answer
/// at all (tonic reports that as `UNKNOWN` "transport error", with the
/// transport's error as source; a server's own `UNKNOWN` has none).
pub fn retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown => {
            status.message() == "transport error" && std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}

/// Runs `attempt` until it succeeds, fails for good, or (for a `safe` call
/// only) the policy, the budget or `time_left` says stop. `time_left` is what
/// remains of the call's deadline: a pause that would outlast it is not taken.
pub async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    budget: &Budget,
    safe: bool,
    time_left: impl Fn() -> Duration,
    mut attempt: F,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Ok(v) => {
                budget.success();
                return Ok(v);
            }
            Err(s) if safe && retryable(&s) && n < policy.max_attempts && budget.failure() => {
                let pause = policy.backoff(n);
                if pause >= time_left() {
                    return Err(s);
                }
                tokio::time::sleep(pause).await;
                n += 1;
            }
            Err(s) => return Err(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::rpcs::rpc;

    const FAST: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(5),
    };

    /// Runs a call whose first `fail` attempts end with `code`; the attempts made and the result.
    async fn call(
        safe: bool,
        fail: u32,
        code: Code,
        budget: &Budget,
    ) -> (u32, Result<u32, Status>) {
        let tried = Cell::new(0);
        let out = run(
            &FAST,
            budget,
            safe,
            || Duration::from_secs(10),
            || {
                tried.set(tried.get() + 1);
                let k = tried.get();
                async move {
                    if k <= fail {
                        Err(Status::new(code, "going away"))
                    } else {
                        Ok(k)
                    }
                }
            },
        )
        .await;
        (tried.get(), out)
    }

    #[tokio::test]
    async fn safe_calls_are_retried_on_unavailable_up_to_the_policy() {
        let budget = Budget::default();
        let (n, out) = call(true, 2, Code::Unavailable, &budget).await;
        assert_eq!((n, out.unwrap()), (3, 3));
        let (n, out) = call(true, 10, Code::Unavailable, &Budget::default()).await;
        assert_eq!(n, FAST.max_attempts);
        assert_eq!(out.unwrap_err().code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn unsafe_calls_and_other_codes_are_tried_once() {
        for (safe, code) in [
            (false, Code::Unavailable),
            (true, Code::Internal),
            (true, Code::InvalidArgument),
            (true, Code::DeadlineExceeded),
        ] {
            let (n, out) = call(safe, 1, code, &Budget::default()).await;
            assert_eq!(n, 1, "{safe} {code:?}");
            assert_eq!(out.unwrap_err().code(), code);
        }
        // A server's own UNKNOWN (no transport error under it) is not retried.
        let (n, _) = call(true, 1, Code::Unknown, &Budget::default()).await;
        assert_eq!(n, 1);
    }

    #[test]
    fn train_promote_rollback_are_not_safe_and_the_reads_are() {
        for r in [rpc::TRAIN, rpc::PROMOTE, rpc::ROLLBACK] {
            assert!(!r.safe, "{}", r.name);
        }
        for r in [
            rpc::PREDICT,
            rpc::RECOMMEND,
            rpc::GET_MODEL,
            rpc::HEALTH,
            rpc::LIST_MODELS,
            rpc::GET_TRAINING_RUN,
            rpc::WATCH_TRAINING_RUN,
            rpc::MODEL_REPORT,
            rpc::WATCH_MODELS,
        ] {
            assert!(r.safe, "{}", r.name);
        }
    }

    #[tokio::test]
    async fn the_budget_stops_retries_against_a_server_that_is_down() {
        let budget = Budget::default();
        let mut attempts = 0;
        for _ in 0..20 {
            let (n, out) = call(true, 100, Code::Unavailable, &budget).await;
            assert!(out.is_err());
            attempts += n;
        }
        // Unthrottled: 80. The first calls retry until half the tokens are
        // gone, then each call is one attempt.
        assert!((20..=26).contains(&attempts), "{attempts}");
        // Successes earn the budget back (0.1 each, up to the full 10).
        for _ in 0..100 {
            budget.success();
        }
        assert_eq!(call(true, 1, Code::Unavailable, &budget).await.0, 2);
    }

    #[tokio::test]
    async fn no_pause_outlasts_the_deadline() {
        let tried = Cell::new(0);
        let out: Result<(), Status> = run(
            &DEFAULT_POLICY,
            &Budget::default(),
            true,
            || Duration::ZERO,
            || {
                tried.set(tried.get() + 1);
                async { Err(Status::unavailable("down")) }
            },
        )
        .await;
        assert_eq!(tried.get(), 1);
        assert_eq!(out.unwrap_err().code(), Code::Unavailable);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for n in 1..10 {
            let cap = Duration::from_millis(100 * (1u64 << (n - 1))).min(Duration::from_secs(1));
            assert!(DEFAULT_POLICY.backoff(n) <= cap, "{n}");
        }
    }
}

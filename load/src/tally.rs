//! What the workers observed: latency histograms (HDR, so percentiles come
//! without keeping every sample) and outcomes counted by gRPC status code.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use tonic::Code;

/// How one call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer with one prediction per candidate.
    Ok,
    /// A gRPC status other than OK, or an answer of the wrong size
    /// (`BAD_RESPONSE`), by name.
    Error(&'static str),
}

/// Observations of one worker or of the whole run.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Latency of successful calls in nanoseconds: from the intended send
    /// time in open loop, from the actual send in closed loop.
    pub latency: Histogram<u64>,
    /// Time from the actual send to the answer, in nanoseconds (equal to
    /// `latency` in closed loop; the gap is client-side queueing in open loop).
    pub service: Histogram<u64>,
    /// Successful calls.
    pub ok: u64,
    /// Failed calls by status code name.
    pub errors: BTreeMap<&'static str, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            latency: new_histogram(),
            service: new_histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

/// Auto-resizing, three significant digits: memory grows only with the
/// largest value actually seen, so hundreds of workers stay cheap.
fn new_histogram() -> Histogram<u64> {
    // `new` fails only for a precision outside 0..=5; 3 is a constant.
    Histogram::new(3).expect("3 significant figures is a valid HDR precision")
}

/// Records with auto-resize (`saturating_record` would clamp to the current
/// range instead of growing it); clamps only if growing is impossible.
fn record(h: &mut Histogram<u64>, v: u64) {
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

impl Tally {
    /// Counts one call.
    pub fn record(&mut self, outcome: Outcome, latency: Duration, service: Duration) {
        match outcome {
            Outcome::Ok => {
                self.ok += 1;
                record(&mut self.latency, nanos(latency));
                record(&mut self.service, nanos(service));
            }
            Outcome::Error(code) => *self.errors.entry(code).or_default() += 1,
        }
    }

    /// Adds another tally's observations.
    pub fn merge(&mut self, other: &Tally) {
        // Both auto-resize, so `add` cannot run out of range; should it ever
        // fail the samples are lost from percentiles but still counted.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        self.ok += other.ok;
        for (code, n) in &other.errors {
            *self.errors.entry(code).or_default() += n;
        }
    }

    /// Failed calls of every code.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The canonical upper-case name of a gRPC status code, as in the gRPC spec.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_samples() {
        let mut a = Tally::default();
        a.record(
            Outcome::Ok,
            Duration::from_micros(100),
            Duration::from_micros(90),
        );
        a.record(
            Outcome::Error("UNAVAILABLE"),
            Duration::ZERO,
            Duration::ZERO,
        );
        let mut b = Tally::default();
        b.record(
            Outcome::Ok,
            Duration::from_millis(3),
            Duration::from_millis(3),
        );
        b.record(
            Outcome::Error("UNAVAILABLE"),
            Duration::ZERO,
            Duration::ZERO,
        );
        b.record(Outcome::Error("INTERNAL"), Duration::ZERO, Duration::ZERO);
        a.merge(&b);
        assert_eq!(a.ok, 2);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.errors.get("UNAVAILABLE"), Some(&2));
        assert_eq!(a.errors.get("INTERNAL"), Some(&1));
        assert_eq!(a.error_count(), 3);
        assert!(a.latency.max() >= 2_990_000, "{}", a.latency.max());
        assert!(a.service.min() <= 90_100);
        // Percentiles come from real values, not values clamped to the
        // histogram's initial range.
        assert!(
            a.latency.value_at_quantile(0.5) >= 99_000,
            "{}",
            a.latency.value_at_quantile(0.5)
        );
    }

    #[test]
    fn code_names_follow_the_spec() {
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
    }
}

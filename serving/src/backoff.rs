//! Growing pauses between retries: the first pause, then twice the last,
//! up to a cap; back to the first after a success.

use std::time::Duration;

/// Exponential backoff, optionally with "equal jitter".
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
    jitter: bool,
}

impl Backoff {
    /// Pauses of exactly `first`, `2 × first`, … up to `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap,
            next: first,
            jitter: false,
        }
    }

    /// Half of each pause fixed, half random, so many clients retrying the
    /// same server spread out instead of arriving together, yet never retry
    /// at once.
    pub fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// The pause before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.cap);
        if self.jitter {
            let half = d / 2;
            half + half.mul_f64(rand::random::<f64>())
        } else {
            d
        }
    }

    /// Back to the first pause (after an attempt that worked).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(10);

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(160));
        let pauses: Vec<u64> = (0..8).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 160, 160]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(5));
    }

    #[test]
    fn jitter_keeps_half_of_each_pause() {
        let mut b = Backoff::new(START, CAP).with_jitter();
        let d0 = b.next_delay();
        assert!(d0 >= START / 2 && d0 <= START);
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= CAP && d >= Duration::from_millis(50));
        }
        assert!(b.next_delay() >= CAP / 2);
        b.reset();
        assert!(b.next_delay() <= START);
    }
}

//! How raw values become the numbers everything else is built on: a label's
//! 64-bit key and an attempt's capped log-time. Below both the priors and the
//! feature code, which use them (the feature code re-exports them as part of
//! its vocabulary).

/// Times above one hour are taken as one hour: an 8-hour "response time" is a
/// learner who walked away, not a slow solver.
pub const LOG_TIME_CAP: f64 = 8.188_689_124_444_2; // ln(3600)

/// Stable 64-bit key of a label (FNV-1a); the empty label is 0, meaning "none".
pub fn label_key(label: &str) -> u64 {
    if label.is_empty() {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // 0 is reserved for "none"; a label hashing there moves to 1.
    h.max(1)
}

/// Log-seconds of an attempt as the features and priors use it:
/// `ln(min(max(seconds, 1), 3600))`; `None` when no positive, finite time was recorded.
pub fn log_time(seconds: Option<f64>) -> Option<f64> {
    match seconds {
        Some(s) if s.is_finite() && s > 0.0 => Some(s.max(1.0).ln().min(LOG_TIME_CAP)),
        _ => None,
    }
}

/// A point in time as the feature code's Unix seconds, from whole seconds
/// and nanoseconds: the one conversion training (from stored milliseconds,
/// [`unix_seconds_ms`]) and serving (from a protobuf `Timestamp`) share, so
/// the same instant gives the same bits on both sides.
pub fn unix_seconds(seconds: i64, nanos: u32) -> f64 {
    seconds as f64 + f64::from(nanos) / 1e9
}

/// [`unix_seconds`] of Unix milliseconds.
pub fn unix_seconds_ms(ms: i64) -> f64 {
    unix_seconds(
        ms.div_euclid(1000),
        (ms.rem_euclid(1000) as u32) * 1_000_000,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_key_is_stable_and_reserves_zero() {
        assert_eq!(label_key(""), 0);
        // FNV-1a 64 of "a", a published test vector.
        assert_eq!(label_key("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(label_key("fractions"), label_key("Fractions"));
    }

    #[test]
    fn milliseconds_and_timestamps_agree() {
        for ms in [0i64, 1, 999, 1_565_096_190_868, -1, -1001] {
            let (s, n) = (
                ms.div_euclid(1000),
                (ms.rem_euclid(1000) * 1_000_000) as u32,
            );
            assert_eq!(unix_seconds_ms(ms).to_bits(), unix_seconds(s, n).to_bits());
        }
        assert!((unix_seconds_ms(-1) + 0.001).abs() < 1e-12);
    }

    #[test]
    fn log_time_rules() {
        assert_eq!(log_time(None), None);
        assert_eq!(log_time(Some(0.0)), None);
        assert_eq!(log_time(Some(-3.0)), None);
        assert_eq!(log_time(Some(f64::NAN)), None);
        assert_eq!(log_time(Some(0.5)), Some(0.0));
        assert!((log_time(Some(20.0)).unwrap() - 20f64.ln()).abs() < 1e-12);
        assert_eq!(log_time(Some(28_814.0)), Some(LOG_TIME_CAP));
        assert!((LOG_TIME_CAP - 3600f64.ln()).abs() < 1e-12);
    }
}

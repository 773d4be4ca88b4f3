//! Which learners a canary's candidate answers. Every replica, whatever
//! its build, must put a learner in the same arm, and a learner must stay
//! in one arm for the whole canary (a learner who flips between versions
//! mixes both versions' errors into each arm's outcomes), so the split is a
//! keyed hash of the user id with a fixed definition — SHA-256, not
//! `std`'s hasher, whose output may change between Rust releases — keyed
//! by the rollout id so each canary draws a fresh share of learners.

use sha2::{Digest, Sha256};

/// Buckets a learner falls into; a percent is this many / 100 buckets.
pub const BUCKETS: u64 = 10_000;

/// Highest canary share, in percent (100 would be a promotion).
pub const MAX_PERCENT: u32 = 99;

/// Why `percent` cannot be a canary's share (the text names the API
/// field), or `None` when it can: 1..=[`MAX_PERCENT`].
pub fn percent_problem(percent: u32) -> Option<String> {
    (!(1..=MAX_PERCENT).contains(&percent))
        .then(|| format!("canary_percent: {percent} is not 1-{MAX_PERCENT} (0 promotes fully)"))
}

/// A canary's split of learners: `percent` of them go to the candidate.
#[derive(Clone)]
pub struct CanarySplit {
    /// The hash state after the rollout id, cloned per learner.
    keyed: Sha256,
    /// Buckets below this go to the candidate.
    threshold: u64,
}

impl std::fmt::Debug for CanarySplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanarySplit")
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl CanarySplit {
    /// The split of rollout `rollout_id` giving `percent` (clamped to
    /// 0..=[`MAX_PERCENT`]) of learners to the candidate.
    pub fn new(rollout_id: &str, percent: u32) -> Self {
        let mut keyed = Sha256::new();
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        keyed.update((rollout_id.len() as u64).to_le_bytes());
        keyed.update(rollout_id.as_bytes());
        CanarySplit {
            keyed,
            threshold: u64::from(percent.min(MAX_PERCENT)) * (BUCKETS / 100),
        }
    }

    /// The learner's bucket, in `0..BUCKETS`.
    pub fn bucket(&self, user_id: &str) -> u64 {
        let mut h = self.keyed.clone();
        h.update(user_id.as_bytes());
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) % BUCKETS
    }

    /// Whether the candidate answers `user_id`.
    pub fn to_candidate(&self, user_id: &str) -> bool {
        self.bucket(user_id) < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_the_percent_and_a_learner_keeps_an_arm() {
        let split = CanarySplit::new("rollout-1", 20);
        let n = 20_000;
        let to_candidate = (0..n)
            .filter(|i| split.to_candidate(&format!("learner-{i}")))
            .count();
        let share = to_candidate as f64 / n as f64;
        assert!((share - 0.20).abs() < 0.01, "share {share}");
        let again = CanarySplit::new("rollout-1", 20);
        assert!((0..1000).all(|i| {
            let u = format!("learner-{i}");
            split.to_candidate(&u) == again.to_candidate(&u)
        }));
    }

    #[test]
    fn each_rollout_draws_its_own_learners() {
        let a = CanarySplit::new("rollout-a", 50);
        let b = CanarySplit::new("rollout-b", 50);
        let same = (0..2000)
            .filter(|i| {
                let u = format!("u{i}");
                a.to_candidate(&u) == b.to_candidate(&u)
            })
            .count();
        // Independent halves agree about half the time.
        assert!((800..1200).contains(&same), "{same}");
    }

    #[test]
    fn the_definition_is_fixed() {
        // Replicas of different builds must agree: pin one bucket.
        let split = CanarySplit::new("r", 1);
        let pinned = split.bucket("u");
        let mut h = Sha256::new();
        h.update(1u64.to_le_bytes());
        h.update(b"r");
        h.update(b"u");
        let d = h.finalize();
        let want = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) % BUCKETS;
        assert_eq!(pinned, want);
        assert!(!CanarySplit::new("r", 0).to_candidate("u"));
        assert_eq!(CanarySplit::new("r", 500).threshold, 9_900);
    }
}

//! Hash maps keyed by [`label_key`](crate::encode::label_key) values.
//!
//! The keys are already 64-bit FNV-1a hashes, so the standard library's
//! SipHash spends ~20 ns per lookup re-hashing a hash; a request resolves
//! every history attempt and candidate against the priors (several lookups
//! each), which made hashing the largest single cost of feature computation.
//! [`KeyHasher`] only finalises the key with a SplitMix64 mix, so that the
//! bits `hashbrown` uses for buckets and control bytes both depend on the
//! whole key.
//!
//! Flooding: the maps are built from a model's artifact (training data), and
//! requests only look keys up, never insert, so crafted labels can at worst
//! miss; they cannot lengthen the probe sequences of other keys.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for `u64` label keys (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    /// Only reached for keys that are not a single `u64`; FNV-1a keeps such
    /// use correct, if slower.
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = mix(h);
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = mix(self.0 ^ key);
    }
}

/// SplitMix64's finaliser.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A `HashMap` from label keys to `V` with [`KeyHasher`].
pub type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::label_key;

    #[test]
    fn behaves_as_a_map() {
        let mut m: KeyMap<usize> = KeyMap::default();
        for i in 0..10_000 {
            m.insert(label_key(&format!("item-{i}")), i);
        }
        assert_eq!(m.len(), 10_000);
        for i in 0..10_000 {
            assert_eq!(m.get(&label_key(&format!("item-{i}"))), Some(&i));
        }
        assert_eq!(m.get(&label_key("absent")), None);
    }

    #[test]
    fn nearby_keys_spread() {
        // Consecutive keys must not share low bits (bucket index) or high bits
        // (hashbrown's control byte) wholesale.
        let hash = |k: u64| {
            let mut h = KeyHasher::default();
            h.write_u64(k);
            h.finish()
        };
        let low: std::collections::HashSet<u64> = (0..1024).map(|k| hash(k) & 1023).collect();
        let high: std::collections::HashSet<u64> = (0..1024).map(|k| hash(k) >> 57).collect();
        assert!(low.len() > 600, "{}", low.len());
        assert_eq!(high.len(), 128);
    }
}

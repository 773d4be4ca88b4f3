//! Pseudonyms for learner ids in what the trainer shows to callers who are
//! not `admin` (ModelReport's stuck learners).
//!
//! A pseudonym is `anon-` and the first 8 bytes of HMAC-SHA256(key, user id)
//! in hex: the same learner gets the same pseudonym in every report while the
//! key lasts, so a dashboard can follow "this learner is still stuck", but
//! without the key nobody can test a guessed id against it (a plain hash of
//! an id like `student-1042` is reversed by trying every number).
//! The key comes from a file (a Secret, so replicas of the trainer agree and
//! pseudonyms survive restarts) or, without one, is drawn at start.

use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Bytes of the HMAC kept: 64 bits keep accidental collisions out of any
/// realistic learner count while staying short enough to read.
const KEPT_BYTES: usize = 8;
/// Prefix that marks an id as a pseudonym.
pub const PREFIX: &str = "anon-";
/// Fewer key bytes than this would make the key guessable.
const MIN_KEY_BYTES: usize = 16;

/// Why the pseudonym key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PseudonymKeyError {
    /// The key file could not be read.
    #[error("reading the pseudonym key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key is too short to be secret.
    #[error("the pseudonym key in {path} has {len} bytes; at least {MIN_KEY_BYTES} are needed")]
    TooShort {
        /// The file.
        path: String,
        /// Its length after trimming.
        len: usize,
    },
    /// `--require-pseudonym-key` without a key file.
    #[error(
        "--require-pseudonym-key is set but no --pseudonym-key-file was given: \
         pseudonyms would change on every restart and differ between trainers"
    )]
    Required,
}

/// Turns learner ids into keyed pseudonyms. `Debug` never shows the key.
#[derive(Clone)]
pub struct Pseudonymiser {
    key: Vec<u8>,
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser(<key redacted>)")
    }
}

impl Pseudonymiser {
    /// A key drawn now: pseudonyms are stable until the process restarts.
    pub fn random() -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Pseudonymiser { key }
    }

    /// The key in `path` (surrounding whitespace trimmed).
    pub fn from_file(path: &Path) -> Result<Self, PseudonymKeyError> {
        let bytes = std::fs::read(path).map_err(|source| PseudonymKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let key = bytes.trim_ascii();
        if key.len() < MIN_KEY_BYTES {
            return Err(PseudonymKeyError::TooShort {
                path: path.display().to_string(),
                len: key.len(),
            });
        }
        Ok(Pseudonymiser { key: key.to_vec() })
    }

    /// The pseudonym of `user_id`.
    pub fn pseudonym(&self, user_id: &str) -> String {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(user_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("{PREFIX}{}", hex::encode(&digest[..KEPT_BYTES]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_per_key_distinct_per_id_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let a = Pseudonymiser::from_file(&path).unwrap();
        let b = Pseudonymiser::from_file(&path).unwrap();
        let p = a.pseudonym("student-1042");
        assert_eq!(p, b.pseudonym("student-1042"));
        assert!(p.starts_with(PREFIX) && p.len() == PREFIX.len() + 2 * KEPT_BYTES);
        assert!(!p.contains("1042"));
        assert_ne!(p, a.pseudonym("student-1043"));
        assert_ne!(p, Pseudonymiser::random().pseudonym("student-1042"));
        assert_eq!(format!("{a:?}"), "Pseudonymiser(<key redacted>)");
    }

    #[test]
    fn short_or_missing_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "short\n").unwrap();
        let e = Pseudonymiser::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("5 bytes"), "{e}");
        assert!(Pseudonymiser::from_file(&dir.path().join("none")).is_err());
    }
}

//! What the Predict path reads from an attempt or a candidate, whichever
//! form it arrives in: the generated messages (in-process callers, tests)
//! or views borrowed from the request's bytes ([`crate::wire`]). The
//! feature code is written once against these traits, and neither
//! [`crate::predict`] nor the generated types need to know about the wire.

use taskcast_proto::{Attempt, Candidate};

/// `Attempt` and its in-place view alike, for the Predict path.
pub trait AttemptFields {
    /// Topic label.
    fn topic(&self) -> &str;
    /// Difficulty label.
    fn difficulty(&self) -> &str;
    /// Exercise id.
    fn item_id(&self) -> &str;
    /// Right first time.
    fn correct(&self) -> bool;
    /// Seconds taken (0: not recorded).
    fn seconds(&self) -> f64;
}

/// `Candidate` and its in-place view alike, for the Predict path.
pub trait CandidateFields {
    /// Echoed back.
    fn task_id(&self) -> &str;
    /// Topic label.
    fn topic(&self) -> &str;
    /// Difficulty label.
    fn difficulty(&self) -> &str;
    /// Exercise id.
    fn item_id(&self) -> &str;
}

impl AttemptFields for Attempt {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn difficulty(&self) -> &str {
        &self.difficulty
    }
    fn item_id(&self) -> &str {
        &self.item_id
    }
    fn correct(&self) -> bool {
        self.correct
    }
    fn seconds(&self) -> f64 {
        self.seconds
    }
}

impl CandidateFields for Candidate {
    fn task_id(&self) -> &str {
        &self.task_id
    }
    fn topic(&self) -> &str {
        &self.topic
    }
    fn difficulty(&self) -> &str {
        &self.difficulty
    }
    fn item_id(&self) -> &str {
        &self.item_id
    }
}

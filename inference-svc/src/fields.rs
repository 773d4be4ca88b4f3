//! What the Predict path reads from an attempt or a candidate, whichever
//! form it arrives in: the generated messages (in-process callers, tests)
//! or views borrowed from the request's bytes ([`crate::wire`]). The
//! feature code is written once against these traits, and neither
//! [`crate::predict`] nor the generated types need to know about the wire.

use taskcast_proto::{Attempt, Candidate};

/// A `google.protobuf.Timestamp` as it arrived, unchecked: seconds and
/// nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Whole seconds.
    pub seconds: i64,
    /// Nanoseconds; valid in `0..1_000_000_000`.
    pub nanos: i32,
}

impl Stamp {
    /// The range protobuf's `Timestamp` allows: years 1 to 9999.
    const SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

    /// Unix seconds, when the timestamp is one protobuf allows.
    pub fn unix_seconds(self) -> Option<f64> {
        let valid =
            Self::SECONDS.contains(&self.seconds) && (0..1_000_000_000).contains(&self.nanos);
        // `nanos` was just checked to be in 0..1e9.
        valid.then(|| taskcast_contract::features::unix_seconds(self.seconds, self.nanos as u32))
    }
}

impl From<&prost_types::Timestamp> for Stamp {
    fn from(t: &prost_types::Timestamp) -> Self {
        Stamp {
            seconds: t.seconds,
            nanos: t.nanos,
        }
    }
}

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
    /// When it was completed, if the client said.
    fn completed_at(&self) -> Option<Stamp>;
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
    fn completed_at(&self) -> Option<Stamp> {
        self.completed_at.as_ref().map(Stamp::from)
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

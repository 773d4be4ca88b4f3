//! `PredictRequest` and `RecommendRequest` read in place, in bounded memory.
//!
//! Both messages number their shared fields alike (1 `user_id`, 2 `history`,
//! 3 `candidates`, 4 `explain`; Recommend adds 5–7), so one reader serves
//! both. It reads in two passes over the bytes:
//!
//! 1. the top-level fields: the scalars are read, every `history` and
//!    `candidates` entry is stepped over and counted — nothing is allocated,
//!    and the pass stops at the first entry over a limit;
//! 2. the request's shape is checked (the Recommend parameters, `user_id`,
//!    the counts) with the same messages and in the same order as
//!    [`crate::predict`] and [`crate::recommend`] check a decoded request;
//!    only then are the two vectors allocated, at their final size, and
//!    the entries read into them.
//!
//! So a request of empty `history` entries costs at most `max_history`
//! entries of memory and of reading however many it carries: the 4 MB of
//! 2-byte entries that used to allocate 2 million `AttemptRef`s (128 MB)
//! before being refused is refused after 1001 entries with nothing
//! allocated. A request both malformed and over a limit may be refused for
//! the limit where prost would have refused its bytes.

#[cfg(test)]
use taskcast_proto::{PredictRequest, RecommendRequest};

use super::reader::{FIXED64, LEN, RECURSION_LIMIT, Reader, VARINT};
use super::{DecodeError, WireError};
use crate::fields::{AttemptFields, CandidateFields, Stamp};
use crate::predict::{
    Limits, MAX_CANDIDATES, PredictError, PredictInput, check_shape, too_many_candidates,
    too_many_history,
};
use crate::recommend::{RecommendParams, validate_params};

type Result<T> = std::result::Result<T, WireError>;

/// One history attempt, its strings borrowed from the request.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttemptRef<'a> {
    /// `Attempt.topic`.
    pub topic: &'a str,
    /// `Attempt.difficulty`.
    pub difficulty: &'a str,
    /// `Attempt.correct`.
    pub correct: bool,
    /// `Attempt.seconds`.
    pub seconds: f64,
    /// `Attempt.item_id`.
    pub item_id: &'a str,
    /// `Attempt.completed_at`.
    pub completed_at: Option<Stamp>,
}

/// One candidate, its strings borrowed from the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CandidateRef<'a> {
    /// `Candidate.task_id`.
    pub task_id: &'a str,
    /// `Candidate.topic`.
    pub topic: &'a str,
    /// `Candidate.difficulty`.
    pub difficulty: &'a str,
    /// `Candidate.item_id`.
    pub item_id: &'a str,
}

/// A `PredictRequest` read in place.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PredictRequestRef<'a> {
    /// `PredictRequest.user_id`.
    pub user_id: &'a str,
    /// `PredictRequest.history`.
    pub history: Vec<AttemptRef<'a>>,
    /// `PredictRequest.candidates`.
    pub candidates: Vec<CandidateRef<'a>>,
    /// `PredictRequest.explain`.
    pub explain: bool,
    /// `PredictRequest.as_of`.
    pub as_of: Option<Stamp>,
}

/// A `RecommendRequest` read in place: Predict's fields and the ranking's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecommendRequestRef<'a> {
    /// The fields Recommend shares with Predict (numbered alike).
    pub request: PredictRequestRef<'a>,
    /// `target_p_correct`, `time_budget_seconds`, `limit`.
    pub params: RecommendParams,
}

/// Pass 1's result: the top-level scalars and the entry counts.
#[derive(Debug, Default)]
pub(super) struct Top<'a> {
    pub(super) user_id: &'a str,
    pub(super) explain: bool,
    pub(super) as_of: Option<Stamp>,
    pub(super) params: RecommendParams,
    pub(super) n_history: usize,
    pub(super) n_candidates: usize,
}

/// Pass 1: every top-level field read or stepped over, nothing allocated.
/// `recommend` reads fields 5–7 as Recommend's (else they are unknown);
/// with `limits`, an entry over a count limit ends it.
pub(super) fn scan<'a>(
    buf: &'a [u8],
    recommend: bool,
    limits: Option<&Limits>,
) -> std::result::Result<Top<'a>, DecodeError> {
    let mut top = Top::default();
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => {
                Reader::expect(wt, LEN)?;
                top.user_id = r.string()?;
            }
            2 => {
                Reader::expect(wt, LEN)?;
                r.bytes()?;
                top.n_history += 1;
                if let Some(limits) = limits
                    && top.n_history > limits.max_history
                {
                    return Err(too_many_history(limits).into());
                }
            }
            3 => {
                Reader::expect(wt, LEN)?;
                r.bytes()?;
                top.n_candidates += 1;
                if limits.is_some() && top.n_candidates > MAX_CANDIDATES {
                    return Err(too_many_candidates().into());
                }
            }
            4 => {
                Reader::expect(wt, VARINT)?;
                top.explain = r.varint()? != 0;
            }
            5 if recommend => {
                Reader::expect(wt, FIXED64)?;
                top.params.target_p_correct = f64::from_bits(r.fixed64()?);
            }
            6 if recommend => {
                Reader::expect(wt, FIXED64)?;
                top.params.time_budget_seconds = f64::from_bits(r.fixed64()?);
            }
            7 if recommend => {
                Reader::expect(wt, VARINT)?;
                // uint32 from a varint: the low 32 bits, as prost keeps them.
                top.params.limit = r.varint()? as u32;
            }
            8 => {
                Reader::expect(wt, LEN)?;
                top.as_of = Some(timestamp(r.bytes()?, top.as_of, RECURSION_LIMIT - 1)?);
            }
            _ => r.skip(tag, wt, RECURSION_LIMIT)?,
        }
    }
    Ok(top)
}

/// Pass 2: the entries, into vectors already sized by pass 1 (every other
/// field was checked by pass 1 and is stepped over).
pub(super) fn entries<'a>(buf: &'a [u8], top: &Top<'a>) -> Result<PredictRequestRef<'a>> {
    let mut req = PredictRequestRef {
        user_id: top.user_id,
        history: Vec::with_capacity(top.n_history),
        candidates: Vec::with_capacity(top.n_candidates),
        explain: top.explain,
        as_of: top.as_of,
    };
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match (tag, wt) {
            (2, LEN) => req.history.push(decode_attempt(r.bytes()?)?),
            (3, LEN) => req.candidates.push(decode_candidate(r.bytes()?)?),
            _ => r.skip(tag, wt, RECURSION_LIMIT)?,
        }
    }
    Ok(req)
}

/// The shape checks a decoded request would get, on pass 1's counts.
fn shape(top: &Top<'_>, limits: &Limits) -> std::result::Result<(), PredictError> {
    check_shape(top.user_id, top.n_candidates, top.n_history, limits)
}

impl<'a> PredictRequestRef<'a> {
    /// Reads a serialised `PredictRequest`, refusing one whose counts break
    /// `limits` before anything is allocated for its entries.
    pub fn decode(buf: &'a [u8], limits: &Limits) -> std::result::Result<Self, DecodeError> {
        let top = scan(buf, false, Some(limits))?;
        shape(&top, limits)?;
        Ok(entries(buf, &top)?)
    }
}

impl<'a> RecommendRequestRef<'a> {
    /// Reads a serialised `RecommendRequest` as [`PredictRequestRef::decode`]
    /// does, its parameters checked after the counts and before the rest,
    /// as [`crate::recommend`] checks a decoded request.
    pub fn decode(buf: &'a [u8], limits: &Limits) -> std::result::Result<Self, DecodeError> {
        let top = scan(buf, true, Some(limits))?;
        validate_params(&top.params)?;
        shape(&top, limits)?;
        Ok(RecommendRequestRef {
            request: entries(buf, &top)?,
            params: top.params,
        })
    }
}

/// Fields of a message nested in the request: one level of prost's
/// recursion budget is spent entering it.
const NESTED: u32 = RECURSION_LIMIT - 1;

fn decode_attempt(buf: &[u8]) -> Result<AttemptRef<'_>> {
    let mut a = AttemptRef::default();
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => {
                Reader::expect(wt, LEN)?;
                a.topic = r.string()?;
            }
            2 => {
                Reader::expect(wt, LEN)?;
                a.difficulty = r.string()?;
            }
            3 => {
                Reader::expect(wt, VARINT)?;
                a.correct = r.varint()? != 0;
            }
            4 => {
                Reader::expect(wt, FIXED64)?;
                a.seconds = f64::from_bits(r.fixed64()?);
            }
            5 => {
                Reader::expect(wt, LEN)?;
                a.completed_at = Some(timestamp(r.bytes()?, a.completed_at, NESTED - 1)?);
            }
            6 => {
                Reader::expect(wt, LEN)?;
                a.item_id = r.string()?;
            }
            _ => r.skip(tag, wt, NESTED)?,
        }
    }
    Ok(a)
}

/// A `google.protobuf.Timestamp`, merged into `into` as protobuf merges a
/// message field that occurs twice; `depth` is the recursion budget left
/// inside it.
#[inline]
fn timestamp(buf: &[u8], into: Option<Stamp>, depth: u32) -> Result<Stamp> {
    let mut t = into.unwrap_or_default();
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => {
                Reader::expect(wt, VARINT)?;
                t.seconds = r.varint()? as i64;
            }
            2 => {
                Reader::expect(wt, VARINT)?;
                // int32 from a varint: the low 32 bits, as prost keeps them.
                t.nanos = r.varint()? as i32;
            }
            _ => r.skip(tag, wt, depth)?,
        }
    }
    Ok(t)
}

fn decode_candidate(buf: &[u8]) -> Result<CandidateRef<'_>> {
    let mut c = CandidateRef::default();
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => {
                Reader::expect(wt, LEN)?;
                c.task_id = r.string()?;
            }
            2 => {
                Reader::expect(wt, LEN)?;
                c.topic = r.string()?;
            }
            3 => {
                Reader::expect(wt, LEN)?;
                c.difficulty = r.string()?;
            }
            4 => {
                Reader::expect(wt, LEN)?;
                c.item_id = r.string()?;
            }
            _ => r.skip(tag, wt, NESTED)?,
        }
    }
    Ok(c)
}

impl<'a> From<&'a PredictRequestRef<'a>> for PredictInput<'a, AttemptRef<'a>, CandidateRef<'a>> {
    fn from(r: &'a PredictRequestRef<'a>) -> Self {
        PredictInput {
            user_id: r.user_id,
            history: &r.history,
            candidates: &r.candidates,
            explain: r.explain,
            as_of: r.as_of,
        }
    }
}

impl AttemptFields for AttemptRef<'_> {
    fn topic(&self) -> &str {
        self.topic
    }
    fn difficulty(&self) -> &str {
        self.difficulty
    }
    fn item_id(&self) -> &str {
        self.item_id
    }
    fn correct(&self) -> bool {
        self.correct
    }
    fn seconds(&self) -> f64 {
        self.seconds
    }
    fn completed_at(&self) -> Option<Stamp> {
        self.completed_at
    }
}

impl CandidateFields for CandidateRef<'_> {
    fn task_id(&self) -> &str {
        self.task_id
    }
    fn topic(&self) -> &str {
        self.topic
    }
    fn difficulty(&self) -> &str {
        self.difficulty
    }
    fn item_id(&self) -> &str {
        self.item_id
    }
}

/// The generated messages, field for field, for comparing with prost.
#[cfg(test)]
pub(super) fn same_predict(req: &PredictRequest, got: &PredictRequestRef<'_>) -> bool {
    got.user_id == req.user_id
        && got.explain == req.explain
        && got.as_of == req.as_of.as_ref().map(Stamp::from)
        && got.history.len() == req.history.len()
        && req.history.iter().zip(&got.history).all(|(a, b)| {
            (a.topic.as_str(), a.difficulty.as_str(), a.item_id.as_str())
                == (b.topic, b.difficulty, b.item_id)
                && a.correct == b.correct
                && a.seconds.to_bits() == b.seconds.to_bits()
                && a.completed_at.as_ref().map(Stamp::from) == b.completed_at
        })
        && got.candidates.len() == req.candidates.len()
        && req.candidates.iter().zip(&got.candidates).all(|(a, b)| {
            (
                a.task_id.as_str(),
                a.topic.as_str(),
                a.difficulty.as_str(),
                a.item_id.as_str(),
            ) == (b.task_id, b.topic, b.difficulty, b.item_id)
        })
}

/// As [`same_predict`], for Recommend.
#[cfg(test)]
pub(super) fn same_recommend(req: &RecommendRequest, got: &RecommendRequestRef<'_>) -> bool {
    let base = PredictRequest {
        user_id: req.user_id.clone(),
        history: req.history.clone(),
        candidates: req.candidates.clone(),
        explain: req.explain,
        as_of: req.as_of,
    };
    same_predict(&base, &got.request)
        && req.target_p_correct.to_bits() == got.params.target_p_correct.to_bits()
        && req.time_budget_seconds.to_bits() == got.params.time_budget_seconds.to_bits()
        && req.limit == got.params.limit
}

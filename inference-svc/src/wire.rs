//! Predict on the wire without the generated message types: the request is
//! read in place from the received bytes, the response written straight into
//! the response frame's buffer.
//!
//! A `PredictRequest` with a 50-attempt history is ~150 strings; decoding it
//! into the generated `PredictRequest` allocates each of them (and the
//! vectors holding them) only for the feature code to hash them and drop
//! them. [`PredictRequestRef::decode`] borrows every string from the request
//! buffer instead (two allocations per request: the history and the
//! candidates), and [`encode_predict_response`] writes the answer without
//! building `Prediction` messages (nor copying each `task_id`).
//!
//! Both follow protobuf's wire rules as prost applies them: unknown fields
//! are skipped, the last value of a repeated scalar field wins, strings must
//! be UTF-8, and fields at their default value are not written; the tests
//! check both against prost on arbitrary messages.

use prost::Message;
use prost::bytes::BufMut;
use taskcast_proto::{Attempt, Candidate};
use tonic::Status;

use crate::predict::Scored;

/// Why a message could not be read; the text matches prost's where prost
/// has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(&'static str);

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
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A read position in one message.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Steps over a varint without assembling its value.
    #[inline]
    fn skip_varint(&mut self) -> Result<()> {
        // Eight bytes at once: the first without its high bit ends the varint.
        if let Some(word) = self.buf.first_chunk::<8>() {
            let ends = !u64::from_le_bytes(*word) & 0x8080_8080_8080_8080;
            if ends != 0 {
                self.buf = &self.buf[(ends.trailing_zeros() / 8) as usize + 1..];
                return Ok(());
            }
        }
        match self.buf.iter().take(10).position(|b| *b < 0x80) {
            // The tenth byte may only carry the top bit of a u64.
            Some(9) if self.buf[9] > 1 => Err(WireError("invalid varint")),
            Some(i) => {
                self.buf = &self.buf[i + 1..];
                Ok(())
            }
            None => Err(WireError("invalid varint")),
        }
    }

    #[inline]
    fn varint(&mut self) -> Result<u64> {
        // Tags and lengths in these messages are almost always one byte.
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Ok(u64::from(b));
        }
        self.varint_slow()
    }

    fn varint_slow(&mut self) -> Result<u64> {
        let buf = self.buf;
        let mut value = 0u64;
        let mut i = 0;
        while i < buf.len().min(10) {
            let b = buf[i];
            value |= u64::from(b & 0x7f) << (7 * i);
            i += 1;
            if b < 0x80 {
                // The tenth byte may only carry the top bit of a u64.
                if i == 10 && b > 1 {
                    break;
                }
                self.buf = &buf[i..];
                return Ok(value);
            }
        }
        Err(WireError("invalid varint"))
    }

    /// A field key: (tag, wire type).
    #[inline]
    fn key(&mut self) -> Result<(u32, u8)> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(WireError("invalid key value"));
        }
        let wire_type = (key & 7) as u8;
        if wire_type > FIXED32 {
            return Err(WireError("invalid wire type value"));
        }
        let tag = (key >> 3) as u32;
        if tag == 0 {
            return Err(WireError("invalid tag value: 0"));
        }
        Ok((tag, wire_type))
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.varint()?;
        if len > self.buf.len() as u64 {
            return Err(WireError("buffer underflow"));
        }
        let (value, rest) = self.buf.split_at(len as usize);
        self.buf = rest;
        Ok(value)
    }

    #[inline]
    fn string(&mut self) -> Result<&'a str> {
        let bytes = self.bytes()?;
        // Checked like prost checks it: request bytes are untrusted, and
        // `from_utf8` already runs ASCII a word at a time.
        std::str::from_utf8(bytes)
            .map_err(|_| WireError("invalid string value: data is not UTF-8 encoded"))
    }

    #[inline]
    fn fixed64(&mut self) -> Result<u64> {
        match self.buf.split_first_chunk::<8>() {
            Some((v, rest)) => {
                self.buf = rest;
                Ok(u64::from_le_bytes(*v))
            }
            None => Err(WireError("buffer underflow")),
        }
    }

    /// Reads a field of the expected wire type.
    #[inline]
    fn expect(wire_type: u8, expected: u8) -> Result<()> {
        if wire_type == expected {
            Ok(())
        } else {
            Err(WireError("invalid wire type"))
        }
    }

    /// Skips an unknown field (groups included, as prost does).
    fn skip(&mut self, tag: u32, wire_type: u8, depth: u32) -> Result<()> {
        match wire_type {
            VARINT => {
                self.varint()?;
            }
            FIXED64 => {
                self.fixed64()?;
            }
            LEN => {
                self.bytes()?;
            }
            FIXED32 => {
                if self.buf.len() < 4 {
                    return Err(WireError("buffer underflow"));
                }
                self.buf = &self.buf[4..];
            }
            START_GROUP => {
                if depth == 0 {
                    return Err(WireError("recursion limit reached"));
                }
                loop {
                    if self.is_empty() {
                        return Err(WireError("buffer underflow"));
                    }
                    let (t, w) = self.key()?;
                    if w == END_GROUP {
                        if t != tag {
                            return Err(WireError("unexpected end group tag"));
                        }
                        break;
                    }
                    self.skip(t, w, depth - 1)?;
                }
            }
            _ => return Err(WireError("unexpected end group tag")),
        }
        Ok(())
    }
}

/// Nesting allowed inside skipped groups (prost's recursion limit).
const RECURSION_LIMIT: u32 = 100;

impl<'a> PredictRequestRef<'a> {
    /// Reads a serialised `PredictRequest`.
    pub fn decode(buf: &'a [u8]) -> Result<Self> {
        // A first pass counts the repeated fields so each vector is allocated once.
        let (mut n_history, mut n_candidates) = (0usize, 0usize);
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let (tag, wt) = r.key()?;
            match (tag, wt) {
                (2, LEN) => n_history += 1,
                (3, LEN) => n_candidates += 1,
                _ => {}
            }
            r.skip(tag, wt, RECURSION_LIMIT)?;
        }
        let mut req = PredictRequestRef {
            history: Vec::with_capacity(n_history),
            candidates: Vec::with_capacity(n_candidates),
            ..Default::default()
        };
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let (tag, wt) = r.key()?;
            match tag {
                1 => {
                    Reader::expect(wt, LEN)?;
                    req.user_id = r.string()?;
                }
                2 => {
                    Reader::expect(wt, LEN)?;
                    req.history.push(decode_attempt(r.bytes()?)?);
                }
                3 => {
                    Reader::expect(wt, LEN)?;
                    req.candidates.push(decode_candidate(r.bytes()?)?);
                }
                4 => {
                    Reader::expect(wt, VARINT)?;
                    req.explain = r.varint()? != 0;
                }
                _ => r.skip(tag, wt, RECURSION_LIMIT)?,
            }
        }
        Ok(req)
    }
}

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
                // `completed_at` is informational (order is the client's); it
                // must still be a well-formed Timestamp, as prost would insist.
                Reader::expect(wt, LEN)?;
                check_timestamp(r.bytes()?)?;
            }
            6 => {
                Reader::expect(wt, LEN)?;
                a.item_id = r.string()?;
            }
            _ => r.skip(tag, wt, RECURSION_LIMIT)?,
        }
    }
    Ok(a)
}

#[inline]
fn check_timestamp(buf: &[u8]) -> Result<()> {
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 | 2 => {
                Reader::expect(wt, VARINT)?;
                r.skip_varint()?;
            }
            _ => r.skip(tag, wt, RECURSION_LIMIT)?,
        }
    }
    Ok(())
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
            _ => r.skip(tag, wt, RECURSION_LIMIT)?,
        }
    }
    Ok(c)
}

/// `Attempt` and `AttemptRef` alike, for the Predict path.
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

/// `Candidate` and `CandidateRef` alike, for the Predict path.
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

// ---------------------------------------------------------------- encoding

fn put_key(tag: u32, wire_type: u8, buf: &mut impl BufMut) {
    prost::encoding::encode_varint(u64::from(tag << 3 | u32::from(wire_type)), buf);
}

fn key_len(tag: u32) -> usize {
    prost::encoding::key_len(tag)
}

fn len_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + prost::encoding::encoded_len_varint(len as u64) + len
}

fn put_str(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        put_key(tag, LEN, buf);
        prost::encoding::encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }
}

fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        len_field_len(tag, s.len())
    }
}

fn put_double(tag: u32, v: f64, buf: &mut impl BufMut) {
    if v != 0.0 {
        put_key(tag, FIXED64, buf);
        buf.put_f64_le(v);
    }
}

fn double_len(tag: u32, v: f64) -> usize {
    if v != 0.0 { key_len(tag) + 8 } else { 0 }
}

fn put_bool(tag: u32, v: bool, buf: &mut impl BufMut) {
    if v {
        put_key(tag, VARINT, buf);
        buf.put_u8(1);
    }
}

fn bool_len(tag: u32, v: bool) -> usize {
    if v { key_len(tag) + 1 } else { 0 }
}

/// Encoded length of one `Prediction` body.
fn prediction_len(task_id: &str, s: &Scored) -> usize {
    str_len(1, task_id)
        + double_len(2, s.p_correct)
        + double_len(3, s.seconds)
        + double_len(4, s.seconds_low)
        + double_len(5, s.seconds_high)
        + bool_len(6, s.cold_start)
        + s.reasons
            .iter()
            .map(|r| len_field_len(7, r.encoded_len()))
            .sum::<usize>()
}

/// Writes a `PredictResponse` whose i-th prediction is `scored[i]` for the
/// candidate with `task_ids[i]`, byte for byte what prost writes for the
/// same message.
pub fn encode_predict_response<'t>(
    task_ids: impl Iterator<Item = &'t str> + Clone,
    scored: &[Scored],
    model_version: &str,
    time_modeled: bool,
    buf: &mut impl BufMut,
) {
    for (task_id, s) in task_ids.zip(scored) {
        put_key(1, LEN, buf);
        prost::encoding::encode_varint(prediction_len(task_id, s) as u64, buf);
        put_str(1, task_id, buf);
        put_double(2, s.p_correct, buf);
        put_double(3, s.seconds, buf);
        put_double(4, s.seconds_low, buf);
        put_double(5, s.seconds_high, buf);
        put_bool(6, s.cold_start, buf);
        for r in &s.reasons {
            put_key(7, LEN, buf);
            prost::encoding::encode_varint(r.encoded_len() as u64, buf);
            r.encode_raw(buf);
        }
    }
    put_str(2, model_version, buf);
    put_bool(3, time_modeled, buf);
}

/// Encoded length of what [`encode_predict_response`] writes.
pub fn predict_response_len<'t>(
    task_ids: impl Iterator<Item = &'t str>,
    scored: &[Scored],
    model_version: &str,
    time_modeled: bool,
) -> usize {
    task_ids
        .zip(scored)
        .map(|(t, s)| len_field_len(1, prediction_len(t, s)))
        .sum::<usize>()
        + str_len(2, model_version)
        + bool_len(3, time_modeled)
}

/// The status a malformed request gets: what tonic answers when prost
/// cannot decode a message.
pub fn decode_status(e: WireError) -> Status {
    Status::internal(format!("failed to decode Protobuf message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use taskcast_proto::{PredictRequest, PredictResponse, Prediction, Reason};

    fn label() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-c]{1,3}",
            ".{0,12}",
            Just("\u{1F600}\u{202E}\u{0000}".to_string()),
        ]
    }

    fn request() -> impl Strategy<Value = PredictRequest> {
        let attempt = (
            label(),
            label(),
            any::<bool>(),
            any::<f64>(),
            proptest::option::of((any::<i64>(), any::<i32>())),
            label(),
        )
            .prop_map(
                |(topic, difficulty, correct, seconds, ts, item_id)| Attempt {
                    topic,
                    difficulty,
                    correct,
                    seconds,
                    completed_at: ts
                        .map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
                    item_id,
                },
            );
        let candidate = (label(), label(), label(), label()).prop_map(
            |(task_id, topic, difficulty, item_id)| Candidate {
                task_id,
                topic,
                difficulty,
                item_id,
            },
        );
        (
            label(),
            proptest::collection::vec(attempt, 0..20),
            proptest::collection::vec(candidate, 0..6),
            any::<bool>(),
        )
            .prop_map(|(user_id, history, candidates, explain)| PredictRequest {
                user_id,
                history,
                candidates,
                explain,
            })
    }

    fn same(req: &PredictRequest, got: &PredictRequestRef<'_>) {
        assert_eq!(got.user_id, req.user_id);
        assert_eq!(got.explain, req.explain);
        assert_eq!(got.history.len(), req.history.len());
        for (a, b) in req.history.iter().zip(&got.history) {
            assert_eq!(
                (a.topic.as_str(), a.difficulty.as_str(), a.item_id.as_str()),
                (b.topic, b.difficulty, b.item_id)
            );
            assert_eq!(a.correct, b.correct);
            assert_eq!(a.seconds.to_bits(), b.seconds.to_bits());
        }
        let cands: Vec<CandidateRef<'_>> = req
            .candidates
            .iter()
            .map(|c| CandidateRef {
                task_id: &c.task_id,
                topic: &c.topic,
                difficulty: &c.difficulty,
                item_id: &c.item_id,
            })
            .collect();
        assert_eq!(got.candidates, cands);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Whatever prost writes, the in-place reader reads the same.
        #[test]
        fn decodes_what_prost_encodes(req in request()) {
            let bytes = req.encode_to_vec();
            let got = PredictRequestRef::decode(&bytes).unwrap();
            // Against prost's own reading: proto3 does not write a -0.0 it was given.
            same(&PredictRequest::decode(bytes.as_slice()).unwrap(), &got);
        }

        /// On arbitrary bytes the reader accepts exactly what prost accepts,
        /// and then reads the same message.
        #[test]
        fn agrees_with_prost_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let ours = PredictRequestRef::decode(&bytes);
            let theirs = PredictRequest::decode(bytes.as_slice());
            prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?} vs {:?}", ours, theirs);
            if let (Ok(o), Ok(t)) = (ours, theirs) {
                same(&t, &o);
            }
        }

        /// Truncations and single-byte corruptions of a valid request, the
        /// damage a real stream does.
        #[test]
        fn agrees_with_prost_on_damage(req in request(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
            let bytes = req.encode_to_vec();
            if !bytes.is_empty() {
                let truncated = &bytes[..cut.index(bytes.len())];
                let (o, t) = (PredictRequestRef::decode(truncated), PredictRequest::decode(truncated));
                prop_assert_eq!(o.is_ok(), t.is_ok());
                if let (Ok(o), Ok(t)) = (o, t) { same(&t, &o); }
                let mut damaged = bytes.clone();
                let i = flip.0.index(damaged.len());
                damaged[i] ^= flip.1;
                let (o, t) = (PredictRequestRef::decode(&damaged), PredictRequest::decode(damaged.as_slice()));
                prop_assert_eq!(o.is_ok(), t.is_ok());
                if let (Ok(o), Ok(t)) = (o, t) { same(&t, &o); }
            }
        }

        /// The response writer produces prost's bytes for the same message.
        #[test]
        fn encodes_as_prost_does(
            rows in proptest::collection::vec(
                (label(), any::<f64>(), any::<f64>(), prop_oneof![Just(0.0), any::<f64>()], any::<f64>(), any::<bool>(), 0..3usize),
                0..5,
            ),
            version in label(),
            time_modeled in any::<bool>(),
        ) {
            let scored: Vec<Scored> = rows.iter().map(|(_, p, s, lo, hi, cold, n)| Scored {
                p_correct: *p,
                seconds: *s,
                seconds_low: *lo,
                seconds_high: *hi,
                cold_start: *cold,
                reasons: (0..*n).map(|k| Reason {
                    feature: format!("f{k}"),
                    value: k as f64,
                    effect: -0.5 * k as f64,
                    seconds_effect: 0.0,
                }).collect(),
            }).collect();
            let ids = rows.iter().map(|r| r.0.as_str());
            let mut ours = Vec::new();
            encode_predict_response(ids.clone(), &scored, &version, time_modeled, &mut ours);
            prop_assert_eq!(ours.len(), predict_response_len(ids, &scored, &version, time_modeled));
            let expected = PredictResponse {
                predictions: rows.iter().zip(&scored).map(|(r, s)| Prediction {
                    task_id: r.0.clone(),
                    p_correct: s.p_correct,
                    seconds: s.seconds,
                    seconds_low: s.seconds_low,
                    seconds_high: s.seconds_high,
                    cold_start: s.cold_start,
                    reasons: s.reasons.clone(),
                }).collect(),
                model_version: version.clone(),
                time_modeled,
            };
            prop_assert_eq!(ours, expected.encode_to_vec());
        }
    }

    #[test]
    fn unknown_fields_and_groups_are_skipped() {
        let req = PredictRequest {
            user_id: "u".into(),
            candidates: vec![Candidate {
                task_id: "t".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut bytes = req.encode_to_vec();
        // field 9 varint, field 10 fixed32, field 11 group holding a varint
        bytes.extend_from_slice(&[9 << 3, 0x96, 0x01]);
        bytes.extend_from_slice(&[10 << 3 | 5, 1, 2, 3, 4]);
        bytes.extend_from_slice(&[11 << 3 | 3, 1 << 3, 7, 11 << 3 | 4]);
        let got = PredictRequestRef::decode(&bytes).unwrap();
        assert_eq!(PredictRequest::decode(bytes.as_slice()).unwrap(), req);
        same(&req, &got);
    }

    #[test]
    fn invalid_utf8_is_refused_like_prost() {
        let mut bytes = Vec::new();
        put_key(1, LEN, &mut bytes);
        bytes.extend_from_slice(&[2, 0xff, 0xfe]);
        assert!(PredictRequest::decode(bytes.as_slice()).is_err());
        assert!(PredictRequestRef::decode(&bytes).is_err());
    }
}

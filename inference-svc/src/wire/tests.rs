//! The reader against prost, the writer against prost's bytes.
//!
//! The differential fuzzing (`fuzz_*`) builds messages from structured
//! generators — the requests' own fields with right and wrong wire types,
//! unknown fields of every wire type, packed scalars, groups nested around
//! prost's recursion limit, runs of thousands of entries, truncations and
//! flipped bytes — and raw bytes, and checks that the in-place reader
//! accepts exactly what prost accepts and then reads the same values. The
//! case count comes from `TASKCAST_FUZZ_CASES` (a short run by default,
//! inside the normal tests; `scripts/fuzz-wire.sh` runs a million or more).

use proptest::prelude::*;
use prost::Message;
use taskcast_proto::{
    Candidate, PredictRequest, PredictResponse, Prediction, Reason, RecommendRequest,
};

use super::decode::{RecommendRequestRef, entries, same_predict, same_recommend, scan};
use super::encode::put_key;
use super::fuzz_gen::{Field, apply, damage, encode, label, message, recommend_request};
use super::reader::{LEN, RECURSION_LIMIT};
use super::*;
use crate::predict::{Limits, PredictError, Scored};
use crate::recommend::{RecommendParams, validate_params};

/// Cases per fuzz property: `TASKCAST_FUZZ_CASES`, else a short run.
fn fuzz_cases() -> u32 {
    std::env::var("TASKCAST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // A long run reports its findings; it does not write regression files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The reader without the limits: wire rules only, to compare with prost.
fn unlimited(e: DecodeError) -> WireError {
    match e {
        DecodeError::Malformed(e) => e,
        DecodeError::Invalid(e) => unreachable!("no limits, yet {e}"),
    }
}

fn ours_predict(bytes: &[u8]) -> Result<PredictRequestRef<'_>, WireError> {
    let top = scan(bytes, false, None).map_err(unlimited)?;
    entries(bytes, &top)
}

fn ours_recommend(bytes: &[u8]) -> Result<RecommendRequestRef<'_>, WireError> {
    let top = scan(bytes, true, None).map_err(unlimited)?;
    Ok(RecommendRequestRef {
        request: entries(bytes, &top)?,
        params: top.params,
    })
}

/// Both readers on `bytes`: the same verdict, and on success the same values.
fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (o, t) = (ours_predict(bytes), PredictRequest::decode(bytes));
    prop_assert_eq!(
        o.is_ok(),
        t.is_ok(),
        "Predict {:?} vs {:?} on {:02x?}",
        o,
        t,
        bytes
    );
    if let (Ok(o), Ok(t)) = (&o, &t) {
        prop_assert!(same_predict(t, o), "{:?} vs {:?}", o, t);
    }
    let (o, t) = (ours_recommend(bytes), RecommendRequest::decode(bytes));
    prop_assert_eq!(
        o.is_ok(),
        t.is_ok(),
        "Recommend {:?} vs {:?} on {:02x?}",
        o,
        t,
        bytes
    );
    if let (Ok(o), Ok(t)) = (&o, &t) {
        prop_assert!(same_recommend(t, o), "{:?} vs {:?}", o, t);
    }
    Ok(())
}

// -------------------------------------------------------- the properties

proptest! {
    #![proptest_config(config(fuzz_cases()))]

    /// Structured messages, damaged or not: accepted exactly when prost
    /// accepts them, and then read alike.
    #[test]
    fn fuzz_structured_against_prost(bytes in message(), d in damage()) {
        agree(&apply(bytes, &d))?;
    }

    /// Raw bytes.
    #[test]
    fn fuzz_raw_bytes_against_prost(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        agree(&bytes)?;
    }

    /// Whatever prost writes (both requests), damaged or not.
    #[test]
    fn fuzz_prost_encodings_against_prost(req in recommend_request(), d in damage()) {
        let bytes = req.encode_to_vec();
        let (o, t) = (ours_recommend(&bytes), RecommendRequest::decode(bytes.as_slice()));
        prop_assert!(same_recommend(&t.unwrap(), &o.unwrap()));
        agree(&apply(bytes, &d))?;
    }

    /// With the limits: a message prost reads is refused exactly when its
    /// counts or parameters break them, with the message a decoded request
    /// gets; a message prost refuses is refused.
    #[test]
    fn fuzz_limits_refuse_what_validation_refuses(bytes in message(), d in damage(), max_history in 0usize..40) {
        let bytes = apply(bytes, &d);
        let limits = Limits { max_history, ..Limits::default() };
        let shape = |user_id: &str, c: usize, h: usize| crate::predict::check_shape(user_id, c, h, &limits);
        let text = |r: Result<(), PredictError>| r.err().map(|e| e.to_string());
        // Both counts over: the reader names whichever it met first.
        let both_over = |h: usize, c: usize| h > max_history && c > crate::predict::MAX_CANDIDATES;
        let matches = |got: String, want: &Option<String>, both: bool| {
            Some(&got) == want.as_ref()
                || (both && got.starts_with("candidates: over"))
        };
        match PredictRequest::decode(bytes.as_slice()) {
            Ok(t) => {
                let want = text(shape(&t.user_id, t.candidates.len(), t.history.len()));
                let both = both_over(t.history.len(), t.candidates.len());
                let got = PredictRequestRef::decode(&bytes, &limits);
                match got {
                    Ok(o) => {
                        prop_assert!(want.is_none(), "accepted, want {:?}", want);
                        prop_assert!(same_predict(&t, &o));
                    }
                    Err(DecodeError::Invalid(e)) => prop_assert!(matches(e.to_string(), &want, both), "{e} vs {want:?}"),
                    Err(e) => prop_assert!(false, "prost read it, we say {e}"),
                }
            }
            Err(_) => prop_assert!(PredictRequestRef::decode(&bytes, &limits).is_err()),
        }
        match RecommendRequest::decode(bytes.as_slice()) {
            Ok(t) => {
                let want = text(crate::predict::check_counts(t.candidates.len(), t.history.len(), &limits))
                    .or_else(|| text(validate_params(&RecommendParams::from(&t)).map(|_| ())))
                    .or_else(|| text(shape(&t.user_id, t.candidates.len(), t.history.len())));
                let both = both_over(t.history.len(), t.candidates.len());
                match RecommendRequestRef::decode(&bytes, &limits) {
                    Ok(o) => {
                        prop_assert!(want.is_none(), "accepted, want {:?}", want);
                        prop_assert!(same_recommend(&t, &o));
                    }
                    Err(DecodeError::Invalid(e)) => prop_assert!(matches(e.to_string(), &want, both), "{e} vs {want:?}"),
                    Err(e) => prop_assert!(false, "prost read it, we say {e}"),
                }
            }
            Err(_) => prop_assert!(RecommendRequestRef::decode(&bytes, &limits).is_err()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

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

/// How much of the generated input each reader accepts, so a run's
/// figures say whether the acceptance paths were exercised (printed by
/// `scripts/fuzz-wire.sh`).
#[test]
#[ignore = "statistics for scripts/fuzz-wire.sh"]
fn fuzz_acceptance_rate() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (message(), damage());
    let (n, mut predict, mut recommend, mut entries_read) = (20_000, 0, 0, 0usize);
    for _ in 0..n {
        let (bytes, d) = strategy.new_tree(&mut runner).unwrap().current();
        let bytes = apply(bytes, &d);
        if let Ok(r) = PredictRequest::decode(bytes.as_slice()) {
            predict += 1;
            entries_read += r.history.len() + r.candidates.len();
        }
        recommend += usize::from(RecommendRequest::decode(bytes.as_slice()).is_ok());
    }
    println!(
        "structured inputs: {n}; prost accepts {predict} as PredictRequest ({:.1} %), {recommend} as RecommendRequest ({:.1} %); {entries_read} entries read",
        100.0 * predict as f64 / n as f64,
        100.0 * recommend as f64 / n as f64,
    );
}

// ------------------------------------------------------ pinned cases

fn deep(depth: u32, with_varint: bool) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&[Field::Deep(11, depth, with_varint)], &mut out);
    out
}

/// prost's recursion limit, where it bites: at the top level, inside an
/// entry, inside an entry's Timestamp. 100 groups around a varint used to
/// be accepted here and refused by prost.
#[test]
fn nesting_stops_where_prost_stops() {
    for depth in [1, 97, 98, 99, 100, 101, 102] {
        for with_varint in [false, true] {
            let groups = deep(depth, with_varint);
            let mut in_entry = Vec::new();
            encode(
                &[Field::Message(2, vec![Field::Raw(groups.clone())])],
                &mut in_entry,
            );
            let mut in_timestamp = Vec::new();
            encode(
                &[Field::Message(
                    2,
                    vec![Field::Message(5, vec![Field::Raw(groups.clone())])],
                )],
                &mut in_timestamp,
            );
            for bytes in [&groups, &in_entry, &in_timestamp] {
                agree(bytes).unwrap();
            }
        }
    }
    // The case of the issue, pinned.
    assert!(PredictRequest::decode(deep(RECURSION_LIMIT, true).as_slice()).is_err());
    assert!(ours_predict(&deep(RECURSION_LIMIT, true)).is_err());
    assert!(ours_predict(&deep(RECURSION_LIMIT - 1, true)).is_ok());
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
    let got = PredictRequestRef::decode(&bytes, &Limits::default()).unwrap();
    assert_eq!(PredictRequest::decode(bytes.as_slice()).unwrap(), req);
    assert!(same_predict(&req, &got));
}

#[test]
fn invalid_utf8_is_refused_like_prost() {
    let mut bytes = Vec::new();
    put_key(1, LEN, &mut bytes);
    bytes.extend_from_slice(&[2, 0xff, 0xfe]);
    assert!(PredictRequest::decode(bytes.as_slice()).is_err());
    assert!(matches!(
        PredictRequestRef::decode(&bytes, &Limits::default()),
        Err(DecodeError::Malformed(_))
    ));
}

/// The request: 4 MB of empty history entries and no user_id. It
/// is refused on its counts, naming the field, before any entry is read.
#[test]
fn a_flood_of_empty_entries_is_refused_on_its_counts() {
    let bytes = [0x12u8, 0x00].repeat(2 * 1024 * 1024);
    let e = PredictRequestRef::decode(&bytes, &Limits::default()).unwrap_err();
    assert_eq!(e.to_string(), "history: over the limit of 1000 attempts");
    let mut with_user = PredictRequest {
        user_id: "u".into(),
        candidates: vec![Candidate::default()],
        ..Default::default()
    }
    .encode_to_vec();
    with_user.extend_from_slice(&bytes);
    let e = PredictRequestRef::decode(&with_user, &Limits::default()).unwrap_err();
    assert_eq!(e.to_string(), "history: over the limit of 1000 attempts");
    let e = RecommendRequestRef::decode(&with_user, &Limits::default()).unwrap_err();
    assert!(matches!(e, DecodeError::Invalid(_)), "{e}");
    let candidates = [0x1au8, 0x00].repeat(2000);
    let e = PredictRequestRef::decode(&candidates, &Limits::default()).unwrap_err();
    assert_eq!(e.to_string(), "candidates: over the limit of 1000");
}

//! Structured generators for the wire reader's differential fuzzing
//! (`tests.rs`): protobuf fields of every wire type built as values, so
//! the fuzzer reaches deep into well-formed messages before it damages them.

use proptest::prelude::*;
use taskcast_proto::{Attempt, Candidate, PredictRequest, RecommendRequest};

use super::encode::put_key;
use super::reader::{END_GROUP, FIXED32, FIXED64, LEN, START_GROUP, VARINT};

/// One field of a message as it goes on the wire.
#[derive(Clone, Debug)]
pub(super) enum Field {
    Varint(u32, u64),
    Fixed64(u32, u64),
    Fixed32(u32, u32),
    Bytes(u32, Vec<u8>),
    /// A nested message (length-delimited).
    Message(u32, Vec<Field>),
    /// A group: start tag, fields, end tag.
    Group(u32, Vec<Field>),
    /// Varints packed in one length-delimited field.
    Packed(u32, Vec<u64>),
    /// `depth` groups one inside the other, around a varint or nothing.
    Deep(u32, u32, bool),
    /// The same field `n` times: runs of entries.
    Repeat(Box<Field>, u16),
    /// Bytes as they come, keys or not.
    Raw(Vec<u8>),
}

pub(super) fn varint(v: u64, out: &mut Vec<u8>) {
    prost::encoding::encode_varint(v, out);
}

pub(super) fn encode(fields: &[Field], out: &mut Vec<u8>) {
    for f in fields {
        match f {
            Field::Varint(t, v) => {
                put_key(*t, VARINT, out);
                varint(*v, out);
            }
            Field::Fixed64(t, v) => {
                put_key(*t, FIXED64, out);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Field::Fixed32(t, v) => {
                put_key(*t, FIXED32, out);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Field::Bytes(t, b) => {
                put_key(*t, LEN, out);
                varint(b.len() as u64, out);
                out.extend_from_slice(b);
            }
            Field::Message(t, inner) => {
                let mut body = Vec::new();
                encode(inner, &mut body);
                put_key(*t, LEN, out);
                varint(body.len() as u64, out);
                out.extend_from_slice(&body);
            }
            Field::Group(t, inner) => {
                put_key(*t, START_GROUP, out);
                encode(inner, out);
                put_key(*t, END_GROUP, out);
            }
            Field::Packed(t, vs) => {
                let mut body = Vec::new();
                for v in vs {
                    varint(*v, &mut body);
                }
                put_key(*t, LEN, out);
                varint(body.len() as u64, out);
                out.extend_from_slice(&body);
            }
            Field::Deep(t, depth, with_varint) => {
                for _ in 0..*depth {
                    put_key(*t, START_GROUP, out);
                }
                if *with_varint {
                    put_key(1, VARINT, out);
                    out.push(7);
                }
                for _ in 0..*depth {
                    put_key(*t, END_GROUP, out);
                }
            }
            Field::Repeat(f, n) => {
                let mut one = Vec::new();
                encode(std::slice::from_ref(f), &mut one);
                for _ in 0..*n {
                    out.extend_from_slice(&one);
                }
            }
            Field::Raw(b) => out.extend_from_slice(b),
        }
    }
}

/// Tags: mostly the messages' own (1–7), sometimes unknown ones, up to the
/// largest a key can hold.
pub(super) fn tag() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 1u32..=7,
        2 => 8u32..=40,
        1 => Just((1u32 << 29) - 1),
        1 => 19_000u32..=19_999,
    ]
}

/// Values a varint field takes: small, boundary and any.
pub(super) fn varint_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..3,
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        Just(1u64 << 63),
        any::<u64>(),
    ]
}

/// String payloads: UTF-8 (ASCII, multibyte, empty) and not.
pub(super) fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-z]{0,6}".prop_map(String::into_bytes),
        2 => ".{0,6}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..8),
        1 => Just(vec![0xff, 0xfe]),
        1 => Just("é".as_bytes()[..1].to_vec()),
    ]
}

/// Fields of any wire type under `tags`, nested messages and groups
/// included: the leaves of a message, or of one of its entries.
pub(super) fn field(tags: BoxedStrategy<u32>) -> BoxedStrategy<Field> {
    let leaf = prop_oneof![
        3 => (tags.clone(), varint_value()).prop_map(|(t, v)| Field::Varint(t, v)),
        2 => (tags.clone(), any::<u64>()).prop_map(|(t, v)| Field::Fixed64(t, v)),
        1 => (tags.clone(), prop_oneof![Just(0.0f64.to_bits()), Just(f64::NAN.to_bits()), Just(12.5f64.to_bits())]).prop_map(|(t, v)| Field::Fixed64(t, v)),
        1 => (tags.clone(), any::<u32>()).prop_map(|(t, v)| Field::Fixed32(t, v)),
        4 => (tags.clone(), payload()).prop_map(|(t, b)| Field::Bytes(t, b)),
        1 => (tags.clone(), proptest::collection::vec(varint_value(), 0..4)).prop_map(|(t, v)| Field::Packed(t, v)),
        1 => (tags.clone(), 95u32..=105, any::<bool>()).prop_map(|(t, d, v)| Field::Deep(t, d, v)),
        1 => proptest::collection::vec(any::<u8>(), 0..4).prop_map(Field::Raw),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            3 => (tags.clone(), proptest::collection::vec(inner.clone(), 0..6)).prop_map(|(t, f)| Field::Message(t, f)),
            1 => (tags.clone(), proptest::collection::vec(inner.clone(), 0..4)).prop_map(|(t, f)| Field::Group(t, f)),
            // Short runs here: nested runs multiply.
            1 => (inner, 0u16..16).prop_map(|(f, n)| Field::Repeat(Box::new(f), n)),
        ]
    })
    .boxed()
}

/// A history or candidates entry: its own fields (1–6), mostly with the
/// right wire types, a Timestamp at 5, unknown fields around them.
pub(super) fn entry() -> BoxedStrategy<Field> {
    let own = prop_oneof![
        4 => (1u32..=6, payload()).prop_map(|(t, b)| Field::Bytes(t, b)),
        2 => varint_value().prop_map(|v| Field::Varint(3, v)),
        2 => any::<u64>().prop_map(|v| Field::Fixed64(4, v)),
        2 => proptest::collection::vec(field(prop_oneof![1u32..=3, 4u32..=30].boxed()), 0..4)
            .prop_map(|f| Field::Message(5, f)),
        2 => field(tag().boxed()),
    ];
    (1u32..=3, proptest::collection::vec(own, 0..7))
        .prop_map(|(t, f)| Field::Message(t, f))
        .boxed()
}

/// A whole message: the top-level fields of either request, entries
/// (sometimes thousands of them), unknown fields, groups.
pub(super) fn message() -> impl Strategy<Value = Vec<u8>> {
    let top = prop_oneof![
        4 => entry(),
        1 => (entry(), 0u16..3000).prop_map(|(e, n)| Field::Repeat(Box::new(e), n)),
        2 => (1u32..=7, payload()).prop_map(|(t, b)| Field::Bytes(t, b)),
        1 => varint_value().prop_map(|v| Field::Varint(4, v)),
        1 => any::<u64>().prop_map(|v| Field::Fixed64(5, v)),
        1 => any::<u64>().prop_map(|v| Field::Fixed64(6, v)),
        1 => varint_value().prop_map(|v| Field::Varint(7, v)),
        1 => proptest::collection::vec(field(prop_oneof![1u32..=3, 4u32..=30].boxed()), 0..4)
            .prop_map(|f| Field::Message(8, f)),
        3 => field(tag().boxed()),
    ];
    proptest::collection::vec(top, 0..8).prop_map(|fields| {
        let mut out = Vec::new();
        encode(&fields, &mut out);
        out
    })
}

/// What a real stream does to bytes: nothing, a cut, a flipped byte.
#[derive(Clone, Debug)]
pub(super) enum Damage {
    None,
    Cut(prop::sample::Index),
    Flip(prop::sample::Index, u8),
}

pub(super) fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => Just(Damage::None),
        1 => any::<prop::sample::Index>().prop_map(Damage::Cut),
        1 => (any::<prop::sample::Index>(), 1u8..).prop_map(|(i, x)| Damage::Flip(i, x)),
    ]
}

pub(super) fn apply(mut bytes: Vec<u8>, d: &Damage) -> Vec<u8> {
    match d {
        Damage::None => {}
        Damage::Cut(i) if !bytes.is_empty() => bytes.truncate(i.index(bytes.len())),
        Damage::Flip(i, x) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        _ => {}
    }
    bytes
}

pub(super) fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-c]{1,3}",
        ".{0,12}",
        Just("\u{1F600}\u{202E}\u{0000}".to_string()),
    ]
}

pub(super) fn attempt() -> impl Strategy<Value = Attempt> {
    (
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
                completed_at: ts.map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
                item_id,
            },
        )
}

pub(super) fn candidate() -> impl Strategy<Value = Candidate> {
    (label(), label(), label(), label()).prop_map(|(task_id, topic, difficulty, item_id)| {
        Candidate {
            task_id,
            topic,
            difficulty,
            item_id,
        }
    })
}

pub(super) fn request() -> impl Strategy<Value = PredictRequest> {
    (
        label(),
        proptest::collection::vec(attempt(), 0..20),
        proptest::collection::vec(candidate(), 0..6),
        any::<bool>(),
        proptest::option::of((any::<i64>(), any::<i32>())),
    )
        .prop_map(
            |(user_id, history, candidates, explain, as_of)| PredictRequest {
                user_id,
                history,
                candidates,
                explain,
                as_of: as_of.map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
            },
        )
}

pub(super) fn recommend_request() -> impl Strategy<Value = RecommendRequest> {
    (
        request(),
        prop_oneof![Just(0.0), Just(0.5), any::<f64>()],
        prop_oneof![Just(0.0), Just(60.0), any::<f64>()],
        any::<u32>(),
    )
        .prop_map(|(r, target, budget, limit)| RecommendRequest {
            user_id: r.user_id,
            history: r.history,
            candidates: r.candidates,
            explain: r.explain,
            target_p_correct: target,
            time_budget_seconds: budget,
            limit,
            as_of: r.as_of,
        })
}

//! Predict's response written straight into the response frame's buffer,
//! byte for byte what prost writes for the same `PredictResponse`, without
//! building `Prediction` messages (nor copying each `task_id`).

use prost::Message;
use prost::bytes::BufMut;

use super::reader::{FIXED64, LEN, VARINT};
use crate::predict::Scored;

pub(super) fn put_key(tag: u32, wire_type: u8, buf: &mut impl BufMut) {
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

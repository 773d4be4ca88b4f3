//! The Predict path, as one straight line:
//! validate → resolve history against the model's priors → cut to the model's
//! window → one feature context → one row per candidate (plus occlusion rows
//! when explaining) → one batched model run → predictions.
//!
//! Pure and synchronous: it takes the model snapshot and the request and
//! touches nothing else, so the property tests and the bench call it
//! directly. It runs inline on the async worker: a whole request is a few
//! microseconds to a few milliseconds of CPU (1000 candidates with
//! explanations is 25 000 rows), less than a `spawn_blocking` hand-off costs
//! for the common small request.

use taskcast_contract::features::RowKeys;
use taskcast_contract::features::{self, CandidateKey, Event, FeatureContext, label_key};
use taskcast_contract::runtime::Output;
use taskcast_contract::{FEATURE_NAMES, FeatureRow};
use taskcast_proto::{Attempt, Candidate, PredictRequest, Prediction, Reason, RecommendRequest};

use crate::fields::{AttemptFields, CandidateFields, Stamp};
use crate::model::LoadedModel;

/// Most candidates one request may carry.
pub const MAX_CANDIDATES: usize = 1000;

/// Log-seconds are clamped to `[0, ln 86400]` before `exp`: the feature code
/// floors times at 1 s, and a model extrapolating past a day is wrong in a
/// way a client should see as "very long", not as infinity.
pub const LOG_SECONDS_RANGE: (f64, f64) = (0.0, 11.366_742_954_792_146);

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// The request is malformed; the message names the offending field.
    #[error("{0}")]
    InvalidArgument(String),
    /// The model failed at run time (it passed warm-up, so this is unexpected).
    #[error("model run failed: {0}")]
    Model(String),
}

/// Request-independent limits from the configuration. The counts bound
/// what a request may make the server allocate: the in-place reader
/// ([`crate::wire`]) checks them on the raw bytes before it allocates.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most history attempts per request.
    pub max_history: usize,
    /// Longest string (an id or a label), in bytes. Labels are hashed on
    /// every call, so this bounds per-call work; ids a client sends are
    /// short, and the longest the tests send (multilingual topics) is
    /// about 1 KB.
    pub max_label_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_history: 1000,
            max_label_bytes: 4096,
        }
    }
}

/// The fields Predict and Recommend share, borrowed from either request:
/// the generated messages (`A` = [`Attempt`], `C` = [`Candidate`]) or the
/// in-place view of the received bytes (`crate::wire`, which builds one).
#[derive(Clone, Copy, Debug)]
pub struct PredictInput<'a, A = Attempt, C = Candidate> {
    /// The learner.
    pub user_id: &'a str,
    /// Completed attempts, oldest first.
    pub history: &'a [A],
    /// Tasks to predict, in response order.
    pub candidates: &'a [C],
    /// Whether to fill `reasons`.
    pub explain: bool,
    /// When the task is handed out, if the client said.
    pub as_of: Option<Stamp>,
}

impl<'a> From<&'a PredictRequest> for PredictInput<'a> {
    fn from(r: &'a PredictRequest) -> Self {
        PredictInput {
            user_id: &r.user_id,
            history: &r.history,
            candidates: &r.candidates,
            explain: r.explain,
            as_of: r.as_of.as_ref().map(Stamp::from),
        }
    }
}

impl<'a> From<&'a RecommendRequest> for PredictInput<'a> {
    fn from(r: &'a RecommendRequest) -> Self {
        PredictInput {
            user_id: &r.user_id,
            history: &r.history,
            candidates: &r.candidates,
            explain: r.explain,
            as_of: r.as_of.as_ref().map(Stamp::from),
        }
    }
}

/// One candidate's answer, without its task id (the caller has it).
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// Probability the first answer is correct.
    pub p_correct: f64,
    /// Median seconds.
    pub seconds: f64,
    /// 10th percentile of seconds.
    pub seconds_low: f64,
    /// 90th percentile of seconds.
    pub seconds_high: f64,
    /// No history in the candidate's topic.
    pub cold_start: bool,
    /// Filled when explaining.
    pub reasons: Vec<Reason>,
}

/// The first checks of every request: its entry counts. They come first,
/// and their messages do not state the count, so the in-place reader can
/// refuse a request as soon as it has counted one entry too many, without
/// reading (or allocating for) the rest.
pub fn check_counts(
    candidates: usize,
    history: usize,
    limits: &Limits,
) -> Result<(), PredictError> {
    if history > limits.max_history {
        return Err(too_many_history(limits));
    }
    if candidates > MAX_CANDIDATES {
        return Err(too_many_candidates());
    }
    Ok(())
}

/// More history attempts than `limits` allow.
pub(crate) fn too_many_history(limits: &Limits) -> PredictError {
    PredictError::InvalidArgument(format!(
        "history: over the limit of {} attempts",
        limits.max_history
    ))
}

/// More candidates than [`MAX_CANDIDATES`].
pub(crate) fn too_many_candidates() -> PredictError {
    PredictError::InvalidArgument(format!("candidates: over the limit of {MAX_CANDIDATES}"))
}

/// The checks that need only the request's counts and `user_id`, in
/// [`validate`]'s order: the in-place reader runs them before it allocates
/// the entries, so both paths refuse a request with the same message.
pub fn check_shape(
    user_id: &str,
    candidates: usize,
    history: usize,
    limits: &Limits,
) -> Result<(), PredictError> {
    check_counts(candidates, history, limits)?;
    let bad = |m: String| Err(PredictError::InvalidArgument(m));
    if user_id.is_empty() {
        return bad("user_id must not be empty".into());
    }
    check_label("user_id", user_id, limits)?;
    if candidates == 0 {
        return bad(format!("candidates: got 0, need 1..={MAX_CANDIDATES}"));
    }
    Ok(())
}

/// Refuses a string over `max_label_bytes`, naming the field (`what`
/// is only formatted on failure: the check costs one comparison).
fn check_label(
    what: impl std::fmt::Display,
    value: &str,
    limits: &Limits,
) -> Result<(), PredictError> {
    if value.len() > limits.max_label_bytes {
        return Err(PredictError::InvalidArgument(format!(
            "{what}: {} bytes exceed the limit of {}",
            value.len(),
            limits.max_label_bytes
        )));
    }
    Ok(())
}

/// A timestamp outside what protobuf's `Timestamp` allows, naming the field.
fn bad_timestamp(what: impl std::fmt::Display, t: Stamp) -> PredictError {
    PredictError::InvalidArgument(format!(
        "{what}: not a valid timestamp (seconds {}, nanos {}): seconds must be within years \
         1 to 9999 and nanos in 0..1000000000",
        t.seconds, t.nanos
    ))
}

/// The "now" a request's features are computed at: only for a model that
/// reads the clock (trained on rows with a recorded start time), the
/// request's `as_of` or else this server's clock. A model trained without
/// one saw "now unknown" on every row, and gets the same here.
fn request_now(reads_clock: bool, as_of: Option<Stamp>) -> Option<f64> {
    if !reads_clock {
        return None;
    }
    as_of.and_then(Stamp::unix_seconds).or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64())
    })
}

/// Checks everything the feature code and the model rely on; the error
/// message names the field so a client can fix the call without guessing.
pub fn validate<A: AttemptFields, C: CandidateFields>(
    input: &PredictInput<'_, A, C>,
    limits: &Limits,
) -> Result<(), PredictError> {
    check_shape(
        input.user_id,
        input.candidates.len(),
        input.history.len(),
        limits,
    )?;
    if let Some(t) = input.as_of
        && t.unix_seconds().is_none()
    {
        return Err(bad_timestamp("as_of", t));
    }
    for (i, a) in input.history.iter().enumerate() {
        let s = a.seconds();
        if !s.is_finite() || s < 0.0 {
            return Err(PredictError::InvalidArgument(format!(
                "history[{i}].seconds must be finite and >= 0, got {s}"
            )));
        }
        if let Some(t) = a.completed_at()
            && t.unix_seconds().is_none()
        {
            return Err(bad_timestamp(format_args!("history[{i}].completed_at"), t));
        }
        for (name, value) in [
            ("topic", a.topic()),
            ("difficulty", a.difficulty()),
            ("item_id", a.item_id()),
        ] {
            check_label(format_args!("history[{i}].{name}"), value, limits)?;
        }
    }
    for (i, c) in input.candidates.iter().enumerate() {
        for (name, value) in [
            ("task_id", c.task_id()),
            ("topic", c.topic()),
            ("difficulty", c.difficulty()),
            ("item_id", c.item_id()),
        ] {
            check_label(format_args!("candidates[{i}].{name}"), value, limits)?;
        }
    }
    Ok(())
}

/// Validates and predicts every candidate, in candidate order.
pub fn predict<A: AttemptFields, C: CandidateFields>(
    model: &LoadedModel,
    input: &PredictInput<'_, A, C>,
    limits: &Limits,
) -> Result<Vec<Prediction>, PredictError> {
    let scored = score(model, input, limits)?;
    Ok(input
        .candidates
        .iter()
        .zip(scored)
        .map(|(c, s)| Prediction {
            task_id: c.task_id().to_string(),
            p_correct: s.p_correct,
            seconds: s.seconds,
            seconds_low: s.seconds_low,
            seconds_high: s.seconds_high,
            cold_start: s.cold_start,
            reasons: s.reasons,
        })
        .collect())
}

/// [`predict`] without building the response messages: one [`Scored`] per
/// candidate, in candidate order, from one model run of this request's rows.
pub fn score<A: AttemptFields, C: CandidateFields>(
    model: &LoadedModel,
    input: &PredictInput<'_, A, C>,
    limits: &Limits,
) -> Result<Vec<Scored>, PredictError> {
    let Prepared { x, keys, pending } = prepare(model, input, limits)?;
    let out = model
        .onnx
        .run(&x, &keys)
        .map_err(|e| PredictError::Model(e.to_string()))?;
    pending.finish(out)
}

/// [`score`], with the request's rows run in one batch with whatever other
/// requests arrive beside it ([`crate::batch`]): the same answers, to within
/// the float summation order of a longer matrix (BENCHMARKS.md measures it).
pub async fn score_batched<A: AttemptFields, C: CandidateFields>(
    model: &LoadedModel,
    input: &PredictInput<'_, A, C>,
    limits: &Limits,
) -> Result<Vec<Scored>, PredictError> {
    let Prepared { x, keys, pending } = prepare(model, input, limits)?;
    let out = model
        .batcher
        .run(&model.onnx, x, keys)
        .await
        .map_err(PredictError::Model)?;
    pending.finish(out)
}

/// A request's model rows, built and not yet run.
struct Prepared {
    /// Row-major, the model's width: one row per candidate, then the
    /// occlusion rows when explaining.
    x: Vec<f32>,
    /// Row `i`'s index-input keys.
    keys: Vec<RowKeys>,
    /// What turns the rows' outputs into answers.
    pending: Pending,
}

/// What [`Pending::finish`] needs besides the outputs.
struct Pending {
    /// Each candidate's full feature row, when explaining.
    base: Vec<FeatureRow>,
    cold: Vec<bool>,
    width: usize,
    explain: bool,
}

/// Validates and builds the rows: history resolved against the model's
/// priors, cut to its window, one feature context, one row per candidate
/// (plus occlusion rows when explaining).
fn prepare<A: AttemptFields, C: CandidateFields>(
    model: &LoadedModel,
    input: &PredictInput<'_, A, C>,
    limits: &Limits,
) -> Result<Prepared, PredictError> {
    validate(input, limits)?;
    let table = model.table();
    let meta = model.metadata();

    // Only the window is resolved: attempts before it never reach a feature.
    // `seconds == 0` means "not recorded"; the order is the client's (oldest
    // first) whatever `completed_at` says.
    let window = meta.history_window as usize;
    let recent = &input.history[input.history.len().saturating_sub(window)..];
    let events: Vec<Event> = recent
        .iter()
        .map(|a| {
            let seconds = a.seconds();
            let seconds = (seconds > 0.0).then_some(seconds);
            Event::resolve(
                a.topic(),
                a.difficulty(),
                a.item_id(),
                a.correct(),
                seconds,
                table,
            )
            .at(a.completed_at().and_then(Stamp::unix_seconds))
        })
        .collect();
    let ctx = FeatureContext::for_candidates(
        features::window(&events, meta.history_window),
        table,
        input.candidates.len(),
    )
    .at(request_now(meta.reads_clock(), input.as_of));

    let user = label_key(input.user_id);
    let n = input.candidates.len();
    // The model reads the first `width` columns of this build's rows: the
    // columns of the schema it declares (`Schema`).
    let width = model.onnx.width();
    let rows_per_candidate = if input.explain { 1 + width } else { 1 };
    let mut x: Vec<f32> = Vec::with_capacity(n * rows_per_candidate * width);
    let mut keys: Vec<RowKeys> = Vec::with_capacity(n * rows_per_candidate);
    let mut base: Vec<FeatureRow> = Vec::with_capacity(if input.explain { n } else { 0 });
    let mut cold: Vec<bool> = Vec::with_capacity(n);
    for c in input.candidates {
        let key = CandidateKey::new(c.topic(), c.difficulty(), c.item_id(), table);
        let f = ctx.row(&key, table);
        x.extend_from_slice(&f.row[..width]);
        keys.push(RowKeys::new(user, &key));
        cold.push(f.cold_start);
        if input.explain {
            base.push(f.row);
        }
    }
    if input.explain {
        // Occlusion rows: candidate i's row with feature j set to its
        // population baseline, all in the same batch as the real rows.
        for (i, row) in base.iter().enumerate() {
            for (j, baseline) in meta.feature_baseline.iter().enumerate().take(width) {
                let mut r = *row;
                r[j] = *baseline;
                x.extend_from_slice(&r[..width]);
                keys.push(keys[i]);
            }
        }
    }
    Ok(Prepared {
        x,
        keys,
        pending: Pending {
            base,
            cold,
            width,
            explain: input.explain,
        },
    })
}

impl Pending {
    /// The answers from the rows' outputs, in candidate order.
    fn finish(self, out: Vec<Output>) -> Result<Vec<Scored>, PredictError> {
        let Pending {
            base,
            cold,
            width,
            explain,
        } = self;
        let n = cold.len();
        let rows = if explain { n * (1 + width) } else { n };
        if out.len() != rows {
            return Err(PredictError::Model(format!(
                "{} outputs for {rows} rows",
                out.len()
            )));
        }
        let mut scored = Vec::with_capacity(n);
        for (i, cold_start) in cold.into_iter().enumerate() {
            let p = Point::from(&out[i]);
            let reasons = if explain {
                let occluded = &out[n + i * width..n + (i + 1) * width];
                explain_row(&base[i], &p, occluded)
            } else {
                Vec::new()
            };
            scored.push(Scored {
                p_correct: p.p_correct,
                seconds: p.seconds,
                seconds_low: p.seconds_low,
                seconds_high: p.seconds_high,
                cold_start,
                reasons,
            });
        }
        Ok(scored)
    }
}

/// One row's output in client units.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    p_correct: f64,
    seconds: f64,
    seconds_low: f64,
    seconds_high: f64,
}

impl From<&Output> for Point {
    fn from(o: &Output) -> Self {
        let (lo, hi) = LOG_SECONDS_RANGE;
        let secs = |v: f32| f64::from(v).clamp(lo, hi).exp();
        let [q10, q50, q90] = o.log_seconds;
        let median = secs(q50);
        // Warm-up rejects models whose quantiles cross, but a row it never saw
        // might still; keep low <= median <= high for the client regardless.
        Point {
            p_correct: f64::from(o.p_correct).clamp(0.0, 1.0),
            seconds: median,
            seconds_low: secs(q10).min(median),
            seconds_high: secs(q90).max(median),
        }
    }
}

/// Every feature's effect, largest |effect| first (ties: larger
/// |seconds_effect|, then schema order).
///
/// Every feature of the model's schema is returned rather than a top-k: the response is
/// complete, the ordering already puts what matters first, and a client that
/// shows three reasons takes three. Zero-effect features are kept so the list
/// has the same length for every model of a schema.
fn explain_row(row: &FeatureRow, p: &Point, occluded: &[Output]) -> Vec<Reason> {
    let mut reasons: Vec<Reason> = occluded
        .iter()
        .zip(row)
        .zip(FEATURE_NAMES)
        .map(|((o, value), name)| {
            let without = Point::from(o);
            Reason {
                feature: name.to_string(),
                value: f64::from(*value),
                effect: p.p_correct - without.p_correct,
                seconds_effect: p.seconds - without.seconds,
            }
        })
        .collect();
    reasons.sort_by(|a, b| {
        b.effect
            .abs()
            .total_cmp(&a.effect.abs())
            .then(b.seconds_effect.abs().total_cmp(&a.seconds_effect.abs()))
    });
    reasons
}

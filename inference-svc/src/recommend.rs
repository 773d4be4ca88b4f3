//! Recommend: Predict, then rank candidates by how close `p_correct` is to a
//! target success rate (desirable difficulty: not too easy, not too hard) and
//! take them greedily while their median times fit the budget.

use taskcast_proto::{Prediction, RecommendRequest};

use crate::fields::{AttemptFields, CandidateFields};
use crate::model::LoadedModel;
use crate::predict::{Limits, PredictError, PredictInput, check_counts, predict};

/// Target used when the request leaves `target_p_correct` at 0.
pub const DEFAULT_TARGET: f64 = 0.7;

/// A ranked, budgeted selection.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    /// Chosen candidates, closest to the target first.
    pub predictions: Vec<Prediction>,
    /// The target used.
    pub target_p_correct: f64,
    /// Sum of the chosen median seconds.
    pub total_seconds: f64,
}

/// The Recommend-only fields of a request, however it was read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecommendParams {
    /// `target_p_correct` as sent (0: the default).
    pub target_p_correct: f64,
    /// `time_budget_seconds` as sent (0: no budget).
    pub time_budget_seconds: f64,
    /// `limit` as sent (0: no limit).
    pub limit: u32,
}

impl From<&RecommendRequest> for RecommendParams {
    fn from(r: &RecommendRequest) -> Self {
        RecommendParams {
            target_p_correct: r.target_p_correct,
            time_budget_seconds: r.time_budget_seconds,
            limit: r.limit,
        }
    }
}

/// Checks the Recommend-only fields and returns the effective target.
/// Runs after the entry counts and before the other shared checks, on
/// either path.
pub fn validate_params(req: &RecommendParams) -> Result<f64, PredictError> {
    let bad = |m: String| Err(PredictError::InvalidArgument(m));
    let target = if req.target_p_correct == 0.0 {
        DEFAULT_TARGET
    } else {
        req.target_p_correct
    };
    if !(target > 0.0 && target < 1.0) {
        return bad(format!(
            "target_p_correct must be in (0, 1) or 0 for the default, got {}",
            req.target_p_correct
        ));
    }
    let budget = req.time_budget_seconds;
    if !budget.is_finite() || budget < 0.0 {
        return bad(format!(
            "time_budget_seconds must be finite and >= 0, got {budget}"
        ));
    }
    Ok(target)
}

/// Predicts, ranks by `|p − target|` (stable: equal distances keep candidate
/// order), then walks the ranking taking each candidate whose median seconds
/// still fit the budget (0 = no budget) — a candidate that does not fit is
/// skipped, not a stop, so a shorter one further down can still fill the
/// budget — until `limit` are taken (0 = no limit).
pub fn recommend<A: AttemptFields, C: CandidateFields>(
    model: &LoadedModel,
    input: &PredictInput<'_, A, C>,
    req: &RecommendParams,
    limits: &Limits,
) -> Result<Recommendation, PredictError> {
    // Counts first, as the in-place reader checks them (it stops counting
    // at one entry too many, before it reaches these parameters).
    check_counts(input.candidates.len(), input.history.len(), limits)?;
    let target = validate_params(req)?;
    let mut ranked = predict(model, input, limits)?;
    ranked.sort_by(|a, b| {
        (a.p_correct - target)
            .abs()
            .total_cmp(&(b.p_correct - target).abs())
    });
    let budget = req.time_budget_seconds;
    let limit = if req.limit == 0 {
        usize::MAX
    } else {
        req.limit as usize
    };
    let mut total = 0.0;
    let mut chosen = Vec::new();
    for p in ranked {
        if chosen.len() >= limit {
            break;
        }
        if budget > 0.0 && total + p.seconds > budget {
            continue;
        }
        total += p.seconds;
        chosen.push(p);
    }
    Ok(Recommendation {
        predictions: chosen,
        target_p_correct: target,
        total_seconds: total,
    })
}

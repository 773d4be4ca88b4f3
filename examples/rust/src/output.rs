//! What the commands print: predictions as text lines (for people), trainer
//! messages as one JSON object per line (for `jq` and scripts). Fields at
//! their default are printed too: `"time_modeled": false` is an answer.

use prost_types::Timestamp;
use serde_json::{Value, json};
use taskcast_proto::{
    Diversity, ModelArtifact, ModelInfo, ModelReportResponse, ModelVersion, PredictResponse,
    RecommendResponse, TrainingRun, VersionReport,
};

fn ts(t: &Option<Timestamp>) -> Value {
    t.as_ref()
        .map_or(Value::Null, |t| Value::String(t.to_string()))
}

/// Predictions, the strongest reasons under each.
pub fn predictions(resp: &PredictResponse) {
    println!(
        "model {}  time_modeled {}",
        resp.model_version, resp.time_modeled
    );
    for p in &resp.predictions {
        println!(
            "{:<12} p_correct {:.3}  seconds {:.1} [{:.1} – {:.1}]  cold_start {}",
            p.task_id, p.p_correct, p.seconds, p.seconds_low, p.seconds_high, p.cold_start
        );
        for r in p.reasons.iter().take(5) {
            println!(
                "    {:<26} value {:>8.3}  effect {:+.3}",
                r.feature, r.value, r.effect
            );
        }
    }
}

/// A ranking, best first.
pub fn recommendations(resp: &RecommendResponse) {
    println!(
        "model {}  target {:.2}  total seconds {:.1}",
        resp.model_version, resp.target_p_correct, resp.total_seconds
    );
    for p in &resp.predictions {
        println!(
            "{:<12} p_correct {:.3}  seconds {:.1}",
            p.task_id, p.p_correct, p.seconds
        );
    }
}

/// GetModel's answer.
pub fn model_info(m: &ModelInfo) -> Value {
    json!({
        "version": m.version, "family": m.family, "feature_schema": m.feature_schema,
        "trained_at": ts(&m.trained_at), "loaded_at": ts(&m.loaded_at),
        "history_window": m.history_window, "sha256": m.sha256, "metrics": m.metrics,
        "features": m.features, "time_modeled": m.time_modeled,
    })
}

/// One state of a training run.
pub fn training_run(r: &TrainingRun) -> Value {
    json!({
        "id": r.id, "trigger": r.trigger, "state": r.state, "phase": r.phase,
        "progress": r.progress, "family": r.family, "rows_used": r.rows_used,
        "rows_skipped": r.rows_skipped, "metrics": r.metrics, "model_version": r.model_version,
        "gate_reason": r.gate_reason, "error": r.error,
        "started_at": ts(&r.started_at), "finished_at": ts(&r.finished_at),
    })
}

/// One registry entry.
pub fn model_version(v: &ModelVersion) -> Value {
    json!({
        "version": v.version, "family": v.family, "feature_schema": v.feature_schema,
        "state": v.state, "reason": v.reason, "sha256": v.sha256, "size_bytes": v.size_bytes,
        "metrics": v.metrics, "time_modeled": v.time_modeled,
        "created_at": ts(&v.created_at), "promoted_at": ts(&v.promoted_at),
    })
}

/// A model artifact without its ONNX bytes (their size instead).
pub fn artifact(a: &ModelArtifact) -> Value {
    json!({
        "version": a.version, "family": a.family, "feature_schema": a.feature_schema,
        "sha256": a.sha256, "onnx_bytes": a.onnx.len(), "promoted_at": ts(&a.promoted_at),
    })
}

fn diversity(d: &Option<Diversity>) -> Value {
    d.as_ref().map_or(Value::Null, |d| {
        json!({"groups": d.groups, "distinct": d.distinct, "spread": d.spread,
               "spread_p10_p90": d.spread_p10_p90})
    })
}

fn version_report(v: &VersionReport) -> Value {
    let topics: Vec<Value> = v
        .topics
        .iter()
        .map(|t| {
            json!({"topic": t.topic, "rows": t.rows, "distinct": t.distinct,
                        "spread": t.spread, "std_dev": t.std_dev})
        })
        .collect();
    let stuck: Vec<Value> = v
        .stuck
        .iter()
        .map(
            |s| json!({"user_id": s.user_id, "tasks": s.tasks, "p_min": s.p_min, "p_max": s.p_max}),
        )
        .collect();
    json!({
        "version": v.version, "family": v.family, "state": v.state, "rows": v.rows,
        "auc": v.auc, "logloss": v.logloss, "brier": v.brier, "ece": v.ece,
        "mean_predicted": v.mean_predicted, "observed_rate": v.observed_rate,
        "timed_rows": v.timed_rows, "time_mae_seconds": v.time_mae_seconds,
        "time_mae_log_seconds": v.time_mae_log_seconds, "interval_rows": v.interval_rows,
        "interval_coverage": v.interval_coverage,
        "overall": diversity(&v.overall), "per_learner": diversity(&v.per_learner),
        "topics": topics, "stuck_eligible_learners": v.stuck_eligible_learners,
        "stuck_learners": v.stuck_learners, "stuck": stuck, "holdout": v.holdout,
        "drift": v.drift, "drift_reasons": v.drift_reasons,
        "first_completed_at": ts(&v.first_completed_at),
        "last_completed_at": ts(&v.last_completed_at),
    })
}

/// ModelReport's answer.
pub fn model_report(r: &ModelReportResponse) -> Value {
    let versions: Vec<Value> = r.versions.iter().map(version_report).collect();
    json!({
        "versions": versions, "last_days": r.last_days, "last_rows": r.last_rows,
        "stuck_window": r.stuck_window, "generated_at": ts(&r.generated_at),
        "rows_scanned": r.rows_scanned,
        "learner_ids_pseudonymised": r.learner_ids_pseudonymised,
    })
}

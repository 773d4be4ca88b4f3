//! The registry, runs and reports as the API shows them: one conversion
//! per message, so the handlers in `service.rs` stay about what to do, not
//! how each answer is spelled.

use taskcast_proto::{Canary, ModelArtifact, ModelReportResponse, ModelVersion, TrainingRun};

use crate::db::{ModelVersionMeta, RunRecord};
use crate::report;
use crate::run::publisher::ActiveModel;
use crate::serve::pseudonym::Pseudonymiser;

pub(super) fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A run record as the API shows it.
pub fn run_proto(r: &RunRecord) -> TrainingRun {
    TrainingRun {
        id: r.id.clone(),
        trigger: r.trigger.as_str().into(),
        state: r.state.as_str().into(),
        phase: r.phase.clone(),
        progress: r.progress,
        rows_used: r.rows_used,
        rows_skipped: r.rows_skipped,
        metrics: r.metrics.clone().into_iter().collect(),
        model_version: r.model_version.clone().unwrap_or_default(),
        error: r.error.clone(),
        started_at: Some(timestamp(r.started_at)),
        finished_at: r.finished_at.map(timestamp),
        family: r.family.clone(),
        gate_reason: r.gate_reason.clone(),
    }
}

/// A registry entry as the API shows it.
pub fn version_proto(m: &ModelVersionMeta) -> ModelVersion {
    ModelVersion {
        version: m.version.clone(),
        family: m.family.clone(),
        feature_schema: m.feature_schema.clone(),
        sha256: m.sha256.clone(),
        metrics: m.metrics.clone().into_iter().collect(),
        state: m.state.as_str().into(),
        reason: m.reason.clone(),
        created_at: Some(timestamp(m.created_at)),
        promoted_at: m.promoted_at.map(timestamp),
        size_bytes: m.size_bytes,
        time_modeled: taskcast_contract::artifact::time_modeled(m.time_modeled, &m.metrics),
    }
}

pub(super) fn artifact_proto(a: &ActiveModel) -> ModelArtifact {
    let canary = a.canary.as_ref().map(|c| Canary {
        rollout_id: c.rollout.id.clone(),
        percent: c.rollout.percent,
        candidate: Some(Box::new(model_artifact(&c.meta, &c.onnx))),
        started_at: Some(timestamp(c.rollout.started_at)),
    });
    ModelArtifact {
        canary: canary.map(Box::new),
        ..model_artifact(&a.meta, &a.onnx)
    }
}

/// One version as it travels, without a canary.
fn model_artifact(meta: &ModelVersionMeta, onnx: &[u8]) -> ModelArtifact {
    ModelArtifact {
        version: meta.version.clone(),
        family: meta.family.clone(),
        feature_schema: meta.feature_schema.clone(),
        sha256: meta.sha256.clone(),
        onnx: onnx.to_vec(),
        promoted_at: meta.promoted_at.map(timestamp),
        no_active_version: false,
        canary: None,
    }
}

pub(super) fn opt_timestamp(
    t: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<prost_types::Timestamp> {
    t.map(timestamp)
}

fn diversity_proto(d: &report::Diversity) -> taskcast_proto::Diversity {
    taskcast_proto::Diversity {
        groups: d.groups,
        distinct: d.distinct,
        spread: d.spread,
        spread_p10_p90: d.spread_p10_p90.unwrap_or(0.0),
    }
}

/// A live report as the API shows it: learner ids as they are with
/// `pseudonyms` `None` (admin), else as keyed pseudonyms.
pub fn report_proto(r: &report::Report, pseudonyms: Option<&Pseudonymiser>) -> ModelReportResponse {
    let learner = |id: &str| match pseudonyms {
        Some(p) => p.pseudonym(id),
        None => id.to_string(),
    };
    let versions = r
        .versions
        .iter()
        .map(|v| {
            let l = &v.live;
            taskcast_proto::VersionReport {
                version: v.version.clone(),
                family: v.family.clone(),
                state: v.state.clone(),
                rows: l.rows,
                auc: l.auc,
                logloss: l.logloss,
                brier: l.brier,
                ece: l.ece,
                mean_predicted: l.mean_predicted,
                observed_rate: l.observed_rate,
                timed_rows: l.timed_rows,
                time_mae_seconds: l.time_mae_seconds,
                time_mae_log_seconds: l.time_mae_log_seconds,
                interval_rows: l.interval_rows,
                interval_coverage: l.interval_coverage,
                overall: Some(diversity_proto(&v.overall)),
                per_learner: Some(diversity_proto(&v.per_learner)),
                topics: v
                    .topics
                    .iter()
                    .map(|t| taskcast_proto::TopicDiversity {
                        topic: t.topic.clone(),
                        rows: t.rows,
                        distinct: t.distinct,
                        spread: t.spread,
                        std_dev: t.std_dev,
                    })
                    .collect(),
                stuck_eligible_learners: v.stuck_eligible_learners,
                stuck_learners: v.stuck_learners,
                stuck: v
                    .stuck
                    .iter()
                    .map(|s| taskcast_proto::StuckLearner {
                        user_id: learner(&s.user_id),
                        tasks: s.tasks,
                        p_min: s.p_min,
                        p_max: s.p_max,
                    })
                    .collect(),
                holdout: v.holdout.clone().into_iter().collect(),
                drift: v.drift,
                drift_reasons: v.drift_reasons.clone(),
                first_completed_at: opt_timestamp(v.first_completed_at),
                last_completed_at: opt_timestamp(v.last_completed_at),
            }
        })
        .collect();
    ModelReportResponse {
        versions,
        last_days: r.request.last_days,
        last_rows: r.request.last_rows,
        stuck_window: r.request.stuck_window,
        generated_at: Some(timestamp(r.generated_at)),
        rows_scanned: r.rows_scanned,
        learner_ids_pseudonymised: pseudonyms.is_some(),
    }
}

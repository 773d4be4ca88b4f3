//! What a run leaves behind: whether its model goes live ([`Decision`]) and
//! what its record says at the end ([`end_update`]).

use taskcast_learn::judge::gate::Verdict;
use taskcast_learn::pipeline::{Phase, Trained};

use crate::db::DbError;
use crate::db::{RunState, RunUpdate};
use taskcast_learn::pipeline::TrainError;

/// Whether a trained model goes live, and the reason stored with it.
pub(super) struct Decision {
    pub(super) promote: bool,
    pub(super) reason: String,
}

impl Decision {
    /// The gate's verdict, unless an operator forced the run over it.
    pub(super) fn new(verdict: &Verdict, force: bool) -> Self {
        let promote = force || verdict.promotes();
        let reason = if force && !verdict.promotes() {
            format!("forced by operator over the gate: {}", verdict.reason())
        } else {
            verdict.reason().to_string()
        };
        Decision { promote, reason }
    }

    /// This decision, unless it promotes a model the replicas would refuse
    /// (their probe check, run by the pipeline on the export it verified):
    /// then a rejection saying why, so the registry never names as active
    /// what no replica can serve.
    pub(super) fn unless_unservable(self, servable: &Result<(), String>) -> Decision {
        match servable {
            Err(why) if self.promote => {
                tracing::warn!(reason = %why, "trained model passed the gate but replicas would refuse it");
                Decision {
                    promote: false,
                    reason: format!(
                        "not servable (replicas would refuse it): {why}; gate: {}",
                        self.reason
                    ),
                }
            }
            _ => self,
        }
    }
}

/// What the run's record says at its end: the model, its figures and the
/// gate's reason, or the error.
pub(super) fn end_update(outcome: &Result<(Trained, bool), RunFailure>) -> RunUpdate {
    let (t, promoted) = match outcome {
        Ok(done) => done,
        Err(e) => {
            return RunUpdate {
                state: Some(RunState::Failed),
                error: Some(e.to_string()),
                ..Default::default()
            };
        }
    };
    let mut metrics = t.metadata.metrics.clone();
    for (name, m) in &t.baselines {
        for (k, v) in m.to_map() {
            metrics.insert(format!("{name}.{k}"), v);
        }
    }
    if let Some(a) = &t.active {
        for (k, v) in a.metrics.to_map() {
            metrics.insert(format!("active.{k}"), v);
        }
    }
    RunUpdate {
        phase: Some(Phase::Done.name().into()),
        progress: Some(1.0),
        state: Some(if *promoted {
            RunState::Succeeded
        } else {
            RunState::Rejected
        }),
        rows_used: Some(t.rows),
        rows_skipped: Some(t.skipped.values().sum()),
        skipped_detail: Some(t.skipped.clone()),
        metrics: Some(metrics),
        model_version: Some(t.metadata.version.clone()),
        gate_reason: Some(t.verdict.reason().to_string()),
        error: None,
    }
}

/// Why a run ended without a model.
#[derive(Debug, thiserror::Error)]
pub(super) enum RunFailure {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("publishing: {0}")]
    Db(#[from] DbError),
    #[error("interrupted by shutdown before publishing")]
    Shutdown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unservable_model_is_rejected_whatever_the_gate_or_the_operator_said() {
        let refused = Err("probe 0: p_correct NaN is not a probability".to_string());
        let gate = Verdict::Promote("beats the baselines".into());
        let d = Decision::new(&gate, false).unless_unservable(&refused);
        assert!(!d.promote);
        assert!(d.reason.starts_with("not servable"), "{}", d.reason);
        assert!(d.reason.contains("p_correct NaN") && d.reason.contains("beats the baselines"));
        // An operator's force does not override it either.
        let reject = Verdict::Reject("worse than the active version".into());
        assert!(
            !Decision::new(&reject, true)
                .unless_unservable(&refused)
                .promote
        );
        // A servable model keeps the gate's decision and reason.
        let d = Decision::new(&gate, false).unless_unservable(&Ok(()));
        assert!(d.promote && d.reason == "beats the baselines");
        // A rejection stays one, with the gate's reason.
        let d = Decision::new(&reject, false).unless_unservable(&refused);
        assert!(!d.promote && d.reason == "worse than the active version");
    }
}

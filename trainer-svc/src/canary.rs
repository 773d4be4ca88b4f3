//! Judging a canary on live outcomes. The candidate answers a share of
//! learners, the active version (the baseline) the rest; the app's backend
//! stores each completed task with the version that predicted it, so each
//! arm's log loss on the tasks completed since the canary started is what
//! `ModelReport` would say of it. Once both arms have enough outcomes the
//! candidate is promoted if it is not worse than the baseline beyond a
//! tolerance and rejected otherwise; a canary that cannot gather enough
//! outcomes in its time returns its candidate unjudged; one every live
//! replica refuses is rejected with their reasons. Every decision is one
//! registry transaction that names the rollout, so two trainer replicas
//! judging together decide once.

use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use taskcast_learn::judge::metrics::log_loss;
use taskcast_serving::shutdown::Shutdown;

use crate::db::{CanaryEnd, Db, DbResult, OutcomeFilter, Rollout};
use crate::fleet;
use crate::run::publisher::Publisher;

/// How automatic runs put a model that passed the gate into service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RolloutPolicy {
    /// Make it active for everyone at once.
    #[default]
    Direct,
    /// Start a canary on this share of learners (1-99).
    Canary(u32),
}

impl FromStr for RolloutPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "direct" => Ok(RolloutPolicy::Direct),
            other => {
                let pct = other
                    .strip_prefix("canary:")
                    .and_then(|p| p.trim().trim_end_matches('%').parse::<u32>().ok())
                    .filter(|p| taskcast_contract::canary::percent_problem(*p).is_none());
                pct.map(RolloutPolicy::Canary).ok_or_else(|| {
                    format!("{other:?}: expected direct or canary:PERCENT with PERCENT 1-99")
                })
            }
        }
    }
}

impl std::fmt::Display for RolloutPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RolloutPolicy::Direct => f.write_str("direct"),
            RolloutPolicy::Canary(p) => write!(f, "canary:{p}"),
        }
    }
}

/// When a canary is decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CanaryPolicy {
    /// Outcomes each arm needs before the judge decides.
    pub min_outcomes: u64,
    /// Longest a canary runs; past it without enough outcomes, the
    /// candidate goes back to `candidate`.
    pub max_duration: Duration,
    /// How much worse (log loss) the candidate may be and still be promoted.
    pub logloss_tolerance: f64,
}

impl Default for CanaryPolicy {
    fn default() -> Self {
        CanaryPolicy {
            min_outcomes: 1000,
            max_duration: Duration::from_secs(24 * 3600),
            logloss_tolerance: 0.005,
        }
    }
}

/// One arm's live figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Arm {
    /// Completed tasks it predicted since the canary started.
    pub outcomes: u64,
    /// Their log loss; `None` without outcomes.
    pub logloss: Option<f64>,
}

impl Arm {
    fn describe(&self) -> String {
        match self.logloss {
            Some(l) => format!("log loss {l:.4} over {} outcomes", self.outcomes),
            None => "no outcomes".into(),
        }
    }
}

/// What the judge says.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Not enough outcomes yet, and time is left.
    Wait,
    /// End the canary this way, for this reason.
    End(CanaryEnd, String),
}

/// Judges a canary `elapsed` into its run from each arm's figures.
pub fn judge(
    policy: &CanaryPolicy,
    rollout: &Rollout,
    candidate: Arm,
    baseline: Arm,
    elapsed: Duration,
) -> Verdict {
    let figures = format!(
        "canary {} ({}% of learners): candidate {}; active {} {}",
        rollout.id,
        rollout.percent,
        candidate.describe(),
        rollout.baseline,
        baseline.describe()
    );
    let enough =
        candidate.outcomes >= policy.min_outcomes && baseline.outcomes >= policy.min_outcomes;
    match (enough, candidate.logloss, baseline.logloss) {
        (true, Some(c), Some(b)) if c <= b + policy.logloss_tolerance => Verdict::End(
            CanaryEnd::Promote,
            format!(
                "promoted on live outcomes: {figures}; within tolerance {}",
                policy.logloss_tolerance
            ),
        ),
        (true, Some(_), Some(_)) => Verdict::End(
            CanaryEnd::Reject,
            format!(
                "rejected on live outcomes: {figures}; worse beyond tolerance {}",
                policy.logloss_tolerance
            ),
        ),
        _ if elapsed >= policy.max_duration => Verdict::End(
            CanaryEnd::Return,
            format!(
                "canary ended unjudged after {}s: fewer than {} outcomes per arm ({figures})",
                elapsed.as_secs(),
                policy.min_outcomes
            ),
        ),
        _ => Verdict::Wait,
    }
}

/// `version`'s live figures on tasks completed after the canary started.
pub async fn arm(db: &Db, rollout: &Rollout, version: &str) -> DbResult<Arm> {
    let mut pager = db.scan_outcomes(
        OutcomeFilter {
            version: Some(version.to_owned()),
            since: None,
            min_id: Some(rollout.start_task_id.saturating_add(1)),
        },
        5000,
    );
    let (mut p, mut y) = (Vec::new(), Vec::new());
    while let Some(page) = pager.next_page().await? {
        for row in page {
            p.push(row.prediction.p_correct);
            y.push(row.correct);
        }
    }
    Ok(Arm {
        outcomes: p.len() as u64,
        logloss: log_loss(&p, &y),
    })
}

/// One look at the canary in progress, if any: ends it when the replicas
/// all refuse its candidate or the judge decides. Returns how it ended.
pub async fn check_once(
    db: &Db,
    publisher: &Publisher,
    policy: &CanaryPolicy,
) -> DbResult<Option<(CanaryEnd, String)>> {
    let Some(rollout) = db.open_rollout().await? else {
        return Ok(None);
    };
    let now = Utc::now();
    let replicas = db.fleet().await?;
    let verdict =
        match fleet::all_refuse(&replicas, &rollout.candidate, Some(rollout.started_at), now) {
            Some(why) => Verdict::End(
                CanaryEnd::Reject,
                format!("canary {} stopped: {why}", rollout.id),
            ),
            None => {
                let candidate = arm(db, &rollout, &rollout.candidate).await?;
                let baseline = arm(db, &rollout, &rollout.baseline).await?;
                let elapsed = (now - rollout.started_at).to_std().unwrap_or_default();
                judge(policy, &rollout, candidate, baseline, elapsed)
            }
        };
    let Verdict::End(end, reason) = verdict else {
        return Ok(None);
    };
    if db.end_canary(&rollout.id, end, &reason).await?.is_none() {
        // Another trainer replica decided first.
        return Ok(None);
    }
    publisher.refresh(db).await?;
    tracing::warn!(rollout = %rollout.id, candidate = %rollout.candidate, decision = ?end, %reason, "canary decided");
    Ok(Some((end, reason)))
}

/// Every `every`, until `shutdown`: [`check_once`].
pub async fn watch(
    db: Db,
    publisher: Publisher,
    policy: CanaryPolicy,
    every: Duration,
    shutdown: Shutdown,
) {
    shutdown
        .every(every, || async {
            if let Err(e) = check_once(&db, &publisher, &policy).await {
                tracing::warn!(error = %e, "judging the canary failed");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout() -> Rollout {
        Rollout {
            id: "canary-v2-1".into(),
            candidate: "v2".into(),
            baseline: "v1".into(),
            percent: 20,
            started_at: Utc::now(),
            start_task_id: 0,
            ended_at: None,
            decision: None,
            reason: String::new(),
        }
    }

    fn arm(outcomes: u64, logloss: f64) -> Arm {
        Arm {
            outcomes,
            logloss: Some(logloss),
        }
    }

    #[test]
    fn the_judge_waits_for_outcomes_then_compares_log_loss() {
        let policy = CanaryPolicy {
            min_outcomes: 100,
            max_duration: Duration::from_secs(3600),
            logloss_tolerance: 0.01,
        };
        let r = rollout();
        let minute = Duration::from_secs(60);
        assert_eq!(
            judge(&policy, &r, arm(99, 0.5), arm(500, 0.6), minute),
            Verdict::Wait
        );
        let Verdict::End(end, why) = judge(&policy, &r, arm(100, 0.605), arm(400, 0.6), minute)
        else {
            panic!("decides with enough outcomes");
        };
        assert_eq!(end, CanaryEnd::Promote, "{why}");
        assert!(
            why.contains("0.6050 over 100") && why.contains("0.6000 over 400"),
            "{why}"
        );
        let Verdict::End(end, why) = judge(&policy, &r, arm(100, 0.62), arm(400, 0.6), minute)
        else {
            panic!("decides with enough outcomes");
        };
        assert_eq!(end, CanaryEnd::Reject, "{why}");
        let Verdict::End(end, _) = judge(
            &policy,
            &r,
            arm(3, 0.1),
            Arm::default(),
            2 * policy.max_duration,
        ) else {
            panic!("ends at the maximum duration");
        };
        assert_eq!(end, CanaryEnd::Return);
    }

    #[test]
    fn rollout_policies_parse_and_refuse_nonsense() {
        assert_eq!("direct".parse(), Ok(RolloutPolicy::Direct));
        assert_eq!("canary:20".parse(), Ok(RolloutPolicy::Canary(20)));
        assert_eq!("canary:20%".parse(), Ok(RolloutPolicy::Canary(20)));
        for bad in ["canary:0", "canary:100", "canary", "half", ""] {
            assert!(bad.parse::<RolloutPolicy>().is_err(), "{bad}");
        }
        assert_eq!(RolloutPolicy::Canary(5).to_string(), "canary:5");
    }
}

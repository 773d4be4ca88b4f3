//! The inference fleet as the trainers know it: what each replica reports
//! (`db/fleet.rs`), classified against the active version, exported as
//! Prometheus gauges (replicas per version and state, so version skew can
//! alert), and watched for the one case the registry must undo by itself: an
//! active version every live replica refuses. Then the trainer rolls back to
//! the previous version and rejects the refused one with the replicas'
//! reasons, instead of leaving the registry saying one thing and the fleet
//! serving another.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{IntGaugeVec, Opts, Registry};
use taskcast_serving::shutdown::Shutdown;

use crate::db::{Db, DbError, DbResult, ReplicaRecord};
use crate::run::publisher::Publisher;

/// A replica silent for longer than this is "gone": replicas report every
/// [`REPORT_EVERY`], so this is several missed reports.
pub const GONE_AFTER: Duration = Duration::from_secs(45);

/// How often a replica reports when nothing changes (a heartbeat; the
/// replica's own constant is the same).
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// How often the trainer looks at the fleet.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Where a replica stands against the active version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaState {
    /// Serves the active version.
    Current,
    /// Serves another version.
    Stale,
    /// Refused the active version (and serves something else or nothing).
    Refusing,
    /// Serves nothing yet.
    Starting,
    /// Not heard from for [`GONE_AFTER`].
    Gone,
}

impl ReplicaState {
    /// Name in the API and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Current => "current",
            ReplicaState::Stale => "stale",
            ReplicaState::Refusing => "refusing",
            ReplicaState::Starting => "starting",
            ReplicaState::Gone => "gone",
        }
    }
}

/// `r`'s state at `now` given the active version (`None` on a fresh install).
pub fn state(r: &ReplicaRecord, active: Option<&str>, now: DateTime<Utc>) -> ReplicaState {
    let silent = (now - r.last_seen).to_std().unwrap_or_default();
    if silent > GONE_AFTER {
        return ReplicaState::Gone;
    }
    match active {
        Some(a) if r.version == a => ReplicaState::Current,
        Some(a) if r.refused_version == a => ReplicaState::Refusing,
        _ if r.version.is_empty() => ReplicaState::Starting,
        Some(_) => ReplicaState::Stale,
        // Nothing is active: whatever it serves (the bootstrap) is current.
        None => ReplicaState::Current,
    }
}

/// Why the active version should be rolled back: every live replica (at
/// least one) refused it since it was promoted, and none serves it. The
/// replicas' reasons, one per distinct reason, make the registry's record.
pub fn all_refuse(
    fleet: &[ReplicaRecord],
    active: &str,
    promoted_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<String> {
    let live: Vec<&ReplicaRecord> = fleet
        .iter()
        .filter(|r| state(r, Some(active), now) != ReplicaState::Gone)
        .collect();
    let promoted = promoted_at.unwrap_or_default();
    let refused = |r: &&ReplicaRecord| {
        r.version != active
            && r.refused_version == active
            && r.refused_at.is_some_and(|t| t >= promoted)
    };
    if live.is_empty() || !live.iter().all(refused) {
        return None;
    }
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &live {
        *reasons.entry(r.refused_reason.as_str()).or_default() += 1;
    }
    let why: Vec<String> = reasons
        .iter()
        .map(|(reason, n)| format!("{n} × {reason}"))
        .collect();
    Some(format!(
        "every live replica ({}) refused it: {}",
        live.len(),
        why.join("; ")
    ))
}

/// `taskcast_trainer_fleet_replicas{version, state}`.
#[derive(Clone, Debug)]
pub struct FleetGauges {
    replicas: IntGaugeVec,
}

impl FleetGauges {
    /// Creates and registers the gauge.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let replicas = IntGaugeVec::new(
            Opts::new(
                "fleet_replicas",
                "Inference replicas by the version they serve and their state against the \
                 active version (current, stale, refusing, starting, gone).",
            ),
            &["version", "state"],
        )?;
        registry.register(Box::new(replicas.clone()))?;
        Ok(FleetGauges { replicas })
    }

    /// Sets the gauge from the fleet (series of versions no longer served go).
    pub fn set(&self, fleet: &[ReplicaRecord], active: Option<&str>, now: DateTime<Utc>) {
        self.replicas.reset();
        for r in fleet {
            self.replicas
                .with_label_values(&[r.version.as_str(), state(r, active, now).as_str()])
                .inc();
        }
    }
}

/// Every `every`, until `shutdown`: refreshes the gauges and rolls back an
/// active version every live replica refuses.
pub async fn watch(
    db: Db,
    publisher: Publisher,
    gauges: FleetGauges,
    every: Duration,
    shutdown: Shutdown,
) {
    shutdown
        .every(every, || async {
            if let Err(e) = check_once(&db, &publisher, &gauges).await {
                tracing::warn!(error = %e, "checking the fleet failed");
            }
        })
        .await;
}

/// One look at the fleet; true when it rolled back.
pub async fn check_once(db: &Db, publisher: &Publisher, gauges: &FleetGauges) -> DbResult<bool> {
    let now = Utc::now();
    db.forget_replicas(now).await?;
    let fleet = db.fleet().await?;
    let active = db.active_model_version().await?;
    gauges.set(&fleet, active.as_ref().map(|a| a.version.as_str()), now);
    let Some(active) = active else {
        return Ok(false);
    };
    let Some(why) = all_refuse(&fleet, &active.version, active.promoted_at, now) else {
        return Ok(false);
    };
    let Some(prev) = db.previous_active().await? else {
        tracing::error!(version = %active.version, reason = %why, "every replica refuses the active version and there is nothing to roll back to");
        return Ok(false);
    };
    // Only from the version judged: with two trainer replicas checking the
    // same fleet, the second finds the registry moved and does nothing.
    let reason = format!("rolled back by the trainer: {why}");
    let back = match db
        .rollback_rejecting(&active.version, &prev.version, &reason)
        .await
    {
        Ok(back) => back,
        Err(DbError::Conflict(why)) => {
            tracing::info!(%why, "the registry moved while rolling back a refused version; nothing to do");
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    publisher.refresh(db).await?;
    tracing::error!(refused = %active.version, now_active = %back.version, reason = %why, "rolled back: every replica refused the active version");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(name: &str, version: &str, refused: &str, seen_ago: i64) -> ReplicaRecord {
        let now = Utc::now();
        ReplicaRecord {
            name: name.into(),
            version: version.into(),
            sha256: String::new(),
            since: now,
            refused_version: refused.into(),
            refused_reason: if refused.is_empty() { "" } else { "warmup" }.into(),
            refused_at: (!refused.is_empty()).then_some(now),
            last_seen: now - chrono::Duration::seconds(seen_ago),
            canary_version: String::new(),
        }
    }

    #[test]
    fn states_against_the_active_version() {
        let now = Utc::now();
        let a = Some("v2");
        assert_eq!(
            state(&replica("r", "v2", "", 1), a, now),
            ReplicaState::Current
        );
        assert_eq!(
            state(&replica("r", "v1", "", 1), a, now),
            ReplicaState::Stale
        );
        assert_eq!(
            state(&replica("r", "v1", "v2", 1), a, now),
            ReplicaState::Refusing
        );
        assert_eq!(
            state(&replica("r", "", "", 1), a, now),
            ReplicaState::Starting
        );
        assert_eq!(
            state(&replica("r", "v2", "", 600), a, now),
            ReplicaState::Gone
        );
        assert_eq!(
            state(&replica("r", "bootstrap-2", "", 1), None, now),
            ReplicaState::Current
        );
    }

    #[test]
    fn rollback_only_when_every_live_replica_refuses() {
        let now = Utc::now();
        let promoted = Some(now - chrono::Duration::seconds(30));
        let all = [replica("a", "v1", "v2", 1), replica("b", "", "v2", 2)];
        let why = all_refuse(&all, "v2", promoted, now).expect("all refuse");
        assert!(why.contains("every live replica (2)"), "{why}");
        // One replica serves it: the version works somewhere, keep it.
        let one_ok = [replica("a", "v1", "v2", 1), replica("b", "v2", "", 2)];
        assert_eq!(all_refuse(&one_ok, "v2", promoted, now), None);
        // A replica that is gone does not count either way.
        let gone = [replica("a", "v1", "v2", 1), replica("b", "v2", "", 600)];
        assert!(all_refuse(&gone, "v2", promoted, now).is_some());
        // No replica at all: no evidence.
        assert_eq!(all_refuse(&[], "v2", promoted, now), None);
        // A refusal from before the promotion is about an older attempt.
        let mut old = replica("a", "v1", "v2", 1);
        old.refused_at = Some(now - chrono::Duration::seconds(60));
        assert_eq!(all_refuse(&[old], "v2", promoted, now), None);
    }
}

//! What inference replicas report about themselves (`ReportReplica`): the
//! version each serves, since when, and the last load it refused. Kept in
//! the database so every trainer replica sees the whole fleet, whichever
//! trainer a replica happens to talk to.
//!
//! Times are Unix milliseconds in integer columns, the same on SQLite and
//! PostgreSQL; the SQL is written once for both (`$n` placeholders and
//! `ON CONFLICT … DO UPDATE` mean the same on each).

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, Statement, Value};
use sea_orm_migration::prelude::*;

use super::{Db, DbResult};

/// Replicas not heard from for this long are forgotten (a pod long gone):
/// the table stays as large as the fleet, not as its history.
pub const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// Longest replica name kept (a Kubernetes pod name is at most 253).
pub const MAX_NAME_BYTES: usize = 253;

/// One replica as last reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRecord {
    /// Its name (pod name).
    pub name: String,
    /// The version it serves; empty while none.
    pub version: String,
    /// sha256 of what it serves.
    pub sha256: String,
    /// Since when it serves `version`.
    pub since: DateTime<Utc>,
    /// The last version it refused; empty if none.
    pub refused_version: String,
    /// Why.
    pub refused_reason: String,
    /// When the trainers first heard of that refusal.
    pub refused_at: Option<DateTime<Utc>>,
    /// When it last reported.
    pub last_seen: DateTime<Utc>,
    /// The canary candidate it serves beside `version`; empty if none.
    pub canary_version: String,
}

/// A report as a replica sends it.
#[derive(Clone, Debug, Default)]
pub struct ReplicaReportIn {
    /// Its name.
    pub name: String,
    /// The version it serves ("" none).
    pub version: String,
    /// sha256 of what it serves.
    pub sha256: String,
    /// The last version it refused ("" none).
    pub refused_version: String,
    /// Why.
    pub refused_reason: String,
    /// The canary candidate it serves ("" none).
    pub canary_version: String,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Db {
    /// Records `report` as heard `now`. The version's `since` is kept while
    /// the version is unchanged, a refusal's time while the refusal is.
    pub async fn record_replica(
        &self,
        report: &ReplicaReportIn,
        now: DateTime<Utc>,
    ) -> DbResult<()> {
        let now_ms = ms(now);
        let refused_at: Option<i64> = (!report.refused_version.is_empty()).then_some(now_ms);
        let sql = "INSERT INTO fleet_replicas \
             (name, version, sha256, since_ms, refused_version, refused_reason, refused_at_ms, last_seen_ms, canary_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $4, $8) \
             ON CONFLICT (name) DO UPDATE SET \
               since_ms = CASE WHEN fleet_replicas.version = excluded.version \
                 THEN fleet_replicas.since_ms ELSE excluded.since_ms END, \
               refused_at_ms = CASE WHEN excluded.refused_version = '' THEN NULL \
                 WHEN fleet_replicas.refused_version = excluded.refused_version \
                  AND fleet_replicas.refused_reason = excluded.refused_reason \
                 THEN fleet_replicas.refused_at_ms ELSE excluded.refused_at_ms END, \
               version = excluded.version, sha256 = excluded.sha256, \
               refused_version = excluded.refused_version, \
               refused_reason = excluded.refused_reason, \
               canary_version = excluded.canary_version, \
               last_seen_ms = excluded.last_seen_ms";
        let values: Vec<Value> = vec![
            report.name.clone().into(),
            report.version.clone().into(),
            report.sha256.clone().into(),
            now_ms.into(),
            report.refused_version.clone().into(),
            report.refused_reason.clone().into(),
            refused_at.into(),
            report.canary_version.clone().into(),
        ];
        self.connection()
            .execute_raw(Statement::from_sql_and_values(self.backend(), sql, values))
            .await?;
        Ok(())
    }

    /// Forgets replicas unheard of for [`FORGET_AFTER_MS`] at `now`. The
    /// trainer's fleet check calls it, once per check rather than once per
    /// replica report.
    pub async fn forget_replicas(&self, now: DateTime<Utc>) -> DbResult<()> {
        self.connection()
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                "DELETE FROM fleet_replicas WHERE last_seen_ms < $1",
                vec![(ms(now) - FORGET_AFTER_MS).into()],
            ))
            .await?;
        Ok(())
    }

    /// Every replica on record, by name.
    pub async fn fleet(&self) -> DbResult<Vec<ReplicaRecord>> {
        let rows = self
            .connection()
            .query_all_raw(Statement::from_string(
                self.backend(),
                "SELECT name, version, sha256, since_ms, refused_version, refused_reason, \
                 refused_at_ms, last_seen_ms, canary_version FROM fleet_replicas ORDER BY name",
            ))
            .await?;
        rows.iter()
            .map(|r| -> Result<ReplicaRecord, DbErr> {
                Ok(ReplicaRecord {
                    name: r.try_get("", "name")?,
                    version: r.try_get("", "version")?,
                    sha256: r.try_get("", "sha256")?,
                    since: at(r.try_get("", "since_ms")?),
                    refused_version: r.try_get("", "refused_version")?,
                    refused_reason: r.try_get("", "refused_reason")?,
                    refused_at: r.try_get::<Option<i64>>("", "refused_at_ms")?.map(at),
                    last_seen: at(r.try_get("", "last_seen_ms")?),
                    canary_version: r.try_get("", "canary_version")?,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }
}

/// The migration creating `fleet_replicas`.
pub(super) struct Fleet;

impl MigrationName for Fleet {
    fn name(&self) -> &str {
        "m20261211_000001_fleet_replicas"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Fleet {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE IF NOT EXISTS fleet_replicas (\
                 name TEXT PRIMARY KEY, \
                 version TEXT NOT NULL, \
                 sha256 TEXT NOT NULL, \
                 since_ms BIGINT NOT NULL, \
                 refused_version TEXT NOT NULL, \
                 refused_reason TEXT NOT NULL, \
                 refused_at_ms BIGINT, \
                 last_seen_ms BIGINT NOT NULL)",
            )
            .await?;
        Ok(())
    }
}

//! The live model report: how each served version does on real outcomes.
//!
//! The app backend stores what inference said on each `completed_tasks` row
//! (`predicted_p_correct`, `predicted_seconds[_low|_high]`, `model_version`).
//! [`compute`] reads those rows once, learner by learner, and per version
//! scores them with the hold-out metric code, measures how much predictions
//! vary (overall, per learner, per topic), lists learners whose predictions
//! did not move, and compares with the figures the version was promoted on.

pub mod accumulate;
pub mod drift;
pub mod gauges;
pub mod text;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::db::{Db, DbError, OutcomeFilter, OutcomeRow};
use crate::plots::PlotData;
pub use accumulate::{
    DEFAULT_STUCK_WINDOW, Diversity, LiveMetrics, StuckLearner, TopicDiversity, VersionAccumulator,
};
pub use drift::DriftConfig;

/// Rows per page of the outcome scan (as the training scan: a few MB a page).
pub const PAGE_SIZE: u64 = 5_000;

/// Longest `last_days` accepted: a century, so `now − N days` stays a date
/// both databases store.
pub const MAX_LAST_DAYS: u32 = 36_500;

/// Longest `stuck_window` accepted; a learner needs this many tasks by one
/// version to be judged, so larger values judge almost nobody.
pub const MAX_STUCK_WINDOW: u32 = 1_000;

/// Most rows a ModelReport call scans: its memory and time grow with the
/// rows it reads (each keeps a prediction, an outcome and a time), so a
/// caller asking for "no limit" (0) or more gets the newest this many.
pub const MAX_RPC_ROWS: u32 = 1_000_000;

/// Most versions a ModelReport response carries (those with most rows):
/// `model_version` is whatever the backend wrote, so a table can name any
/// number of them.
pub const MAX_RPC_VERSIONS: usize = 100;

/// Registry state shown for versions the registry does not know.
pub const UNREGISTERED: &str = "unregistered";

/// Which rows and versions a report covers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReportRequest {
    /// One version, or every version with predictions in the window.
    pub version: Option<String>,
    /// Only rows completed in the last N days (0: no limit).
    pub last_days: u32,
    /// Only the newest N rows with a prediction (0: no limit).
    pub last_rows: u32,
    /// K of the stuck check (0: [`DEFAULT_STUCK_WINDOW`]).
    pub stuck_window: u32,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A request field is out of range.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The requested version is neither registered nor in any row.
    #[error("model version {0:?} not found: not in the registry and no row carries it")]
    UnknownVersion(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl ReportRequest {
    /// The request as a remote caller may make it: `last_rows` 0 (no limit)
    /// or above [`MAX_RPC_ROWS`] becomes [`MAX_RPC_ROWS`], so one call's
    /// memory has a ceiling whatever `completed_tasks` holds.
    pub fn bounded_for_rpc(mut self) -> ReportRequest {
        if self.last_rows == 0 || self.last_rows > MAX_RPC_ROWS {
            self.last_rows = MAX_RPC_ROWS;
        }
        self
    }

    /// The request with defaults filled in, or the first field out of range.
    pub fn validated(&self) -> Result<ReportRequest, ReportError> {
        if self.last_days > MAX_LAST_DAYS {
            return Err(ReportError::InvalidArgument {
                field: "last_days",
                message: format!("must be at most {MAX_LAST_DAYS} (0: no limit)"),
            });
        }
        let stuck_window = match self.stuck_window {
            0 => DEFAULT_STUCK_WINDOW,
            1 => {
                return Err(ReportError::InvalidArgument {
                    field: "stuck_window",
                    message: "must be at least 2: one prediction cannot show whether \
                              predictions move (0: the default, 5)"
                        .into(),
                });
            }
            k if k > MAX_STUCK_WINDOW => {
                return Err(ReportError::InvalidArgument {
                    field: "stuck_window",
                    message: format!("must be at most {MAX_STUCK_WINDOW}"),
                });
            }
            k => k,
        };
        let version = self
            .version
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        Ok(ReportRequest {
            version,
            stuck_window,
            ..self.clone()
        })
    }
}

/// One version's live report.
#[derive(Clone, Debug, Serialize)]
pub struct VersionReport {
    /// The version.
    pub version: String,
    /// Family from the registry (empty when unregistered).
    pub family: String,
    /// Registry state, or [`UNREGISTERED`].
    pub state: String,
    /// Correctness and time metrics on live outcomes.
    pub live: LiveMetrics,
    /// Diversity over all the version's predictions.
    pub overall: Diversity,
    /// Median diversity per learner.
    pub per_learner: Diversity,
    /// Diversity per topic.
    pub topics: Vec<TopicDiversity>,
    /// Learners with at least K predictions by this version.
    pub stuck_eligible_learners: u64,
    /// Learners whose last K predictions stayed within
    /// [`STUCK_EPSILON`](taskcast_learn::judge::metrics::STUCK_EPSILON).
    pub stuck_learners: u64,
    /// The first stuck learners by id.
    pub stuck: Vec<StuckLearner>,
    /// The hold-out metrics stored with the version.
    pub holdout: BTreeMap<String, f64>,
    /// Whether any drift reason applies.
    pub drift: bool,
    /// Why the version is flagged.
    pub drift_reasons: Vec<String>,
    /// Earliest completion among the rows.
    pub first_completed_at: Option<DateTime<Utc>>,
    /// Latest completion among the rows.
    pub last_completed_at: Option<DateTime<Utc>>,
    /// The rows' predictions, for [`crate::plots`]; not part of the JSON.
    #[serde(skip)]
    pub plot: PlotData,
}

/// The report over every version in the window.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The window as applied.
    pub request: ReportRequest,
    /// The drift margins used.
    pub drift_config: DriftConfig,
    /// When the report was made.
    pub generated_at: DateTime<Utc>,
    /// Rows with a prediction read.
    pub rows_scanned: u64,
    /// One per version, most rows first.
    pub versions: Vec<VersionReport>,
}

/// Splits one learner's rows (time order) by version and hands each part to
/// that version's accumulator.
fn add_learner(
    accs: &mut BTreeMap<String, VersionAccumulator>,
    rows: &[OutcomeRow],
    stuck_window: u32,
) {
    let Some(first) = rows.first() else { return };
    let mut by_version: BTreeMap<&str, Vec<&OutcomeRow>> = BTreeMap::new();
    for r in rows {
        by_version
            .entry(r.prediction.model_version.as_str())
            .or_default()
            .push(r);
    }
    for (version, part) in by_version {
        accs.entry(version.to_owned())
            .or_insert_with(|| VersionAccumulator::new(stuck_window))
            .add_learner(&first.user_id, &part);
    }
}

/// Makes the report: one paged scan of the window's outcome rows plus one
/// registry lookup per version found.
pub async fn compute(
    db: &Db,
    request: &ReportRequest,
    drift: &DriftConfig,
) -> Result<Report, ReportError> {
    let request = request.validated()?;
    let generated_at = Utc::now();
    let mut filter = OutcomeFilter {
        version: request.version.clone(),
        since: (request.last_days > 0)
            .then(|| generated_at - Duration::days(i64::from(request.last_days))),
        min_id: None,
    };
    if request.last_rows > 0 {
        filter.min_id = db
            .outcome_min_id_for_last(&filter, u64::from(request.last_rows))
            .await?;
    }

    let mut accs: BTreeMap<String, VersionAccumulator> = BTreeMap::new();
    let mut pager = db.scan_outcomes(filter, PAGE_SIZE);
    let mut learner: Vec<OutcomeRow> = Vec::new();
    let mut rows_scanned = 0u64;
    while let Some(page) = pager.next_page().await? {
        rows_scanned += page.len() as u64;
        for row in page {
            if learner.last().is_some_and(|r| r.user_id != row.user_id) {
                add_learner(&mut accs, &learner, request.stuck_window);
                learner.clear();
            }
            learner.push(row);
        }
    }
    add_learner(&mut accs, &learner, request.stuck_window);

    if let Some(v) = &request.version
        && !accs.contains_key(v)
    {
        // Registered but silent in the window: an empty report, not an error.
        if db.get_model_version(v).await?.is_none() {
            return Err(ReportError::UnknownVersion(v.clone()));
        }
        accs.insert(v.clone(), VersionAccumulator::new(request.stuck_window));
    }

    let mut versions = Vec::with_capacity(accs.len());
    for (version, acc) in accs {
        let meta = db.get_model_version(&version).await?;
        let (family, state, holdout) = match meta {
            Some(m) => (m.family, m.state.as_str().to_owned(), m.metrics),
            None => (String::new(), UNREGISTERED.to_owned(), BTreeMap::new()),
        };
        let f = acc.finish();
        let drift_reasons = drift::reasons(
            drift,
            &f.metrics,
            &holdout,
            request.stuck_window,
            f.stuck_eligible_learners,
            f.stuck_learners,
        );
        versions.push(VersionReport {
            version,
            family,
            state,
            live: f.metrics,
            overall: f.overall,
            per_learner: f.per_learner,
            topics: f.topics,
            stuck_eligible_learners: f.stuck_eligible_learners,
            stuck_learners: f.stuck_learners,
            stuck: f.stuck,
            holdout,
            drift: !drift_reasons.is_empty(),
            drift_reasons,
            first_completed_at: f.first_completed_at,
            last_completed_at: f.last_completed_at,
            plot: f.plot,
        });
    }
    versions.sort_by(|a, b| {
        b.live
            .rows
            .cmp(&a.live.rows)
            .then_with(|| a.version.cmp(&b.version))
    });
    Ok(Report {
        request,
        drift_config: *drift,
        generated_at,
        rows_scanned,
        versions,
    })
}

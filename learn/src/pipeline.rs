//! One training run, start to finish, independent of where rows come from and
//! where the result goes: read → features → fit → evaluate → export → verify
//! the export through ONNX Runtime → score the active model on the same
//! hold-out → gate. Two steps, because only the first awaits a source:
//! [`prepare`] (read and featurise) and [`fit_and_judge`] (CPU-bound, on a
//! blocking thread in the service). The runner and the offline commands call
//! both; `eval` prepares once and fits every family on the same dataset.

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use taskcast_contract::features::DEFAULT_HISTORY_WINDOW;
use taskcast_contract::runtime::{OnnxModel, Output, RuntimeError};
use taskcast_contract::{
    Artifact, ArtifactError, FEATURE_COUNT, FEATURE_NAMES, FEATURE_SCHEMA, ModelMetadata,
};

use crate::budget::DEFAULT_MAX_TRAINING_ROWS;
use crate::dataset::{self, Dataset, Rows};
use crate::families::auto::{self, Choice};
use crate::families::{Family, FitError, FitOptions, Fitted};
use crate::judge::evaluate::{self, Scored};
use crate::judge::gate::{self, GateConfig, Verdict};
use crate::judge::incumbent::Incumbent;
use crate::judge::metrics::MetricSet;
use crate::source::{LearnerSource, SourceError};
use crate::time_support::TimeSupport;

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Counting rows and priors.
    Reading,
    /// Computing feature rows.
    Features,
    /// Fitting the model.
    Fitting,
    /// Scoring on the hold-out.
    Evaluating,
    /// Writing and checking the ONNX file.
    Exporting,
    /// Comparing with the active version.
    Gating,
    /// Storing and notifying.
    Publishing,
    /// Finished.
    Done,
}

impl Phase {
    /// Name used in the API and the database.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Reading => "reading",
            Phase::Features => "features",
            Phase::Fitting => "fitting",
            Phase::Evaluating => "evaluating",
            Phase::Exporting => "exporting",
            Phase::Gating => "gating",
            Phase::Publishing => "publishing",
            Phase::Done => "done",
        }
    }

    /// The phase after this one.
    pub fn next(self) -> Phase {
        match self {
            Phase::Reading => Phase::Features,
            Phase::Features => Phase::Fitting,
            Phase::Fitting => Phase::Evaluating,
            Phase::Evaluating => Phase::Exporting,
            Phase::Exporting => Phase::Gating,
            Phase::Gating => Phase::Publishing,
            Phase::Publishing | Phase::Done => Phase::Done,
        }
    }

    /// Overall progress (0..1) at `share` of the way through this phase.
    pub fn overall(self, share: f64) -> f64 {
        self.start() + (self.next().start() - self.start()) * share.clamp(0.0, 1.0)
    }

    /// Overall progress at the start of this phase.
    pub fn start(self) -> f64 {
        match self {
            Phase::Reading => 0.0,
            Phase::Features => 0.1,
            Phase::Fitting => 0.5,
            Phase::Evaluating => 0.8,
            Phase::Exporting => 0.85,
            Phase::Gating => 0.9,
            Phase::Publishing => 0.95,
            Phase::Done => 1.0,
        }
    }
}

/// What to train and how to judge it.
#[derive(Clone, Debug)]
pub struct TrainSpec {
    /// Model family.
    pub family: Family,
    /// Its hyper-parameters.
    pub fit: FitOptions,
    /// Attempts the features look back over.
    pub history_window: u32,
    /// Promotion rules.
    pub gate: GateConfig,
    /// Training budget: about this many rows at most, whole histories of
    /// the most recently active learners ([`crate::budget`]); 0 reads
    /// every row. Applied by whoever builds the source.
    pub max_training_rows: u64,
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            family: Family::Auto,
            fit: FitOptions::default(),
            history_window: DEFAULT_HISTORY_WINDOW,
            gate: GateConfig::default(),
            max_training_rows: DEFAULT_MAX_TRAINING_ROWS,
        }
    }
}

/// Why a run failed (a gate rejection is not a failure).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading rows failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Nothing to train on.
    #[error("no usable training rows ({skipped} rows skipped as invalid)")]
    NoRows {
        /// Rows skipped.
        skipped: u64,
    },
    /// The fit failed.
    // The cause is in the message rather than a `#[source]` (a field named
    // `source` is one), which `{:#}` would print a second time.
    #[error("fitting {family}: {error}")]
    Fit {
        /// Family.
        family: Family,
        /// Cause.
        error: FitError,
    },
    /// Writing the artifact failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// ONNX Runtime could not run the export or the active model.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The exported graph disagrees with the in-Rust model.
    #[error("exported ONNX disagrees with the fitted model: {0}")]
    ExportMismatch(String),
    /// A blocking task died.
    #[error("training task failed: {0}")]
    Join(String),
}

/// A trained, exported, evaluated and judged model.
#[derive(Debug)]
pub struct Trained {
    /// Its metadata (also inside `onnx`).
    pub metadata: ModelMetadata,
    /// The ONNX file.
    pub onnx: Vec<u8>,
    /// Hex sha256 of `onnx`.
    pub sha256: String,
    /// Its hold-out scores.
    pub candidate: Scored,
    /// The active version's scores on the same hold-out.
    pub active: Option<Scored>,
    /// The baselines' metrics on the same hold-out.
    pub baselines: BTreeMap<String, MetricSet>,
    /// The gate's decision.
    pub verdict: Verdict,
    /// Whether the time head was learned and judged, and on how many rows.
    pub time: TimeSupport,
    /// The replicas' probe check on the export: `Err` says why every
    /// replica would refuse it.
    pub servable: Result<(), String>,
    /// Usable rows read.
    pub rows: u64,
    /// Hold-out rows.
    pub holdout_rows: u64,
    /// Rows skipped as invalid, by reason.
    pub skipped: BTreeMap<String, u64>,
}

/// A new version id: family and UTC time to the millisecond.
pub fn new_version(family: Family) -> String {
    format!(
        "{}-{}",
        family.name(),
        Utc::now().format("%Y%m%dT%H%M%S%3fZ")
    )
}

/// Reads and featurises the source; the hold-out is also featurised for
/// `incumbent`, so [`fit_and_judge`] can score it on the same attempts.
pub async fn prepare(
    source: &mut impl LearnerSource,
    history_window: u32,
    incumbent: Option<&mut Incumbent>,
    progress: &mut (dyn FnMut(Phase, f64) + Send),
) -> Result<Dataset, TrainError> {
    progress(Phase::Reading, 0.0);
    let census = dataset::census(source).await?;
    if census.rows == 0 {
        return Err(TrainError::NoRows {
            skipped: census.skipped_total(),
        });
    }
    progress(Phase::Features, 0.0);
    let view = incumbent.map(Incumbent::view_mut);
    let mut on_learner = |share: f64| progress(Phase::Features, share);
    Ok(dataset::build(source, census, history_window, view, &mut on_learner).await?)
}

/// Fits, exports, verifies, scores and gates one family on a prepared dataset
/// (beside `incumbent`, prepared with it). CPU-bound: call it from a blocking
/// thread in async code.
pub fn fit_and_judge(
    ds: &Dataset,
    spec: &TrainSpec,
    incumbent: Option<&Incumbent>,
    progress: &mut (dyn FnMut(Phase, f64) + Send),
) -> Result<Trained, TrainError> {
    progress(Phase::Fitting, 0.0);
    let (fitted, choice) = fit_with(spec, &ds.train, |family| Fitted::fit(family, ds, &spec.fit))?;
    judge(ds, spec, fitted, choice.as_ref(), incumbent, progress)
}

/// Fits `spec.family` with `fit` (which fits one concrete family); for
/// `auto`, also why it chose the family it returns (`train`: the rows the
/// fits are made on, [`auto::choose_with`]).
pub fn fit_with(
    spec: &TrainSpec,
    train: &Rows,
    mut fit: impl FnMut(Family) -> Result<Fitted, FitError>,
) -> Result<(Fitted, Option<Choice>), TrainError> {
    let fit_error = |error| TrainError::Fit {
        family: spec.family,
        error,
    };
    match spec.family {
        Family::Auto => {
            let (fitted, choice) =
                auto::choose_with(&auto::ORDER, train, fit).map_err(fit_error)?;
            Ok((fitted, Some(choice)))
        }
        family => Ok((fit(family).map_err(fit_error)?, None)),
    }
}

/// Exports, verifies, scores and gates a fitted model (the second half of
/// [`fit_and_judge`]); `choice` is `auto`'s reason, kept with the verdict.
pub fn judge(
    ds: &Dataset,
    spec: &TrainSpec,
    fitted: Fitted,
    choice: Option<&Choice>,
    incumbent: Option<&Incumbent>,
    progress: &mut (dyn FnMut(Phase, f64) + Send),
) -> Result<Trained, TrainError> {
    progress(Phase::Evaluating, 0.0);
    // Time metrics are computed (for the candidate, the active version and the
    // baselines alike) only where the data can judge a time head; the gate
    // compares only what was computed.
    let time = ds.time_support();
    let with_times = time.modeled();
    let preds = fitted.predict(&ds.holdout);
    let candidate = evaluate::score(&ds.holdout, &preds, with_times);
    let baselines = evaluate::baselines(ds);

    progress(Phase::Exporting, 0.0);
    let mut metrics = candidate.metrics.to_map();
    metrics.insert("holdout_rows".into(), ds.holdout.len() as f64);
    metrics.insert("training_rows".into(), ds.train.len() as f64);
    // What the fit chose on its inner validation slice (L2, calibration).
    metrics.extend(fitted.training_info());
    if let Some(c) = choice {
        metrics.extend(c.to_map());
    }
    let metadata = ModelMetadata {
        version: new_version(fitted.family()),
        family: fitted.family().name().into(),
        feature_schema: FEATURE_SCHEMA.into(),
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        history_window: spec.history_window,
        clock: ds.clock,
        trained_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        metrics,
        training_rows: ds.train.len() as u64,
        feature_baseline: feature_means(&ds.train),
        index_inputs: fitted.index_inputs(ds),
        priors: ds.priors.clone(),
        time_modeled: Some(with_times),
    };
    let onnx = Artifact::write(fitted.graph(), &metadata)?;
    let servable = verify_export(&onnx, &fitted, ds)?;

    progress(Phase::Gating, 0.0);
    let active_scored = incumbent
        .map(|i| i.score(&ds.holdout, with_times))
        .transpose()?;
    let verdict = gate::decide(
        &spec.gate,
        &candidate,
        ds.holdout.len(),
        active_scored.as_ref().map(|s| &s.metrics),
        &baselines,
    );
    let verdict = match time.shortfall() {
        Some(_) => verdict.noting(&time.to_string()),
        None => verdict,
    };
    // Why this family, kept with the verdict in the run and the registry.
    let verdict = match choice {
        Some(c) => verdict.noting(&c.to_string()),
        None => verdict,
    };
    let sha256 = taskcast_contract::artifact::sha256_hex(&onnx);
    Ok(Trained {
        metadata,
        onnx,
        sha256,
        candidate,
        active: active_scored,
        baselines,
        verdict,
        time,
        servable,
        rows: ds.census.rows,
        holdout_rows: ds.holdout.len() as u64,
        skipped: ds
            .census
            .skipped
            .iter()
            .map(|(k, v)| (format!("{k:?}"), *v))
            .collect(),
    })
}

/// Mean of each feature over `rows`: the explanation baseline.
fn feature_means(rows: &dataset::Rows) -> Vec<f32> {
    let mut sum = [0f64; FEATURE_COUNT];
    for i in 0..rows.len() {
        for (s, v) in sum.iter_mut().zip(rows.row(i)) {
            *s += f64::from(*v);
        }
    }
    let n = rows.len().max(1) as f64;
    sum.iter().map(|s| (s / n) as f32).collect()
}

/// Runs the exported file through ONNX Runtime on up to 2 000 hold-out (or
/// training) rows and checks it reproduces the in-Rust forward pass.
/// Checks the export against the fitted model and returns what the
/// replicas' own probe check ([`taskcast_contract::servable`]) says of it,
/// on the same loaded model: a model that passes here can still be one no
/// replica would serve, and that is a rejection, not a failed run.
fn verify_export(
    onnx: &[u8],
    fitted: &Fitted,
    ds: &Dataset,
) -> Result<Result<(), String>, TrainError> {
    let rows = if ds.holdout.is_empty() {
        &ds.train
    } else {
        &ds.holdout
    };
    let n = rows.len().min(2000);
    let sample = dataset::Rows {
        x: rows.x[..n * FEATURE_COUNT].to_vec(),
        correct: rows.correct[..n].to_vec(),
        seconds: rows.seconds.head(n),
        user: rows.user[..n].to_vec(),
        topic: rows.topic[..n].to_vec(),
        difficulty: rows.difficulty[..n].to_vec(),
        item: rows.item[..n].to_vec(),
        key_tables: std::sync::Arc::clone(&rows.key_tables),
        baselines: Default::default(),
    };
    let model = OnnxModel::load(onnx, 1)?;
    let got = model.run(&sample.x, &sample.keys())?;
    let want = fitted.predict(&sample);
    if let Some(bad) = got
        .iter()
        .find(|o| !o.p_correct.is_finite() || o.log_seconds.iter().any(|v| !v.is_finite()))
    {
        return Err(TrainError::ExportMismatch(format!(
            "the exported model outputs a non-finite value: {bad:?}"
        )));
    }
    let worst = max_difference(&got, &want);
    if worst > 1e-4 {
        return Err(TrainError::ExportMismatch(format!(
            "max difference {worst:e}"
        )));
    }
    Ok(taskcast_contract::servable::check(&model, 1).map_err(|e| e.to_string()))
}

/// Largest absolute difference between two runs' outputs.
pub fn max_difference(a: &[Output], b: &[Output]) -> f64 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            std::iter::once((x.p_correct - y.p_correct).abs()).chain(
                x.log_seconds
                    .iter()
                    .zip(&y.log_seconds)
                    .map(|(u, v)| (u - v).abs()),
            )
        })
        .fold(0f32, f32::max)
        .into()
}

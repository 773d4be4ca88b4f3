//! The pretrained model: the linear family fitted across several public files,
//! their training rows pooled, with one interval width for every row (as the
//! contract's linear graph carries), and the learner's own answer times out
//! of the correctness head ([`linear::LEARNER_TIME_FEATURES`]). It is what a
//! new deployment serves (the bootstrap) and where the `pretrained` family
//! starts, so it must do right by a learner over empty priors: the fit is
//! checked with [`taskcast_contract::first_contact`] before anyone writes it.
//!
//! It reads none of schema v2's columns ([`PRETRAIN_WITHOUT`]), though it is
//! served as a v2 model. The wall-clock ones: the public files it is pooled
//! from mostly carry row numbers for timestamps, so gaps learned from them
//! would mean something else in an app that records real times. The ones
//! decayed over attempts: pooled with v1's recent rates they took weights
//! of opposite signs, and the fit failed the first-contact checks (five
//! right answers in a topic moved p there from 0.783 down to 0.772), so a
//! new app's learner would have been told the opposite of what happened.

use taskcast_contract::linear::LinearModel;
use taskcast_contract::{Artifact, Priors, bootstrap, first_contact};

use crate::ablation::{self, FeatureGroup};
use crate::dataset::{self, Dataset, PriorSet, Rows};
use crate::families::Family;
use crate::families::linear::{self, LinearOptions};
use crate::pipeline::{self, Phase, TrainError};
use crate::source::LearnerSource;

/// The priors each file's rows are featurised with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriorChoice {
    /// The file's own (out-of-fold) priors, as the trainer featurises an app's rows.
    Own,
    /// Empty priors, as a new deployment serves the bootstrap: the weights
    /// learn from the learner's history alone.
    Empty,
    /// Every row twice, once each way: weights that hold up in both conditions.
    Both,
}

/// A pooled fit, checked.
pub struct Pretrained {
    /// The weights.
    pub model: LinearModel,
    /// Training rows pooled.
    pub rows: usize,
    /// The L2 strength chosen, per row.
    pub l2_per_row: f64,
    /// The first-contact checks it fails, one line each (empty: it passes).
    pub failures: Vec<String>,
}

/// One file's datasets, in the order the shipped weights were pooled: its
/// rows over empty priors first (unless `Own`), then over its own priors
/// (unless `Empty`).
pub async fn datasets(
    source: &mut impl LearnerSource,
    priors: PriorChoice,
    history_window: u32,
    progress: &mut (dyn FnMut(Phase, f64) + Send),
) -> Result<Vec<Dataset>, TrainError> {
    let mut sets = Vec::with_capacity(2);
    if priors != PriorChoice::Own {
        let census = dataset::census(source).await?;
        let empty = PriorSet::uniform(Priors::default());
        sets.push(
            dataset::build_with(source, census, empty, history_window, None, &mut |_| {}).await?,
        );
    }
    if priors != PriorChoice::Empty {
        sets.push(pipeline::prepare(source, history_window, None, progress).await?);
    }
    Ok(sets)
}

/// The feature groups the pretrained model leaves out (module docs).
pub const PRETRAIN_WITHOUT: [FeatureGroup; 1] = [FeatureGroup::V2];

/// Fits the pooled training rows of `sets` and runs the first-contact checks.
pub fn fit(sets: &[Dataset], options: &LinearOptions) -> Result<Pretrained, TrainError> {
    let mut rows = Rows::pooled(sets.iter().map(|d| &d.train));
    // Constant columns get no weight in either head.
    ablation::zero(&mut rows.x, &PRETRAIN_WITHOUT);
    let learn_time = sets.iter().any(Dataset::time_modeled);
    let opts = LinearOptions {
        per_row_scale: false,
        p_excluded: linear::LEARNER_TIME_FEATURES
            .iter()
            .filter_map(|n| taskcast_contract::features::feature_index(n))
            .collect(),
        ..options.clone()
    };
    let fitted = linear::fit(&rows, &opts, learn_time).map_err(|error| TrainError::Fit {
        family: Family::Pretrained,
        error,
    })?;
    let failures = first_contact::check(|row| fitted.model.predict(row));
    Ok(Pretrained {
        rows: rows.len(),
        l2_per_row: fitted.info.l2_per_row,
        model: fitted.model,
        failures,
    })
}

/// The model as an artifact over empty priors, as a fresh deployment serves
/// the bootstrap (for `eval --model`).
pub fn artifact(model: &LinearModel) -> Result<Vec<u8>, TrainError> {
    let metadata =
        bootstrap::linear_metadata("pretrained", Family::Pretrained.name(), Priors::default());
    Ok(Artifact::write(model.graph(), &metadata)?)
}

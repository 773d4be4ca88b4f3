//! Model families behind one interface: fit on a [`Dataset`], predict in
//! Rust, describe the ONNX graph and its index inputs.

pub mod auto;
pub mod calibration;
pub mod linear;
pub mod mlp;
pub mod pretrained;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use taskcast_contract::onnx::GraphBuilder;
use taskcast_contract::runtime::Output;
use taskcast_contract::{FEATURE_COUNT, FeatureRow, IndexInput};

use crate::dataset::{Dataset, Rows};
use calibration::Platt;
use linear::{Linear, LinearOptions};
use mlp::{Mlp, MlpConfig};

/// Why a fit failed, in either family.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// Nothing to learn from.
    #[error("no training rows")]
    Empty,
    /// Every training row has the same outcome.
    #[error(
        "every training row is {}: correctness cannot be learned without some {} answers",
        outcome(*.correct),
        outcome(!*.correct)
    )]
    OneClass {
        /// The one outcome there is.
        correct: bool,
    },
    /// The optimiser or a regression could not fit the problem.
    #[error("fit failed: {0}")]
    Optimiser(String),
}

fn outcome(correct: bool) -> &'static str {
    if correct { "correct" } else { "incorrect" }
}

/// [`FitError::OneClass`] when every row has the same outcome.
pub fn check_both_outcomes(rows: &Rows) -> Result<(), FitError> {
    let positives = rows.correct.iter().filter(|c| **c).count();
    if positives == 0 || positives == rows.len() {
        return Err(FitError::OneClass {
            correct: positives > 0,
        });
    }
    Ok(())
}

/// Share of each learner's training rows, at its end, that both families hold
/// out of the fit as the inner validation slice: `linear` chooses its L2
/// strength on it, `mlp` its epoch, and both fit their calibration on it. The
/// hold-out is never looked at before the model is final.
pub const VALIDATION_SHARE: f64 = 0.1;

/// Chronological inner validation split of the training rows: rows of `rows`
/// are grouped by learner in time order, so the last `round(share·n)` rows of
/// each learner's run go to validation. Returns `(fit, validation)` row
/// indices.
pub fn validation_split(rows: &Rows, share: f64) -> (Vec<usize>, Vec<usize>) {
    let (mut fit, mut val) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < rows.len() {
        let user = rows.user[start];
        let end = start
            + rows.user[start..]
                .iter()
                .take_while(|u| **u == user)
                .count();
        let n = end - start;
        let held = ((share * n as f64).round() as usize).min(n);
        fit.extend(start..end - held);
        val.extend(end - held..end);
        start = end;
    }
    (fit, val)
}

/// A trainable model family, or `auto`, the choice between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Fits the families of [`auto::ORDER`] and keeps the simplest one no other beats on the
    /// inner validation slice ([`auto`]); artifacts name the one chosen.
    Auto,
    /// Logistic + least-squares regression on the shared features.
    Linear,
    /// Embeddings + three-layer network with correctness and log-time heads.
    Mlp,
    /// The pretrained linear model the bootstrap serves, recalibrated to the
    /// app's data ([`pretrained`]).
    Pretrained,
}

impl Family {
    /// Every family a model can be of, for `eval` tables (`auto` tries
    /// [`auto::ORDER`]).
    pub const ALL: [Family; 3] = [Family::Linear, Family::Mlp, Family::Pretrained];

    /// Every name `--family` accepts.
    pub const NAMED: [Family; 4] = [
        Family::Auto,
        Family::Linear,
        Family::Mlp,
        Family::Pretrained,
    ];

    /// The family's name in artifacts, the registry and the API.
    pub fn name(self) -> &'static str {
        match self {
            Family::Auto => "auto",
            Family::Linear => "linear",
            Family::Mlp => "mlp",
            Family::Pretrained => "pretrained",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Family::NAMED
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Family::NAMED.iter().map(|f| f.name()).collect();
                format!("unknown model family `{s}` (known: {})", names.join(", "))
            })
    }
}

/// Hyper-parameters of every family.
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// The `linear` family's L2 strength (chosen on the inner validation
    /// slice unless fixed) and calibration.
    pub linear: LinearOptions,
    /// Seed for families that draw random numbers.
    pub seed: u64,
    /// The `mlp` family's hyper-parameters.
    pub mlp: MlpConfig,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            linear: LinearOptions::default(),
            seed: 7,
            mlp: MlpConfig::default(),
        }
    }
}

/// A fitted model of some family.
// One value per training run, moved a handful of times: boxing the larger
// variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Fitted {
    /// See [`Family::Linear`].
    Linear(Linear),
    /// See [`Family::Mlp`].
    Mlp(Mlp),
    /// See [`Family::Pretrained`]: a linear model, exported as one.
    Pretrained(Linear),
}

impl Fitted {
    /// Fits `family` on the dataset's training rows (`auto`: the family it
    /// chooses; [`auto::choose`] also says why).
    pub fn fit(family: Family, ds: &Dataset, opts: &FitOptions) -> Result<Fitted, FitError> {
        match family {
            Family::Auto => Ok(auto::choose(ds, opts)?.0),
            Family::Linear => Ok(Fitted::Linear(linear::fit(
                &ds.train,
                &opts.linear,
                ds.time_modeled(),
            )?)),
            Family::Mlp => Ok(Fitted::Mlp(mlp::fit(ds, &opts.mlp, opts.seed)?)),
            Family::Pretrained => Ok(Fitted::Pretrained(pretrained::fit(
                &ds.train,
                opts.linear.calibrate,
                ds.time_modeled(),
            )?)),
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        match self {
            Fitted::Linear(_) => Family::Linear,
            Fitted::Mlp(_) => Family::Mlp,
            Fitted::Pretrained(_) => Family::Pretrained,
        }
    }

    /// Per-row log loss on the inner validation slice of logits nothing was
    /// fitted to on it (see [`auto`]); empty without a usable slice.
    pub fn validation_losses(&self) -> &[f64] {
        match self {
            Fitted::Linear(m) | Fitted::Pretrained(m) => &m.info.validation_losses,
            Fitted::Mlp(m) => &m.validation_losses,
        }
    }

    /// In-Rust forward pass over `rows` (the reference the export must match).
    pub fn predict(&self, rows: &Rows) -> Vec<Output> {
        match self {
            Fitted::Linear(m) | Fitted::Pretrained(m) => (0..rows.len())
                .map(|i| {
                    let mut row: FeatureRow = [0.0; FEATURE_COUNT];
                    row.copy_from_slice(rows.row(i));
                    let (p_correct, log_seconds) = m.predict(&row);
                    Output {
                        p_correct,
                        log_seconds,
                    }
                })
                .collect(),
            Fitted::Mlp(m) => m.predict(&rows.x, &rows.keys()),
        }
    }

    /// The ONNX graph.
    pub fn graph(&self) -> GraphBuilder {
        match self {
            Fitted::Linear(m) | Fitted::Pretrained(m) => m.graph(),
            Fitted::Mlp(m) => m.graph(),
        }
    }

    /// What the fit chose on the inner validation slice (L2 strength,
    /// calibration, time interval), as `name → value` for the artifact's
    /// record of the run.
    pub fn training_info(&self) -> BTreeMap<String, f64> {
        match self {
            Fitted::Linear(m) | Fitted::Pretrained(m) => m.info.to_map(),
            Fitted::Mlp(m) => m.training_info(),
        }
    }

    /// The calibration folded into the exported logit.
    pub fn calibration(&self) -> Option<Platt> {
        match self {
            Fitted::Linear(m) | Fitted::Pretrained(m) => m.info.calibration,
            Fitted::Mlp(m) => m.calibration,
        }
    }

    /// Index inputs the graph takes (vocabularies), built from the dataset.
    pub fn index_inputs(&self, _ds: &Dataset) -> Vec<IndexInput> {
        match self {
            Fitted::Linear(_) | Fitted::Pretrained(_) => Vec::new(),
            // The vocabularies were fixed at fit time.
            Fitted::Mlp(m) => m.index_inputs(),
        }
    }
}

//! Family `mlp`: the original app's V2 network without its learner embedding,
//! hand-written on `ndarray`.
//!
//! Inputs: topic (16) and difficulty (8) embeddings and the 24 shared
//! features, standardised. Body: Dense 128 → BatchNorm → ReLU → Dropout 0.3;
//! Dense 64 → BatchNorm → ReLU → Dropout 0.2; Dense 32 → ReLU → Dropout 0.1.
//! Heads: a logit (sigmoid → `p_correct`) and, when the data has times, a
//! log-time location and a scale (softplus), trained with the Gaussian
//! negative log-likelihood of the capped log-seconds; the export turns them
//! into `[loc − 1.2816·scale, loc, loc + 1.2816·scale]`.
//!
//! No per-learner parameters: the learner reaches the network only through
//! the history features, which serving computes from the request. The
//! original's learner embedding needed every training learner's raw
//! `user_id` as its vocabulary, in a file that goes to every replica, and made
//! the file grow with the number of learners; and on the hold-out the network
//! did better without it (EVALUATION.md, "Learner embedding (privacy)").
//!
//! [`Architecture::Shared`] (the default) trains one body with both heads on
//! the summed losses; [`Architecture::Separate`] trains two such networks, one
//! per target as the original did, on two threads. EVALUATION.md has the
//! measurements behind the default.
//!
//! Training: Adam (lazy on embedding rows), batch 32, learning rate halved
//! after 2 epochs without validation improvement, early stopping after 4,
//! restoring the best epoch. The validation rows are the chronologically last
//! 10 % of each learner's training rows, never a random sample. Epochs over
//! large datasets are subsampled ([`MlpConfig::max_rows_per_epoch`]) so a
//! fit's cost is bounded whatever the row count.
//!
//! Calibration: a Platt scaling of the logit fitted on the validation rows
//! (which chose the epoch but were never trained on) is folded into the
//! output layer's logit column ([`crate::families::calibration`]).
//!
//! Unknown topics and difficulties use embedding row 0; training masks each
//! id to 0 with probability [`MlpConfig::oov_rate`] so that row is a learned
//! "something we have not seen" and a new topic or difficulty label gets a
//! real prediction without retraining.
//!
//! Here: the configuration, the vocabularies and validation split, and
//! [`fit`], which trains the networks (`train.rs`, on the training form in
//! `net.rs`) and keeps them folded for inference. The reference forward pass
//! is in `forward.rs`, the ONNX graph in `onnx.rs`.

mod forward;
mod net;
mod onnx;
mod train;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use taskcast_contract::features::label_key;
use taskcast_contract::{IndexField, IndexInput};

use crate::dataset::{Dataset, Vocab};
use crate::families::calibration::{Platt, calibrated_losses, mean_loss};
use crate::families::{FitError, VALIDATION_SHARE, check_both_outcomes};

pub use crate::families::validation_split;
pub use forward::{FoldedNet, Standardiser};
use train::{Data, Layout, Trainer};

/// How many index inputs (and embedding tables) a network has.
pub const INDEXED: usize = 2;
/// Embedding widths: topic, difficulty.
pub const EMBEDDINGS: [usize; INDEXED] = [16, 8];
/// Hidden layer widths.
pub const HIDDEN: [usize; 3] = [128, 64, 32];
/// Names of the index inputs, in embedding order.
pub const INDEX_INPUTS: [&str; INDEXED] = ["topic_idx", "difficulty_idx"];
/// The request field each index input is looked up from, in embedding order.
const INDEX_FIELDS: [IndexField; INDEXED] = [IndexField::Topic, IndexField::Difficulty];
/// Standard normal 90th percentile: the 10–90 % interval is `loc ± Z90·scale`.
pub const Z90: f32 = 1.2816;
/// Added to the softplus scale so the Gaussian likelihood cannot collapse
/// onto a few identical times (and the interval never has zero width).
pub const SCALE_FLOOR: f32 = 0.01;

/// One network with both heads, or one network per target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// Two networks (correctness; time), trained in parallel.
    Separate,
    /// One body, two heads, trained on the summed losses.
    Shared,
}

/// Hyper-parameters of the `mlp` family.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpConfig {
    /// One network or two.
    pub architecture: Architecture,
    /// Dropout after hidden layers 1..3.
    pub dropout: [f32; 3],
    /// Adam's initial learning rate.
    pub learning_rate: f32,
    /// Learning-rate multiplier on a plateau.
    pub lr_factor: f32,
    /// Epochs without validation improvement before the rate is reduced.
    pub lr_patience: usize,
    /// Rows per optimiser step.
    pub batch_size: usize,
    /// Upper bound on epochs.
    pub max_epochs: usize,
    /// Epochs without validation improvement before stopping.
    pub patience: usize,
    /// Share of each learner's training rows, at its end, used for
    /// validation (early stopping and the calibration).
    pub validation_share: f64,
    /// Fit a Platt calibration of the logit on the validation rows and fold
    /// it into the output layer ([`crate::families::calibration`]).
    pub calibrate: bool,
    /// Probability of masking each topic and difficulty id to OOV (0) in a
    /// training row.
    pub oov_rate: f32,
    /// Rows drawn (without replacement) per epoch when there are more: caps
    /// an epoch at `max_rows_per_epoch / batch_size` steps.
    pub max_rows_per_epoch: usize,
    /// BatchNorm running-statistics momentum (PyTorch convention).
    pub bn_momentum: f32,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            // Measured on assist2009_rt (EVALUATION.md): one body with two
            // heads matches two networks on time and beats them on correctness,
            // at half the compute.
            architecture: Architecture::Shared,
            dropout: [0.3, 0.2, 0.1],
            learning_rate: 1e-3,
            lr_factor: 0.5,
            lr_patience: 2,
            batch_size: 32,
            max_epochs: 50,
            patience: 4,
            validation_share: VALIDATION_SHARE,
            calibrate: true,
            oov_rate: 0.1,
            max_rows_per_epoch: 131_072,
            bn_momentum: 0.01,
        }
    }
}

/// One epoch of one network.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochStats {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (with dropout).
    pub train_loss: f64,
    /// Validation loss after the epoch (inference mode).
    pub val_loss: f64,
    /// Learning rate used during the epoch.
    pub lr: f32,
    /// Rows trained on.
    pub rows: usize,
    /// Wall time of the epoch including validation.
    pub seconds: f64,
}

/// How one network's training went.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetReport {
    /// Which network ("correctness", "time" or "shared").
    pub name: String,
    /// Validation loss of the initial weights (epoch 0).
    pub initial_val_loss: f64,
    /// Every epoch run.
    pub epochs: Vec<EpochStats>,
    /// The epoch whose weights were kept (0 = the initial weights).
    pub best_epoch: usize,
    /// Its validation loss.
    pub best_val_loss: f64,
    /// Training rows (before the validation split).
    pub fit_rows: usize,
    /// Validation rows.
    pub val_rows: usize,
}

/// Training diagnostics of a fit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FitReport {
    /// One per network trained.
    pub nets: Vec<NetReport>,
    /// Wall time of the whole fit.
    pub seconds: f64,
}

/// Where the time output comes from.
#[derive(Clone, Debug)]
enum TimeModel {
    /// Its own network, columns `[loc, raw_scale]`.
    Separate(Box<FoldedNet>),
    /// Columns 1 and 2 of the correctness network.
    Shared,
    /// No times to learn from: the item prior's log-time ± 1 (the linear
    /// family's fallback), so the output stays finite and sane.
    Prior,
}

/// A fitted `mlp` model.
#[derive(Clone, Debug)]
pub struct Mlp {
    /// The correctness network (column 0 is the logit; with a shared time
    /// head columns 1, 2 are location and raw scale).
    correctness: FoldedNet,
    time: TimeModel,
    /// Labels of embedding rows `1..`, per input (topic, difficulty).
    vocab: [Vec<String>; INDEXED],
    lookups: [HashMap<u64, u32>; INDEXED],
    /// The calibration folded into the logit column, if one was fitted.
    pub calibration: Option<Platt>,
    /// Per-row log loss of the logit on the validation rows, which it was not
    /// trained on, before the calibration fitted on them (what `auto`
    /// compares families by).
    pub validation_losses: Vec<f64>,
    /// Training diagnostics.
    pub report: FitReport,
}

/// Which labels get an embedding row: every topic and difficulty seen in
/// training. Returns, per input, `dataset index → embedding index` and the
/// labels of embedding rows `1..`.
fn vocabularies(ds: &Dataset) -> ([Vec<u32>; INDEXED], [Vec<String>; INDEXED]) {
    let pick = |vocab: &Vocab, ids: &[u32]| {
        let mut seen = vec![false; vocab.labels.len()];
        for &i in ids {
            if let Some(s) = seen.get_mut(i as usize) {
                *s = true;
            }
        }
        let mut map = vec![0u32; vocab.labels.len()];
        let mut labels = Vec::new();
        // Index 0 is the dataset's "none", which stays out of vocabulary.
        for i in (1..vocab.labels.len()).filter(|&i| seen[i]) {
            labels.push(vocab.labels[i].clone());
            map[i] = labels.len() as u32;
        }
        (map, labels)
    };
    let t = &ds.train;
    let (tm, tl) = pick(&ds.topics, &t.topic);
    let (dm, dl) = pick(&ds.difficulties, &t.difficulty);
    ([tm, dm], [tl, dl])
}

/// The logistic function.
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// `ln(1 + e^z)` without overflow.
fn softplus(z: f32) -> f32 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Fits the `mlp` family on the dataset's training rows.
pub fn fit(ds: &Dataset, cfg: &MlpConfig, seed: u64) -> Result<Mlp, FitError> {
    let started = Instant::now();
    let rows = &ds.train;
    if rows.is_empty() {
        return Err(FitError::Empty);
    }
    check_both_outcomes(rows)?;
    let (maps, vocab) = vocabularies(ds);
    let (fit_rows, val_rows) = validation_split(rows, cfg.validation_share);
    let standardiser = Standardiser::fit(&rows.x, &fit_rows);
    let data = Data::for_fit(rows, &maps);
    let (fit_t, val_t) = (data.timed(&fit_rows), data.timed(&val_rows));
    // Whether the data supports a time head is decided once per run
    // (crate::time_support); without one the time output falls back to the
    // item prior, like the linear family's.
    let learn_time = ds.time_modeled() && !fit_t.is_empty() && !val_t.is_empty();
    let trainer = Trainer {
        x: &rows.x,
        data: &data,
        vocab_sizes: [vocab[0].len() + 1, vocab[1].len() + 1],
        standardiser: &standardiser,
        cfg,
    };
    let train = |fit: &[usize], val: &[usize], layout: Layout, seed: u64| {
        trainer.train(fit, val, layout, seed)
    };
    let (correctness, time, nets) = match (cfg.architecture, learn_time) {
        (Architecture::Shared, true) => {
            let (n, r) = train(&fit_rows, &val_rows, Layout::Both, seed);
            (n, TimeModel::Shared, vec![r])
        }
        (Architecture::Separate, true) => {
            let ((pn, pr), (tn, tr)) = std::thread::scope(|s| {
                let time = s.spawn(|| train(&fit_t, &val_t, Layout::Time, seed ^ 0x7469_6d65));
                let p = train(&fit_rows, &val_rows, Layout::Correctness, seed);
                let t = time.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                (p, t)
            });
            (pn, TimeModel::Separate(Box::new(tn)), vec![pr, tr])
        }
        (_, false) => {
            let (n, r) = train(&fit_rows, &val_rows, Layout::Correctness, seed);
            (n, TimeModel::Prior, vec![r])
        }
    };
    // The calibration of the logit on the validation rows, which chose the
    // epoch but were not trained on, folded into the logit column.
    let mut correctness = correctness;
    let (z, y) = data.logits(&correctness, &rows.x, &val_rows);
    let calibration = if cfg.calibrate {
        Platt::fit(&z, &y)
    } else {
        None
    };
    // Scored before the calibration fitted on these rows (see `auto`).
    let validation_losses = calibrated_losses(&z, &y, None);
    if let Some(c) = calibration
        && let Some((w, b)) = correctness.layers.last_mut()
    {
        c.fold(w.column_mut(0).iter_mut(), &mut b[0]);
    }
    let lookups = vocab.clone().map(|labels| {
        labels
            .iter()
            .enumerate()
            .map(|(k, l)| (label_key(l), k as u32 + 1))
            .collect()
    });
    let report = FitReport {
        nets,
        seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(seconds = report.seconds, "mlp fitted");
    Ok(Mlp {
        correctness,
        time,
        vocab,
        lookups,
        calibration,
        validation_losses,
        report,
    })
}

impl Mlp {
    /// The index inputs the graph takes; embedding row `k + 1` is `vocabulary[k]`.
    pub fn index_inputs(&self) -> Vec<IndexInput> {
        (0..INDEXED)
            .map(|k| IndexInput {
                name: INDEX_INPUTS[k].to_string(),
                field: INDEX_FIELDS[k],
                vocabulary: self.vocab[k].clone(),
            })
            .collect()
    }

    /// What the fit chose on the validation rows, for the artifact's record.
    pub fn training_info(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        if let Some(net) = self.report.nets.first() {
            m.insert("validation_rows".to_string(), net.val_rows as f64);
            m.insert("mlp_best_epoch".to_string(), net.best_epoch as f64);
        }
        if let Some(c) = self.calibration {
            m.insert("calibration_scale".into(), c.scale);
            m.insert("calibration_shift".into(), c.shift);
        }
        if let Some(v) = mean_loss(&self.validation_losses) {
            m.insert("validation_log_loss".into(), v);
        }
        m
    }

    /// True when the time output comes from a trained head.
    pub fn learned_time(&self) -> bool {
        !matches!(self.time, TimeModel::Prior)
    }
}

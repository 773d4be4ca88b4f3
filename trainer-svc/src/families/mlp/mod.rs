//! Family `mlp`: the original app's V2 network, hand-written on `ndarray`.
//!
//! Inputs: learner (32), topic (16) and difficulty (8) embeddings and the 24
//! shared features, standardised. Body: Dense 128 → BatchNorm → ReLU →
//! Dropout 0.3; Dense 64 → BatchNorm → ReLU → Dropout 0.2; Dense 32 → ReLU →
//! Dropout 0.1. Heads: a logit (sigmoid → `p_correct`) and, when the data has
//! times, a log-time location and a scale (softplus), trained with the
//! Gaussian negative log-likelihood of the capped log-seconds; the export
//! turns them into `[loc − 1.2816·scale, loc, loc + 1.2816·scale]`.
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
//! Unknown learners, topics and difficulties use embedding row 0; training
//! masks each id to 0 with probability [`MlpConfig::oov_rate`] so that row is
//! a learned "someone we have not seen" and a new learner gets a real
//! prediction without retraining.

mod infer;
mod net;

use std::collections::HashMap;
use std::time::Instant;

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use taskcast_contract::artifact::{INPUT_FEATURES, OUTPUT_LOG_SECONDS, OUTPUT_P_CORRECT};
use taskcast_contract::features::{feature_index, label_key};
use taskcast_contract::onnx::{AttributeProto, Dim, GraphBuilder};
use taskcast_contract::runtime::Output;
use taskcast_contract::{FEATURE_COUNT, IndexField, IndexInput, RowKeys};

use crate::data::dataset::{Dataset, Rows, Vocab};
use crate::families::FitError;

pub use infer::{FoldedNet, Standardiser};
use net::{Adam, Net, StepConfig, train_step};

/// Embedding widths: learner, topic, difficulty.
pub const EMBEDDINGS: [usize; 3] = [32, 16, 8];
/// Hidden layer widths.
pub const HIDDEN: [usize; 3] = [128, 64, 32];
/// Names of the index inputs, in embedding order.
pub const INDEX_INPUTS: [&str; 3] = ["learner_idx", "topic_idx", "difficulty_idx"];
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
    /// Share of each learner's training rows, at its end, used for validation.
    pub validation_share: f64,
    /// Probability of masking each id to OOV (0) in a training row.
    pub oov_rate: f32,
    /// Learners with fewer training rows share the OOV embedding.
    pub min_learner_rows: usize,
    /// At most this many learner embeddings (the most active learners).
    pub max_learners: usize,
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
            validation_share: 0.1,
            oov_rate: 0.1,
            min_learner_rows: 10,
            max_learners: 100_000,
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
    /// Labels of embedding rows `1..`, per input (learner, topic, difficulty).
    vocab: [Vec<String>; 3],
    lookups: [HashMap<u64, u32>; 3],
    /// Training diagnostics.
    pub report: FitReport,
}

/// Chronological validation split: rows of `rows` are grouped by learner in
/// time order, so the last `round(share·n)` rows of each learner's run go to
/// validation. Returns `(fit, validation)` row indices.
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

/// Which labels get an embedding row: learners with at least `min_rows`
/// training rows (the `max` most active), and every topic and difficulty
/// seen in training. Returns, per input, `dataset index → embedding index`
/// and the labels of embedding rows `1..`.
fn vocabularies(ds: &Dataset, cfg: &MlpConfig) -> ([Vec<u32>; 3], [Vec<String>; 3]) {
    let count = |ids: &[u32], len: usize| {
        let mut c = vec![0usize; len];
        for &i in ids {
            if let Some(v) = c.get_mut(i as usize) {
                *v += 1;
            }
        }
        c
    };
    let pick = |vocab: &Vocab, counts: Vec<usize>, min: usize, max: usize| {
        let mut keep: Vec<usize> = (1..vocab.labels.len())
            .filter(|&i| counts[i] >= min.max(1))
            .collect();
        if keep.len() > max {
            keep.sort_by(|a, b| counts[*b].cmp(&counts[*a]).then(a.cmp(b)));
            keep.truncate(max);
            keep.sort_unstable();
        }
        let mut map = vec![0u32; vocab.labels.len()];
        let mut labels = Vec::with_capacity(keep.len());
        for (k, &i) in keep.iter().enumerate() {
            map[i] = k as u32 + 1;
            labels.push(vocab.labels[i].clone());
        }
        (map, labels)
    };
    let t = &ds.train;
    let (um, ul) = pick(
        &ds.users,
        count(&t.user, ds.users.labels.len()),
        cfg.min_learner_rows,
        cfg.max_learners,
    );
    let (tm, tl) = pick(
        &ds.topics,
        count(&t.topic, ds.topics.labels.len()),
        1,
        usize::MAX,
    );
    let (dm, dl) = pick(
        &ds.difficulties,
        count(&t.difficulty, ds.difficulties.labels.len()),
        1,
        usize::MAX,
    );
    ([um, tm, dm], [ul, tl, dl])
}

/// Which output columns a network has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `[logit]`.
    Correctness,
    /// `[loc, raw_scale]`.
    Time,
    /// `[logit, loc, raw_scale]`.
    Both,
}

impl Layout {
    fn p_col(self) -> Option<usize> {
        match self {
            Layout::Correctness | Layout::Both => Some(0),
            Layout::Time => None,
        }
    }
    fn t_cols(self) -> Option<(usize, usize)> {
        match self {
            Layout::Correctness => None,
            Layout::Time => Some((0, 1)),
            Layout::Both => Some((1, 2)),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Layout::Correctness => "correctness",
            Layout::Time => "time",
            Layout::Both => "shared",
        }
    }
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// `ln(1 + e^z)` without overflow.
fn softplus(z: f32) -> f32 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Per-row training targets and inputs.
struct Data {
    /// Standardised features, row-major.
    xs: Vec<f32>,
    /// Embedding indices per row.
    idx: Vec<[u32; 3]>,
    /// 1.0 for correct.
    y: Vec<f32>,
    /// Capped log-seconds.
    t: Vec<Option<f32>>,
}

/// Loss of one row given its output row; with `grad`, also writes
/// `dloss/dout` (not yet divided by the batch size).
fn row_loss(layout: Layout, out: &[f32], y: f32, t: Option<f32>, grad: Option<&mut [f32]>) -> f64 {
    let mut loss = 0f64;
    let mut g = [0f32; 3];
    if let Some(c) = layout.p_col() {
        let z = out[c];
        // BCE with logits: softplus(z) − y·z.
        loss += f64::from(softplus(z) - y * z);
        g[c] = sigmoid(z) - y;
    }
    if let (Some((lc, sc)), Some(t)) = (layout.t_cols(), t) {
        let (loc, raw) = (out[lc], out[sc]);
        let s = softplus(raw) + SCALE_FLOOR;
        let d = t - loc;
        // Gaussian NLL without the constant ½·ln 2π.
        loss += f64::from(s.ln() + 0.5 * d * d / (s * s));
        g[lc] = -d / (s * s);
        g[sc] = (1.0 / s - d * d / (s * s * s)) * sigmoid(raw);
    }
    if let Some(gr) = grad {
        gr.copy_from_slice(&g[..gr.len()]);
    }
    loss
}

/// Mean loss of a folded network over `rows` (inference mode).
fn eval_loss(net: &FoldedNet, x: &[f32], data: &Data, rows: &[usize], layout: Layout) -> f64 {
    if rows.is_empty() {
        return f64::NAN;
    }
    let mut total = 0f64;
    for chunk in rows.chunks(4096) {
        let xb: Vec<f32> = chunk
            .iter()
            .flat_map(|&r| {
                x[r * FEATURE_COUNT..(r + 1) * FEATURE_COUNT]
                    .iter()
                    .copied()
            })
            .collect();
        let ib: Vec<[u32; 3]> = chunk.iter().map(|&r| data.idx[r]).collect();
        let out = net.forward(&xb, &ib);
        for (j, &r) in chunk.iter().enumerate() {
            if let Some(o) = out.row(j).as_slice() {
                total += row_loss(layout, o, data.y[r], data.t[r], None);
            }
        }
    }
    total / rows.len() as f64
}

/// Trains one network; returns the best epoch's weights, folded.
#[allow(clippy::too_many_arguments)]
fn train_net(
    x: &[f32],
    data: &Data,
    fit_rows: &[usize],
    val_rows: &[usize],
    layout: Layout,
    vocab_sizes: [usize; 3],
    standardiser: &Standardiser,
    cfg: &MlpConfig,
    seed: u64,
) -> (FoldedNet, NetReport) {
    let mut rng = StdRng::seed_from_u64(seed);
    // Output biases start at the targets' base values.
    let mut out_bias = Vec::new();
    if layout.p_col().is_some() {
        let p = fit_rows.iter().map(|&r| f64::from(data.y[r])).sum::<f64>()
            / fit_rows.len().max(1) as f64;
        out_bias.push(taskcast_contract::features::logit(p) as f32);
    }
    if layout.t_cols().is_some() {
        let ts: Vec<f64> = fit_rows
            .iter()
            .filter_map(|&r| data.t[r])
            .map(f64::from)
            .collect();
        let n = ts.len().max(1) as f64;
        let mean = ts.iter().sum::<f64>() / n;
        let sd = (ts.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / n).sqrt();
        let target = (sd as f32 - SCALE_FLOOR).max(0.05);
        // softplus⁻¹(s) = ln(eˢ − 1)
        out_bias.push(mean as f32);
        out_bias.push(target.exp_m1().ln());
    }
    let mut net = Net::new(&mut rng, vocab_sizes, FEATURE_COUNT, &out_bias);
    let mut adam = Adam::new(&net);
    // Without validation rows, judge epochs on the training rows themselves.
    let monitor: &[usize] = if val_rows.is_empty() {
        fit_rows
    } else {
        val_rows
    };
    let mut best = net.fold(standardiser);
    let mut report = NetReport {
        name: layout.name().to_string(),
        initial_val_loss: eval_loss(&best, x, data, monitor, layout),
        fit_rows: fit_rows.len(),
        val_rows: val_rows.len(),
        ..Default::default()
    };
    report.best_val_loss = report.initial_val_loss;
    let width = net::input_width(FEATURE_COUNT);
    let bs = cfg.batch_size.max(2);
    let mut step = StepConfig {
        lr: cfg.learning_rate,
        dropout: cfg.dropout,
        bn_momentum: cfg.bn_momentum,
    };
    let mut order: Vec<usize> = fit_rows.to_vec();
    let (mut since_best, mut since_lr) = (0usize, 0usize);
    let mut x0 = Array2::<f32>::zeros((bs, width));
    let mut ids: Vec<[u32; 3]> = Vec::with_capacity(bs);
    for epoch in 1..=cfg.max_epochs {
        let started = Instant::now();
        // Fisher–Yates shuffle; a prefix of it is the epoch's subsample.
        for i in (1..order.len()).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        let take = order.len().min(cfg.max_rows_per_epoch.max(bs));
        let mut train_loss = 0f64;
        let mut trained = 0usize;
        for batch in order[..take].chunks(bs) {
            // BatchNorm needs at least two rows for a variance.
            if batch.len() < 2 {
                continue;
            }
            if x0.nrows() != batch.len() {
                x0 = Array2::zeros((batch.len(), width));
            }
            ids.clear();
            for (j, &r) in batch.iter().enumerate() {
                let mut id = data.idx[r];
                for v in id.iter_mut() {
                    if rng.random::<f32>() < cfg.oov_rate {
                        *v = 0;
                    }
                }
                ids.push(id);
                let mut row = x0.row_mut(j);
                let mut at = 0;
                for k in 0..3 {
                    for d in 0..EMBEDDINGS[k] {
                        row[at + d] = net.emb[k][[id[k] as usize, d]];
                    }
                    at += EMBEDDINGS[k];
                }
                for d in 0..FEATURE_COUNT {
                    row[at + d] = data.xs[r * FEATURE_COUNT + d];
                }
            }
            let n = batch.len() as f32;
            let loss = |out: &Array2<f32>, rows: &[usize]| {
                let mut g = Array2::<f32>::zeros(out.raw_dim());
                let mut total = 0f64;
                for (j, &r) in rows.iter().enumerate() {
                    let mut gr = [0f32; 3];
                    let k = out.ncols();
                    if let Some(o) = out.row(j).as_slice() {
                        total += row_loss(layout, o, data.y[r], data.t[r], Some(&mut gr[..k]));
                    }
                    for c in 0..k {
                        g[[j, c]] = gr[c] / n;
                    }
                }
                (g, total)
            };
            train_loss += train_step(
                &mut net, &mut adam, &x0, &ids, batch, &loss, &step, &mut rng,
            );
            trained += batch.len();
        }
        let folded = net.fold(standardiser);
        let val_loss = eval_loss(&folded, x, data, monitor, layout);
        report.epochs.push(EpochStats {
            epoch,
            train_loss: train_loss / trained.max(1) as f64,
            val_loss,
            lr: step.lr,
            rows: trained,
            seconds: started.elapsed().as_secs_f64(),
        });
        tracing::debug!(
            net = layout.name(),
            epoch,
            val_loss,
            lr = step.lr,
            "mlp epoch"
        );
        if !val_loss.is_finite() {
            // Diverged: keep the best weights so far.
            break;
        }
        if val_loss < report.best_val_loss {
            report.best_val_loss = val_loss;
            report.best_epoch = epoch;
            best = folded;
            since_best = 0;
            since_lr = 0;
        } else {
            since_best += 1;
            since_lr += 1;
            if since_best >= cfg.patience {
                break;
            }
            if since_lr >= cfg.lr_patience {
                step.lr *= cfg.lr_factor;
                since_lr = 0;
            }
        }
    }
    (best, report)
}

/// Fits the `mlp` family on the dataset's training rows.
pub fn fit(ds: &Dataset, cfg: &MlpConfig, seed: u64) -> Result<Mlp, FitError> {
    let started = Instant::now();
    let rows = &ds.train;
    if rows.is_empty() {
        return Err(FitError::Empty);
    }
    crate::families::check_both_outcomes(rows)?;
    let (maps, vocab) = vocabularies(ds, cfg);
    let (fit_rows, val_rows) = validation_split(rows, cfg.validation_share);
    let standardiser = Standardiser::fit(&rows.x, &fit_rows);
    let mut xs = vec![0f32; rows.x.len()];
    for i in 0..rows.len() {
        standardiser.apply(
            rows.row(i),
            &mut xs[i * FEATURE_COUNT..(i + 1) * FEATURE_COUNT],
        );
    }
    let at = |m: &Vec<u32>, i: u32| m.get(i as usize).copied().unwrap_or(0);
    let data = Data {
        xs,
        idx: (0..rows.len())
            .map(|i| {
                [
                    at(&maps[0], rows.user[i]),
                    at(&maps[1], rows.topic[i]),
                    at(&maps[2], rows.difficulty[i]),
                ]
            })
            .collect(),
        y: rows
            .correct
            .iter()
            .map(|c| f32::from(u8::from(*c)))
            .collect(),
        t: (0..rows.len())
            .map(|i| rows.log_time(i).map(|t| t as f32))
            .collect(),
    };
    let sizes = [vocab[0].len() + 1, vocab[1].len() + 1, vocab[2].len() + 1];
    let timed = |idx: &[usize]| -> Vec<usize> {
        idx.iter()
            .copied()
            .filter(|&r| data.t[r].is_some())
            .collect()
    };
    let (fit_t, val_t) = (timed(&fit_rows), timed(&val_rows));
    // Whether the data supports a time head is decided once per run
    // (crate::data::time_support); without one the time output falls back to the
    // item prior, like the linear family's.
    let learn_time = ds.time_modeled() && !fit_t.is_empty() && !val_t.is_empty();
    let x = &rows.x;
    let train = |rows_f: &[usize], rows_v: &[usize], layout: Layout, seed: u64| {
        train_net(
            x,
            &data,
            rows_f,
            rows_v,
            layout,
            sizes,
            &standardiser,
            cfg,
            seed,
        )
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
        report,
    })
}

impl Mlp {
    /// Embedding indices for label keys, exactly as ONNX Runtime's
    /// [`taskcast_contract::runtime::OnnxModel::run`] will look them up.
    pub fn indices(&self, keys: &[RowKeys]) -> Vec<[u32; 3]> {
        keys.iter()
            .map(|k| {
                let get = |m: &HashMap<u64, u32>, key: u64| m.get(&key).copied().unwrap_or(0);
                [
                    get(&self.lookups[0], k.user),
                    get(&self.lookups[1], k.topic),
                    get(&self.lookups[2], k.difficulty),
                ]
            })
            .collect()
    }

    /// The forward pass in Rust for raw feature rows `x` (row-major
    /// `[n, FEATURE_COUNT]`) and their label keys: the reference the export
    /// must reproduce.
    pub fn predict(&self, x: &[f32], keys: &[RowKeys]) -> Vec<Output> {
        let n = keys.len().min(x.len() / FEATURE_COUNT);
        let idx = self.indices(&keys[..n]);
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(4096) {
            let end = (start + 4096).min(n);
            let xb = &x[start * FEATURE_COUNT..end * FEATURE_COUNT];
            let ib = &idx[start..end];
            let pc = self.correctness.forward(xb, ib);
            let tn = match &self.time {
                TimeModel::Separate(net) => Some((net.forward(xb, ib), 0)),
                _ => None,
            };
            for j in 0..end - start {
                let p_correct = sigmoid(pc[[j, 0]]);
                let (loc, raw) = match (&self.time, &tn) {
                    (TimeModel::Separate(_), Some((t, c))) => (t[[j, *c]], t[[j, c + 1]]),
                    (TimeModel::Shared, _) => (pc[[j, 1]], pc[[j, 2]]),
                    _ => (f32::NAN, f32::NAN),
                };
                let log_seconds = if loc.is_nan() {
                    let f = feature_index("prior_item_log_time").unwrap_or(1);
                    let m = xb[j * FEATURE_COUNT + f];
                    [m - 1.0, m, m + 1.0]
                } else {
                    let s = softplus(raw) + SCALE_FLOOR;
                    [loc + s * -Z90, loc + s * 0.0, loc + s * Z90]
                };
                out.push(Output {
                    p_correct,
                    log_seconds,
                });
            }
        }
        out
    }

    /// Mean validation losses of these weights on `rows` (indices into
    /// `rows`): the quantity early stopping minimised, per network, in
    /// [`FitReport::nets`] order. `rows` must be the training rows of the
    /// dataset the model was fitted on.
    pub fn losses(&self, rows: &Rows, idx: &[usize]) -> Vec<f64> {
        let keys: Vec<RowKeys> = idx.iter().map(|&i| rows.keys[i]).collect();
        let ids = self.indices(&keys);
        let mut x = Vec::with_capacity(idx.len() * FEATURE_COUNT);
        for &i in idx {
            x.extend_from_slice(rows.row(i));
        }
        let data = Data {
            xs: Vec::new(),
            idx: ids,
            y: idx
                .iter()
                .map(|&i| f32::from(u8::from(rows.correct[i])))
                .collect(),
            t: idx
                .iter()
                .map(|&i| rows.log_time(i).map(|t| t as f32))
                .collect(),
        };
        let all: Vec<usize> = (0..idx.len()).collect();
        let timed: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&r| data.t[r].is_some())
            .collect();
        match &self.time {
            TimeModel::Separate(t) => vec![
                eval_loss(&self.correctness, &x, &data, &all, Layout::Correctness),
                eval_loss(t, &x, &data, &timed, Layout::Time),
            ],
            TimeModel::Shared => vec![eval_loss(&self.correctness, &x, &data, &all, Layout::Both)],
            TimeModel::Prior => vec![eval_loss(
                &self.correctness,
                &x,
                &data,
                &all,
                Layout::Correctness,
            )],
        }
    }

    /// The index inputs the graph takes; embedding row `k + 1` is `vocabulary[k]`.
    pub fn index_inputs(&self) -> Vec<IndexInput> {
        let fields = [IndexField::User, IndexField::Topic, IndexField::Difficulty];
        (0..3)
            .map(|k| IndexInput {
                name: INDEX_INPUTS[k].to_string(),
                field: fields[k],
                vocabulary: self.vocab[k].clone(),
            })
            .collect()
    }

    /// True when the time output comes from a trained head.
    pub fn learned_time(&self) -> bool {
        !matches!(self.time, TimeModel::Prior)
    }

    /// The ONNX graph (inputs and outputs per the artifact contract).
    pub fn graph(&self) -> GraphBuilder {
        let f = FEATURE_COUNT as i64;
        let mut g = GraphBuilder::new("taskcast_mlp");
        g.input_f32(INPUT_FEATURES, &[Dim::Batch, Dim::Fixed(f)]);
        for name in INDEX_INPUTS {
            g.input_i64(name, &[Dim::Batch]);
        }
        g.output_f32(OUTPUT_P_CORRECT, &[Dim::Batch])
            .output_f32(OUTPUT_LOG_SECONDS, &[Dim::Batch, Dim::Fixed(3)])
            .init_i64("flat", &[1], &[-1])
            .init_f32("quantile_z", &[1, 3], &[-Z90, 0.0, Z90]);
        self.correctness
            .emit(&mut g, "p_", INPUT_FEATURES, INDEX_INPUTS);
        g.node("Sigmoid", &["p_out0"], &["p_col"], vec![]).node(
            "Reshape",
            &["p_col", "flat"],
            &[OUTPUT_P_CORRECT],
            vec![],
        );
        let cols = match &self.time {
            TimeModel::Separate(net) => {
                net.emit(&mut g, "t_", INPUT_FEATURES, INDEX_INPUTS);
                Some(("t_out0", "t_out1"))
            }
            TimeModel::Shared => Some(("p_out1", "p_out2")),
            TimeModel::Prior => None,
        };
        match cols {
            Some((loc, raw)) => {
                g.init_f32("scale_floor", &[1], &[SCALE_FLOOR])
                    .node("Softplus", &[raw], &["scale_sp"], vec![])
                    .node("Add", &["scale_sp", "scale_floor"], &["scale"], vec![])
                    .node("Mul", &["scale", "quantile_z"], &["spread"], vec![])
                    .node("Add", &[loc, "spread"], &[OUTPUT_LOG_SECONDS], vec![]);
            }
            None => {
                let at = feature_index("prior_item_log_time").unwrap_or(1) as i64;
                g.init_i64("prior_col", &[1], &[at])
                    .init_f32("prior_spread", &[1, 3], &[-1.0, 0.0, 1.0])
                    .node(
                        "Gather",
                        &[INPUT_FEATURES, "prior_col"],
                        &["prior_lt"],
                        vec![AttributeProto::int("axis", 1)],
                    )
                    .node(
                        "Add",
                        &["prior_lt", "prior_spread"],
                        &[OUTPUT_LOG_SECONDS],
                        vec![],
                    );
            }
        }
        g
    }
}

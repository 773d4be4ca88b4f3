//! Training one network: the per-row loss, batches with out-of-vocabulary
//! masking, Adam steps (in [`super::net`]), and the schedule: the learning
//! rate halved on a plateau, early stopping, the best epoch's weights kept.

use std::time::Instant;

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use taskcast_contract::{FEATURE_COUNT, RowKeys};

use super::net::{self, Adam, Net, StepConfig, train_step};
use super::{
    EMBEDDINGS, EpochStats, FoldedNet, INDEXED, Mlp, MlpConfig, NetReport, SCALE_FLOOR,
    Standardiser, TimeModel, sigmoid, softplus,
};
use crate::dataset::Rows;

/// Which output columns a network has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
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

/// Per-row training targets and inputs.
///
/// The features are not here: a batch standardises its rows of the raw ones
/// as it is filled. A standardised copy of every training row was as large
/// as the rows themselves, while an epoch reads at most
/// [`MlpConfig::max_rows_per_epoch`](super::MlpConfig::max_rows_per_epoch) of
/// them; it set `auto`'s peak at 1 M rows (issue 29).
pub(super) struct Data {
    /// Embedding indices per row (topic, difficulty).
    idx: Vec<[u32; INDEXED]>,
    /// 1.0 for correct.
    y: Vec<f32>,
    /// Capped log-seconds.
    t: Vec<Option<f32>>,
}

impl Data {
    /// The training rows' embedding indices (`maps`: dataset index →
    /// embedding row, per input) and targets.
    pub(super) fn for_fit(rows: &Rows, maps: &[Vec<u32>; INDEXED]) -> Data {
        let at = |m: &Vec<u32>, i: u32| m.get(i as usize).copied().unwrap_or(0);
        Data {
            idx: (0..rows.len())
                .map(|i| {
                    [
                        at(&maps[0], rows.topic[i]),
                        at(&maps[1], rows.difficulty[i]),
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
        }
    }

    /// The rows of `idx` with a recorded time.
    pub(super) fn timed(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter()
            .copied()
            .filter(|&r| self.t[r].is_some())
            .collect()
    }

    /// Runs a folded network on `rows` of the raw features `x`, a few
    /// thousand rows at a time, handing each chunk's rows and outputs to `f`.
    fn forward_chunks(
        &self,
        net: &FoldedNet,
        x: &[f32],
        rows: &[usize],
        mut f: impl FnMut(&[usize], &Array2<f32>),
    ) {
        for chunk in rows.chunks(4096) {
            let xb: Vec<f32> = chunk
                .iter()
                .flat_map(|&r| {
                    x[r * FEATURE_COUNT..(r + 1) * FEATURE_COUNT]
                        .iter()
                        .copied()
                })
                .collect();
            let ib: Vec<[u32; INDEXED]> = chunk.iter().map(|&r| self.idx[r]).collect();
            f(chunk, &net.forward(&xb, &ib));
        }
    }

    /// A folded network's correctness logits (output column 0) on `rows` of
    /// the raw features `x`, and their outcomes.
    pub(super) fn logits(
        &self,
        net: &FoldedNet,
        x: &[f32],
        rows: &[usize],
    ) -> (Vec<f64>, Vec<bool>) {
        let mut z = Vec::with_capacity(rows.len());
        self.forward_chunks(net, x, rows, |_, out| {
            z.extend(out.column(0).iter().map(|v| f64::from(*v)));
        });
        let y = rows.iter().map(|&r| self.y[r] > 0.5).collect();
        (z, y)
    }
}

/// Largest `|dloss/dout|` a row's time head passes back.
const GRAD_BOUND: f32 = 4.0;

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
        // Clipped: a row far off a narrow scale (s near the floor) has a
        // gradient of order d/s², 10⁴ and more, and one such step inflates
        // Adam's second moments for a thousand steps, which at a few
        // thousand rows is the whole fit (the network stalled at its first
        // epoch on 60 real learners). Within the bound the gradient is exact.
        g[lc] = (-d / (s * s)).clamp(-GRAD_BOUND, GRAD_BOUND);
        g[sc] = ((1.0 / s - d * d / (s * s * s)) * sigmoid(raw)).clamp(-GRAD_BOUND, GRAD_BOUND);
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
    data.forward_chunks(net, x, rows, |chunk, out| {
        for (j, &r) in chunk.iter().enumerate() {
            if let Some(o) = out.row(j).as_slice() {
                total += row_loss(layout, o, data.y[r], data.t[r], None);
            }
        }
    });
    total / rows.len() as f64
}

/// What every network of one fit trains on.
pub(super) struct Trainer<'a> {
    /// Raw feature rows, row-major (the folded network standardises them).
    pub x: &'a [f32],
    /// Embedding indices and targets.
    pub data: &'a Data,
    /// Embedding rows per input, OOV row included.
    pub vocab_sizes: [usize; INDEXED],
    pub standardiser: &'a Standardiser,
    pub cfg: &'a MlpConfig,
}

/// Early stopping and the plateau schedule of the learning rate, counted in
/// epochs without a better validation loss.
#[derive(Default)]
struct Schedule {
    since_best: usize,
    since_lr: usize,
}

impl Schedule {
    fn improved(&mut self) {
        self.since_best = 0;
        self.since_lr = 0;
    }

    /// After an epoch that did not improve: lowers `lr` on a plateau; true
    /// when training should stop.
    fn stalled(&mut self, cfg: &MlpConfig, lr: &mut f32) -> bool {
        self.since_best += 1;
        self.since_lr += 1;
        if self.since_best >= cfg.patience {
            return true;
        }
        if self.since_lr >= cfg.lr_patience {
            *lr *= cfg.lr_factor;
            self.since_lr = 0;
        }
        false
    }
}

/// One network's state while it trains.
struct InTraining {
    net: Net,
    adam: Adam,
    step: StepConfig,
    batch: Batch,
    /// The training rows, shuffled anew each epoch.
    order: Vec<usize>,
    rng: StdRng,
}

/// One batch's network inputs: embedding rows (after OOV masking) beside the
/// standardised features, and the masked indices.
struct Batch {
    x: Array2<f32>,
    ids: Vec<[u32; INDEXED]>,
}

impl Batch {
    fn new(rows: usize) -> Batch {
        Batch {
            x: Array2::<f32>::zeros((rows, net::input_width(FEATURE_COUNT))),
            ids: Vec::with_capacity(rows),
        }
    }

    /// Fills the batch from `rows` (their raw features `x`, standardised
    /// here), masking each id to OOV (0) with probability `oov_rate`.
    fn fill(&mut self, net: &Net, trainer: &Trainer<'_>, rows: &[usize], rng: &mut StdRng) {
        let (data, oov_rate) = (trainer.data, trainer.cfg.oov_rate);
        if self.x.nrows() != rows.len() {
            self.x = Array2::zeros((rows.len(), net::input_width(FEATURE_COUNT)));
        }
        self.ids.clear();
        for (j, &r) in rows.iter().enumerate() {
            let mut id = data.idx[r];
            for v in id.iter_mut() {
                if rng.random::<f32>() < oov_rate {
                    *v = 0;
                }
            }
            self.ids.push(id);
            let mut row = self.x.row_mut(j);
            let mut at = 0;
            for k in 0..INDEXED {
                for d in 0..EMBEDDINGS[k] {
                    row[at + d] = net.emb[k][[id[k] as usize, d]];
                }
                at += EMBEDDINGS[k];
            }
            let raw = &trainer.x[r * FEATURE_COUNT..(r + 1) * FEATURE_COUNT];
            for (d, &v) in raw.iter().enumerate() {
                row[at + d] = trainer.standardiser.one(d, v);
            }
        }
    }
}

impl Trainer<'_> {
    /// Trains one network; returns the best epoch's weights, folded.
    pub(super) fn train(
        &self,
        fit_rows: &[usize],
        val_rows: &[usize],
        layout: Layout,
        seed: u64,
    ) -> (FoldedNet, NetReport) {
        let cfg = self.cfg;
        let mut rng = StdRng::seed_from_u64(seed);
        let out_bias = self.initial_bias(fit_rows, layout);
        let net = Net::new(&mut rng, self.vocab_sizes, FEATURE_COUNT, &out_bias);
        let adam = Adam::new(&net);
        // Without validation rows, judge epochs on the training rows themselves.
        let monitor: &[usize] = if val_rows.is_empty() {
            fit_rows
        } else {
            val_rows
        };
        let mut best = net.fold(self.standardiser);
        let mut report = NetReport {
            name: layout.name().to_string(),
            initial_val_loss: eval_loss(&best, self.x, self.data, monitor, layout),
            fit_rows: fit_rows.len(),
            val_rows: val_rows.len(),
            ..Default::default()
        };
        report.best_val_loss = report.initial_val_loss;
        let mut state = InTraining {
            net,
            adam,
            step: StepConfig {
                lr: cfg.learning_rate,
                dropout: cfg.dropout,
                bn_momentum: cfg.bn_momentum,
            },
            batch: Batch::new(cfg.batch_size.max(2)),
            order: fit_rows.to_vec(),
            rng,
        };
        let mut schedule = Schedule::default();
        for epoch in 1..=cfg.max_epochs {
            let started = Instant::now();
            let (train_loss, trained) = self.epoch(&mut state, layout);
            let folded = state.net.fold(self.standardiser);
            let val_loss = eval_loss(&folded, self.x, self.data, monitor, layout);
            report.epochs.push(EpochStats {
                epoch,
                train_loss: train_loss / trained.max(1) as f64,
                val_loss,
                lr: state.step.lr,
                rows: trained,
                seconds: started.elapsed().as_secs_f64(),
            });
            tracing::debug!(
                net = layout.name(),
                epoch,
                val_loss,
                lr = state.step.lr,
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
                schedule.improved();
            } else if schedule.stalled(cfg, &mut state.step.lr) {
                break;
            }
        }
        (best, report)
    }

    /// Output biases start at the targets' base values: the logit of the
    /// success rate, the mean log-time and the scale of its spread.
    fn initial_bias(&self, fit_rows: &[usize], layout: Layout) -> Vec<f32> {
        let data = self.data;
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
        out_bias
    }

    /// One pass over a shuffled subsample of the training rows; returns the
    /// summed training loss and the rows trained on.
    fn epoch(&self, state: &mut InTraining, layout: Layout) -> (f64, usize) {
        let cfg = self.cfg;
        let InTraining {
            net,
            adam,
            step,
            batch,
            order,
            rng,
        } = state;
        let bs = cfg.batch_size.max(2);
        // Fisher–Yates shuffle; a prefix of it is the epoch's subsample.
        for i in (1..order.len()).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        let take = order.len().min(cfg.max_rows_per_epoch.max(bs));
        let mut train_loss = 0f64;
        let mut trained = 0usize;
        for rows in order[..take].chunks(bs) {
            // BatchNorm needs at least two rows for a variance.
            if rows.len() < 2 {
                continue;
            }
            batch.fill(net, self, rows, rng);
            let loss = |out: &Array2<f32>, rows: &[usize]| batch_loss(self.data, layout, out, rows);
            train_loss += train_step(net, adam, &batch.x, &batch.ids, rows, &loss, step, rng);
            trained += rows.len();
        }
        (train_loss, trained)
    }
}

/// The summed loss of a batch's output rows and its gradient with respect to
/// them, averaged over the batch.
fn batch_loss(
    data: &Data,
    layout: Layout,
    out: &Array2<f32>,
    rows: &[usize],
) -> (Array2<f32>, f64) {
    let n = rows.len() as f32;
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
}

impl Mlp {
    /// Mean validation losses of these weights on `rows` (indices into
    /// `rows`): the quantity early stopping minimised, per network, in
    /// [`FitReport::nets`](super::FitReport::nets) order. `rows` must be the training rows of the
    /// dataset the model was fitted on.
    pub fn losses(&self, rows: &Rows, idx: &[usize]) -> Vec<f64> {
        let keys: Vec<RowKeys> = idx.iter().map(|&i| rows.key(i)).collect();
        let ids = self.indices(&keys);
        let mut x = Vec::with_capacity(idx.len() * FEATURE_COUNT);
        for &i in idx {
            x.extend_from_slice(rows.row(i));
        }
        let data = Data {
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
}

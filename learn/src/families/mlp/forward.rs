//! The reference forward pass: a network's inference form (BatchNorm folded)
//! and a fitted model's predictions in Rust. It performs the same operations
//! in the same order as the graph [`super::onnx`] emits (standardise, gather,
//! concat, Gemm + Relu, ...), so the export check compares like with like.

use std::collections::HashMap;

use ndarray::{Array1, Array2, Axis, s};
use taskcast_contract::features::feature_index;
use taskcast_contract::runtime::Output;
use taskcast_contract::{FEATURE_COUNT, RowKeys};

use super::{EMBEDDINGS, INDEXED, Mlp, SCALE_FLOOR, TimeModel, Z90, sigmoid, softplus};

/// Per-feature `(x − mean)·inv_std`, computed inside the graph so the model
/// takes raw feature rows like the linear family.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardiser {
    /// Training mean per feature.
    pub mean: [f32; FEATURE_COUNT],
    /// `1/std` per feature (0 for constant columns).
    pub inv_std: [f32; FEATURE_COUNT],
}

impl Standardiser {
    /// Mean and scale over the rows `idx` of row-major `x`.
    pub fn fit(x: &[f32], idx: &[usize]) -> Standardiser {
        let n = idx.len().max(1) as f64;
        let mut mean = [0f64; FEATURE_COUNT];
        let mut sq = [0f64; FEATURE_COUNT];
        for &i in idx {
            for (m, v) in mean
                .iter_mut()
                .zip(&x[i * FEATURE_COUNT..(i + 1) * FEATURE_COUNT])
            {
                *m += f64::from(*v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        for &i in idx {
            for (j, v) in x[i * FEATURE_COUNT..(i + 1) * FEATURE_COUNT]
                .iter()
                .enumerate()
            {
                sq[j] += (f64::from(*v) - mean[j]).powi(2);
            }
        }
        Standardiser {
            mean: mean.map(|m| m as f32),
            inv_std: sq.map(|s| {
                let sd = (s / n).sqrt();
                // A column constant in training carries nothing, and its
                // first-layer weights never get a gradient: they stay at their
                // random initial values. Scaling it by 0 keeps it out of the
                // network when it does vary in serving (times or item ids in
                // requests to a model trained on data without them), rather
                // than let untrained weights move every prediction.
                if sd < 1e-6 { 0.0 } else { (1.0 / sd) as f32 }
            }),
        }
    }

    /// Standardises one raw row into `out`.
    pub fn apply(&self, row: &[f32], out: &mut [f32]) {
        for j in 0..FEATURE_COUNT {
            out[j] = self.one(j, row[j]);
        }
    }

    /// Feature `j`'s value `v`, standardised.
    pub fn one(&self, j: usize, v: f32) -> f32 {
        (v - self.mean[j]) * self.inv_std[j]
    }
}

/// A network ready for inference: embeddings, then `(w [in, out], b)` layers
/// with BatchNorm folded in; ReLU after every layer but the last.
#[derive(Clone, Debug)]
pub struct FoldedNet {
    /// Topic and difficulty embeddings `[vocab, dim]`; row 0 is OOV.
    pub emb: [Array2<f32>; INDEXED],
    /// Three hidden layers and the output layer.
    pub layers: Vec<(Array2<f32>, Array1<f32>)>,
    /// Feature standardisation.
    pub standardiser: Standardiser,
}

impl FoldedNet {
    /// Output columns.
    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.1.len())
    }

    /// Raw outputs (pre-activation heads) for rows of raw features `x`
    /// (row-major `[n, FEATURE_COUNT]`) and embedding indices `idx`
    /// (already in vocabulary range; 0 is OOV).
    pub fn forward(&self, x: &[f32], idx: &[[u32; INDEXED]]) -> Array2<f32> {
        let n = idx.len();
        let width = EMBEDDINGS.iter().sum::<usize>() + FEATURE_COUNT;
        let mut h = Array2::<f32>::zeros((n, width));
        for (r, (mut row, ids)) in h.axis_iter_mut(Axis(0)).zip(idx).enumerate() {
            let mut at = 0;
            for k in 0..INDEXED {
                let e = (ids[k] as usize).min(self.emb[k].nrows().saturating_sub(1));
                row.slice_mut(s![at..at + EMBEDDINGS[k]])
                    .assign(&self.emb[k].row(e));
                at += EMBEDDINGS[k];
            }
            if let Some(out) = row.slice_mut(s![at..]).as_slice_mut() {
                self.standardiser
                    .apply(&x[r * FEATURE_COUNT..(r + 1) * FEATURE_COUNT], out);
            }
        }
        let last = self.layers.len().saturating_sub(1);
        for (i, (w, b)) in self.layers.iter().enumerate() {
            let mut z = h.dot(w);
            z += b;
            if i < last {
                z.mapv_inplace(|v| v.max(0.0));
            }
            h = z;
        }
        h
    }
}

impl Mlp {
    /// Embedding indices for label keys, exactly as ONNX Runtime's
    /// [`taskcast_contract::runtime::OnnxModel::run`] will look them up.
    pub fn indices(&self, keys: &[RowKeys]) -> Vec<[u32; INDEXED]> {
        keys.iter()
            .map(|k| {
                let get = |m: &HashMap<u64, u32>, key: u64| m.get(&key).copied().unwrap_or(0);
                [
                    get(&self.lookups[0], k.topic),
                    get(&self.lookups[1], k.difficulty),
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
}

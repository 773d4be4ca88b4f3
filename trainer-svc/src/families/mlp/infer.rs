//! The inference form of a network (BatchNorm folded) and its ONNX graph.
//!
//! The Rust forward pass here performs the same operations in the same order
//! as the emitted graph (standardise, gather, concat, Gemm + Relu, ...), so the
//! export check compares like with like.

use ndarray::{Array1, Array2, ArrayView2, Axis, s};
use taskcast_contract::FEATURE_COUNT;
use taskcast_contract::onnx::{AttributeProto, GraphBuilder};

use super::EMBEDDINGS;

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
            out[j] = (row[j] - self.mean[j]) * self.inv_std[j];
        }
    }
}

/// A network ready for inference: embeddings, then `(w [in, out], b)` layers
/// with BatchNorm folded in; ReLU after every layer but the last.
#[derive(Clone, Debug)]
pub struct FoldedNet {
    /// Learner, topic, difficulty embeddings `[vocab, dim]`; row 0 is OOV.
    pub emb: [Array2<f32>; 3],
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
    pub fn forward(&self, x: &[f32], idx: &[[u32; 3]]) -> Array2<f32> {
        let n = idx.len();
        let width = EMBEDDINGS.iter().sum::<usize>() + FEATURE_COUNT;
        let mut h = Array2::<f32>::zeros((n, width));
        for (r, (mut row, ids)) in h.axis_iter_mut(Axis(0)).zip(idx).enumerate() {
            let mut at = 0;
            for k in 0..3 {
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

    /// Emits this network into `g`, reading `features` (raw) and the three
    /// index inputs; the output Gemm for each column `c` is written to
    /// `{prefix}out{c}` as `[batch, 1]`. Weights are `[in, out]` = Gemm's `B`
    /// with `transB = 0`.
    pub fn emit(
        &self,
        g: &mut GraphBuilder,
        prefix: &str,
        features: &str,
        index_inputs: [&str; 3],
    ) {
        let p = |s: &str| format!("{prefix}{s}");
        let f = FEATURE_COUNT as i64;
        g.init_f32(&p("mean"), &[1, f], &self.standardiser.mean)
            .init_f32(&p("inv_std"), &[1, f], &self.standardiser.inv_std)
            .node("Sub", &[features, &p("mean")], &[&p("centred")], vec![])
            .node("Mul", &[&p("centred"), &p("inv_std")], &[&p("xs")], vec![]);
        let mut parts = Vec::new();
        for (k, (e, input)) in self.emb.iter().zip(index_inputs).enumerate() {
            let table = p(&format!("emb{k}"));
            let out = p(&format!("e{k}"));
            g.init_f32(
                &table,
                &[e.nrows() as i64, e.ncols() as i64],
                &flat(e.view()),
            )
            .node(
                "Gather",
                &[&table, input],
                &[&out],
                vec![AttributeProto::int("axis", 0)],
            );
            parts.push(out);
        }
        parts.push(p("xs"));
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        g.node(
            "Concat",
            &refs,
            &[&p("h0")],
            vec![AttributeProto::int("axis", 1)],
        );
        let last = self.layers.len().saturating_sub(1);
        for (i, (w, b)) in self.layers.iter().enumerate() {
            let input = p(&format!("h{i}"));
            if i < last {
                let (wn, bn, zn) = (
                    p(&format!("w{i}")),
                    p(&format!("b{i}")),
                    p(&format!("z{i}")),
                );
                g.init_f32(&wn, &[w.nrows() as i64, w.ncols() as i64], &flat(w.view()))
                    .init_f32(&bn, &[b.len() as i64], &b.to_vec())
                    .node("Gemm", &[&input, &wn, &bn], &[&zn], vec![])
                    .node("Relu", &[&zn], &[&p(&format!("h{}", i + 1))], vec![]);
            } else {
                // One Gemm per output column so each head is its own [batch, 1].
                for c in 0..w.ncols() {
                    let (wn, bn) = (p(&format!("w{i}_{c}")), p(&format!("b{i}_{c}")));
                    let col: Vec<f32> = w.column(c).to_vec();
                    g.init_f32(&wn, &[w.nrows() as i64, 1], &col)
                        .init_f32(&bn, &[1], &[b[c]])
                        .node(
                            "Gemm",
                            &[&input, &wn, &bn],
                            &[&p(&format!("out{c}"))],
                            vec![],
                        );
                }
            }
        }
    }
}

/// Row-major copy of a matrix.
fn flat(a: ArrayView2<'_, f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

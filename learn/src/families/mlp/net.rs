//! The trainable network: embeddings → three Dense layers (BatchNorm on the
//! first two) → a linear output layer, with a hand-written forward and
//! backward pass on `ndarray` and Adam.
//!
//! Weights are stored `[in, out]` so a batch is `x.dot(w)`; that is also
//! ONNX `Gemm`'s layout with `transB = 0`, so export copies them as they are.

use ndarray::{Array1, Array2, Axis, Zip};
use rand::Rng;
use rand::rngs::StdRng;

use super::forward::{FoldedNet, Standardiser};
use super::{EMBEDDINGS, HIDDEN, INDEXED};

/// BatchNorm's variance epsilon (Keras' and PyTorch's default is 1e-3 / 1e-5;
/// 1e-3 keeps the folded weights tame when a unit is nearly constant).
pub(crate) const BN_EPS: f32 = 1e-3;

/// One Dense layer, `[in, out]` weights.
#[derive(Clone, Debug)]
pub(crate) struct Dense {
    pub w: Array2<f32>,
    pub b: Array1<f32>,
}

/// BatchNorm's learned affine and running statistics.
#[derive(Clone, Debug)]
pub(crate) struct Norm {
    pub gamma: Array1<f32>,
    pub beta: Array1<f32>,
    pub mean: Array1<f32>,
    pub var: Array1<f32>,
}

/// All parameters of one network. Also used, zero-filled, for gradients and
/// Adam's moments so every tensor has a twin of the same shape.
#[derive(Clone, Debug)]
pub(crate) struct Net {
    /// Topic and difficulty embeddings `[vocab, dim]`; row 0 is OOV.
    pub emb: [Array2<f32>; INDEXED],
    /// Hidden layers 1..3 and the output layer.
    pub dense: [Dense; 4],
    /// BatchNorm after hidden layers 1 and 2.
    pub norm: [Norm; 2],
}

/// Width of the concatenated input row.
pub(crate) fn input_width(features: usize) -> usize {
    EMBEDDINGS.iter().sum::<usize>() + features
}

/// Glorot-uniform `[fan_in, fan_out]` (Keras' Dense default).
fn glorot(rng: &mut StdRng, fan_in: usize, fan_out: usize) -> Array2<f32> {
    let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
    Array2::from_shape_simple_fn((fan_in, fan_out), || rng.random_range(-limit..limit))
}

impl Net {
    /// A freshly initialised network with `outputs` output columns, whose
    /// output bias starts at `out_bias` (the targets' base values, so the
    /// first epochs learn structure instead of the intercept).
    pub fn new(
        rng: &mut StdRng,
        vocab: [usize; INDEXED],
        features: usize,
        out_bias: &[f32],
    ) -> Net {
        // Keras' Embedding default: uniform(-0.05, 0.05).
        let emb = std::array::from_fn(|k| {
            Array2::from_shape_simple_fn((vocab[k].max(1), EMBEDDINGS[k]), || {
                rng.random_range(-0.05f32..0.05)
            })
        });
        let widths = [
            input_width(features),
            HIDDEN[0],
            HIDDEN[1],
            HIDDEN[2],
            out_bias.len(),
        ];
        let dense = [0, 1, 2, 3].map(|i| Dense {
            w: glorot(rng, widths[i], widths[i + 1]),
            b: if i == 3 {
                Array1::from_vec(out_bias.to_vec())
            } else {
                Array1::zeros(widths[i + 1])
            },
        });
        let norm = [0, 1].map(|i| Norm {
            gamma: Array1::ones(HIDDEN[i]),
            beta: Array1::zeros(HIDDEN[i]),
            mean: Array1::zeros(HIDDEN[i]),
            var: Array1::ones(HIDDEN[i]),
        });
        Net { emb, dense, norm }
    }

    /// The same shapes, all zeros.
    pub fn zeros_like(&self) -> Net {
        let z2 = |a: &Array2<f32>| Array2::zeros(a.raw_dim());
        let z1 = |a: &Array1<f32>| Array1::zeros(a.raw_dim());
        Net {
            emb: std::array::from_fn(|k| z2(&self.emb[k])),
            dense: [0, 1, 2, 3].map(|i| Dense {
                w: z2(&self.dense[i].w),
                b: z1(&self.dense[i].b),
            }),
            norm: [0, 1].map(|i| Norm {
                gamma: z1(&self.norm[i].gamma),
                beta: z1(&self.norm[i].beta),
                mean: z1(&self.norm[i].mean),
                var: z1(&self.norm[i].var),
            }),
        }
    }

    /// Inference form: BatchNorm folded into the preceding Dense with the
    /// running statistics, `W' = W·γ/√(var+ε)` per output column and
    /// `b' = (b − mean)·γ/√(var+ε) + β`.
    pub fn fold(&self, standardiser: &Standardiser) -> FoldedNet {
        let mut layers = Vec::with_capacity(4);
        for (i, d) in self.dense.iter().enumerate() {
            let (mut w, mut b) = (d.w.clone(), d.b.clone());
            if let Some(n) = self.norm.get(i) {
                let g: Array1<f32> = Zip::from(&n.gamma)
                    .and(&n.var)
                    .map_collect(|g, v| g / (v + BN_EPS).sqrt());
                w *= &g;
                b = (&b - &n.mean) * &g + &n.beta;
            }
            layers.push((w, b));
        }
        FoldedNet {
            emb: self.emb.clone(),
            layers,
            standardiser: standardiser.clone(),
        }
    }
}

/// Hyper-parameters of one optimiser step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepConfig {
    pub lr: f32,
    pub dropout: [f32; 3],
    pub bn_momentum: f32,
}

/// Activations kept for the backward pass.
struct Cache {
    /// Post-BN (or pre-activation for layer 3) values, for ReLU's mask.
    y: [Array2<f32>; 3],
    /// Normalised pre-activations of the BN layers.
    xhat: [Array2<f32>; 2],
    /// `1/√(var_batch+ε)` of the BN layers.
    inv_std: [Array1<f32>; 2],
    /// Inverted-dropout multipliers (0 or `1/(1−p)`).
    mask: [Array2<f32>; 3],
    /// Layer outputs after dropout (the next layer's input).
    out: [Array2<f32>; 3],
}

/// Adam with bias correction; embeddings are updated lazily (only the rows a
/// batch touched, like TF's LazyAdam / PyTorch's SparseAdam), so a step costs
/// the same however large the vocabularies.
pub(crate) struct Adam {
    m: Net,
    v: Net,
    grad: Net,
    t: i32,
}

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const ADAM_EPS: f32 = 1e-7;

impl Adam {
    /// Zero moments for `net`.
    pub fn new(net: &Net) -> Adam {
        Adam {
            m: net.zeros_like(),
            v: net.zeros_like(),
            grad: net.zeros_like(),
            t: 0,
        }
    }
}

/// Gradient of the loss with respect to the output layer, from the outputs.
/// Returns `(dloss/dout, summed loss)`; the loss is averaged over the batch.
pub(crate) type LossFn<'a> = &'a dyn Fn(&Array2<f32>, &[usize]) -> (Array2<f32>, f64);

/// One training step on the batch rows `batch` (indices into `x0_of`'s data).
/// `fill` writes the concatenated input of the batch (embeddings with OOV
/// masking already applied) into `x0` and returns each row's embedding
/// indices. Returns the batch's summed loss.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_step(
    net: &mut Net,
    adam: &mut Adam,
    x0: &Array2<f32>,
    idx: &[[u32; INDEXED]],
    batch: &[usize],
    loss: LossFn<'_>,
    cfg: &StepConfig,
    rng: &mut StdRng,
) -> f64 {
    let b = x0.nrows();
    let bf = b as f32;
    // ---- forward ----
    let mut cache = Cache {
        y: Default::default(),
        xhat: Default::default(),
        inv_std: Default::default(),
        mask: Default::default(),
        out: Default::default(),
    };
    for i in 0..3 {
        let input = if i == 0 { x0 } else { &cache.out[i - 1] };
        let mut z = input.dot(&net.dense[i].w);
        z += &net.dense[i].b;
        if i < 2 {
            let n = &mut net.norm[i];
            let mu = z
                .mean_axis(Axis(0))
                .unwrap_or_else(|| Array1::zeros(z.ncols()));
            z -= &mu;
            let var = z.map_axis(Axis(0), |c| c.iter().map(|v| v * v).sum::<f32>() / bf);
            let inv: Array1<f32> = var.mapv(|v| 1.0 / (v + BN_EPS).sqrt());
            z *= &inv;
            let xhat = z;
            let y = &xhat * &n.gamma + &n.beta;
            // Running statistics (PyTorch convention: unbiased variance).
            let m = cfg.bn_momentum;
            let unbias = if b > 1 { bf / (bf - 1.0) } else { 1.0 };
            Zip::from(&mut n.mean)
                .and(&mu)
                .for_each(|r, v| *r = (1.0 - m) * *r + m * v);
            Zip::from(&mut n.var)
                .and(&var)
                .for_each(|r, v| *r = (1.0 - m) * *r + m * v * unbias);
            cache.xhat[i] = xhat;
            cache.inv_std[i] = inv;
            cache.y[i] = y;
        } else {
            cache.y[i] = z;
        }
        let p = cfg.dropout[i];
        let keep = 1.0 / (1.0 - p);
        let y = &cache.y[i];
        let mask = Array2::from_shape_simple_fn(y.raw_dim(), || {
            if p > 0.0 && rng.random::<f32>() < p {
                0.0
            } else {
                keep
            }
        });
        let out = Zip::from(y)
            .and(&mask)
            .map_collect(|v, m| if *v > 0.0 { v * m } else { 0.0 });
        cache.mask[i] = mask;
        cache.out[i] = out;
    }
    let mut logits = cache.out[2].dot(&net.dense[3].w);
    logits += &net.dense[3].b;
    let (gout, total) = loss(&logits, batch);

    // ---- backward ----
    let g = &mut adam.grad;
    g.dense[3].w = cache.out[2].t().dot(&gout);
    g.dense[3].b = gout.sum_axis(Axis(0));
    let mut gin = gout.dot(&net.dense[3].w.t());
    for i in (0..3).rev() {
        // Through dropout and ReLU.
        Zip::from(&mut gin)
            .and(&cache.mask[i])
            .and(&cache.y[i])
            .for_each(|gv, m, y| *gv = if *y > 0.0 { *gv * m } else { 0.0 });
        let gz = if i < 2 {
            let xhat = &cache.xhat[i];
            g.norm[i].gamma = (&gin * xhat).sum_axis(Axis(0));
            g.norm[i].beta = gin.sum_axis(Axis(0));
            let mut gxhat = gin;
            gxhat *= &net.norm[i].gamma;
            let sum_g = gxhat.sum_axis(Axis(0));
            let sum_gx = (&gxhat * xhat).sum_axis(Axis(0));
            let inv = &cache.inv_std[i];
            // dz = inv/B · (B·dx̂ − Σdx̂ − x̂·Σ(dx̂·x̂))
            Zip::from(gxhat.rows_mut())
                .and(xhat.rows())
                .for_each(|mut gr, xr| {
                    Zip::from(&mut gr)
                        .and(&xr)
                        .and(&sum_g)
                        .and(&sum_gx)
                        .and(inv)
                        .for_each(|gv, x, sg, sgx, iv| {
                            *gv = iv / bf * (bf * *gv - sg - x * sgx);
                        });
                });
            gxhat
        } else {
            gin
        };
        let input = if i == 0 { x0 } else { &cache.out[i - 1] };
        g.dense[i].w = input.t().dot(&gz);
        g.dense[i].b = gz.sum_axis(Axis(0));
        gin = gz.dot(&net.dense[i].w.t());
    }

    // ---- Adam ----
    adam.t += 1;
    let t = adam.t;
    let lr_t = cfg.lr * (1.0 - BETA2.powi(t)).sqrt() / (1.0 - BETA1.powi(t));
    let upd = |p: &mut f32, g: f32, m: &mut f32, v: &mut f32| {
        *m = BETA1 * *m + (1.0 - BETA1) * g;
        *v = BETA2 * *v + (1.0 - BETA2) * g * g;
        *p -= lr_t * *m / (v.sqrt() + ADAM_EPS);
    };
    for i in 0..4 {
        Zip::from(&mut net.dense[i].w)
            .and(&adam.grad.dense[i].w)
            .and(&mut adam.m.dense[i].w)
            .and(&mut adam.v.dense[i].w)
            .for_each(|p, g, m, v| upd(p, *g, m, v));
        Zip::from(&mut net.dense[i].b)
            .and(&adam.grad.dense[i].b)
            .and(&mut adam.m.dense[i].b)
            .and(&mut adam.v.dense[i].b)
            .for_each(|p, g, m, v| upd(p, *g, m, v));
    }
    for i in 0..2 {
        Zip::from(&mut net.norm[i].gamma)
            .and(&adam.grad.norm[i].gamma)
            .and(&mut adam.m.norm[i].gamma)
            .and(&mut adam.v.norm[i].gamma)
            .for_each(|p, g, m, v| upd(p, *g, m, v));
        Zip::from(&mut net.norm[i].beta)
            .and(&adam.grad.norm[i].beta)
            .and(&mut adam.m.norm[i].beta)
            .and(&mut adam.v.norm[i].beta)
            .for_each(|p, g, m, v| upd(p, *g, m, v));
    }
    // Embeddings: sum each touched row's gradient, then update only those rows.
    let mut start = 0;
    for k in 0..INDEXED {
        let dim = EMBEDDINGS[k];
        let mut rows: Vec<(u32, usize)> = idx.iter().enumerate().map(|(r, i)| (i[k], r)).collect();
        rows.sort_unstable();
        let mut j = 0;
        while j < rows.len() {
            let e = rows[j].0 as usize;
            let mut acc = vec![0f32; dim];
            while j < rows.len() && rows[j].0 as usize == e {
                let gr = gin.row(rows[j].1);
                for (a, gv) in acc.iter_mut().zip(gr.iter().skip(start).take(dim)) {
                    *a += gv;
                }
                j += 1;
            }
            let mut p = net.emb[k].row_mut(e);
            let mut m = adam.m.emb[k].row_mut(e);
            let mut v = adam.v.emb[k].row_mut(e);
            for d in 0..dim {
                upd(&mut p[d], acc[d], &mut m[d], &mut v[d]);
            }
        }
        start += dim;
    }
    total
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// The hand-written backward pass agrees with finite differences of the
    /// training-mode forward pass (BatchNorm on batch statistics, no dropout).
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = StdRng::seed_from_u64(1);
        let features = 24;
        let mut net = Net::new(&mut rng, [3, 3], features, &[0.1, -0.2]);
        let b = 6;
        let x0 = Array2::from_shape_simple_fn((b, input_width(features)), || {
            rng.random_range(-1.0f32..1.0)
        });
        let idx = vec![[1u32, 2]; b];
        let rows: Vec<usize> = (0..b).collect();
        let target = Array2::from_shape_simple_fn((b, 2), || rng.random_range(-1.0f32..1.0));
        // Loss Σ out·target: its gradient with respect to the output is `target`.
        let loss =
            |out: &Array2<f32>, _: &[usize]| (target.clone(), f64::from((out * &target).sum()));
        let cfg = StepConfig {
            lr: 0.0,
            dropout: [0.0; 3],
            bn_momentum: 0.0,
        };
        let mut adam = Adam::new(&net);
        let at = |net: &mut Net| {
            let mut a = Adam::new(net);
            let mut r = StdRng::seed_from_u64(0);
            train_step(net, &mut a, &x0, &idx, &rows, &loss, &cfg, &mut r)
        };
        train_step(&mut net, &mut adam, &x0, &idx, &rows, &loss, &cfg, &mut rng);
        let h = 1e-2f32;
        let mut checked = 0;
        for (layer, (i, j)) in [
            (0usize, (3usize, 5usize)),
            (1, (7, 2)),
            (2, (1, 1)),
            (3, (4, 1)),
        ] {
            let analytic = adam.grad.dense[layer].w[[i, j]];
            let mut plus = net.clone();
            plus.dense[layer].w[[i, j]] += h;
            let mut minus = net.clone();
            minus.dense[layer].w[[i, j]] -= h;
            let numeric = ((at(&mut plus) - at(&mut minus)) / (2.0 * f64::from(h))) as f32;
            assert!(
                (analytic - numeric).abs() < 2e-2 * (1.0 + numeric.abs()),
                "layer {layer} w[{i},{j}]: analytic {analytic} numeric {numeric}"
            );
            checked += 1;
        }
        for layer in 0..2 {
            let analytic = adam.grad.norm[layer].gamma[3];
            let mut plus = net.clone();
            plus.norm[layer].gamma[3] += h;
            let mut minus = net.clone();
            minus.norm[layer].gamma[3] -= h;
            let numeric = ((at(&mut plus) - at(&mut minus)) / (2.0 * f64::from(h))) as f32;
            assert!(
                (analytic - numeric).abs() < 2e-2 * (1.0 + numeric.abs()),
                "gamma{layer}: analytic {analytic} numeric {numeric}"
            );
            checked += 1;
        }
        assert_eq!(checked, 6);
    }
}

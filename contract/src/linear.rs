//! The linear model family's graph: logistic regression for correctness and a
//! linear regression on log-seconds with fixed residual quantile offsets.
//! The trainer fits it; the bootstrap model is one with pretrained weights.

use crate::artifact::{INPUT_FEATURES, OUTPUT_LOG_SECONDS, OUTPUT_P_CORRECT};
use crate::features::{FEATURE_COUNT, FeatureRow, Schema};
use crate::onnx::{Dim, GraphBuilder, ModelProto};

/// Weights on raw feature rows (any standardisation already folded in).
#[derive(Clone, Debug, PartialEq)]
pub struct LinearModel {
    /// Logit weights per feature.
    pub p_weights: [f32; FEATURE_COUNT],
    /// Logit intercept.
    pub p_bias: f32,
    /// Log-seconds weights per feature.
    pub t_weights: [f32; FEATURE_COUNT],
    /// Log-seconds intercept.
    pub t_bias: f32,
    /// Added to the log-seconds estimate for the 10th, 50th and 90th percentiles
    /// (the residual quantiles on training rows).
    pub t_quantile_offsets: [f32; 3],
}

impl LinearModel {
    /// The forward pass in plain Rust, in f32 like ONNX Runtime: `(p_correct, [q10, q50, q90])`.
    pub fn predict(&self, row: &FeatureRow) -> (f32, [f32; 3]) {
        let dot = |w: &[f32; FEATURE_COUNT], b: f32| {
            w.iter().zip(row).fold(0f32, |acc, (w, x)| acc + w * x) + b
        };
        let z = dot(&self.p_weights, self.p_bias);
        let loc = dot(&self.t_weights, self.t_bias);
        (
            1.0 / (1.0 + (-z).exp()),
            self.t_quantile_offsets.map(|o| loc + o),
        )
    }

    /// Small deterministic pseudo-random weights in `[-spread, spread)` and a
    /// time intercept near ln 20 s: distinct, valid models for tests and
    /// benches (swaps, refusals, parity) without training one.
    pub fn pseudo_random(seed: u64, spread: f32) -> LinearModel {
        // xorshift64: reproducible across platforms, no RNG dependency here.
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 * spread - spread
        };
        let mut p_weights = [0f32; FEATURE_COUNT];
        let mut t_weights = [0f32; FEATURE_COUNT];
        for (p, t) in p_weights.iter_mut().zip(t_weights.iter_mut()) {
            *p = next();
            *t = next();
        }
        LinearModel {
            p_weights,
            p_bias: next(),
            t_weights,
            t_bias: 3.0 + next(),
            t_quantile_offsets: [-0.8, 0.0, 0.9],
        }
    }

    /// The weights of a linear-graph model file ([`LinearModel::graph`]'s
    /// initializers), `None` when `bytes` is not one: `trainer-svc pretrain
    /// --onnx` writes candidate weights this way, and the learning-curve
    /// harness scores them without a rebuild.
    pub fn from_onnx(bytes: &[u8]) -> Option<LinearModel> {
        let model = ModelProto::from_bytes(bytes).ok()?;
        let graph = model.graph?;
        // A file of an older schema has fewer weights; the columns it lacks
        // get none.
        let weights = |v: Vec<f32>| -> Option<[f32; FEATURE_COUNT]> {
            if v.len() > FEATURE_COUNT {
                return None;
            }
            let mut w = [0f32; FEATURE_COUNT];
            w[..v.len()].copy_from_slice(&v);
            Some(w)
        };
        let floats = |name: &str| -> Option<Vec<f32>> {
            let t = graph.initializer.iter().find(|t| t.name == name)?;
            let v: Vec<f32> = t
                .raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Some(v)
        };
        Some(LinearModel {
            p_weights: weights(floats("p_w")?)?,
            p_bias: *floats("p_b")?.first()?,
            t_weights: weights(floats("t_w")?)?,
            t_bias: *floats("t_b")?.first()?,
            t_quantile_offsets: floats("t_q")?.try_into().ok()?,
        })
    }

    /// The ONNX graph (inputs and outputs per [`crate::artifact`]) over the
    /// current schema.
    pub fn graph(&self) -> GraphBuilder {
        self.graph_for(Schema::CURRENT)
    }

    /// The graph reading `schema`'s columns only: the weights of the columns
    /// it lacks are left out (tests and the upgrade path build models of an
    /// older schema this way).
    pub fn graph_for(&self, schema: Schema) -> GraphBuilder {
        let width = schema.width();
        let f = width as i64;
        let mut g = GraphBuilder::new("taskcast_linear");
        g.input_f32(INPUT_FEATURES, &[Dim::Batch, Dim::Fixed(f)])
            .output_f32(OUTPUT_P_CORRECT, &[Dim::Batch])
            .output_f32(OUTPUT_LOG_SECONDS, &[Dim::Batch, Dim::Fixed(3)])
            .init_f32("p_w", &[f, 1], &self.p_weights[..width])
            .init_f32("p_b", &[1], &[self.p_bias])
            .init_f32("t_w", &[f, 1], &self.t_weights[..width])
            .init_f32("t_b", &[1], &[self.t_bias])
            .init_f32("t_q", &[1, 3], &self.t_quantile_offsets)
            .init_i64("flat", &[1], &[-1])
            .node("Gemm", &[INPUT_FEATURES, "p_w", "p_b"], &["logit"], vec![])
            .node("Sigmoid", &["logit"], &["p_col"], vec![])
            .node("Reshape", &["p_col", "flat"], &[OUTPUT_P_CORRECT], vec![])
            .node("Gemm", &[INPUT_FEATURES, "t_w", "t_b"], &["loc"], vec![])
            .node("Add", &["loc", "t_q"], &[OUTPUT_LOG_SECONDS], vec![]);
        g
    }
}

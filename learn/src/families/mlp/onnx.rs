//! The ONNX graph of a fitted `mlp` model: each network emitted as
//! standardise → gather the embeddings → concat → Gemm + Relu layers, then the
//! heads, in the same order of operations as the reference forward pass in
//! [`super::forward`], so the export check compares like with like.

use ndarray::ArrayView2;
use taskcast_contract::FEATURE_COUNT;
use taskcast_contract::artifact::{INPUT_FEATURES, OUTPUT_LOG_SECONDS, OUTPUT_P_CORRECT};
use taskcast_contract::features::feature_index;
use taskcast_contract::onnx::{AttributeProto, Dim, GraphBuilder};

use super::{FoldedNet, INDEX_INPUTS, INDEXED, Mlp, SCALE_FLOOR, TimeModel, Z90};

impl Mlp {
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

impl FoldedNet {
    /// Emits this network into `g`, reading `features` (raw) and the index
    /// inputs (topic, difficulty); the output Gemm for each column `c` is
    /// written to `{prefix}out{c}` as `[batch, 1]`. Weights are `[in, out]` =
    /// Gemm's `B` with `transB = 0`.
    pub fn emit(
        &self,
        g: &mut GraphBuilder,
        prefix: &str,
        features: &str,
        index_inputs: [&str; INDEXED],
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

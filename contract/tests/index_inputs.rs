//! A model may declare any subset of index inputs, and serving looks up
//! exactly the ones it declares, each from the field its metadata names.
//! `mlp` artifacts written before the learner embedding was dropped take a
//! `learner_idx` looked up from the user id beside topic and difficulty; newer
//! ones take topic and difficulty only. Replicas must run both.

#![cfg(feature = "runtime")]

use taskcast_contract::artifact::{INPUT_FEATURES, OUTPUT_LOG_SECONDS, OUTPUT_P_CORRECT};
use taskcast_contract::bootstrap::linear_metadata;
use taskcast_contract::features::label_key;
use taskcast_contract::onnx::{AttributeProto, Dim, GraphBuilder};
use taskcast_contract::runtime::{self, OnnxModel};
use taskcast_contract::{Artifact, FEATURE_COUNT, IndexField, IndexInput, Priors, RowKeys};

/// The inputs an `mlp` artifact has ever taken, in its embedding order.
const ALL: [(&str, IndexField); 3] = [
    ("learner_idx", IndexField::User),
    ("topic_idx", IndexField::Topic),
    ("difficulty_idx", IndexField::Difficulty),
];

/// Every input's vocabulary: row 1 adds 1 to the logit, row 2 subtracts 1,
/// row 0 (out of vocabulary) adds nothing.
const VOCABULARY: [&str; 2] = ["up", "down"];

fn offset(label: &str) -> f32 {
    match label {
        "up" => 1.0,
        "down" => -1.0,
        _ => 0.0,
    }
}

/// A model whose logit is the sum of one embedding offset per input in
/// `inputs` (the features weigh nothing), as an ONNX file.
fn artifact(inputs: &[(&str, IndexField)]) -> Vec<u8> {
    let f = FEATURE_COUNT as i64;
    let mut g = GraphBuilder::new("index_inputs");
    g.input_f32(INPUT_FEATURES, &[Dim::Batch, Dim::Fixed(f)]);
    for (name, _) in inputs {
        g.input_i64(name, &[Dim::Batch]);
    }
    g.output_f32(OUTPUT_P_CORRECT, &[Dim::Batch])
        .output_f32(OUTPUT_LOG_SECONDS, &[Dim::Batch, Dim::Fixed(3)])
        .init_f32("w", &[f, 1], &[0.0; FEATURE_COUNT])
        .init_f32("b", &[1], &[0.0])
        .init_f32("offsets", &[3, 1], &[0.0, 1.0, -1.0])
        .init_f32("quantiles", &[1, 3], &[1.0, 2.0, 3.0])
        .init_i64("flat", &[1], &[-1])
        .node("Gemm", &[INPUT_FEATURES, "w", "b"], &["z0"], vec![]);
    for (k, (name, _)) in inputs.iter().enumerate() {
        let (o, z, next) = (format!("o{k}"), format!("z{k}"), format!("z{}", k + 1));
        g.node(
            "Gather",
            &["offsets", name],
            &[&o],
            vec![AttributeProto::int("axis", 0)],
        )
        .node("Add", &[&z, &o], &[&next], vec![]);
    }
    let logit = format!("z{}", inputs.len());
    g.node("Sigmoid", &[&logit], &["p"], vec![])
        .node("Reshape", &["p", "flat"], &[OUTPUT_P_CORRECT], vec![])
        .node("Add", &["z0", "quantiles"], &[OUTPUT_LOG_SECONDS], vec![]);
    let mut meta = linear_metadata("index-inputs", "test", Priors::default());
    meta.index_inputs = inputs
        .iter()
        .map(|(name, field)| IndexInput {
            name: name.to_string(),
            field: *field,
            vocabulary: VOCABULARY.iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    Artifact::write(g, &meta).expect("write")
}

#[test]
fn every_subset_of_index_inputs_loads_and_looks_up_its_own_fields() {
    runtime::init(&runtime::library_path(None)).expect("ONNX Runtime (run scripts/setup-ort.sh)");
    // (user, topic, difficulty) labels per row: each field in and out of
    // vocabulary, and the three fields pulling different ways.
    let rows = [
        ("up", "down", "up"),
        ("down", "up", "elsewhere"),
        ("stranger", "up", "up"),
        ("up", "nowhere", "down"),
    ];
    let keys: Vec<RowKeys> = rows
        .iter()
        .map(|(u, t, d)| RowKeys {
            user: label_key(u),
            topic: label_key(t),
            difficulty: label_key(d),
            item: 0,
        })
        .collect();
    let x = vec![0.5f32; rows.len() * FEATURE_COUNT];
    for mask in 0..(1 << ALL.len()) {
        let inputs: Vec<(&str, IndexField)> = (0..ALL.len())
            .filter(|k| mask & (1 << k) != 0)
            .map(|k| ALL[k])
            .collect();
        let names: Vec<&str> = inputs.iter().map(|(n, _)| *n).collect();
        let model = OnnxModel::load(&artifact(&inputs), 1)
            .unwrap_or_else(|e| panic!("{names:?}: does not load: {e}"));
        let out = model
            .run(&x, &keys)
            .unwrap_or_else(|e| panic!("{names:?}: does not run: {e}"));
        for ((u, t, d), o) in rows.iter().zip(&out) {
            let logit: f32 = inputs
                .iter()
                .map(|(_, field)| match field {
                    IndexField::User => offset(u),
                    IndexField::Topic => offset(t),
                    IndexField::Difficulty => offset(d),
                    IndexField::Item => 0.0,
                })
                .sum();
            let want = 1.0 / (1.0 + (-logit).exp());
            assert!(
                (o.p_correct - want).abs() < 1e-6,
                "{names:?}, row {u}/{t}/{d}: p {} want {want}",
                o.p_correct
            );
            assert_eq!(o.log_seconds, [1.0, 2.0, 3.0]);
        }
    }
}

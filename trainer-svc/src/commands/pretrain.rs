//! `trainer-svc pretrain`: the pretrained model fitted across public CSV
//! files (`taskcast_learn::pretrain`), checked, and written as the Rust
//! source of `taskcast_contract::bootstrap_weights`.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, ValueEnum};
use taskcast_contract::FEATURE_NAMES;
use taskcast_contract::linear::LinearModel;
use taskcast_learn::pretrain::{self, PriorChoice};
use trainer_svc::data::csv::TsUnit;

use crate::commands::input::{file_name, read_csv};
use crate::commands::output::{Progress, write_file};

/// The priors `pretrain` featurises each file's rows with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PretrainPriors {
    /// The file's own (out-of-fold) priors, as the trainer featurises an app's rows.
    Own,
    /// Empty priors, as a new deployment serves the bootstrap: the weights
    /// learn from the learner's history alone.
    Empty,
    /// Every row twice, once each way: weights that hold up in both conditions.
    Both,
}

impl From<PretrainPriors> for PriorChoice {
    fn from(p: PretrainPriors) -> Self {
        match p {
            PretrainPriors::Own => PriorChoice::Own,
            PretrainPriors::Empty => PriorChoice::Empty,
            PretrainPriors::Both => PriorChoice::Both,
        }
    }
}

/// `pretrain`'s arguments.
#[derive(Args)]
pub struct PretrainArgs {
    /// The CSV files, plain or gzip (repeatable; their training rows are
    /// pooled, each featurised with its own priors).
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Where to write the weights' Rust source.
    #[arg(long, default_value = "contract/src/bootstrap_weights.rs")]
    out: PathBuf,
    /// Also write the model as an artifact over empty priors (as a fresh
    /// deployment would serve it), e.g. for `eval --model`.
    #[arg(long, value_name = "FILE")]
    onnx: Option<PathBuf>,
    /// The priors each file's rows are featurised with: own (the file's,
    /// as an app's trainer does), empty (as a new deployment serves) or
    /// both (every row twice).
    #[arg(long, value_enum, default_value_t = PretrainPriors::Both)]
    priors: PretrainPriors,
    /// Attempts of history the features look back over.
    #[arg(long, default_value_t = taskcast_contract::features::DEFAULT_HISTORY_WINDOW)]
    history_window: u32,
    /// Training budget per file (as for train); 0 uses every row.
    #[arg(long, default_value_t = taskcast_learn::budget::DEFAULT_MAX_TRAINING_ROWS)]
    max_training_rows: u64,
    /// What a number in the ts column counts (s or ms).
    #[arg(long, value_enum, default_value_t = TsUnit::S)]
    ts_unit: TsUnit,
}

/// Fits across the files, writes the artifact when asked (even when the
/// checks fail, so the failure can be looked at), then the weights' source
/// only when they pass the first-contact checks.
pub async fn run(args: PretrainArgs) -> anyhow::Result<()> {
    let progress = Progress::start();
    let mut sets = Vec::with_capacity(args.data.len() * 2);
    for path in &args.data {
        let (_, mut source) =
            read_csv(path, args.ts_unit, args.max_training_rows, &progress, false)?;
        sets.extend(
            pretrain::datasets(
                &mut source,
                args.priors.into(),
                args.history_window,
                &mut progress.on_phase(),
            )
            .await?,
        );
    }
    progress.message("fitting");
    let fitted = pretrain::fit(&sets, &Default::default())?;
    progress.finish();
    if let Some(file) = &args.onnx {
        write_file(file, &pretrain::artifact(&fitted.model)?)?;
        println!("wrote {}", file.display());
    }
    if !fitted.failures.is_empty() {
        bail!(
            "the pretrained weights fail the first-contact checks (weights not written):\n  {}",
            fitted.failures.join("\n  ")
        );
    }
    let names: Vec<String> = args.data.iter().map(|p| file_name(p)).collect();
    let provenance = format!(
        "trainer-svc pretrain --priors {} on {} ({} training rows, L2 per row {:e}, history window {})",
        args.priors
            .to_possible_value()
            .map_or("?".into(), |v| v.get_name().to_string()),
        names.join(", "),
        fitted.rows,
        fitted.l2_per_row,
        args.history_window
    );
    write_file(
        &args.out,
        weights_source(&fitted.model, &provenance).as_bytes(),
    )?;
    println!("wrote {} ({provenance})", args.out.display());
    Ok(())
}

/// `taskcast_contract::bootstrap_weights`' source for `model`: weights by
/// feature name (zeros left out), printed so they read back bit for bit.
fn weights_source(model: &LinearModel, provenance: &str) -> String {
    let pairs = |w: &[f32]| -> String {
        FEATURE_NAMES
            .iter()
            .zip(w)
            .filter(|(_, w)| **w != 0.0)
            .map(|(n, w)| format!("    (\"{n}\", {w:?}),\n"))
            .collect()
    };
    format!(
        "//! Weights of the pretrained model (the bootstrap, and where the trainer's\n\
         //! `pretrained` family starts), by feature name. Generated by `trainer-svc\n\
         //! pretrain` (README, \"Pretrained starting model\"); regenerate them with\n\
         //! that command, then `models/bootstrap.onnx` with\n\
         //! `cargo run -p taskcast-contract --example write_bootstrap`; do not edit them.\n\n\
         /// Where the weights came from.\n\
         pub const PROVENANCE: &str = {provenance:?};\n\n\
         /// Logit weights on raw features (calibration folded in).\n\
         pub const P_WEIGHTS: &[(&str, f32)] = &[\n{}];\n\n\
         /// Logit intercept.\n\
         pub const P_BIAS: f32 = {:?};\n\n\
         /// Median log-seconds weights on raw features.\n\
         pub const T_WEIGHTS: &[(&str, f32)] = &[\n{}];\n\n\
         /// Median log-seconds intercept.\n\
         pub const T_BIAS: f32 = {:?};\n\n\
         /// The 10th, 50th and 90th percentile offsets in log-seconds.\n\
         pub const T_QUANTILE_OFFSETS: [f32; 3] = {:?};\n",
        pairs(&model.p_weights),
        model.p_bias,
        pairs(&model.t_weights),
        model.t_bias,
        model.t_quantile_offsets,
    )
}

//! `trainer-svc train`: one family fitted on a CSV file, judged on its
//! hold-out and written as the ONNX file `inference-svc --model` serves.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use taskcast_learn::families::Family;
use taskcast_learn::pipeline;

use crate::commands::input::{Offline, read_csv};
use crate::commands::output::{Progress, print_table, write_file};

/// `train`'s arguments.
#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    common: Offline,
    /// Model family: auto (fit pretrained, linear and mlp, keep the first
    /// no later one clearly beats on the inner validation slice), linear,
    /// mlp or pretrained.
    #[arg(long, default_value = "auto")]
    family: Family,
    /// Where to write the model.
    #[arg(long)]
    out: PathBuf,
}

/// Trains, writes the file, prints the metrics table and the gate's word.
pub async fn run(args: TrainArgs) -> anyhow::Result<()> {
    let spec = args.common.spec(args.family)?;
    let started = Instant::now();
    let progress = Progress::start();
    let (_, mut source) = read_csv(
        &args.common.data,
        args.common.ts_unit,
        spec.max_training_rows,
        &progress,
        false,
    )?;
    let ds = pipeline::prepare(
        &mut source,
        spec.history_window,
        None,
        &mut progress.on_phase(),
    )
    .await?;
    // The file's rows are all in `ds` now, as features: freed before the
    // fit, whose design matrix is the run's peak.
    drop(source);
    let trained = pipeline::fit_and_judge(&ds, &spec, None, &mut progress.on_phase())?;
    write_file(&args.out, &trained.onnx)?;
    progress.finish();
    let mut models = trained.baselines.clone();
    models.insert(
        spec.family.name().to_string(),
        trained.candidate.metrics.clone(),
    );
    print_table(trained.rows, trained.holdout_rows, &models);
    println!(
        "\nwrote {} ({} bytes, sha256 {}) in {:.1}s\nversion {}  {}\ngate: {}",
        args.out.display(),
        trained.onnx.len(),
        trained.sha256,
        started.elapsed().as_secs_f64(),
        trained.metadata.version,
        trained.time,
        trained.verdict.reason()
    );
    Ok(())
}

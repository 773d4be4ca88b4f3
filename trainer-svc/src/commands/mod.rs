//! The command line, one module per command. Each parses its own arguments
//! and calls the library; `main.rs` only dispatches. What a command prints
//! (tables, JSON, progress) is in [`output`], what it reads from a CSV file
//! in [`input`], apart from what it computes.

pub mod backup;
pub mod eval;
pub mod import;
pub mod input;
pub mod output;
pub mod pretrain;
pub mod prune;
pub mod report;
pub mod serve;
pub mod simulate;
pub mod train;

use clap::Subcommand;

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the trainer service (gRPC Trainer API, automatic retraining,
    /// model registry, WatchModels for inference replicas).
    // Boxed: the serve flags outweigh every other command's many times over.
    Serve(Box<trainer_svc::serve::config::ServeConfig>),
    /// Import a CSV file (user_id,item_id,topic,correct,seconds,ts[,difficulty][,task_id][,started_at])
    /// into completed_tasks in one transaction. A row whose task_id is
    /// already stored is ignored (counted as a duplicate); a file imported
    /// before (same sha256) is refused unless --allow-reimport. A bad row (unparsable value,
    /// empty user_id, topic or ts, negative seconds, wrong column count)
    /// refuses the whole file, naming its line, column and value, unless
    /// --skip-bad-rows is given. Prints rows read, imported and rejected.
    #[command(after_help = input::TS_HELP)]
    Import(import::ImportArgs),
    /// Train one model family on a CSV file and write an ONNX file that
    /// `inference-svc --model` serves. Bad rows are skipped and reported
    /// (rows read, used, rejected by reason with the first line numbers).
    #[command(after_help = input::TS_HELP)]
    Train(train::TrainArgs),
    /// Fit the pretrained model (the bootstrap every new deployment serves,
    /// and what the `pretrained` family recalibrates to an app's data)
    /// across CSV files, check it over empty priors (right answers raise p,
    /// a mastered topic ranks above a new one, slow answers raise the time)
    /// and write its weights as contract/src/bootstrap_weights.rs; then
    /// `cargo run -p taskcast-contract --example write_bootstrap` rewrites
    /// models/bootstrap.onnx from them.
    #[command(after_help = input::TS_HELP)]
    Pretrain(pretrain::PretrainArgs),
    /// Evaluate model families and baselines on the chronological hold-out of
    /// a CSV file (the last 20% of each learner's attempts). Bad rows are
    /// skipped and reported as for train.
    #[command(after_help = input::TS_HELP)]
    Eval(eval::EvalArgs),
    /// Report how each served model version does on real outcomes: the
    /// predictions the backend stored on completed_tasks, scored against what
    /// happened, beside the hold-out figures the version was promoted on.
    Report(report::ReportArgs),
    /// Write simulated learners' completed tasks as CSV (demo and test data).
    Simulate(simulate::SimulateArgs),
    /// Apply the registry's retention policy: old rejected versions keep
    /// their metadata and lose their ONNX bytes (every version ever active,
    /// candidates not rejected and the newest --keep-candidates keep
    /// theirs). --dry-run lists what would go.
    Prune(prune::PruneArgs),
    /// Copy a SQLite database to a file while the trainer runs (VACUUM
    /// INTO); PostgreSQL is backed up with pg_dump.
    Backup(backup::BackupArgs),
}

/// Runs `command`. Every command logs through the same setup: `serve` as
/// a service (stdout, its `--log-format`), the others as tools (stderr, so
/// their tables and JSON stay clean; warnings and errors unless
/// `TASKCAST_LOG` asks for more).
pub async fn run(command: Command) -> anyhow::Result<()> {
    if !matches!(command, Command::Serve(_)) {
        taskcast_serving::logging::init_command_tracing("warn");
    }
    match command {
        Command::Serve(config) => serve::run(*config).await,
        Command::Import(args) => import::run(args).await,
        Command::Train(args) => train::run(args).await,
        Command::Pretrain(args) => pretrain::run(args).await,
        Command::Eval(args) => eval::run(args).await,
        Command::Report(args) => report::run(args).await,
        Command::Simulate(args) => simulate::run(args),
        Command::Prune(args) => prune::run(args).await,
        Command::Backup(args) => backup::run(args).await,
    }
}

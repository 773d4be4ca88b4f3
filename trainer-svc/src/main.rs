//! `trainer-svc`: the command line. `serve` runs the service; `import`,
//! `train`, `eval`, `pretrain`, `report` and `simulate` are offline tools on
//! the same code. Each command is a module of [`commands`]; this file only
//! parses and dispatches.

mod commands;

use std::process::ExitCode;

use clap::Parser;

/// Retrains Taskcast models from completed tasks, evaluates them on a
/// chronological hold-out, keeps a registry and notifies inference replicas.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(cli.command));
    // A model fit runs on a blocking thread that cannot be interrupted. On
    // SIGTERM the run was already abandoned (recorded FAILED, nothing
    // published), so exit within the grace period instead of letting the
    // runtime wait for the fit to finish.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

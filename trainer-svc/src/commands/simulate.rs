//! `trainer-svc simulate`: simulated learners' completed tasks as CSV, for
//! demos and tests.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use taskcast_sim::{SimConfig, Simulator, write_csv};

/// `simulate`'s arguments.
#[derive(Args)]
pub struct SimulateArgs {
    /// Output CSV file ("-" for stdout).
    #[arg(long, default_value = "-")]
    out: PathBuf,
    /// Learners to simulate.
    #[arg(long, default_value_t = 200)]
    learners: usize,
    /// Mean attempts per learner.
    #[arg(long, default_value_t = 60)]
    attempts: usize,
    /// Random seed (same seed, same data).
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Generates the rows and writes them.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let config = SimConfig {
        seed: args.seed,
        learners: args.learners,
        attempts_per_learner: args.attempts,
        ..Default::default()
    };
    let rows = Simulator::new(config)?.generate();
    if args.out.as_os_str() == "-" {
        write_csv(&rows, std::io::stdout().lock())?;
    } else {
        let file = std::fs::File::create(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        write_csv(&rows, std::io::BufWriter::new(file))?;
        eprintln!("wrote {} rows to {}", rows.len(), args.out.display());
    }
    Ok(())
}

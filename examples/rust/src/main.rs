//! An example Taskcast client in Rust, the way a backend or an operator
//! would call it: every RPC of taskcast.v1, each trainer call with its role's
//! bearer token, TLS, and a deadline on everything.
//!
//! ```text
//! taskcast-client wait --trained --wait-timeout 600
//! taskcast-client predict --user learner-0001 --candidate t1:fractions:easy
//! taskcast-client --admin-token-file .run/admin-token train --wait
//! taskcast-client --reader-token-file reader-token models
//! taskcast-client --trainer https://trainer.example:50052 --ca-file ca.pem models
//! taskcast-client --inference dns:///inference.taskcast.svc.cluster.local:50051 predict ...
//! ```
//!
//! Tokens: admin (`--admin-token-file`) goes on Train, Promote and Rollback;
//! reader (`--reader-token-file`) on ListModels, GetTrainingRun,
//! WatchTrainingRun and ModelReport; replica (`--replica-token-file`) on
//! WatchModels. A read or replica call falls back to the admin token when
//! its own was not given (admin may call everything). Inference and health
//! calls never carry a token. See [`tokens`].
//!
//! Addresses: `https://` is TLS against the system roots or `--ca-file`
//! (`--cert-file`/`--key-file` for mutual TLS); `http://` and `HOST:PORT`
//! are plaintext; `dns:///HOST:PORT` balances calls over every address HOST
//! resolves to: in Kubernetes the headless `inference` Service gives one per
//! ready replica, so each call can go to another replica (an `http://` URL
//! keeps one HTTP/2 connection to one replica). See [`transport`].
//!
//! Deadlines: each unary call, connecting included, has `--timeout` (10 s);
//! `wait`, `train --wait` and `run --wait` give up after `--wait-timeout`
//! (600 s), `watch-models` after `--first-timeout` (60 s). The trainer's
//! messages may be up to `--max-receive-mib` (256 MiB): a model artifact
//! grows with the data.

mod client;
mod output;
mod retry;
mod rpcs;
mod tokens;
mod transport;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use client::{Server, Settings, Taskcast, WatchEnd};
use taskcast_proto::{Attempt, Candidate, ModelReportRequest, PredictRequest, RecommendRequest};
use tokens::{Role, RoleFlags, Tokens};
use transport::{Address, TlsOptions};

/// Default of `--wait-timeout`, seconds.
const DEFAULT_WAIT_TIMEOUT: &str = "600";

#[derive(Parser)]
#[command(
    name = "taskcast-client",
    about = "Example Taskcast client: every RPC of taskcast.v1, per-role tokens, TLS, deadlines",
    after_help = "Addresses: https://HOST:PORT is TLS (system roots or --ca-file); http://HOST:PORT and \
HOST:PORT are plaintext (--tls makes HOST:PORT and dns:/// TLS); dns:///HOST:PORT balances over every \
address HOST resolves to. Tokens go only on their role's calls, never to inference."
)]
struct Cli {
    /// inference-svc address.
    #[arg(
        long,
        help_heading = "Servers",
        env = "TASKCAST_INFERENCE_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    inference: String,
    /// trainer-svc address.
    #[arg(
        long,
        help_heading = "Servers",
        env = "TASKCAST_TRAINER_URL",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    trainer: String,
    #[command(flatten, next_help_heading = "Tokens (trainer roles)")]
    tokens: TokenArgs,
    #[command(flatten, next_help_heading = "TLS")]
    tls: TlsArgs,
    /// Deadline of each unary call in seconds, connecting included.
    #[arg(long, global = true, help_heading = "Limits", default_value = "10", value_parser = parse_seconds, value_name = "SECONDS")]
    timeout: Duration,
    /// Largest message accepted from the trainer, MiB (gRPC's default is 4;
    /// model artifacts grow with the number of learners).
    #[arg(long, global = true, help_heading = "Limits", default_value_t = 256, value_name = "MIB",
          value_parser = clap::value_parser!(u32).range(1..=4095))]
    max_receive_mib: u32,
    #[command(subcommand)]
    command: Command,
}

/// One pair of flags per trainer role. The values of the environment
/// variables are never shown (`--help` included): they are secrets.
#[derive(Args)]
struct TokenArgs {
    /// File with the admin token: Train, Promote, Rollback (and reads when no
    /// reader token is given).
    // `--token-file`, the old name, still works but is no longer shown: one
    // name for the flag in both clients, the scripts and the docs.
    #[arg(
        long,
        env = "TASKCAST_ADMIN_TOKEN_FILE",
        alias = "token-file",
        global = true,
        value_name = "FILE"
    )]
    admin_token_file: Option<PathBuf>,
    /// The admin token itself (prefer the file: a command-line value is
    /// visible to other local users).
    #[arg(
        long,
        env = "TASKCAST_ADMIN_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    admin_token: Option<String>,
    /// File with the reader token: ListModels, GetTrainingRun,
    /// WatchTrainingRun, ModelReport.
    #[arg(
        long,
        env = "TASKCAST_READER_TOKEN_FILE",
        global = true,
        value_name = "FILE"
    )]
    reader_token_file: Option<PathBuf>,
    /// The reader token itself (prefer the file).
    #[arg(
        long,
        env = "TASKCAST_READER_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    reader_token: Option<String>,
    /// File with the replica token: WatchModels.
    #[arg(
        long,
        env = "TASKCAST_REPLICA_TOKEN_FILE",
        global = true,
        value_name = "FILE"
    )]
    replica_token_file: Option<PathBuf>,
    /// The replica token itself (prefer the file).
    #[arg(
        long,
        env = "TASKCAST_REPLICA_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    replica_token: Option<String>,
}

/// TLS material, for `https://` addresses (or any, with --tls).
#[derive(Args)]
struct TlsArgs {
    /// TLS for HOST:PORT and dns:/// addresses too (https:// always is).
    #[arg(long, global = true)]
    tls: bool,
    /// PEM CA certificate(s) to verify the servers with, instead of the system roots.
    #[arg(long, global = true, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that ask for one (mutual TLS; with --key-file).
    #[arg(long, global = true, value_name = "FILE", requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// PEM private key of --cert-file.
    #[arg(long, global = true, value_name = "FILE", requires = "cert_file")]
    key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Wait until inference reports SERVING (and, with --trained, serves a trained model).
    Wait {
        /// Also wait until the model is not the bootstrap one.
        #[arg(long)]
        trained: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value = DEFAULT_WAIT_TIMEOUT, value_parser = parse_seconds, value_name = "SECONDS")]
        wait_timeout: Duration,
    },
    /// Predict candidates (TASK:TOPIC[:DIFFICULTY[:ITEM]]) for a learner with an example history.
    Predict {
        /// The learner.
        #[arg(long, default_value = "learner-0001")]
        user: String,
        /// TASK:TOPIC[:DIFFICULTY[:ITEM]], repeatable.
        #[arg(long = "candidate", required = true, value_parser = parse_candidate)]
        candidates: Vec<Candidate>,
        /// Example history: N correct 20-second attempts in the first candidate's topic.
        #[arg(long, default_value_t = 3)]
        history: usize,
        /// Ask for reasons.
        #[arg(long)]
        explain: bool,
    },
    /// Rank candidates by closeness to a target probability within a time budget.
    Recommend {
        /// The learner.
        #[arg(long, default_value = "learner-0001")]
        user: String,
        /// TASK:TOPIC[:DIFFICULTY[:ITEM]], repeatable.
        #[arg(long = "candidate", required = true, value_parser = parse_candidate)]
        candidates: Vec<Candidate>,
        /// Target probability of a right answer.
        #[arg(long, default_value_t = 0.7)]
        target: f64,
        /// Time budget in seconds (0: none).
        #[arg(long, default_value_t = 0.0)]
        budget_seconds: f64,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Ask for reasons.
        #[arg(long)]
        explain: bool,
    },
    /// Show the model inference is serving (GetModel).
    Model,
    /// grpc.health.v1 status of a server (no token).
    Health {
        /// Which server.
        #[arg(value_enum)]
        which: Server,
        /// Service name ("" for the whole server).
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Start a training run (admin token); --wait follows it to its end (reader token).
    Train {
        /// Model family ("linear", "mlp"; empty: the trainer's default).
        #[arg(long, default_value = "")]
        family: String,
        /// Promote even when the gate would reject.
        #[arg(long)]
        force: bool,
        /// Follow the run until it ends, one JSON line per state.
        #[arg(long)]
        wait: bool,
        /// Stop following after this many seconds (the run goes on).
        #[arg(long, default_value = DEFAULT_WAIT_TIMEOUT, value_parser = parse_seconds, value_name = "SECONDS")]
        wait_timeout: Duration,
    },
    /// One training run (GetTrainingRun; reader token); --wait follows it.
    Run {
        /// Run id.
        id: String,
        /// Follow the run until it ends (WatchTrainingRun).
        #[arg(long)]
        wait: bool,
        /// Stop following after this many seconds.
        #[arg(long, default_value = DEFAULT_WAIT_TIMEOUT, value_parser = parse_seconds, value_name = "SECONDS")]
        wait_timeout: Duration,
    },
    /// The model registry, newest first (ListModels; reader token).
    Models {
        /// At most this many (0: the trainer's default page).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Live figures per served version (ModelReport; reader token).
    Report {
        /// One version (default: all with predictions in the window).
        #[arg(long, default_value = "")]
        version: String,
        /// Only tasks completed in the last N days (0: no limit).
        #[arg(long, default_value_t = 0)]
        last_days: u32,
        /// Only the newest N tasks with a prediction (0: no limit).
        #[arg(long, default_value_t = 0)]
        last_rows: u32,
        /// Predictions per learner that make a stuck learner (0: the trainer's default).
        #[arg(long, default_value_t = 0)]
        stuck_window: u32,
    },
    /// Make a stored version active (Promote; admin token).
    Promote {
        /// The version.
        version: String,
    },
    /// Make the previously active version active again (Rollback; admin token).
    Rollback,
    /// The active model as replicas receive it, without the ONNX bytes (WatchModels; replica token).
    WatchModels {
        /// Subscriber name in the trainer's logs and metrics.
        #[arg(long, default_value = "rust-cli")]
        subscriber: String,
        /// Give up when the first message has not arrived after this many seconds.
        #[arg(long, default_value = "60", value_parser = parse_seconds, value_name = "SECONDS")]
        first_timeout: Duration,
    },
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if value.is_nan() || value <= 0.0 {
        return Err(format!("a positive number of seconds, not {text}"));
    }
    Duration::try_from_secs_f64(value).map_err(|e| format!("{text} seconds: {e}"))
}

fn parse_candidate(spec: &str) -> Result<Candidate, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    if !(2..=4).contains(&parts.len()) || parts[..2].iter().any(|p| p.is_empty()) {
        return Err(format!("`{spec}`: expected TASK:TOPIC[:DIFFICULTY[:ITEM]]"));
    }
    Ok(Candidate {
        task_id: parts[0].into(),
        topic: parts[1].into(),
        difficulty: parts.get(2).copied().unwrap_or_default().into(),
        item_id: parts.get(3).copied().unwrap_or_default().into(),
    })
}

/// An example history: `n` correct 20-second attempts in `topic`, a minute
/// apart, oldest first as the API requires.
fn history(topic: &str, n: usize) -> Vec<Attempt> {
    (0..n)
        .map(|i| Attempt {
            topic: topic.into(),
            difficulty: "medium".into(),
            correct: true,
            seconds: 20.0,
            completed_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000 + 60 * i as i64,
                nanos: 0,
            }),
            item_id: String::new(),
        })
        .collect()
}

/// The first candidate's topic, for the example history.
fn first_topic(candidates: &[Candidate]) -> anyhow::Result<String> {
    candidates
        .first()
        .map(|c| c.topic.clone())
        .context("give at least one --candidate")
}

/// What went wrong, and so the exit status.
enum Failure {
    /// Flags, files: nothing was called (exit 2, as for a usage error).
    Setup(anyhow::Error),
    /// A call failed or gave up (exit 1).
    Call(anyhow::Error),
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let failure = match settings(&cli, &matches).and_then(Taskcast::new) {
        Err(e) => Failure::Setup(e),
        Ok(client) => match run(&client, cli.command).await {
            Ok(()) => return ExitCode::SUCCESS,
            Err(e) => Failure::Call(e),
        },
    };
    let (e, code) = match failure {
        Failure::Setup(e) => (e, 2),
        Failure::Call(e) => (e, 1),
    };
    eprintln!("error: {e:#}");
    ExitCode::from(code)
}

/// Addresses, TLS files and tokens, all read before the first call.
fn settings(cli: &Cli, matches: &clap::ArgMatches) -> anyhow::Result<Settings> {
    let t = &cli.tokens;
    let tokens = Tokens::from_flags(
        [
            RoleFlags {
                role: Role::Admin,
                file: t.admin_token_file.as_deref(),
                value: t.admin_token.as_deref(),
            },
            RoleFlags {
                role: Role::Reader,
                file: t.reader_token_file.as_deref(),
                value: t.reader_token.as_deref(),
            },
            RoleFlags {
                role: Role::Replica,
                file: t.replica_token_file.as_deref(),
                value: t.replica_token.as_deref(),
            },
        ],
        matches,
    )?;
    Ok(Settings {
        inference: Address::parse(&cli.inference, cli.tls.tls).context("--inference")?,
        trainer: Address::parse(&cli.trainer, cli.tls.tls).context("--trainer")?,
        tls: TlsOptions::load(
            cli.tls.ca_file.as_deref(),
            cli.tls.cert_file.as_deref(),
            cli.tls.key_file.as_deref(),
        )?,
        tokens,
        timeout: cli.timeout,
        max_receive_bytes: cli.max_receive_mib as usize * 1024 * 1024,
    })
}

/// Follows run `id`, one JSON line per state; fails when `limit` passes first.
async fn follow_run(client: &Taskcast, id: &str, limit: Duration) -> anyhow::Result<()> {
    let each = |run: &taskcast_proto::TrainingRun| println!("{}", output::training_run(run));
    match client.watch_training_run(id, limit, each).await? {
        WatchEnd::Ended => Ok(()),
        WatchEnd::TimedOut(last) => {
            let state = last.map_or_else(|| "no state yet".into(), |s| format!("last state {s}"));
            bail!(
                "training run {id} did not end within --wait-timeout {} s ({state}); it goes on in the trainer: `taskcast-client run {id} --wait` follows it",
                transport::seconds(limit)
            )
        }
    }
}

async fn run(client: &Taskcast, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Wait {
            trained,
            wait_timeout,
        } => {
            let model = client.wait_ready(trained, wait_timeout).await?;
            println!("ready: serving {} ({})", model.version, model.family);
        }
        Command::Predict {
            user,
            candidates,
            history: n,
            explain,
        } => {
            let topic = first_topic(&candidates)?;
            let resp = client
                .predict(PredictRequest {
                    user_id: user,
                    history: history(&topic, n),
                    candidates,
                    explain,
                    as_of: None,
                })
                .await?;
            output::predictions(&resp);
        }
        Command::Recommend {
            user,
            candidates,
            target,
            budget_seconds,
            limit,
            explain,
        } => {
            let topic = first_topic(&candidates)?;
            let resp = client
                .recommend(RecommendRequest {
                    user_id: user,
                    history: history(&topic, 3),
                    candidates,
                    explain,
                    target_p_correct: target,
                    time_budget_seconds: budget_seconds,
                    limit,
                    as_of: None,
                })
                .await?;
            output::recommendations(&resp);
        }
        Command::Model => println!("{}", output::model_info(&client.get_model().await?)),
        Command::Health { which, service } => {
            println!("{}", client.health(which, &service).await?.as_str_name());
        }
        Command::Train {
            family,
            force,
            wait,
            wait_timeout,
        } => {
            let run = client.train(&family, force).await?;
            println!("{}", output::training_run(&run));
            if wait {
                follow_run(client, &run.id, wait_timeout).await?;
            }
        }
        Command::Run {
            id,
            wait,
            wait_timeout,
        } => {
            if wait {
                follow_run(client, &id, wait_timeout).await?;
            } else {
                println!(
                    "{}",
                    output::training_run(&client.get_training_run(&id).await?)
                );
            }
        }
        Command::Models { limit } => {
            for v in client.list_models(limit).await?.models {
                println!("{}", output::model_version(&v));
            }
        }
        Command::Report {
            version,
            last_days,
            last_rows,
            stuck_window,
        } => {
            let report = client
                .model_report(ModelReportRequest {
                    version,
                    last_days,
                    last_rows,
                    stuck_window,
                })
                .await?;
            println!("{}", output::model_report(&report));
        }
        Command::Promote { version } => {
            println!(
                "{}",
                output::model_version(&client.promote(&version).await?)
            );
        }
        Command::Rollback => println!("{}", output::model_version(&client.rollback().await?)),
        Command::WatchModels {
            subscriber,
            first_timeout,
        } => {
            let artifact = client
                .watch_models_first(&subscriber, first_timeout)
                .await?;
            println!("{}", output::artifact(&artifact));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds_and_candidates_are_checked() {
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "NaN", "x", "inf"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        let c = parse_candidate("t1:fractions:easy").expect("valid");
        assert_eq!((c.task_id.as_str(), c.difficulty.as_str()), ("t1", "easy"));
        for bad in ["t1", ":fractions", "a:b:c:d:e"] {
            assert!(parse_candidate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_old_token_file_flag_still_works_after_the_subcommand() {
        let m = Cli::command()
            .try_get_matches_from(["taskcast-client", "train", "--token-file", "/t"])
            .expect("parses");
        let cli = Cli::from_arg_matches(&m).expect("cli");
        assert_eq!(cli.tokens.admin_token_file, Some(PathBuf::from("/t")));
    }
}

//! An example Taskcast client in Rust, the way a backend would call it:
//! wait until the services are ready, ask for predictions for candidate
//! tasks given a learner's history, rank candidates, and trigger training.
//!
//! ```text
//! taskcast-client wait --inference http://127.0.0.1:50051 --trained
//! taskcast-client predict --user learner-0001 --candidate t1:fractions:easy
//! taskcast-client train --trainer http://127.0.0.1:50052 --token-file .run/admin-token
//! taskcast-client --inference dns:///inference.taskcast.svc.cluster.local:50051 predict ...
//! ```
//!
//! `--inference dns:///HOST:PORT` balances requests over every address HOST
//! resolves to: in Kubernetes the headless `inference` Service gives one per
//! ready replica, so each request can go to another replica (a plain
//! `http://` URL keeps one HTTP/2 connection to one replica).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use taskcast_proto::inference_client::InferenceClient;
use taskcast_proto::trainer_client::TrainerClient;
use taskcast_proto::{
    Attempt, Candidate, GetModelRequest, PredictRequest, RecommendRequest, TrainRequest,
};
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[derive(Parser)]
#[command(about = "Example Taskcast client")]
struct Cli {
    /// inference-svc address.
    #[arg(
        long,
        env = "TASKCAST_INFERENCE_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    inference: String,
    /// trainer-svc address.
    #[arg(
        long,
        env = "TASKCAST_TRAINER_URL",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    trainer: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Wait until inference reports SERVING (and, with --trained, serves a trained model).
    Wait {
        /// Also wait until the model is not the bootstrap one.
        #[arg(long)]
        trained: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Predict candidates (TASK:TOPIC[:DIFFICULTY[:ITEM]]) for a learner with an example history.
    Predict {
        #[arg(long, default_value = "learner-0001")]
        user: String,
        #[arg(long = "candidate", required = true)]
        candidates: Vec<String>,
        /// Append N correct 20-second attempts in the first candidate's topic.
        #[arg(long, default_value_t = 3)]
        history: usize,
        /// Ask for reasons.
        #[arg(long)]
        explain: bool,
    },
    /// Rank candidates by closeness to a target probability within a time budget.
    Recommend {
        #[arg(long, default_value = "learner-0001")]
        user: String,
        #[arg(long = "candidate", required = true)]
        candidates: Vec<String>,
        #[arg(long, default_value_t = 0.7)]
        target: f64,
        #[arg(long, default_value_t = 0.0)]
        budget_seconds: f64,
    },
    /// Show the model inference is serving.
    Model,
    /// Start a training run (admin: needs the token).
    Train {
        #[arg(long, env = "TASKCAST_ADMIN_TOKEN_FILE")]
        token_file: Option<std::path::PathBuf>,
        #[arg(long, default_value = "")]
        family: String,
    },
}

fn candidate(spec: &str) -> anyhow::Result<Candidate> {
    let parts: Vec<&str> = spec.split(':').collect();
    if parts.len() < 2 {
        bail!("candidate `{spec}`: expected TASK:TOPIC[:DIFFICULTY[:ITEM]]");
    }
    Ok(Candidate {
        task_id: parts[0].into(),
        topic: parts[1].into(),
        difficulty: parts.get(2).copied().unwrap_or_default().into(),
        item_id: parts.get(3).copied().unwrap_or_default().into(),
    })
}

/// Parses `--candidate` specs; the first one's topic is the example
/// history's topic.
fn parse_candidates(specs: &[String]) -> anyhow::Result<(Vec<Candidate>, String)> {
    let candidates = specs
        .iter()
        .map(|c| candidate(c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let topic = candidates
        .first()
        .map(|c| c.topic.clone())
        .context("give at least one --candidate")?;
    Ok((candidates, topic))
}

async fn inference(url: &str) -> anyhow::Result<InferenceClient<Channel>> {
    Ok(InferenceClient::new(channel(url).await?))
}

/// How often a `dns:///` channel looks the name up again, so replicas the
/// autoscaler adds get requests and removed ones stop getting them.
const RERESOLVE: Duration = Duration::from_secs(30);

/// One HTTP/2 connection for `http(s)://`; for `dns:///HOST:PORT`, a channel
/// that balances each request over every address HOST resolves to (tonic's
/// balancer: the less loaded of two random endpoints), kept in step with DNS.
async fn channel(url: &str) -> anyhow::Result<Channel> {
    let Some(authority) = url.strip_prefix("dns:///") else {
        return Channel::from_shared(url.to_string())
            .with_context(|| format!("bad URL {url}"))?
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"));
    };
    let authority = authority.trim_end_matches('/').to_string();
    let mut known = resolve(&authority).await?;
    if known.is_empty() {
        bail!("{authority} resolves to no address");
    }
    let (channel, tx) = Channel::balance_channel::<SocketAddr>(known.len().max(16));
    for addr in &known {
        tx.send(Change::Insert(*addr, endpoint(*addr)?)).await?;
    }
    tokio::spawn(async move {
        while !tx.is_closed() {
            tokio::time::sleep(RERESOLVE).await;
            // A failed lookup keeps the endpoints we have.
            let Ok(now) = resolve(&authority).await else {
                continue;
            };
            for addr in now.difference(&known) {
                if let Ok(e) = endpoint(*addr) {
                    let _ = tx.send(Change::Insert(*addr, e)).await;
                }
            }
            for addr in known.difference(&now) {
                let _ = tx.send(Change::Remove(*addr)).await;
            }
            known = now;
        }
    });
    Ok(channel)
}

async fn resolve(authority: &str) -> anyhow::Result<HashSet<SocketAddr>> {
    Ok(tokio::net::lookup_host(authority)
        .await
        .with_context(|| format!("resolving {authority}"))?
        .collect())
}

fn endpoint(addr: SocketAddr) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(Duration::from_secs(5)))
}

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

async fn wait(url: &str, trained: bool, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ready = async {
            let channel = channel(url).await.ok()?;
            let mut health = HealthClient::new(channel.clone());
            let status = health
                .check(HealthCheckRequest {
                    service: "taskcast.v1.Inference".into(),
                })
                .await
                .ok()?
                .into_inner()
                .status;
            if status != ServingStatus::Serving as i32 {
                return None;
            }
            let mut client = InferenceClient::new(channel);
            let model = client
                .get_model(GetModelRequest {})
                .await
                .ok()?
                .into_inner();
            (!trained || model.family != "bootstrap").then_some(model)
        }
        .await;
        if let Some(model) = ready {
            println!("ready: serving {} ({})", model.version, model.family);
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} not ready after {}s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Wait { trained, timeout } => {
            wait(&cli.inference, trained, Duration::from_secs(timeout)).await?
        }
        Command::Predict {
            user,
            candidates,
            history: n,
            explain,
        } => {
            let (candidates, topic) = parse_candidates(&candidates)?;
            let mut client = inference(&cli.inference).await?;
            let req = PredictRequest {
                user_id: user,
                history: history(&topic, n),
                candidates,
                explain,
            };
            let resp = client.predict(req).await?.into_inner();
            println!("model {}", resp.model_version);
            for p in resp.predictions {
                println!(
                    "{:<12} p_correct {:.3}  seconds {:.1} [{:.1} – {:.1}]  cold_start {}",
                    p.task_id, p.p_correct, p.seconds, p.seconds_low, p.seconds_high, p.cold_start
                );
                for r in p.reasons.iter().take(5) {
                    println!(
                        "    {:<26} value {:>8.3}  effect {:+.3}",
                        r.feature, r.value, r.effect
                    );
                }
            }
        }
        Command::Recommend {
            user,
            candidates,
            target,
            budget_seconds,
        } => {
            let (candidates, topic) = parse_candidates(&candidates)?;
            let mut client = inference(&cli.inference).await?;
            let req = RecommendRequest {
                user_id: user,
                history: history(&topic, 3),
                candidates,
                explain: false,
                target_p_correct: target,
                time_budget_seconds: budget_seconds,
                limit: 0,
            };
            let resp = client.recommend(req).await?.into_inner();
            for p in resp.predictions {
                println!(
                    "{:<12} p_correct {:.3}  seconds {:.1}",
                    p.task_id, p.p_correct, p.seconds
                );
            }
        }
        Command::Model => {
            let mut client = inference(&cli.inference).await?;
            let m = client.get_model(GetModelRequest {}).await?.into_inner();
            println!(
                "{}",
                serde_json::json!({
                    "version": m.version, "family": m.family, "feature_schema": m.feature_schema,
                    "history_window": m.history_window, "sha256": m.sha256, "metrics": m.metrics,
                })
            );
        }
        Command::Train { token_file, family } => {
            let token = match token_file {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?,
                None => std::env::var("TASKCAST_ADMIN_TOKEN")
                    .context("set --token-file or TASKCAST_ADMIN_TOKEN")?,
            };
            let mut client = TrainerClient::connect(cli.trainer.clone())
                .await
                .with_context(|| format!("connecting to {}", cli.trainer))?;
            let mut req = Request::new(TrainRequest {
                family,
                force: false,
            });
            let value: MetadataValue<_> = format!("Bearer {}", token.trim()).parse()?;
            req.metadata_mut().insert("authorization", value);
            let run = client.train(req).await?.into_inner();
            println!("run {} {} ({})", run.id, run.state, run.trigger);
        }
    }
    Ok(())
}

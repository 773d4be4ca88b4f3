//! The walls between the crates, checked on the real dependency graph
//! (`cargo metadata`), so a dependency added in the wrong place fails CI
//! instead of quietly making a crate heavier or a service reach what it must
//! not:
//!
//! - `inference-svc` never reaches a database crate: it serves models and
//!   must not be able to touch the trainer's tables;
//! - `taskcast-contract` reaches neither gRPC nor a database: it is what
//!   training and serving share, usable from either side and from tools;
//! - neither service depends on the other's crate: they meet only at the
//!   proto contract and the shared crates;
//! - the clients (`taskcast-load`, `taskcast-client`) and what they are built
//!   on (`taskcast-proto`, `taskcast-sim`) reach no database crate;
//! - `taskcast-proto` stays the generated contract alone: no server plumbing
//!   (Prometheus, tracing-subscriber, `taskcast-serving`);
//! - `taskcast-learn`, the learning core, reaches no database, no gRPC, no
//!   async runtime and no server plumbing: rows in, a judged model out;
//! - `taskcast-testdb` (throwaway databases) is a dev-dependency only: no
//!   crate that ships links it.
//!
//! "Reaches" follows normal and build dependencies, transitively (what the
//! crate compiles and ships); a crate's own dev-dependencies are its tests'.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

/// Crates that talk to a database.
const DATABASE: &[&str] = &[
    "sea-orm",
    "sea-orm-migration",
    "sea-query",
    "sqlx",
    "sqlx-*",
    "libsqlite3-sys",
    "rusqlite",
    "postgres",
    "tokio-postgres",
    "diesel",
];

/// Crates that make a gRPC client or server.
const GRPC: &[&str] = &["tonic", "tonic-*"];

/// Async runtimes: the learning core is plain computation, driven by
/// whoever calls it.
const ASYNC_RUNTIME: &[&str] = &["tokio", "tokio-*", "async-std", "smol"];

/// Server plumbing a client of the contract should not compile.
const SERVER_PLUMBING: &[&str] = &["prometheus", "tracing-subscriber", "taskcast-serving"];

/// One wall: `from` must not reach any crate matching `forbidden` (a trailing
/// `*` matches a prefix), for `why`.
struct Wall {
    from: &'static str,
    forbidden: Vec<&'static str>,
    why: &'static str,
}

fn walls() -> Vec<Wall> {
    let mut walls = vec![
        Wall {
            from: "inference-svc",
            forbidden: [DATABASE, &["trainer-svc"]].concat(),
            why: "inference serves models and never touches the database or the trainer",
        },
        Wall {
            from: "trainer-svc",
            forbidden: vec!["inference-svc"],
            why: "the services meet only at the proto contract and the shared crates",
        },
        Wall {
            from: "taskcast-contract",
            forbidden: [DATABASE, GRPC].concat(),
            why: "the contract is shared by both sides and knows neither gRPC nor the database",
        },
        Wall {
            from: "taskcast-proto",
            forbidden: [DATABASE, SERVER_PLUMBING].concat(),
            why: "the generated contract alone: a client compiles no server",
        },
    ];
    walls.push(Wall {
        from: "taskcast-learn",
        forbidden: [
            DATABASE,
            GRPC,
            ASYNC_RUNTIME,
            SERVER_PLUMBING,
            &["trainer-svc", "inference-svc"],
        ]
        .concat(),
        why: "the learning core knows no database, no gRPC, no runtime and no server",
    });
    for shipped in [
        "trainer-svc",
        "inference-svc",
        "taskcast-learn",
        "taskcast-contract",
        "taskcast-serving",
    ] {
        walls.push(Wall {
            from: shipped,
            forbidden: vec!["taskcast-testdb"],
            why: "test databases are for tests: nothing that ships creates or drops databases",
        });
    }
    for client in ["taskcast-load", "taskcast-client", "taskcast-sim"] {
        walls.push(Wall {
            from: client,
            forbidden: [DATABASE, &["trainer-svc"]].concat(),
            why: "clients and the simulator need no database",
        });
    }
    walls
}

/// The resolved graph: crate name → the names it depends on (normal and
/// build dependencies). Names, not ids: two versions of one crate are one
/// node here, which can only make a wall stricter.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// Every wall breach: the forbidden crate and the shortest chain reaching it.
fn breaches(graph: &Graph, walls: &[Wall]) -> Vec<String> {
    let mut found = Vec::new();
    for wall in walls {
        // Breadth first, so the chain reported is a shortest one.
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([wall.from]);
        while let Some(name) = queue.pop_front() {
            for dep in graph.get(name).into_iter().flatten() {
                if dep == wall.from || parent.contains_key(dep.as_str()) {
                    continue;
                }
                parent.insert(dep, name);
                if wall.forbidden.iter().any(|p| matches(p, dep)) {
                    let mut chain = vec![dep.as_str()];
                    while let Some(p) = parent.get(chain[chain.len() - 1]) {
                        chain.push(p);
                    }
                    chain.reverse();
                    found.push(format!("{} ({})", chain.join(" -> "), wall.why));
                    continue;
                }
                queue.push_back(dep);
            }
        }
    }
    found
}

/// The graph from `cargo metadata --format-version 1` output.
fn graph_of(metadata: &Value) -> Result<Graph> {
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .context("metadata without packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let mut graph = Graph::new();
    for node in metadata["resolve"]["nodes"]
        .as_array()
        .context("metadata without a resolve graph")?
    {
        let id = node["id"].as_str().context("node without id")?;
        let name = names.get(id).context("node of an unknown package")?;
        let deps = graph.entry(name.to_string()).or_default();
        for dep in node["deps"].as_array().into_iter().flatten() {
            // `kind` is null for a normal dependency, "build" or "dev" otherwise.
            let ships = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            if !ships {
                continue;
            }
            let dep_id = dep["pkg"].as_str().context("dependency without pkg")?;
            let dep_name = names
                .get(dep_id)
                .context("dependency on an unknown package")?;
            deps.insert(dep_name.to_string());
        }
    }
    Ok(graph)
}

#[test]
fn the_workspace_keeps_its_walls() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--manifest-path",
            manifest,
        ])
        .output()
        .context("running cargo metadata")?;
    ensure!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let graph = graph_of(&serde_json::from_slice(&out.stdout)?)?;
    let walls = walls();
    for wall in &walls {
        ensure!(
            graph.contains_key(wall.from),
            "no crate {} in the workspace: update the walls with the crate's new name",
            wall.from
        );
    }
    let found = breaches(&graph, &walls);
    ensure!(found.is_empty(), "walls breached:\n{}", found.join("\n"));
    Ok(())
}

/// The check itself must be able to fail: a graph with a breach two steps
/// away, through a renamed-looking crate, is caught with its chain.
#[test]
fn a_breach_is_found_with_its_chain() {
    let graph: Graph = [
        ("inference-svc", vec!["taskcast-contract", "helper"]),
        ("helper", vec!["sqlx-postgres"]),
        ("taskcast-contract", vec!["prost"]),
        ("taskcast-load", vec!["taskcast-sim"]),
        ("taskcast-sim", vec!["trainer-svc"]),
        ("trainer-svc", vec!["sea-orm"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    let found = breaches(&graph, &walls());
    assert!(
        found
            .iter()
            .any(|b| b.starts_with("inference-svc -> helper -> sqlx-postgres")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|b| b.starts_with("taskcast-load -> taskcast-sim -> trainer-svc")),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|b| b.starts_with("taskcast-contract")),
        "{found:?}"
    );
}

/// Dev-dependencies are a crate's tests, not what it ships.
#[test]
fn dev_dependencies_do_not_count() -> Result<()> {
    let metadata = serde_json::json!({
        "packages": [
            {"id": "a", "name": "inference-svc"},
            {"id": "b", "name": "sea-orm"},
            {"id": "c", "name": "tonic"},
        ],
        "resolve": {"nodes": [
            {"id": "a", "deps": [
                {"pkg": "b", "dep_kinds": [{"kind": "dev"}]},
                {"pkg": "c", "dep_kinds": [{"kind": null}]},
            ]},
            {"id": "b", "deps": []},
            {"id": "c", "deps": []},
        ]},
    });
    let graph = graph_of(&metadata)?;
    assert_eq!(
        graph["inference-svc"],
        BTreeSet::from(["tonic".to_string()])
    );
    assert!(breaches(&graph, &walls()).is_empty());
    Ok(())
}

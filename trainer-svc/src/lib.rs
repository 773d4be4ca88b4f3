//! trainer-svc: reads completed tasks, retrains, evaluates chronologically,
//! keeps every version in a registry and tells inference replicas to swap.

pub mod config;
pub mod csv_source;
pub mod dataset;
pub mod db;
pub mod evaluate;
pub mod family;
pub mod gate;
pub mod import;
pub mod items_hidden;
pub mod linear;
pub mod metrics;
pub mod mlp;
pub mod offline;
pub mod pipeline;
pub mod publisher;
pub mod report;
/// The completed-task row, now in `taskcast_contract::task` so the
/// simulator needs no trainer.
pub mod rows {
    pub use taskcast_contract::task::{RowProblem, TaskRow};
}
pub mod runner;
pub mod server;
pub mod service;
pub mod source;
pub mod telemetry;
pub mod time_support;

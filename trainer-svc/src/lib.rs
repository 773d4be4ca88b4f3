//! trainer-svc: reads completed tasks, retrains, evaluates chronologically,
//! keeps every version in a registry and tells inference replicas to swap.

pub mod csv_source;
pub mod db;
pub mod import;
pub mod rows;
pub mod sim;
pub mod metrics;

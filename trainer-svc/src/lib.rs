//! trainer-svc: reads completed tasks, retrains, evaluates chronologically,
//! keeps every version in a registry and tells inference replicas to swap.
//!
//! The folders follow one training run:
//! - [`data`]: read completed tasks and turn them into feature rows;
//! - [`families`]: fit a model family on them;
//! - [`judge`]: score it on the hold-out and decide whether it goes live;
//! - [`run`]: the run itself, its record and triggers, and publishing;
//! - [`serve`]: the gRPC service and server around the runs;
//! - [`report`]: how served versions do on real outcomes;
//! - [`plots`]: predictions against outcomes as pictures, for both;
//! - [`db`]: the database, which only [`db::Db`] touches.

pub mod data;
pub mod db;
pub mod families;
pub mod judge;
pub mod plots;
pub mod report;
pub mod run;
pub mod serve;

//! trainer-svc: the service around Taskcast's learning core
//! (`taskcast_learn`): the database, the runs and their triggers, the gRPC
//! service, the live report and the commands.
//!
//! - [`canary`]: judging a canary on live outcomes, and the rollout policy
//!   of automatic runs;
//! - [`data`]: completed tasks from the database or a CSV file, for the
//!   learning crate, and the import of a CSV file;
//! - [`db`]: the database, which only [`db::Db`] touches;
//! - [`fleet`]: the inference replicas as they report themselves, version
//!   skew, and the rollback of a version every replica refuses;
//! - [`run`]: runs against the database, their record, triggers and
//!   publishing;
//! - [`serve`]: the gRPC service and server around the runs;
//! - [`report`]: how served versions do on real outcomes;
//! - [`plots`]: predictions against outcomes as pictures, for `eval` and
//!   `report`;
//!
//! The command line (`main.rs` and its `commands/`, one module per command)
//! is the binary's, not the library's.

pub mod canary;
pub mod data;
pub mod db;
pub mod fleet;
pub mod plots;
pub mod report;
pub mod run;
pub mod serve;

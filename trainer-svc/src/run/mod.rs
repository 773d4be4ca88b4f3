//! Training runs against the database: one run's life with its lock and
//! record ([`runner`]), when runs start by themselves ([`schedule`]), what a
//! run leaves behind ([`outcome`]), the active model as subscribers see it
//! ([`publisher`]), each phase's time and memory ([`phases`]) and what runs
//! report to Prometheus ([`metrics`]). The stages of a run themselves are
//! the learning crate's (`taskcast_learn::pipeline`).

pub mod metrics;
pub mod outcome;
pub mod phases;
pub mod publisher;
pub mod runner;
pub mod schedule;

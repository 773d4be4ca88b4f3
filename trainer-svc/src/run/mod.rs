//! Running training: the stages of one run in order ([`pipeline`]), runs
//! against the database with their lock, record and triggers ([`runner`]),
//! the active model as subscribers see it ([`publisher`]), each phase's time
//! and memory ([`phases`]), and the offline
//! commands on a CSV file ([`offline`], [`hidden_items`]).

pub mod hidden_items;
pub mod offline;
pub mod phases;
pub mod pipeline;
pub mod publisher;
pub mod runner;

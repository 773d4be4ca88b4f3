//! `trainer-svc serve`: the process around the runs — flags ([`config`]),
//! the gRPC `Trainer` service ([`service`], its messages spelled in [`protos`]) and who may call what
//! ([`service::ROLE_RULES`]), learner pseudonyms for non-admin callers
//! ([`pseudonym`]), its metrics ([`telemetry`]) and the server that starts
//! and stops everything ([`server`]).

pub mod config;
pub mod protos;
pub mod pseudonym;
pub mod server;
pub mod service;
pub mod telemetry;

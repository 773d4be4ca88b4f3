//! `trainer-svc serve`: the process around the runs — flags ([`config`]),
//! the gRPC `Trainer` service ([`service`]), its metrics ([`telemetry`]) and
//! the server that starts and stops everything ([`server`]).

pub mod config;
pub mod server;
pub mod service;
pub mod telemetry;

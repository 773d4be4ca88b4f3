//! Every RPC the client makes, with the role whose token it carries and
//! whether it is safe to retry: the one table that says which call carries
//! which token.

use crate::tokens::Role;

/// One RPC: its name in messages and the trainer role whose token it
/// carries (`None`: never a token).
#[derive(Clone, Copy, Debug)]
pub struct Rpc {
    /// `Service.Method`.
    pub name: &'static str,
    /// Whose token goes with it.
    pub role: Option<Role>,
    /// Changes nothing, so sending it twice is harmless: retried on
    /// UNAVAILABLE (crate::retry).
    pub safe: bool,
}

/// Every RPC this client makes, with its role: the one place that says which
/// call carries which token.
pub mod rpc {
    use super::{Role, Rpc};

    /// Inference.Predict: no token.
    pub const PREDICT: Rpc = Rpc {
        name: "Inference.Predict",
        role: None,
        safe: true,
    };
    /// Inference.Recommend: no token.
    pub const RECOMMEND: Rpc = Rpc {
        name: "Inference.Recommend",
        role: None,
        safe: true,
    };
    /// Inference.GetModel: no token.
    pub const GET_MODEL: Rpc = Rpc {
        name: "Inference.GetModel",
        role: None,
        safe: true,
    };
    /// grpc.health.v1.Health.Check, on either server: no token.
    pub const HEALTH: Rpc = Rpc {
        name: "Health.Check",
        role: None,
        safe: true,
    };
    /// Trainer.Train: admin.
    pub const TRAIN: Rpc = Rpc {
        name: "Trainer.Train",
        role: Some(Role::Admin),
        safe: false,
    };
    /// Trainer.Promote: admin.
    pub const PROMOTE: Rpc = Rpc {
        name: "Trainer.Promote",
        role: Some(Role::Admin),
        safe: false,
    };
    /// Trainer.Rollback: admin.
    pub const ROLLBACK: Rpc = Rpc {
        name: "Trainer.Rollback",
        role: Some(Role::Admin),
        safe: false,
    };
    /// Trainer.ListModels: reader.
    pub const LIST_MODELS: Rpc = Rpc {
        name: "Trainer.ListModels",
        role: Some(Role::Reader),
        safe: true,
    };
    /// Trainer.GetTrainingRun: reader.
    pub const GET_TRAINING_RUN: Rpc = Rpc {
        name: "Trainer.GetTrainingRun",
        role: Some(Role::Reader),
        safe: true,
    };
    /// Trainer.WatchTrainingRun: reader.
    pub const WATCH_TRAINING_RUN: Rpc = Rpc {
        name: "Trainer.WatchTrainingRun",
        role: Some(Role::Reader),
        safe: true,
    };
    /// Trainer.ModelReport: reader.
    pub const MODEL_REPORT: Rpc = Rpc {
        name: "Trainer.ModelReport",
        role: Some(Role::Reader),
        safe: true,
    };
    /// Trainer.WatchModels: replica.
    pub const WATCH_MODELS: Rpc = Rpc {
        name: "Trainer.WatchModels",
        role: Some(Role::Replica),
        safe: true,
    };
}

//! sea-orm entities for the trainer's tables. The schema itself comes from
//! [`super::migration`]; these only describe how rows map to Rust values.

/// `completed_tasks`: the contract table the app backend writes.
pub mod completed_task {
    use sea_orm::entity::prelude::*;

    /// One row of `completed_tasks`.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "completed_tasks")]
    pub struct Model {
        /// Autoincrement id; also the order of arrival used by the retrain watermark.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// The learner.
        pub user_id: String,
        /// Topic (skill) label.
        pub topic: String,
        /// The app's difficulty label, empty when unknown.
        pub difficulty: String,
        /// The exercise, when known.
        pub item_id: Option<String>,
        /// Whether the first answer was correct.
        pub correct: bool,
        /// Seconds taken; NULL when not recorded.
        pub seconds: Option<f64>,
        /// When the task was completed.
        pub completed_at: DateTimeUtc,
        /// What the serving model predicted, written by the app backend.
        pub predicted_p_correct: Option<f64>,
        /// Predicted median seconds, written by the app backend.
        pub predicted_seconds: Option<f64>,
        /// Predicted 10th percentile of seconds (`seconds_low`), when the backend stores it.
        pub predicted_seconds_low: Option<f64>,
        /// Predicted 90th percentile of seconds (`seconds_high`), when the backend stores it.
        pub predicted_seconds_high: Option<f64>,
        /// The model version that made the prediction.
        pub model_version: Option<String>,
        /// The client's key for the task, unique where present (idempotent writes).
        pub task_id: Option<String>,
        /// When the task was handed out, if the backend recorded it.
        pub started_at: Option<DateTimeUtc>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `model_versions`: the model registry.
pub mod model_version {
    use sea_orm::entity::prelude::*;

    /// One registered model version.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "model_versions")]
    pub struct Model {
        /// Version id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: String,
        /// Model family ("linear", "mlp", ...).
        pub family: String,
        /// Feature schema id.
        pub feature_schema: String,
        /// The ONNX file.
        pub onnx: Vec<u8>,
        /// sha256 of `onnx`, hex.
        pub sha256: String,
        /// Metrics as a JSON object of numbers.
        pub metrics: String,
        /// candidate | active | retired | rejected.
        pub state: String,
        /// Why the version is in its state.
        pub reason: String,
        /// When the version was registered.
        pub created_at: DateTimeUtc,
        /// When the version was last made active.
        pub promoted_at: Option<DateTimeUtc>,
        /// Size of `onnx`.
        pub size_bytes: i64,
        /// The training run that produced it, if any.
        pub run_id: Option<String>,
        /// Promotion sequence number of the version's latest activation.
        pub seq: Option<i64>,
        /// Whether the version learned its time head; NULL before the column existed.
        pub time_modeled: Option<bool>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `promotions`: every activation of a model version, in order.
pub mod promotion {
    use sea_orm::entity::prelude::*;

    /// One activation.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "promotions")]
    pub struct Model {
        /// Autoincrement id; the order of activations.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// The version made active.
        pub version: String,
        /// When.
        pub promoted_at: DateTimeUtc,
        /// promote | rollback | auto.
        pub kind: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `training_runs`: one row per training run.
pub mod training_run {
    use sea_orm::entity::prelude::*;

    /// One training run.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "training_runs")]
    pub struct Model {
        /// Run id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// auto | operator | startup.
        pub trigger: String,
        /// Model family trained.
        pub family: String,
        /// RUNNING | SUCCEEDED | REJECTED | FAILED.
        pub state: String,
        /// Current phase.
        pub phase: String,
        /// 0..1.
        pub progress: f64,
        /// Rows used for training.
        pub rows_used: i64,
        /// Rows skipped.
        pub rows_skipped: i64,
        /// Skipped rows by reason, JSON object.
        pub skipped_detail: String,
        /// Metrics, JSON object.
        pub metrics: String,
        /// Version produced.
        pub model_version: Option<String>,
        /// The gate's verdict.
        pub gate_reason: String,
        /// Error message of a failed run.
        pub error: String,
        /// Start time.
        pub started_at: DateTimeUtc,
        /// End time.
        pub finished_at: Option<DateTimeUtc>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `trainer_state`: small key/value settings that must survive restarts.
pub mod trainer_state {
    use sea_orm::entity::prelude::*;

    /// One setting.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "trainer_state")]
    pub struct Model {
        /// Setting name.
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// Setting value.
        pub value: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `imported_files`: the digest of every file `trainer-svc import` committed.
pub mod imported_file {
    use sea_orm::entity::prelude::*;

    /// One imported file.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "imported_files")]
    pub struct Model {
        /// sha256 of the file's bytes as read (compressed for gzip), hex.
        #[sea_orm(primary_key, auto_increment = false)]
        pub sha256: String,
        /// The path it was imported from (informational).
        pub path: String,
        /// Rows the import inserted.
        pub rows: i64,
        /// When it was committed.
        pub imported_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

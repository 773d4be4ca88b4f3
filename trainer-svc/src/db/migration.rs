//! Schema migrations, applied by [`super::Db::connect`]. The same statements
//! run on SQLite and PostgreSQL; every `CREATE` is `IF NOT EXISTS` so a schema
//! made by the app backend (which owns `completed_tasks`) is accepted as is.

use sea_orm_migration::prelude::*;

/// All migrations, oldest first.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Initial),
            Box::new(PredictedInterval),
            Box::new(TimeModeled),
            Box::new(Idempotence),
            Box::new(super::fleet::Fleet),
            Box::new(super::rollout::Rollouts),
            Box::new(StartedAt),
        ]
    }
}

/// The first schema.
struct Initial;

impl MigrationName for Initial {
    // Fixed rather than derived from the module path so moving the file cannot
    // make an applied migration look new.
    fn name(&self) -> &str {
        "m20250601_000001_initial"
    }
}

#[derive(DeriveIden)]
enum CompletedTasks {
    Table,
    Id,
    UserId,
    Topic,
    Difficulty,
    ItemId,
    Correct,
    Seconds,
    CompletedAt,
    PredictedPCorrect,
    PredictedSeconds,
    ModelVersion,
}

#[derive(DeriveIden)]
enum ModelVersions {
    Table,
    Version,
    Family,
    FeatureSchema,
    Onnx,
    Sha256,
    Metrics,
    State,
    Reason,
    CreatedAt,
    PromotedAt,
    SizeBytes,
    RunId,
    Seq,
}

#[derive(DeriveIden)]
enum Promotions {
    Table,
    Id,
    Version,
    PromotedAt,
    Kind,
}

#[derive(DeriveIden)]
enum TrainingRuns {
    Table,
    Id,
    Trigger,
    Family,
    State,
    Phase,
    Progress,
    RowsUsed,
    RowsSkipped,
    SkippedDetail,
    Metrics,
    ModelVersion,
    GateReason,
    Error,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum TrainerState {
    Table,
    Key,
    Value,
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().take()
}

fn text_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().null().take()
}

fn double_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).double().null().take()
}

fn ts(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .take()
}

fn ts_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).timestamp_with_time_zone().null().take()
}

fn big_pk(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .take()
}

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CompletedTasks::Table)
                    .if_not_exists()
                    .col(big_pk(CompletedTasks::Id))
                    .col(text(CompletedTasks::UserId))
                    .col(text(CompletedTasks::Topic))
                    .col(text(CompletedTasks::Difficulty).default(""))
                    .col(text_null(CompletedTasks::ItemId))
                    .col(ColumnDef::new(CompletedTasks::Correct).boolean().not_null())
                    .col(double_null(CompletedTasks::Seconds))
                    .col(ts(CompletedTasks::CompletedAt))
                    .col(double_null(CompletedTasks::PredictedPCorrect))
                    .col(double_null(CompletedTasks::PredictedSeconds))
                    .col(text_null(CompletedTasks::ModelVersion))
                    .to_owned(),
            )
            .await?;
        // The training scan's order and keyset; the primary key already
        // indexes `id` for the watermark queries.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_completed_tasks_user_time_id")
                    .table(CompletedTasks::Table)
                    .col(CompletedTasks::UserId)
                    .col(CompletedTasks::CompletedAt)
                    .col(CompletedTasks::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ModelVersions::Table)
                    .if_not_exists()
                    .col(text(ModelVersions::Version).primary_key())
                    .col(text(ModelVersions::Family))
                    .col(text(ModelVersions::FeatureSchema))
                    .col(ColumnDef::new(ModelVersions::Onnx).blob().not_null())
                    .col(text(ModelVersions::Sha256))
                    .col(text(ModelVersions::Metrics).default("{}"))
                    .col(text(ModelVersions::State))
                    .col(text(ModelVersions::Reason).default(""))
                    .col(ts(ModelVersions::CreatedAt))
                    .col(ts_null(ModelVersions::PromotedAt))
                    .col(
                        ColumnDef::new(ModelVersions::SizeBytes)
                            .big_integer()
                            .not_null(),
                    )
                    .col(text_null(ModelVersions::RunId))
                    .col(ColumnDef::new(ModelVersions::Seq).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_model_versions_created_at")
                    .table(ModelVersions::Table)
                    .col(ModelVersions::CreatedAt)
                    .to_owned(),
            )
            .await?;
        // At most one active version, enforced by the database so that two
        // replicas promoting at once cannot both win. Same syntax on both backends.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS idx_model_versions_one_active \
                 ON model_versions (state) WHERE state = 'active'",
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Promotions::Table)
                    .if_not_exists()
                    .col(big_pk(Promotions::Id))
                    .col(text(Promotions::Version))
                    .col(ts(Promotions::PromotedAt))
                    .col(text(Promotions::Kind))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TrainingRuns::Table)
                    .if_not_exists()
                    .col(text(TrainingRuns::Id).primary_key())
                    .col(text(TrainingRuns::Trigger))
                    .col(text(TrainingRuns::Family))
                    .col(text(TrainingRuns::State))
                    .col(text(TrainingRuns::Phase).default(""))
                    .col(
                        ColumnDef::new(TrainingRuns::Progress)
                            .double()
                            .not_null()
                            .default(0.0),
                    )
                    .col(
                        ColumnDef::new(TrainingRuns::RowsUsed)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(TrainingRuns::RowsSkipped)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(text(TrainingRuns::SkippedDetail).default("{}"))
                    .col(text(TrainingRuns::Metrics).default("{}"))
                    .col(text_null(TrainingRuns::ModelVersion))
                    .col(text(TrainingRuns::GateReason).default(""))
                    .col(text(TrainingRuns::Error).default(""))
                    .col(ts(TrainingRuns::StartedAt))
                    .col(ts_null(TrainingRuns::FinishedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_training_runs_state")
                    .table(TrainingRuns::Table)
                    .col(TrainingRuns::State)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TrainerState::Table)
                    .if_not_exists()
                    .col(text(TrainerState::Key).primary_key())
                    .col(text(TrainerState::Value))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

/// `predicted_seconds_low` / `predicted_seconds_high`: the 10th and 90th
/// percentile of the time inference predicted, so the live report can measure
/// interval coverage. Nullable: rows written before (or by a backend that does
/// not store them) stay valid and are left out of coverage only.
struct PredictedInterval;

impl MigrationName for PredictedInterval {
    fn name(&self) -> &str {
        "m20261127_000001_predicted_interval"
    }
}

#[derive(DeriveIden)]
enum PredictedIntervalColumns {
    PredictedSecondsLow,
    PredictedSecondsHigh,
}

#[async_trait::async_trait]
impl MigrationTrait for PredictedInterval {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (col, name) in [
            (
                PredictedIntervalColumns::PredictedSecondsLow,
                "predicted_seconds_low",
            ),
            (
                PredictedIntervalColumns::PredictedSecondsHigh,
                "predicted_seconds_high",
            ),
        ] {
            // The backend owns completed_tasks and may have added the column
            // itself; SQLite has no `ADD COLUMN IF NOT EXISTS`, so ask first.
            if manager.has_column("completed_tasks", name).await? {
                continue;
            }
            manager
                .alter_table(
                    Table::alter()
                        .table(CompletedTasks::Table)
                        .add_column(double_null(col))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// `model_versions.time_modeled`: whether a version learned its time head
/// (issue 17). NULL for versions registered before the column existed; their
/// artifacts answer it ([`taskcast_contract::ModelMetadata::time_modeled`]).
struct TimeModeled;

impl MigrationName for TimeModeled {
    fn name(&self) -> &str {
        "m20261130_000001_time_modeled"
    }
}

#[derive(DeriveIden)]
enum TimeModeledColumns {
    TimeModeled,
}

#[async_trait::async_trait]
impl MigrationTrait for TimeModeled {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_column("model_versions", "time_modeled").await? {
            return Ok(());
        }
        manager
            .alter_table(
                Table::alter()
                    .table(ModelVersions::Table)
                    .add_column(
                        ColumnDef::new(TimeModeledColumns::TimeModeled)
                            .boolean()
                            .null()
                            .take(),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// Idempotent ingestion (issue 27): `completed_tasks.task_id`, the client's
/// own key for a task, unique where present, so a backend that retries a
/// write (`INSERT ... ON CONFLICT DO NOTHING`) or an operator who imports a
/// file twice cannot count a task twice; and `imported_files`, the sha256 of
/// every file `trainer-svc import` committed, so the same file is refused.
struct Idempotence;

impl MigrationName for Idempotence {
    fn name(&self) -> &str {
        "m20261210_000001_idempotence"
    }
}

#[derive(DeriveIden)]
enum IdempotenceColumns {
    TaskId,
}

#[derive(DeriveIden)]
enum ImportedFiles {
    Table,
    Sha256,
    Path,
    Rows,
    ImportedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Idempotence {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The backend owns completed_tasks and may have added the column itself.
        if !manager.has_column("completed_tasks", "task_id").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(CompletedTasks::Table)
                        .add_column(text_null(IdempotenceColumns::TaskId))
                        .to_owned(),
                )
                .await?;
        }
        // Partial, so the rows without a key (every row written before, and
        // backends that do not send one) stay unconstrained. The same syntax
        // on both backends, and a conflict target for `ON CONFLICT (task_id)
        // WHERE task_id IS NOT NULL DO NOTHING`.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS idx_completed_tasks_task_id \
                 ON completed_tasks (task_id) WHERE task_id IS NOT NULL",
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ImportedFiles::Table)
                    .if_not_exists()
                    .col(text(ImportedFiles::Sha256).primary_key())
                    .col(text(ImportedFiles::Path))
                    .col(ColumnDef::new(ImportedFiles::Rows).big_integer().not_null())
                    .col(ts(ImportedFiles::ImportedAt))
                    .to_owned(),
            )
            .await
    }
}

/// `completed_tasks.started_at` (issue 30): when the task was handed out,
/// the moment the backend called Predict. Nullable: the features use it as
/// "now" only when most rows carry it, and a completion time is never a
/// substitute (it contains the attempt's own duration).
struct StartedAt;

impl MigrationName for StartedAt {
    fn name(&self) -> &str {
        "m20261213_000001_started_at"
    }
}

#[derive(DeriveIden)]
enum StartedAtColumns {
    StartedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for StartedAt {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The backend owns completed_tasks and may have added the column itself.
        if manager.has_column("completed_tasks", "started_at").await? {
            return Ok(());
        }
        manager
            .alter_table(
                Table::alter()
                    .table(CompletedTasks::Table)
                    .add_column(ts_null(StartedAtColumns::StartedAt))
                    .to_owned(),
            )
            .await
    }
}

//! Issue 27, items 4, 6 and 7: idempotent ingestion (task keys, file
//! digests), registry retention, backup and restore, and an import killed
//! with SIGKILL. Each runs on SQLite and PostgreSQL.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;
use support::on_each_backend;
use trainer_svc::data::csv::TsUnit;
use trainer_svc::data::import::{ImportError, ImportOptions, import_csv};
use trainer_svc::db::{Db, DbError, ModelState, NewModelVersion, PromotionKind, RetentionPolicy};

const OPTS: ImportOptions = ImportOptions {
    ts_unit: TsUnit::S,
    skip_bad_rows: false,
    allow_reimport: false,
};

fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer-svc"))
        .args(args)
        .env_remove("TASKCAST_DATABASE_URL")
        .output()
        .expect("run trainer-svc")
}

async fn scanned(db: &Db) -> usize {
    let mut pager = db.scan_tasks(1000, None);
    let mut n = 0;
    while let Some(page) = pager.next_page().await.unwrap() {
        n += page.len();
    }
    n
}

#[tokio::test]
async fn a_task_is_stored_once_whoever_sends_it_twice() {
    let dir = tempfile::tempdir().unwrap();
    // k2 repeats within the file; the last row has no key.
    let csv = dir.path().join("keyed.csv");
    std::fs::write(
        &csv,
        "user_id,item_id,topic,correct,seconds,ts,task_id\n\
         u1,i,t,1,2,100,k1\nu1,i,t,0,2,200,k2\nu2,i,t,1,2,300,k2\nu2,i,t,1,2,400,\n",
    )
    .unwrap();
    on_each_backend(async |url, _| {
        let db = Db::connect(url).await.unwrap();
        let r = import_csv(&db, &csv, &OPTS, |_| {}).await.unwrap();
        assert_eq!((r.rows_imported, r.duplicates), (3, 1));

        // The same file again: refused by its digest, nothing written.
        let err = import_csv(&db, &csv, &OPTS, |_| {}).await.unwrap_err();
        assert!(matches!(err, ImportError::AlreadyImported { .. }), "{err}");
        assert_eq!(db.count_tasks().await.unwrap(), 3);

        // Told to, it imports again: keyed rows are duplicates, the unkeyed one is new.
        let again = ImportOptions {
            allow_reimport: true,
            ..OPTS
        };
        let r = import_csv(&db, &csv, &again, |_| {}).await.unwrap();
        assert_eq!((r.rows_imported, r.duplicates), (1, 3));

        // A backend's retried write, as docs/ingestion.md spells it.
        let sql = "INSERT INTO completed_tasks (user_id, topic, difficulty, correct, completed_at, task_id) \
                   VALUES ('u3', 't', '', TRUE, '2024-01-01T00:00:00Z', 'k9') ON CONFLICT DO NOTHING";
        for _ in 0..2 {
            db.connection().execute_unprepared(sql).await.unwrap();
        }
        assert_eq!(db.count_tasks().await.unwrap(), 5);
        // Without ON CONFLICT the index refuses it outright.
        let plain = sql.trim_end_matches(" ON CONFLICT DO NOTHING");
        assert!(db.connection().execute_unprepared(plain).await.is_err());

        // The trainer's reading: a completed_tasks without the index (made
        // by a backend) still trains on each key once.
        db.connection()
            .execute_unprepared("DROP INDEX idx_completed_tasks_task_id")
            .await
            .unwrap();
        db.connection().execute_unprepared(plain).await.unwrap();
        assert_eq!(db.count_tasks().await.unwrap(), 6);
        assert_eq!(scanned(&db).await, 5);
        db.close().await.unwrap();
    })
    .await;
}

fn version(v: &str, bytes: usize) -> NewModelVersion {
    NewModelVersion {
        version: v.into(),
        family: "linear".into(),
        feature_schema: "s".into(),
        onnx: vec![7u8; bytes],
        ..Default::default()
    }
}

#[tokio::test]
async fn prune_keeps_what_can_be_served_and_the_newest() {
    on_each_backend(async |url, _| {
        let db = Db::connect(url).await.unwrap();
        // v00 and v01 active in turn; v02..v09 rejected; v10 a candidate.
        for i in 0..11 {
            db.insert_model_version(&version(&format!("v{i:02}"), 1000))
                .await
                .unwrap();
            // created_at must order the versions.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        db.set_active("v00", PromotionKind::Auto).await.unwrap();
        db.set_active("v01", PromotionKind::Auto).await.unwrap();
        for i in 2..10 {
            db.reject(&format!("v{i:02}"), "gate").await.unwrap();
        }
        assert_eq!(db.registry_bytes().await.unwrap(), 11_000);
        // An operator tries the rejected v03 on a share of learners.
        db.start_canary("v03", 10).await.unwrap();
        let policy = RetentionPolicy { keep_candidates: 3 };

        // Never active: v02..v10, newest first v10, v09, v08 kept; v03 is
        // under a canary; v02, v04..v07 go.
        let dry = db.prune_models(&policy, true).await.unwrap();
        let names: Vec<&str> = dry.pruned.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(names, ["v02", "v04", "v05", "v06", "v07"]);
        assert_eq!(db.registry_bytes().await.unwrap(), 11_000);

        let r = db.prune_models(&policy, false).await.unwrap();
        assert_eq!((r.bytes_before, r.bytes_after), (11_000, 6_000));
        assert_eq!(db.get_model_onnx("v03").await.unwrap().unwrap().len(), 1000);
        eprintln!("registry {} -> {} bytes", r.bytes_before, r.bytes_after);
        assert!(
            db.prune_models(&policy, false)
                .await
                .unwrap()
                .pruned
                .is_empty()
        );

        // Metadata stays; the bytes of kept versions stay.
        assert_eq!(db.list_model_versions(100).await.unwrap().len(), 11);
        let v02 = db.get_model_version("v02").await.unwrap().unwrap();
        assert_eq!((v02.state, v02.size_bytes), (ModelState::Rejected, 1000));
        assert_eq!(db.get_model_onnx("v02").await.unwrap().unwrap().len(), 0);
        assert_eq!(db.get_model_onnx("v00").await.unwrap().unwrap().len(), 1000);
        // A pruned version cannot become active; rollback still finds v00.
        let err = db
            .set_active("v02", PromotionKind::Promote)
            .await
            .unwrap_err();
        assert!(matches!(err, DbError::Conflict(_)), "{err}");
        assert_eq!(db.rollback().await.unwrap().unwrap().version, "v00");
        db.close().await.unwrap();
    })
    .await;
}

/// `n` rows of CSV with task keys, written once for the kill test.
fn big_csv(dir: &Path, n: usize) -> PathBuf {
    use std::io::Write;
    let path = dir.join("big.csv");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(w, "user_id,item_id,topic,correct,seconds,ts,task_id").unwrap();
    for i in 0..n {
        writeln!(
            w,
            "u{},i{},t{},{},{}.5,{},task-{i}",
            i % 500,
            i % 97,
            i % 7,
            i % 2,
            i % 30,
            1_600_000_000 + i
        )
        .unwrap();
    }
    w.flush().unwrap();
    path
}

#[tokio::test]
async fn an_import_killed_midway_leaves_nothing_and_reruns_once() {
    const ROWS: usize = 300_000;
    let dir = tempfile::tempdir().unwrap();
    let csv = big_csv(dir.path(), ROWS);
    let data = csv.to_str().unwrap().to_owned();
    on_each_backend(async |url, backend| {
        let db = Db::connect(url).await.unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_trainer-svc"))
            .args(["import", "--database-url", url, "--data", &data])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Mid-import: the rows are going in (PostgreSQL shows the INSERT,
        // SQLite's WAL grows) but nothing is committed.
        let started = Instant::now();
        loop {
            assert!(child.try_wait().unwrap().is_none(), "import ended before it could be killed");
            assert!(started.elapsed() < Duration::from_secs(20), "no insert seen");
            let inserting = if backend == "postgres" {
                let n: Option<i64> = db
                    .connection()
                    .query_one_raw(sea_orm::Statement::from_string(
                        sea_orm::DatabaseBackend::Postgres,
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                         AND pid <> pg_backend_pid() AND query LIKE 'INSERT INTO \"completed_tasks\"%'",
                    ))
                    .await
                    .unwrap()
                    .and_then(|r| r.try_get_by_index(0).ok());
                n.unwrap_or(0) > 0 && started.elapsed() > Duration::from_millis(300)
            } else {
                let file = url.trim_start_matches("sqlite://").split('?').next().unwrap();
                std::fs::metadata(format!("{file}-wal")).map_or(0, |m| m.len()) > 4 << 20
            };
            if inserting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!("{backend}: killed after {:?}", started.elapsed());
        assert_eq!(db.count_tasks().await.unwrap(), 0, "a killed import left rows");
        assert!(db.imported_file(&trainer_svc::data::import::file_sha256(&csv).unwrap()).await.unwrap().is_none());

        let out = trainer(&["import", "--database-url", url, "--data", &data]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(db.count_tasks().await.unwrap(), ROWS as u64);
        let out = trainer(&["import", "--database-url", url, "--data", &data]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("already imported"));
        assert_eq!(db.count_tasks().await.unwrap(), ROWS as u64);
        db.close().await.unwrap();
    })
    .await;
}

/// The database file behind a `sqlite://PATH?...` URL.
fn sqlite_path(url: &str) -> PathBuf {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    PathBuf::from(rest.split('?').next().unwrap_or(rest))
}

fn run_ok(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Back up (SQLite online with `trainer-svc backup`, PostgreSQL with
/// `pg_dump`), wipe, restore as docs/operations.md says, restart: the same
/// active version is served, the auto-retrain watermark holds, and a file
/// imported before the backup is refused again.
#[tokio::test]
async fn a_backup_restores_the_active_version_the_watermark_and_the_imports() {
    on_each_backend(async |url, backend| {
        let dir = tempfile::tempdir().unwrap();
        let csv = big_csv(dir.path(), 500);
        let url_s = url.to_string();
        let csv_s = csv.display().to_string();
        run_ok(
            "import",
            Command::new(env!("CARGO_BIN_EXE_trainer-svc")).args([
                "import",
                "--database-url",
                &url_s,
                "--data",
                &csv_s,
            ]),
        );
        let db = Db::connect(url).await.unwrap();
        db.insert_model_version(&version("v1", 64)).await.unwrap();
        db.insert_model_version(&version("v2", 64)).await.unwrap();
        db.set_active("v1", PromotionKind::Promote).await.unwrap();
        db.set_active("v2", PromotionKind::Promote).await.unwrap();
        let watermark = db.max_task_id().await.unwrap().expect("rows");
        db.set_watermark(watermark).await.unwrap();
        let rows = db.count_tasks().await.unwrap();
        db.close().await.unwrap();

        let backup = dir.path().join("backup");
        let backup_s = backup.display().to_string();
        if backend == "sqlite" {
            run_ok(
                "trainer-svc backup",
                Command::new(env!("CARGO_BIN_EXE_trainer-svc")).args([
                    "backup",
                    "--database-url",
                    &url_s,
                    "--out",
                    &backup_s,
                ]),
            );
            let file = sqlite_path(url);
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
            std::fs::copy(&backup, &file).unwrap();
        } else {
            run_ok(
                "pg_dump",
                Command::new("pg_dump").args(["--format=custom", "--file", &backup_s, &url_s]),
            );
            run_ok(
                "wipe",
                Command::new("psql").args([
                    &url_s,
                    "-q",
                    "-c",
                    "DROP SCHEMA public CASCADE; CREATE SCHEMA public;",
                ]),
            );
            run_ok(
                "pg_restore",
                Command::new("pg_restore").args(["--no-owner", "--dbname", &url_s, &backup_s]),
            );
        }

        let db = Db::connect(url).await.unwrap();
        assert_eq!(db.count_tasks().await.unwrap(), rows, "{backend}");
        assert_eq!(db.get_watermark().await.unwrap(), watermark, "{backend}");
        let active = db.active_model_version().await.unwrap().expect("active");
        assert_eq!(active.version, "v2", "{backend}");
        // Rollback still knows where to go back to.
        assert_eq!(
            db.previous_active().await.unwrap().map(|m| m.version),
            Some("v1".to_string())
        );
        db.close().await.unwrap();
        let again = trainer(&["import", "--database-url", url, "--data", &csv_s]);
        assert!(
            !again.status.success(),
            "{backend}: the file was imported twice"
        );
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("already imported"),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );

        // The restarted trainer announces the restored active version.
        let server = support::Server::start(support::config(url, 0)).await;
        let mut client = server.client().await;
        let mut watch = client
            .watch_models(support::replica(taskcast_proto::WatchModelsRequest {
                subscriber: "restored".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .expect("an artifact")
            .unwrap()
            .unwrap();
        assert_eq!(first.version, "v2", "{backend}");
        drop(watch);
        server.stop().await;
    })
    .await;
}

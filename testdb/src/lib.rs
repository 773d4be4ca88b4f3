//! taskcast-testdb: throwaway databases for tests: a fresh SQLite file or a fresh PostgreSQL
//! database per test, removed afterwards.
//!
//! PostgreSQL is found at `TASKCAST_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, an admin database used only
//! to create and drop `taskcast_test_<random>`). When it is unreachable
//! [`TestDb::postgres`] returns an error saying so: tests must fail, not skip.

use std::path::PathBuf;
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

/// Environment variable naming the PostgreSQL admin URL for tests.
pub const POSTGRES_URL_ENV: &str = "TASKCAST_TEST_POSTGRES_URL";
/// The admin URL used when [`POSTGRES_URL_ENV`] is unset.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Why a test database could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TestDbError {
    /// Could not create the temporary SQLite directory.
    #[error("cannot create a temporary SQLite database: {0}")]
    Io(#[from] std::io::Error),
    /// PostgreSQL is not reachable or refused to create the database.
    #[error(
        "PostgreSQL test database unavailable at {url}: {source}. These tests need a running \
         PostgreSQL (CI starts one); set {POSTGRES_URL_ENV} to an admin URL to use another server"
    )]
    Postgres {
        /// Admin URL tried.
        url: String,
        /// The cause.
        source: sea_orm::DbErr,
    },
}

enum Kind {
    Sqlite {
        dir: PathBuf,
    },
    Postgres {
        admin_url: String,
        name: String,
        dropped: bool,
    },
}

/// One throwaway database. Removed on [`TestDb::cleanup`] or, failing that, on drop.
pub struct TestDb {
    url: String,
    kind: Kind,
}

fn random_suffix() -> String {
    format!("{}_{:016x}", std::process::id(), rand::random::<u64>())
}

async fn admin_connect(admin_url: &str) -> Result<DatabaseConnection, TestDbError> {
    let mut opts = ConnectOptions::new(admin_url.to_owned());
    opts.sqlx_logging(false)
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10));
    Database::connect(opts)
        .await
        .map_err(|source| TestDbError::Postgres {
            url: admin_url.to_owned(),
            source,
        })
}

/// `admin_url` with its database name replaced by `name`.
fn with_db_name(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), TestDbError> {
    let admin = admin_connect(admin_url).await?;
    let res = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await;
    let _ = admin.close().await;
    res.map(|_| ()).map_err(|source| TestDbError::Postgres {
        url: admin_url.to_owned(),
        source,
    })
}

impl TestDb {
    /// A new SQLite file in a fresh temporary directory.
    pub fn sqlite() -> Result<TestDb, TestDbError> {
        let dir = std::env::temp_dir().join(format!("taskcast_test_{}", random_suffix()));
        std::fs::create_dir_all(&dir)?;
        let url = format!("sqlite://{}?mode=rwc", dir.join("test.db").display());
        Ok(TestDb {
            url,
            kind: Kind::Sqlite { dir },
        })
    }

    /// A new, empty PostgreSQL database `taskcast_test_<random>`.
    pub async fn postgres() -> Result<TestDb, TestDbError> {
        let admin_url =
            std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let name = format!("taskcast_test_{}", random_suffix());
        let admin = admin_connect(&admin_url).await?;
        let res = admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await;
        let _ = admin.close().await;
        res.map_err(|source| TestDbError::Postgres {
            url: admin_url.clone(),
            source,
        })?;
        Ok(TestDb {
            url: with_db_name(&admin_url, &name),
            kind: Kind::Postgres {
                admin_url,
                name,
                dropped: false,
            },
        })
    }

    /// One of each backend: SQLite first, then PostgreSQL.
    pub async fn all() -> Result<Vec<TestDb>, TestDbError> {
        Ok(vec![TestDb::sqlite()?, TestDb::postgres().await?])
    }

    /// The URL to pass to [`super::Db::connect`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// "sqlite" or "postgres", for test messages.
    pub fn backend_name(&self) -> &'static str {
        match self.kind {
            Kind::Sqlite { .. } => "sqlite",
            Kind::Postgres { .. } => "postgres",
        }
    }

    /// Removes the database now (terminating any connections still open to it).
    pub async fn cleanup(mut self) -> Result<(), TestDbError> {
        match &mut self.kind {
            Kind::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(&*dir);
                Ok(())
            }
            Kind::Postgres {
                admin_url,
                name,
                dropped,
            } => {
                drop_database(admin_url, name).await?;
                *dropped = true;
                Ok(())
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Kind::Postgres {
                admin_url,
                name,
                dropped: false,
            } => {
                // Reached when a test panics before `cleanup`. Drop cannot
                // await, and blocking inside the test's runtime could stall it,
                // so drop the database from a thread with its own runtime.
                let (admin_url, name) = (admin_url.clone(), name.clone());
                let handle = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match rt {
                        Ok(rt) => {
                            if let Err(e) = rt.block_on(drop_database(&admin_url, &name)) {
                                eprintln!("could not drop test database {name}: {e}");
                            }
                        }
                        Err(e) => eprintln!("could not drop test database {name}: {e}"),
                    }
                });
                let _ = handle.join();
            }
            Kind::Postgres { .. } => {}
        }
    }
}

//! Test support: finding the external components some tests need.
//!
//! A test that needs PostgreSQL (or nginx, Chromium, ...) asks here. When the component is
//! missing the test says so loudly on stderr and skips, unless `KEYGATE_TEST_REQUIRE_ALL=1`
//! (set by CI), in which case it fails: nothing is silently skipped in CI.
#![forbid(unsafe_code)]

mod smtp;
pub use smtp::{Mail, SmtpSink};

use rand::RngCore;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// True when CI demands every external component.
pub fn require_all() -> bool {
    std::env::var("KEYGATE_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Skips (returns) or fails the current test for a missing component.
#[macro_export]
macro_rules! skip_or_fail {
    ($($arg:tt)*) => {{
        let why = format!($($arg)*);
        if $crate::require_all() {
            panic!("KEYGATE_TEST_REQUIRE_ALL=1 and a test component is missing: {why}");
        }
        eprintln!("\n!!! SKIPPED {}: {why}\n", module_path!());
        return;
    }};
}

/// The PostgreSQL server tests use: `KEYGATE_TEST_POSTGRES_URL`, default the local one.
pub fn postgres_admin_url() -> String {
    std::env::var("KEYGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database created for one test and dropped when this is dropped.
pub struct TestDb {
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDb {
    /// Creates a fresh, empty database, or says why it cannot.
    pub async fn create() -> Result<TestDb, String> {
        let admin_url = postgres_admin_url();
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .map_err(|e| format!("PostgreSQL not reachable at {admin_url}: {e}"))?;
        let mut b = [0u8; 6];
        rand::rng().fill_bytes(&mut b);
        let name = format!("keygate_test_{}", hex::encode(b));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("cannot create a test database: {e}"))?;
        let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(b, _)| b);
        Ok(TestDb { url: format!("{base}/{name}"), name, admin_url })
    }

    /// Runs a query whose columns are all `BIGINT` and returns its rows (for a test that looks at
    /// what the server wrote, e.g. `credit_leases`).
    pub async fn rows_i64(&self, sql: &str) -> Result<Vec<Vec<i64>>, String> {
        use sqlx::Row;
        let mut conn =
            PgConnection::connect(&self.url).await.map_err(|e| format!("connecting to {}: {e}", self.name))?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&mut conn)
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
        rows.iter()
            .map(|r| {
                (0..r.len()).map(|i| r.try_get::<i64, _>(i).map_err(|e| format!("{sql}: column {i}: {e}"))).collect()
            })
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Dropped from sync code, maybe inside a runtime: use a thread with its own runtime.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio_rt();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a test runtime")
}

/// A PostgreSQL server of the test's own (`scripts/private-postgres.sh`: its own data directory,
/// socket directory and port), for tests that stop, crash or restart the database. The machine's
/// own PostgreSQL is never touched. Stopped and removed when dropped.
pub struct PrivatePostgres {
    dir: std::path::PathBuf,
    pub url: String,
}

const PRIVATE_POSTGRES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/private-postgres.sh");

fn private_postgres(cmd: &str, dir: &std::path::Path) -> Result<String, String> {
    let out = std::process::Command::new("bash")
        .arg(PRIVATE_POSTGRES)
        .arg(cmd)
        .arg(dir)
        .output()
        .map_err(|e| format!("running {PRIVATE_POSTGRES}: {e}"))?;
    if !out.status.success() {
        return Err(format!("private-postgres.sh {cmd}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl PrivatePostgres {
    /// Creates and starts a fresh server, or says why it cannot.
    pub fn start() -> Result<PrivatePostgres, String> {
        let mut b = [0u8; 6];
        rand::rng().fill_bytes(&mut b);
        let dir = std::env::temp_dir().join(format!("keygate-test-pg-{}", hex::encode(b)));
        let url = private_postgres("start", &dir)?;
        Ok(PrivatePostgres { dir, url })
    }

    /// Stops the server as a crash would (immediate shutdown); the data stays.
    pub fn kill(&self) {
        private_postgres("kill", &self.dir).expect("stopping the private PostgreSQL");
    }

    /// Starts it again on the same port.
    pub fn resume(&self) {
        private_postgres("resume", &self.dir).expect("starting the private PostgreSQL again");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = private_postgres("stop", &self.dir);
    }
}

/// A Redis server of the test's own (`scripts/private-redis.sh`: its own directory and port, no
/// persistence), for tests that crash or restart it. The machine's own Redis is never touched.
/// Stopped and removed when dropped.
pub struct PrivateRedis {
    dir: std::path::PathBuf,
    pub url: String,
}

const PRIVATE_REDIS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/private-redis.sh");

fn private_redis(cmd: &str, dir: &std::path::Path) -> Result<String, String> {
    let out = std::process::Command::new("bash")
        .arg(PRIVATE_REDIS)
        .arg(cmd)
        .arg(dir)
        .output()
        .map_err(|e| format!("running {PRIVATE_REDIS}: {e}"))?;
    if !out.status.success() {
        return Err(format!("private-redis.sh {cmd}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl PrivateRedis {
    /// Starts a fresh server, or says why it cannot.
    pub fn start() -> Result<PrivateRedis, String> {
        let mut b = [0u8; 6];
        rand::rng().fill_bytes(&mut b);
        let dir = std::env::temp_dir().join(format!("keygate-test-redis-{}", hex::encode(b)));
        let url = private_redis("start", &dir)?;
        Ok(PrivateRedis { dir, url })
    }

    /// Stops the server as a crash would (SIGKILL); returns once its port is closed.
    pub fn kill(&self) {
        private_redis("kill", &self.dir).expect("killing the private Redis");
    }

    /// Starts it again on the same port.
    pub fn resume(&self) {
        private_redis("resume", &self.dir).expect("starting the private Redis again");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = private_redis("stop", &self.dir);
    }
}

/// Standard error through libtest's output capture (`eprint!`), which threads a test starts
/// inherit: a server's access log written here shows with a failing test only, as the rest of
/// its log does (`keygate_server::startup::Application::build_with_access_log`).
#[derive(Debug, Default, Clone, Copy)]
pub struct CapturedStderr;

impl std::io::Write for CapturedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        eprint!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

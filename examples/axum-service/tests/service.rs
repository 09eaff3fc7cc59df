//! The example service as a user runs it: the `keygate` CLI makes accounts and keys in a SQLite
//! file, `axum-service` serves on that file with keygate_auth's Layer, and what the CLI (or a
//! running keygate server) does reaches the service: a key gets 1000, a revoked one 1101 within a
//! second, a banned account 1200, a token from keygate's getToken works as Bearer, and the requests
//! are counted in the same database.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SERVICE: &str = env!("CARGO_BIN_EXE_axum-service");

/// The `keygate` binary of this build (beside `axum-service`); built first if it is not there
/// yet (when this package's tests run alone).
fn keygate_bin() -> PathBuf {
    let dir = Path::new(SERVICE).parent().expect("the binary's directory");
    let bin = dir.join("keygate");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "keygate"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build -p keygate");
        assert!(status.success(), "cargo build -p keygate failed");
    }
    assert!(bin.exists(), "no keygate binary at {}", bin.display());
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A command without the test runner's KEYGATE_* and RUST_LOG settings, run in `dir`.
fn command(bin: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("KEYGATE_") || k.starts_with("RUST_LOG") || k.to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(&key);
        }
    }
    cmd.current_dir(dir);
    cmd
}

/// `keygate --json ARGS` in `dir`, its output as JSON.
fn keygate(dir: &Path, args: &[&str]) -> Value {
    let out = command(&keygate_bin(), dir).arg("--json").args(args).output().unwrap();
    assert!(out.status.success(), "keygate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A new account with one credential: (account id, clientId, API key).
fn customer(dir: &Path, email: &str) -> (String, String, String) {
    let account = keygate(dir, &["account", "create", "--email", email])["id"].as_str().unwrap().to_owned();
    let issued = keygate(dir, &["credential", "create", "--account", &account]);
    (account, issued["clientId"].as_str().unwrap().to_owned(), issued["apiKey"].as_str().unwrap().to_owned())
}

/// A child process stopped (SIGTERM, then waited for) when dropped.
struct Running {
    child: Child,
    base: String,
}

impl Running {
    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("the process did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn start(mut cmd: Command, port: u16, ready_path: &str) -> Running {
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap();
    let mut running = Running { child, base: format!("http://127.0.0.1:{port}") };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{}{ready_path}", running.base)).send().await
            && r.status().is_success()
        {
            return running;
        }
        if let Some(status) = running.child.try_wait().unwrap() {
            panic!("the process exited before it served: {status}");
        }
        assert!(Instant::now() < deadline, "not serving within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(base: &str, path: &str, header: Option<(&str, &str)>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// Polls `/hello` with `header` until it answers `code`; how long that took.
async fn until_code(base: &str, header: (&str, &str), code: i64, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (_, body) = get(base, "/hello", Some(header)).await;
        if body["code"] == code {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "no {code} within {limit:?}: last {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_service_decides_as_keygate_does_and_follows_its_writes() {
    let sandbox = tempfile::tempdir().unwrap();
    let dir = sandbox.path();
    // The database keygate would create at its first start (the CLI only opens existing ones).
    let out = command(&keygate_bin(), dir).arg("migrate").output().unwrap();
    assert!(out.status.success(), "keygate migrate: {}", String::from_utf8_lossy(&out.stderr));
    let (account, client_id, key) = customer(dir, "service@example.com");
    let port = free_port();
    let mut service = command(Path::new(SERVICE), dir);
    service.args(["--database-url", "sqlite://keygate.db", "--listen", &format!("127.0.0.1:{port}")]);
    let mut service = start(service, port, "/public").await;
    let base = service.base.clone();

    // A key made by the CLI: 1000 with the identity from the extractor.
    let (status, body) = get(&base, "/hello", Some(("x-api-key", &key))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], 1000);
    assert_eq!(body["data"]["accountId"], account.as_str());
    assert_eq!(body["data"]["clientId"], client_id.as_str());
    assert_eq!(body["data"]["method"], "api_key");
    assert!(body["data"]["uid"].as_i64().is_some_and(|u| u > 0), "{body}");

    // The protocol's refusals, in its envelope; the public path needs nothing.
    let (status, body) = get(&base, "/hello", None).await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1102)), "{body}");
    let (status, body) = get(&base, "/hello", Some(("x-api-key", "kgk_not-a-key"))).await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1101)), "{body}");
    let (status, body) = get(&base, "/public", None).await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(1000)), "{body}");

    // A revoke by the CLI reaches the service through the change feed.
    let (_, revoked_client, revoked_key) = customer(dir, "revoked@example.com");
    until_code(&base, ("x-api-key", &revoked_key), 1000, Duration::from_secs(2)).await;
    let since = Instant::now();
    keygate(dir, &["credential", "revoke", &revoked_client]);
    until_code(&base, ("x-api-key", &revoked_key), 1101, Duration::from_secs(1)).await;
    eprintln!("revoke seen by the service {:?} after the CLI returned", since.elapsed());

    // A ban: 1200 (HTTP 403).
    let (banned, _, banned_key) = customer(dir, "banned@example.com");
    until_code(&base, ("x-api-key", &banned_key), 1000, Duration::from_secs(2)).await;
    keygate(dir, &["account", "ban", &banned, "--reason", "test"]);
    until_code(&base, ("x-api-key", &banned_key), 1200, Duration::from_secs(1)).await;
    let (status, _) = get(&base, "/hello", Some(("x-api-key", &banned_key))).await;
    assert_eq!(status, 403);

    // A token from a running keygate's getToken works as Bearer here.
    let keygate_port = free_port();
    let mut server = command(&keygate_bin(), dir);
    server.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{keygate_port}"),
        "--admin-token",
        "e2e-admin-token-0123456789abcdef",
    ]);
    let mut server = start(server, keygate_port, "/healthz").await;
    let token: Value = reqwest::Client::new()
        .post(format!("{}/api/open/v3/getToken", server.base))
        .json(&serde_json::json!({"clientId": client_id, "clientSecret": key}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap_or_else(|| panic!("no token: {token}")).to_owned();
    let (status, body) = get(&base, "/hello", Some(("authorization", &format!("Bearer {token}")))).await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(1000)), "{body}");
    assert_eq!(body["data"]["method"], "bearer");
    server.stop();

    // The service counted its requests into the same database, written at the latest when it
    // stops (SIGTERM: graceful shutdown, last usage flush). Only the service saw this key.
    service.stop();
    let shown = keygate(dir, &["credential", "show", &revoked_client]);
    assert!(shown["lastUsedAt"].as_i64().is_some(), "the service's requests are counted: {shown}");
}

//! Process lifecycle: zero-config first start in an empty directory, and graceful shutdown.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::Sandbox;

const BANNER: &str = "=== keygate admin API token";

#[tokio::test]
async fn sigterm_exits_zero_promptly() {
    let sb = Sandbox::with_database();
    let account = sb.create_account("term@example.com");
    let (_, key) = sb.create_credential(&account);
    let mut server = sb.start(&[], &[]).await;
    assert_eq!(server.verify_key(&key).await.code(), 1000);

    let asked = Instant::now();
    let status = server.terminate(Duration::from_secs(5));
    let took = asked.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running 5 s after SIGTERM:\n{}", server.output_text()));
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}\n{}", server.output_text());
    eprintln!("serve exited {took:?} after SIGTERM");
    assert!(server.stderr_text().contains("shutting down"), "{}", server.stderr_text());
    // The port is released.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err(),
        "something still listens on {}",
        server.port
    );
    // And the database is consistent for the next process.
    assert_eq!(sb.json(&["account", "show", &account])["account"]["status"], "active");
}

#[tokio::test]
async fn fresh_directory_zero_config() {
    let sb = Sandbox::new();
    assert_eq!(std::fs::read_dir(sb.dir()).unwrap().count(), 0, "the sandbox should start empty");

    // Only --listen (added by `start`).
    let mut server = sb.start(&[], &[]).await;
    let db = sb.path("keygate.db");
    let key = sb.path("keygate.key");
    assert!(db.is_file(), "keygate.db was not created");
    assert!(key.is_file(), "keygate.key was not created");
    // The database holds emails and key hashes: owner only, like the key (hardening finding 6).
    for name in ["keygate.key", "keygate.db", "keygate.db-wal", "keygate.db-shm", "keygate.db-lock"] {
        let path = sb.path(name);
        if name.ends_with("-wal") || name.ends_with("-shm") {
            assert!(path.exists(), "{name} was not created (WAL mode)");
        }
        if path.exists() {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
        }
    }
    let master = std::fs::read_to_string(&key).unwrap();
    assert_eq!(master.trim().len(), 64, "{master:?}");
    assert!(master.trim().bytes().all(|b| b.is_ascii_hexdigit()));

    // The admin token banner, once, on stderr, with a working token.
    let stderr = server.stderr_text();
    assert_eq!(stderr.matches(BANNER).count(), 1, "{stderr}");
    let token = stderr.lines().skip_while(|l| !l.contains(BANNER)).nth(1).unwrap_or_default().trim().to_owned();
    assert!(token.starts_with("kga_") && token.len() == 32, "no admin token after the banner: {stderr}");
    assert_eq!(stderr.matches(token.as_str()).count(), 1, "the admin token is printed more than once: {stderr}");
    let stdout = std::fs::read_to_string(&server.stdout).unwrap();
    assert!(!stdout.contains(&token), "the banner belongs on stderr");
    let r = server.admin(&token, "GET", "/accounts", None).await;
    assert_eq!((r.status, r.code()), (200, 1000), "{r:?}");
    let r = server.admin("kga_wrong_wrong_wrong_wrong_1234", "GET", "/accounts", None).await;
    assert_eq!((r.status, r.code()), (401, 1101), "{r:?}");
    server.stop();

    // Second start: no banner; the same token and master key still work.
    let mut server = sb.start(&[], &[]).await;
    let stderr = server.stderr_text();
    assert!(!stderr.contains(BANNER), "banner printed again: {stderr}");
    assert!(!stderr.contains(&token), "token printed again: {stderr}");
    let r = server.admin(&token, "GET", "/accounts", None).await;
    assert_eq!(r.code(), 1000, "{r:?}");

    // `admin-token reset` from another process takes effect at once.
    let reset = sb.json(&["admin-token", "reset"]);
    let new_token = reset["adminToken"].as_str().unwrap();
    assert!(new_token.starts_with("kga_") && new_token != token, "{reset}");
    let r = server.admin(new_token, "GET", "/accounts", None).await;
    assert_eq!(r.code(), 1000, "{r:?}");
    let r = server.admin(&token, "GET", "/accounts", None).await;
    assert_eq!(r.code(), 1101, "the old admin token still works: {r:?}");
    server.stop();
    assert_eq!(std::fs::read_to_string(&key).unwrap(), master);
    assert!(!server.stderr_text().contains(&token), "token printed at shutdown");
}

#[test]
fn migrate_in_an_empty_directory() {
    let sb = Sandbox::new();
    let out = sb.run(&["migrate"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("database is up to date"));
    assert!(sb.path("keygate.db").is_file());
    // Idempotent.
    assert!(sb.run(&["migrate"]).status.success());
}

/// Several processes creating a database that does not exist yet (say `keygate serve` started
/// by a service manager while an operator runs `keygate migrate`, or two of them in a script)
/// must all succeed, and share one master key.
#[test]
fn concurrent_first_use_of_a_fresh_directory() {
    for round in 0..5 {
        let sb = Sandbox::new();
        let children: Vec<_> = (0..4)
            .map(|_| {
                sb.cmd().arg("migrate").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn keygate")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        }
        for i in 0..4 {
            sb.create_account(&format!("c{i}@example.com"));
        }
        assert_eq!(sb.json(&["account", "list"]).as_array().unwrap().len(), 4);
    }
}

/// The access log is written off the request's way, in blocks: by the time a graceful shutdown
/// has ended, every answered request's line is there, once, whole, in the chosen format, and
/// `RUST_LOG=keygate::access=off` turns it off.
#[tokio::test]
async fn every_answered_request_is_in_the_access_log_after_sigterm() {
    for format in ["text", "json"] {
        let sb = Sandbox::with_database();
        let account = sb.create_account("log@example.com");
        let (client_id, key) = sb.create_credential(&account);
        let mut server = sb.start(&["--log-format", format], &[]).await;
        let mut ids = Vec::new();
        for batch in 0..25 {
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..16 {
                // A refused request is logged as well as an accepted one.
                let key = if (batch + i) % 5 == 0 { "kg_not-a-key".to_owned() } else { key.clone() };
                let req = server.http.post(server.url("/auth/verify")).header("x-api-key", key).body("{}");
                calls.spawn(async move { req.send().await.expect("HTTP request") });
            }
            while let Some(res) = calls.join_next().await {
                let res = res.unwrap();
                let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
                ids.push((id, res.status().as_u16()));
            }
        }
        server.stop();
        let stderr = server.stderr_text();
        let access: Vec<&str> =
            stderr.lines().filter(|l| l.contains("keygate::access") && l.contains("/auth/verify")).collect();
        assert_eq!(access.len(), ids.len(), "one line per request ({format}):\n{stderr}");
        for (id, status) in &ids {
            let mine: Vec<&&str> = access.iter().filter(|l| l.contains(id.as_str())).collect();
            assert_eq!(mine.len(), 1, "request {id} logged once ({format})");
            let line = mine[0];
            if format == "json" {
                let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                let f = &v["fields"];
                assert_eq!(f["request_id"], id.as_str());
                assert_eq!(f["status"].as_u64(), Some(u64::from(*status)));
                assert_eq!(f["path"], "/auth/verify");
                assert_eq!(f["method"], "POST");
                let expected_client = if *status == 200 { client_id.as_str() } else { "" };
                assert_eq!(f["client_id"], expected_client);
                assert!(f["latency_us"].as_u64().is_some());
            } else {
                assert!(line.contains(&format!("status={status} ")), "{line}");
                assert!(line.contains(" INFO keygate::access: request_id=\""), "{line}");
                assert!(!line.contains("kg_not-a-key") && !line.contains(key.as_str()), "no key in the log: {line}");
            }
        }
    }

    // Switched off through RUST_LOG as any other log target.
    let sb = Sandbox::with_database();
    let account = sb.create_account("quiet@example.com");
    let (_, key) = sb.create_credential(&account);
    let mut server = sb.start(&[], &[("RUST_LOG", "info,keygate::access=off")]).await;
    assert_eq!(server.verify_key(&key).await.code(), 1000);
    server.stop();
    assert!(!server.stderr_text().contains("keygate::access"), "{}", server.stderr_text());
}

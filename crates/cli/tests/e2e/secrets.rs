//! Secrets never reach the disk or the logs: the database files hold no API key, token or admin
//! token, and a server logging at trace level prints none of what it was sent.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::support::{Sandbox, Server, admin_token, assert_no_secrets, find, send, unique};

/// What to search for: a secret and the parts of it that must not leak alone either
/// (an API key's random body without its prefix, a token's signature).
fn variants(label: &str, secret: &str) -> Vec<(String, String)> {
    let mut v = vec![(label.to_owned(), secret.to_owned())];
    if secret.starts_with("kgk_") || secret.starts_with("kga_") {
        v.push((format!("{label} (random part)"), secret[4..26].to_owned()));
    }
    let parts: Vec<&str> = secret.split('.').collect();
    if parts.len() == 3 && parts[2].len() >= 16 {
        v.push((format!("{label} (signature)"), parts[2].to_owned()));
    }
    v
}

#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, label: &str, secret: &str) {
        self.0.extend(variants(label, secret));
    }

    fn check(&self, what: &str, haystack: &[u8]) {
        let list: Vec<(&str, String)> = self.0.iter().map(|(l, s)| (l.as_str(), s.clone())).collect();
        assert_no_secrets(what, haystack, &list);
    }
}

/// Reads every file of the SQLite database (`keygate.db`, `-wal`, `-shm`, `-journal`).
fn database_files(sb: &Sandbox) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(sb.dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("keygate.db") {
            files.push((name, std::fs::read(entry.path()).unwrap()));
        }
    }
    assert!(files.iter().any(|(n, _)| n == "keygate.db"), "no keygate.db in {:?}", sb.dir());
    files
}

#[tokio::test]
async fn no_secrets_at_rest() {
    let sb = Sandbox::with_database();
    let admin = admin_token();
    let mut secrets = Secrets::default();
    secrets.add("admin token", &admin);

    let a = sb.create_account("rest-a@example.com");
    let (ca1, ka1) = sb.create_credential(&a);
    let (ca2, ka2) = sb.create_credential(&a);
    secrets.add("CLI key 1", &ka1);
    secrets.add("CLI key 2", &ka2);

    let mut server = sb.start(&["--admin-token", &admin], &[]).await;
    for (c, k) in [(&ca1, &ka1), (&ca2, &ka2)] {
        let t = server.token(c, k).await;
        assert_eq!(server.verify_bearer(&t).await.code(), 1000);
        secrets.add("token", &t);
    }

    // Through the admin API.
    let r = server.admin(&admin, "POST", "/accounts", Some(json!({"email": "rest-b@example.com"}))).await;
    let b = r.body["data"]["id"].as_str().unwrap().to_owned();
    let r = server.admin(&admin, "POST", &format!("/accounts/{b}/credentials"), None).await;
    assert_eq!(r.status, 201, "{r:?}");
    let cb = r.body["data"]["clientId"].as_str().unwrap().to_owned();
    let kb = r.body["data"]["apiKey"].as_str().unwrap().to_owned();
    secrets.add("HTTP key", &kb);
    let tb = server.token(&cb, &kb).await;
    secrets.add("HTTP key's token", &tb);

    // Rotations, with grace, through both paths; tokens from the new keys.
    let rotated = sb.json(&["credential", "rotate", &ca1, "--grace", "1h"]);
    let ka1b = rotated["apiKey"].as_str().unwrap().to_owned();
    secrets.add("CLI-rotated key", &ka1b);
    let r = server.admin(&admin, "POST", &format!("/credentials/{cb}/rotate"), Some(json!({"grace": "1h"}))).await;
    assert_eq!(r.code(), 1000, "{r:?}");
    let kbb = r.body["data"]["apiKey"].as_str().unwrap().to_owned();
    secrets.add("HTTP-rotated key", &kbb);
    // The CLI's rotation reaches the server through the change feed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.verify_key(&ka1b).await.code() != 1000 {
        assert!(std::time::Instant::now() < deadline, "the CLI's rotation never reached the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (c, k) in [(&ca1, &ka1b), (&ca1, &ka1), (&cb, &kbb), (&cb, &kb)] {
        assert_eq!(server.verify_key(k).await.code(), 1000);
        let t = server.token(c, k).await;
        assert_eq!(server.verify_bearer(&t).await.code(), 1000);
        secrets.add("token after rotation", &t);
    }

    // A new signing key, and tokens signed with it.
    sb.json(&["signing-key", "rotate"]);
    let r = server.admin(&admin, "POST", "/signing-keys/rotate", None).await;
    assert_eq!(r.code(), 1000, "{r:?}");
    let t = server.token(&ca2, &ka2).await;
    secrets.add("token after signing-key rotation", &t);

    // A replaced admin token (the stored one; this server uses the configured one).
    let reset = sb.json(&["admin-token", "reset"]);
    secrets.add("reset admin token", reset["adminToken"].as_str().unwrap());

    // The master key lives in keygate.key, never in the database.
    let master = std::fs::read_to_string(sb.path("keygate.key")).unwrap();
    secrets.add("master key", master.trim());

    // While the server runs (recent writes sit in the WAL)...
    let files = database_files(&sb);
    assert!(
        files.iter().any(|(n, _)| n == "keygate.db-wal"),
        "expected a WAL file while the server runs: {:?}",
        files.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for (name, bytes) in &files {
        secrets.check(&format!("{name} (server running)"), bytes);
    }
    // Sanity: the search works on these bytes (the account's email is stored in clear).
    let db = &files.iter().find(|(n, _)| n == "keygate.db").unwrap().1;
    let wal = files.iter().find(|(n, _)| n == "keygate.db-wal").map(|(_, b)| b.as_slice()).unwrap_or_default();
    assert!(
        find(db, b"rest-a@example.com").is_some() || find(wal, b"rest-a@example.com").is_some(),
        "the email should be findable in the database bytes"
    );

    // ...and after a clean shutdown (checkpointed into the main file).
    server.stop();
    for (name, bytes) in database_files(&sb) {
        secrets.check(&format!("{name} (server stopped)"), &bytes);
    }
}

/// Starts a server with the given logging, exercises every path that handles a secret,
/// stops it, and checks that its output contains none of them.
async fn exercise_logging(log_args: &[&str], rust_log: &str) -> String {
    let sb = Sandbox::with_database();
    let admin = admin_token();
    let mut secrets = Secrets::default();
    secrets.add("admin token", &admin);

    let a = sb.create_account("logs@example.com");
    let (c1, k1) = sb.create_credential(&a);
    let (_c2, k2) = sb.create_credential(&a);
    let (c3, k3) = sb.create_credential(&a);
    sb.json(&["credential", "revoke", &c3]);
    secrets.add("valid key", &k1);
    secrets.add("other account key", &k2);
    secrets.add("revoked key", &k3);

    let mut args = vec!["--admin-token", admin.as_str()];
    args.extend_from_slice(log_args);
    let mut server: Server = sb.start(&args, &[("RUST_LOG", rust_log)]).await;
    let http = &server.http;
    let post = |path: &str| http.post(server.url(path));

    // x-api-key: valid, revoked, malformed, header name in other cases.
    assert_eq!(server.verify_key(&k1).await.code(), 1000);
    assert_eq!(server.verify_key(&k3).await.code(), 1101);
    let malformed = unique("kgk_NotAKeyButSecret", 32);
    secrets.add("malformed key", &malformed);
    assert_eq!(server.verify_key(&malformed).await.code(), 1101);
    let free_text = unique("free-text-secret-", 40);
    secrets.add("non-key x-api-key value", &free_text);
    assert_eq!(server.verify_key(&free_text).await.code(), 1101);
    let r = send(post("/auth/verify").header("X-API-KEY", &k1)).await;
    assert_eq!(r.code(), 1000, "{r:?}");
    // The legacy header pair.
    let r = send(post("/auth/verify").header("x-client-id", &c1).header("x-client-secret", &k1)).await;
    assert_eq!(r.code(), 1000, "{r:?}");
    let r = send(post("/auth/verify").header("x-client-id", &c1).header("x-client-secret", &k2)).await;
    assert_eq!(r.code(), 1101, "{r:?}");

    // getToken: valid, wrong secret (another key, free text), malformed bodies with secrets.
    let t1 = server.token(&c1, &k1).await;
    secrets.add("token", &t1);
    assert_eq!(server.get_token(&c1, &k2).await.code(), 1101);
    let wrong = unique("wrong-client-secret-", 40);
    secrets.add("wrong clientSecret", &wrong);
    assert_eq!(server.get_token(&c1, &wrong).await.code(), 1101);
    let in_bad_json = unique("secret-in-bad-json-", 40);
    secrets.add("secret in malformed JSON", &in_bad_json);
    for body in [
        format!("{{\"clientId\": \"{c1}\", \"clientSecret\": \"{in_bad_json}\""),
        format!("{{\"clientId\": \"{c1}\", \"clientSecret\": \"{k1}\"}} trailing {in_bad_json}"),
        format!("{{\"clientId\": 7, \"clientSecret\": \"{in_bad_json}\"}}"),
        format!("{{\"clientId\": \"{c1}\", \"clientSecret\": [\"{k1}\"]}}"),
        format!("clientId={c1}&clientSecret={in_bad_json}"),
    ] {
        let r = send(post("/api/open/v3/getToken").header("content-type", "application/json").body(body.clone())).await;
        assert_eq!(r.code(), 1003, "{body}: {r:?}");
        assert!(
            !r.body.to_string().contains(&in_bad_json) && !r.body.to_string().contains(&k1),
            "the answer echoes the secret: {r:?}"
        );
    }

    // Bearer: valid, tampered, garbage, an API key as the Bearer value.
    assert_eq!(server.verify_bearer(&t1).await.code(), 1000);
    let mut tampered = t1.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    secrets.add("tampered token", &tampered);
    assert_eq!(server.verify_bearer(&tampered).await.code(), 1101);
    let garbage = unique("garbage.bearer.value-", 48);
    secrets.add("garbage bearer", &garbage);
    assert_eq!(server.verify_bearer(&garbage).await.code(), 1101);
    let _ = server.verify_bearer(&k1).await;
    let _ = server.verify_bearer(&k3).await;

    // The same over HTTP/2 (cleartext, prior knowledge), when curl can do it.
    let h2 = Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            &server.url("/auth/verify"),
            "-H",
            &format!("x-api-key: {k1}"),
            "-H",
            &format!("Authorization: Bearer {t1}"),
        ])
        .env_clear()
        .output();
    match h2 {
        Ok(out) if out.status.success() => {
            let body = String::from_utf8_lossy(&out.stdout);
            assert!(body.contains("\"code\":1000"), "HTTP/2 verify: {body}");
        }
        _ => eprintln!("note: curl with HTTP/2 unavailable; HTTP/2 logging not exercised"),
    }

    // Admin API with the admin token: create, rotate, ban, signing keys.
    let r = server.admin(&admin, "GET", "/accounts", None).await;
    assert_eq!(r.code(), 1000, "{r:?}");
    let r = server.admin(&admin, "POST", "/accounts", Some(json!({"email": "logs-b@example.com"}))).await;
    let b = r.body["data"]["id"].as_str().unwrap().to_owned();
    let r = server.admin(&admin, "POST", &format!("/accounts/{b}/credentials"), None).await;
    let cb = r.body["data"]["clientId"].as_str().unwrap().to_owned();
    let kb = r.body["data"]["apiKey"].as_str().unwrap().to_owned();
    secrets.add("key created over HTTP", &kb);
    let r = server.admin(&admin, "POST", &format!("/credentials/{cb}/rotate"), None).await;
    let kb2 = r.body["data"]["apiKey"].as_str().unwrap().to_owned();
    secrets.add("key rotated over HTTP", &kb2);
    assert_eq!(server.verify_key(&kb).await.code(), 1101);
    assert_eq!(server.verify_key(&kb2).await.code(), 1000);
    let rotated = sb.json(&["credential", "rotate", &c1]);
    let k1b = rotated["apiKey"].as_str().unwrap().to_owned();
    secrets.add("key rotated by the CLI", &k1b);
    let r = server.admin(&admin, "POST", "/signing-keys/rotate", None).await;
    assert_eq!(r.code(), 1000, "{r:?}");
    let tb = server.token(&cb, &kb2).await;
    secrets.add("token after signing-key rotation", &tb);
    assert_eq!(server.verify_bearer(&tb).await.code(), 1000);
    let r = server.admin(&admin, "POST", &format!("/accounts/{b}/ban"), Some(json!({"reason": "logs"}))).await;
    assert_eq!(r.code(), 1000, "{r:?}");
    assert_eq!(server.verify_bearer(&tb).await.code(), 1200);
    assert_eq!(server.verify_key(&kb2).await.code(), 1200);
    // Refused admin calls: a wrong token, a customer key, a customer token; bad JSON.
    let wrong_admin = unique("wrong-admin-token-", 32);
    secrets.add("wrong admin token", &wrong_admin);
    for t in [&wrong_admin, &k1b, &tb] {
        let r = server.admin(t, "GET", "/accounts", None).await;
        assert_eq!(r.code(), 1101, "{r:?}");
    }
    let r = send(
        post("/admin/v1/accounts")
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(format!("{{\"email\": \"{in_bad_json}")),
    )
    .await;
    assert_eq!(r.code(), 1003, "{r:?}");
    let r = send(
        post(&format!("/admin/v1/credentials/{cb}/rotate"))
            .bearer_auth(&admin)
            .body(format!("{{\"grace\": \"{in_bad_json}\"}}")),
    )
    .await;
    assert_eq!(r.code(), 1003, "{r:?}");

    // Positive control: something request-derived that is logged (the path, at debug level),
    // so we know the search below looks at the request logs.
    let marker = unique("marker-", 40);
    let r = send(http.get(server.url(&format!("/{marker}")))).await;
    assert_eq!(r.status, 404, "{r:?}");

    server.stop();
    let output = server.output_text();
    assert!(output.contains(&marker), "the request log was not captured (no {marker}): {output}");
    secrets.check(&format!("the output of `keygate serve` with RUST_LOG={rust_log} {log_args:?}"), output.as_bytes());
    assert!(output.contains("keygate listening"), "the log was not captured: {output}");
    assert!(output.contains("authentication refused"), "debug events were not logged: {output}");
    output
}

#[tokio::test]
async fn no_secrets_in_trace_logs() {
    let out = exercise_logging(&[], "trace").await;
    assert!(out.contains("TRACE"), "RUST_LOG=trace did not apply");
}

#[tokio::test]
async fn no_secrets_in_json_debug_logs() {
    let out = exercise_logging(&["--log-format", "json"], "debug").await;
    let first = out.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(serde_json::from_str::<serde_json::Value>(first).is_ok(), "not JSON logs: {first}");
}

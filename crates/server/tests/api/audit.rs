//! The audit log through the admin API: every admin write is recorded with the admin token as
//! its actor, the client's address (behind a trusted proxy, the client's) and the request id
//! the answer carries; the listing's filters are checked; retention prunes old entries.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, wait_until};

/// The entries of the admin API's listing at `query` (asserting success).
async fn audit(app: &TestApp, query: &str) -> (Vec<Value>, Option<String>) {
    let r = app.admin_get(&format!("/audit{query}")).await;
    r.expect(200, 1000);
    let items = r.data().as_array().expect("a list").clone();
    (items, r.body["next"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn admin_api_writes_are_audited_with_their_address_and_request_id() {
    let app = TestApp::spawn().await;
    let account = app.create_account().await;
    let id = account["id"].as_str().unwrap().to_owned();
    let created = app.admin_post(&format!("/accounts/{id}/credentials"), Some(json!({"name": "ci"}))).await;
    created.expect(201, 1000);
    let client_id = created.data()["clientId"].as_str().unwrap().to_owned();
    let api_key = created.data()["apiKey"].as_str().unwrap().to_owned();
    let patched = app
        .patch(
            &format!("/credentials/{client_id}"),
            json!({"name": "ci (read-only)", "permissions": ["videos.read"], "credits": {"remaining": 10}}),
        )
        .await;
    patched.expect(200, 1000);
    let rotated = app.admin_post(&format!("/credentials/{client_id}/rotate"), Some(json!({"grace": "1h"}))).await;
    rotated.expect(200, 1000);
    let new_key = rotated.data()["apiKey"].as_str().unwrap().to_owned();
    let put = app.admin_send(Method::PUT, "/roles/reader", Some(json!({"permissions": ["images.read"]}))).await;
    put.expect(201, 1000);
    app.ban(&id, "chargeback").await.expect(200, 1000);

    // The account's history: its own entries and its credential's, newest first.
    let (history, next) = audit(&app, &format!("?account={id}")).await;
    assert_eq!(next, None);
    let actions: Vec<&str> = history.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "account.ban",
            "credential.rotate",
            "credential.credits",
            "credential.update",
            "credential.create",
            "account.create"
        ]
    );
    for e in &history {
        assert_eq!((e["actorKind"].as_str(), e["actor"].as_str()), (Some("admin_token"), Some("admin token")), "{e}");
        assert_eq!(e["sourceIp"], "127.0.0.1", "{e}");
        assert_eq!(e["accountId"], id.as_str(), "{e}");
    }
    // The id each entry carries is the one its answer carried (and the log's).
    assert_eq!(history[1]["requestId"].as_str(), rotated.header("x-request-id"));
    assert_eq!(history[3]["requestId"].as_str(), patched.header("x-request-id"));
    assert_eq!(history[4]["requestId"].as_str(), created.header("x-request-id"));
    // What changed, on both sides, and nothing else.
    assert_eq!(history[3]["before"], json!({"name": "ci", "permissions": []}));
    assert_eq!(history[3]["after"], json!({"name": "ci (read-only)", "permissions": ["videos.read"]}));
    assert_eq!(history[2]["after"], json!({"credits": {"remaining": 10, "refill": null}}));
    assert_eq!(history[0]["after"], json!({"status": "banned", "banReason": "chargeback"}));

    // Targets other than accounts, and filters.
    let (roles, _) = audit(&app, "?action=role").await;
    assert_eq!((roles.len(), roles[0]["target"].as_str()), (1, Some("reader")));
    let (mine, _) = audit(&app, &format!("?target={client_id}&action=credential.rotate")).await;
    assert_eq!(mine.len(), 1);
    let (everything, _) = audit(&app, "?limit=1000").await;
    // Never a secret: not the keys, not the admin token.
    let text = serde_json::to_string(&everything).unwrap();
    for secret in [api_key.as_str(), new_key.as_str(), app.admin_token.as_str()] {
        assert!(!text.contains(secret), "a secret is in the audit log");
    }

    // Pages by cursor, newest first, with nothing lost or repeated.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (page, next) = audit(&app, &format!("?account={id}&limit=2{cursor}")).await;
        seen.extend(page.iter().map(|e| e["id"].as_i64().unwrap()));
        match next {
            Some(n) => cursor = format!("&cursor={n}"),
            None => break,
        }
    }
    assert_eq!(seen, history.iter().map(|e| e["id"].as_i64().unwrap()).collect::<Vec<_>>());

    // There is no door to change or remove an entry.
    let entry = history[0]["id"].as_i64().unwrap();
    for method in [Method::PUT, Method::PATCH, Method::DELETE, Method::POST] {
        let r = app.admin_send(method.clone(), "/audit", Some(json!({"id": entry}))).await;
        assert_eq!(r.status, 405, "{method} /admin/v1/audit");
    }
}

#[tokio::test]
async fn bad_filters_are_refused_in_the_envelope() {
    let app = TestApp::spawn().await;
    let long_target = format!("?target={}", "0".repeat(321));
    for (query, needle) in [
        ("?action=credential.delete", "action must be one of"),
        ("?from=yesterday", "from must be"),
        ("?from=2026-02-01&to=2026-01-01", "from must be before to"),
        ("?cursor=abc", "cursor"),
        ("?account=nope", "account must be an accountId"),
        ("?limit=0", "limit must be between 1 and 1000"),
        ("?limit=x", "query must be"),
        (long_target.as_str(), "target must be at most 320 characters"),
    ] {
        let r = app.admin_get(&format!("/audit{query}")).await;
        r.expect(400, 1003);
        assert!(r.body["msg"].as_str().unwrap().contains(needle), "{query}: {}", r.text);
    }
    let anonymous = app.send(app.client.get(app.url("/admin/v1/audit"))).await;
    anonymous.expect(401, 1102);
}

#[tokio::test]
async fn the_client_behind_a_trusted_proxy_is_recorded_not_the_proxy() {
    let app = TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let r = app
        .send(
            app.client
                .post(app.url("/admin/v1/accounts"))
                .bearer_auth(&app.admin_token)
                .header("x-forwarded-for", "198.51.100.7")
                .header("x-request-id", "edge-42")
                .json(&json!({"email": "behind@example.com"})),
        )
        .await;
    r.expect(201, 1000);
    let (entries, _) = audit(&app, "?action=account.create").await;
    assert_eq!(
        (entries[0]["sourceIp"].as_str(), entries[0]["requestId"].as_str()),
        (Some("198.51.100.7"), Some("edge-42"))
    );

    // Without trusted proxies, what a client writes in those headers is not believed.
    let direct = TestApp::spawn().await;
    let r = direct
        .send(
            direct
                .client
                .post(direct.url("/admin/v1/accounts"))
                .bearer_auth(&direct.admin_token)
                .header("x-forwarded-for", "198.51.100.7")
                .header("x-request-id", "chosen-by-client")
                .json(&json!({"email": "direct@example.com"})),
        )
        .await;
    r.expect(201, 1000);
    let (entries, _) = audit(&direct, "?action=account.create").await;
    assert_eq!(entries[0]["sourceIp"], "127.0.0.1");
    assert_ne!(entries[0]["requestId"], "chosen-by-client");
    assert_eq!(entries[0]["requestId"].as_str(), r.header("x-request-id"));
}

#[tokio::test]
async fn retention_deletes_entries_older_than_it() {
    let first = TestApp::spawn().await;
    let old = first.create_account().await;
    let (entries, _) = audit(&first, "?action=account.create").await;
    assert_eq!(entries.len(), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // A node with a 1 s retention, on the same database, prunes at start.
    let url = first.database_url.clone();
    let second = TestApp::spawn_with(|c| {
        c.database_url = url;
        c.audit.retention = Duration::from_secs(1);
    })
    .await;
    let fresh = second.create_account().await;
    wait_until(Duration::from_secs(5), "the old entry is pruned", || async {
        audit(&second, &format!("?target={}", old["id"].as_str().unwrap())).await.0.is_empty()
    })
    .await;
    let (kept, _) = audit(&second, &format!("?target={}", fresh["id"].as_str().unwrap())).await;
    assert_eq!(kept.len(), 1, "newer entries stay");
}

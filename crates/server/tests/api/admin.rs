//! The admin API: who may call it, what it validates, how it answers.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, TestApp, unique_email};

const UNKNOWN_ID: &str = "0123456789abcdef01234567";

#[tokio::test]
async fn admin_api_requires_the_admin_token() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let token = app.token(&c).await;
    let url = app.url("/admin/v1/accounts");

    let r = app.send(app.client.get(&url)).await;
    r.expect(401, 1102);
    assert!(r.data().is_null());
    let r = app.send(app.client.get(&url).header("authorization", "Bearer ")).await;
    r.expect(401, 1102);
    // The admin token, but not as a Bearer credential.
    let r = app.send(app.client.get(&url).header("x-api-key", ADMIN_TOKEN)).await;
    r.expect(401, 1102);
    let r = app.send(app.client.get(&url).header("authorization", format!("Basic {ADMIN_TOKEN}"))).await;
    assert_eq!(r.status, 401, "{}", r.text);

    let mut wrong = ADMIN_TOKEN.to_owned();
    wrong.push('x');
    for bearer in [
        "kga_wrong-admin-token-0123456789abcdef",
        wrong.as_str(),
        &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1],
        // A customer's credentials are not admin credentials.
        c.api_key.as_str(),
        token.as_str(),
    ] {
        let r = app.send(app.client.get(&url).bearer_auth(bearer)).await;
        r.expect(401, 1101);
        assert!(r.data().is_null(), "{}", r.text);
    }

    // Writes are refused too, and change nothing.
    let r = app
        .send(app.client.post(app.url(&format!("/admin/v1/accounts/{}/ban", c.account_id))).bearer_auth(&c.api_key))
        .await;
    r.expect(401, 1101);
    let r = app.send(app.client.post(&url).json(&json!({"email": unique_email()}))).await;
    r.expect(401, 1102);
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    let r = app.admin_get("/accounts").await;
    r.expect(200, 1000);
    assert_eq!(r.data().as_array().unwrap().len(), 1, "{}", r.text);

    // The scheme's case does not matter for the right token.
    let r = app.send(app.client.get(&url).header("authorization", format!("bearer {ADMIN_TOKEN}"))).await;
    r.expect(200, 1000);
    // And the admin token is not a customer credential.
    app.verify_bearer(ADMIN_TOKEN).await.expect_invalid();
    app.verify_key(ADMIN_TOKEN).await.expect_invalid();
}

#[tokio::test]
async fn accounts_are_validated() {
    let app = TestApp::spawn().await;
    let r = app.create_account_as("  First@Example.com ").await;
    r.expect(201, 1000);
    let a = r.data();
    assert_eq!(a["email"], "First@Example.com");
    assert_eq!(a["firstName"], "Test");
    assert_eq!(a["status"], "active");
    assert!(a["uid"].is_i64());
    let id = a["id"].as_str().unwrap();
    assert!(id.len() == 24 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");

    for email in [
        "",
        "nope",
        "a@b",
        "@example.com",
        "a@",
        "a b@example.com",
        "a@b@example.com",
        "a@.example.com",
        "a@example.com.",
    ] {
        let r = app.create_account_as(email).await;
        assert_eq!(r.code(), Some(1003), "{email:?}: {}", r.text);
        r.expect(400, 1003);
    }
    let too_long = format!("{}@example.com", "a".repeat(250));
    app.create_account_as(&too_long).await.expect(400, 1003);

    for body in [
        json!({}),
        json!({"firstName": "No email"}),
        json!({"email": 42}),
        json!({"email": unique_email(), "role": "admin"}),
        json!([unique_email()]),
        json!({"email": unique_email(), "firstName": "x".repeat(101)}),
        json!({"email": unique_email(), "firstName": "bell\u{7}"}),
    ] {
        let r = app.admin_post("/accounts", Some(body.clone())).await;
        assert_eq!(r.code(), Some(1003), "{body}: {}", r.text);
        r.expect(400, 1003);
    }
    let r = app.send(app.client.post(app.url("/admin/v1/accounts")).bearer_auth(ADMIN_TOKEN).body("{not json")).await;
    r.expect(400, 1003);
    let huge = json!({"email": unique_email(), "firstName": "x".repeat(70 * 1024)});
    app.admin_post("/accounts", Some(huge)).await.expect(413, 1003);

    // Duplicate emails, whatever their case, conflict.
    for dup in ["First@Example.com", "first@example.com", "FIRST@EXAMPLE.COM", " first@example.com"] {
        let r = app.create_account_as(dup).await;
        assert_eq!(r.status, 409, "{dup:?}: {}", r.text);
        r.expect(409, 1003);
    }
    let r = app.admin_get("/accounts").await;
    assert_eq!(r.data().as_array().unwrap().len(), 1, "{}", r.text);
}

#[tokio::test]
async fn unknown_ids_are_404_and_malformed_ids_400() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let account_paths = [
        (Method::GET, "/accounts/{}"),
        (Method::POST, "/accounts/{}/ban"),
        (Method::POST, "/accounts/{}/unban"),
        (Method::GET, "/accounts/{}/credentials"),
        (Method::POST, "/accounts/{}/credentials"),
    ];
    let credential_paths = [
        (Method::GET, "/credentials/{}"),
        (Method::POST, "/credentials/{}/revoke"),
        (Method::POST, "/credentials/{}/rotate"),
    ];
    let call = |method: Method, path: String| {
        app.send(app.client.request(method, app.url(&format!("/admin/v1{path}"))).bearer_auth(ADMIN_TOKEN))
    };
    for (method, path) in account_paths.iter().chain(&credential_paths) {
        let r = call(method.clone(), path.replace("{}", UNKNOWN_ID)).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
        // The vendor's 1109 "account does not exist" for accounts; 1003 for other ids.
        r.expect(404, if path.starts_with("/accounts") { 1109 } else { 1003 });
        for bad in [
            "nope",
            "0123456789ABCDEF01234567",
            "0123456789abcdef0123456",
            "0123456789abcdef012345678",
            "0123456789abcdef0123456g",
        ] {
            let r = call(method.clone(), path.replace("{}", bad)).await;
            assert_eq!(r.status, 400, "{method} {path} {bad}: {}", r.text);
            r.expect(400, 1003);
        }
    }
    // An account id is not a credential id and the other way round.
    call(Method::GET, format!("/credentials/{}", c.account_id)).await.expect(404, 1003);
    call(Method::GET, format!("/accounts/{}", c.client_id)).await.expect(404, 1109);
    // Nothing was changed by the refused calls.
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
}

#[tokio::test]
async fn account_detail_shows_ban_events_with_reason() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    app.ban(&c.account_id, "chargeback fraud").await;

    let r = app.admin_get(&format!("/accounts/{}", c.account_id)).await;
    r.expect(200, 1000);
    let a = r.data();
    assert_eq!(a["id"], c.account_id.as_str());
    assert_eq!(a["email"], c.email.as_str());
    assert_eq!(a["status"], "banned");
    assert_eq!(a["banReason"], "chargeback fraud");
    let events = a["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{}", r.text);
    assert_eq!(events[0]["kind"], "banned");
    assert_eq!(events[0]["reason"], "chargeback fraud");
    assert_eq!(events[0]["actor"], "admin-api");
    assert!(events[0]["at"].is_i64());

    app.unban(&c.account_id).await;
    // A ban without a body (no reason) is accepted.
    let r = app.admin_post(&format!("/accounts/{}/ban", c.account_id), None).await;
    r.expect(200, 1000);
    assert!(r.data().get("banReason").is_none(), "{}", r.text);

    let r = app.admin_get(&format!("/accounts/{}", c.account_id)).await;
    let kinds: Vec<&str> = r.data()["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["banned", "unbanned", "banned"], "{}", r.text);

    // Reasons are bounded; bad bodies are refused.
    let path = format!("/accounts/{}/ban", c.account_id);
    app.admin_post(&path, Some(json!({"reason": "x".repeat(501)}))).await.expect(400, 1003);
    app.admin_post(&path, Some(json!({"reason": 5}))).await.expect(400, 1003);
    app.admin_post(&path, Some(json!({"why": "x"}))).await.expect(400, 1003);
}

#[tokio::test]
async fn listings_and_credentials_never_show_secrets() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let (second_id, second_key) = app.create_credential(&c.account_id).await;
    app.customer().await;

    let r = app.admin_get(&format!("/accounts/{}/credentials", c.account_id)).await;
    r.expect(200, 1000);
    let creds = r.data().as_array().unwrap();
    assert_eq!(creds.len(), 2, "{}", r.text);
    for (id, key) in [(&c.client_id, &c.api_key), (&second_id, &second_key)] {
        let cred = creds.iter().find(|x| x["clientId"] == id.as_str()).unwrap();
        assert_eq!(cred["status"], "active");
        assert_eq!(cred["generation"], 1);
        assert_eq!(cred["hint"], format!("kgk_...{}", &key[28..]));
        assert!(!r.text.contains(&key[4..]), "a listing shows a secret");
    }
    let r = app.admin_get(&format!("/credentials/{}", c.client_id)).await;
    r.expect(200, 1000);
    assert_eq!(r.data()["accountId"], c.account_id.as_str());
    assert!(!r.text.contains(&c.api_key[4..]));

    let r = app.admin_get(&format!("/accounts?q={}", c.email)).await;
    r.expect(200, 1000);
    let found = r.data().as_array().unwrap();
    assert_eq!(found.len(), 1, "{}", r.text);
    assert_eq!(found[0]["id"], c.account_id.as_str());
    app.admin_get("/accounts?limit=0").await.expect(400, 1003);
    app.admin_get("/accounts?limit=abc").await.expect(400, 1003);
    let r = app.admin_get("/accounts?limit=1").await;
    assert_eq!(r.data().as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn rotation_grace_is_validated() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let path = format!("/credentials/{}/rotate", c.client_id);
    for body in
        [json!({"grace": "soon"}), json!({"grace": "91d"}), json!({"grace": 5}), json!({"grace": "1h", "extra": true})]
    {
        let r = app.admin_post(&path, Some(body.clone())).await;
        assert_eq!(r.code(), Some(1003), "{body}: {}", r.text);
        r.expect(400, 1003);
    }
    // Nothing rotated.
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    let r = app.admin_get(&format!("/credentials/{}", c.client_id)).await;
    assert_eq!(r.data()["generation"], 1);
}

#[tokio::test]
async fn lists_are_paged_with_a_cursor() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.create_account().await["id"].as_str().unwrap().to_owned());
    }
    // Pages of two, followed by `next` until it is absent: every account once, in order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/accounts?limit=2&after={a}"),
            None => "/accounts?limit=2".into(),
        };
        let r = app.admin_get(&path).await;
        r.expect(200, 1000);
        let page = r.data().as_array().unwrap();
        assert!(page.len() <= 2, "{}", r.text);
        seen.extend(page.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        match r.body.get("next") {
            Some(next) => after = Some(next.as_str().expect("a string cursor").to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    app.admin_get("/accounts?after=not-a-cursor").await.expect(400, 1003);

    // The same for an account's credentials, by clientId (creation second first).
    let account = &ids[0];
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(app.create_credential(account).await.0);
    }
    clients.sort();
    let r = app.admin_get(&format!("/accounts/{account}/credentials?limit=2")).await;
    assert_eq!(r.data().as_array().unwrap().len(), 2);
    let next = r.body["next"].as_str().expect("a next cursor").to_owned();
    assert_eq!(next, clients[1]);
    let r = app.admin_get(&format!("/accounts/{account}/credentials?limit=2&after={next}")).await;
    let rest: Vec<&str> = r.data().as_array().unwrap().iter().map(|c| c["clientId"].as_str().unwrap()).collect();
    assert_eq!(rest, [clients[2].as_str()]);
    assert!(r.body.get("next").is_none(), "the last page has no next: {}", r.text);
    app.admin_get(&format!("/accounts/{account}/credentials?after=xyz")).await.expect(400, 1003);
}

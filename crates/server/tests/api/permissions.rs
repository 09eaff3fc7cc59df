//! What a key may do and when, over HTTP: names and metadata, expiry and disable (keys and their
//! tokens), permissions and roles (1009 on `/auth/verify`; the gateway's routes are in
//! `gateway`), IP allowlists behind a trusted proxy, and the rotation rule.

use keygate_core::audit::Audit;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, jwt_json, wait_until};

fn require(r: &str) -> (&'static str, &str) {
    ("x-keygate-require", r)
}

#[tokio::test]
async fn a_credential_is_created_with_its_fields_and_a_bad_change_writes_nothing() {
    let app = TestApp::spawn().await;
    let account = app.create_account().await;
    let id = account["id"].as_str().unwrap();
    app.admin_send(reqwest::Method::PUT, "/roles/reader", Some(json!({"permissions": ["images.read"]})))
        .await
        .expect(201, 1000);
    let body = json!({
        "name": "  dashboard (read-only)  ",
        "meta": {"team": "web", "n": 3},
        "expiresAt": "2099-01-31T00:00:00Z",
        "permissions": ["videos.read", "videos.read", "images.*"],
        "roles": ["reader"],
        "ipAllowlist": ["10.0.0.0/8", "::1"],
    });
    let r = app.admin_post(&format!("/accounts/{id}/credentials"), Some(body)).await;
    r.expect(201, 1000);
    let c = &r.data()["credential"];
    assert_eq!(c["name"], "dashboard (read-only)", "trimmed");
    assert_eq!(c["meta"], json!({"team": "web", "n": 3}));
    assert_eq!(c["expiresAt"], 4_073_500_800_000i64);
    assert_eq!(c["enabled"], true);
    assert_eq!(c["permissions"], json!(["images.*", "videos.read"]), "sorted, deduplicated");
    assert_eq!(c["roles"], json!(["reader"]));
    assert_eq!(c["ipAllowlist"], json!(["10.0.0.0/8", "::1/128"]));
    let cid = r.data()["clientId"].as_str().unwrap().to_owned();
    let before = app.admin_get(&format!("/credentials/{cid}")).await;
    before.expect(200, 1000);

    // Each bad field is refused with what is wrong, and the whole PATCH writes nothing.
    for (bad, says) in [
        (json!({"name": "ok", "permissions": ["bad perm"]}), "permission"),
        (json!({"name": "ok", "roles": ["ghost"]}), "ghost"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "a\u{7}b"}), "control"),
        (json!({"meta": {"big": "x".repeat(4100)}}), "meta"),
        (json!({"meta": [1, 2]}), ""),
        (json!({"expiresAt": "tomorrow"}), "expiresAt"),
        (json!({"ipAllowlist": ["10.0.0.0/33"]}), "10.0.0.0/33"),
        (json!({"enabled": "yes"}), ""),
        (json!({"permissionz": []}), ""),
    ] {
        let r = app.patch(&format!("/credentials/{cid}"), bad.clone()).await;
        r.expect(400, 1003);
        assert!(r.body["msg"].as_str().unwrap().contains(says), "{bad}: {}", r.text);
    }
    let after = app.admin_get(&format!("/credentials/{cid}")).await;
    assert_eq!(after.data(), before.data(), "nothing was written");

    // null clears; a field left out stays.
    let r = app.patch(&format!("/credentials/{cid}"), json!({"name": null, "expiresAt": null, "roles": []})).await;
    r.expect(200, 1000);
    assert!(r.data().get("name").is_none() && r.data().get("expiresAt").is_none(), "{}", r.text);
    assert_eq!(r.data()["meta"], json!({"team": "web", "n": 3}));
    assert_eq!(r.data()["roles"], json!([]));
    // No body at all still creates a plain credential.
    let r = app.admin_post(&format!("/accounts/{id}/credentials"), None).await;
    r.expect(201, 1000);
    assert_eq!(r.data()["credential"]["enabled"], true);
    assert_eq!(r.data()["credential"]["permissions"], json!([]));
}

#[tokio::test]
async fn verify_requires_permissions_and_names_what_was_required() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let key = ("x-api-key", c.api_key.as_str());
    let token = app.token(&c).await;
    let bearer = format!("Bearer {token}");
    let bearer = ("authorization", bearer.as_str());

    // No permission held: a requirement refuses, naming it (in canonical form).
    let r = app.verify_with(&[key, require("videos.create and (images.read or admin)")]).await;
    r.expect(403, 1009);
    assert_eq!(r.body["msg"], "Permission denied: requires videos.create AND (images.read OR admin)");
    r.expect_no_identity();
    // No requirement: let in.
    app.verify_with(&[key]).await.expect_identity(&c, "api_key");

    let patch = json!({"permissions": ["videos.*", "admin"], "name": "bot", "meta": {"plan": "gold"}});
    app.patch(&format!("/credentials/{}", c.client_id), patch).await.expect(200, 1000);
    for who in [key, bearer] {
        let r = app.verify_with(&[who, require("videos.create AND (images.read OR admin)")]).await;
        r.expect(200, 1000);
        assert_eq!(r.data()["permissions"], json!(["admin", "videos.*"]));
        assert_eq!(r.data()["name"], "bot");
        assert_eq!(r.data()["meta"], json!({"plan": "gold"}));
        assert_eq!(r.header("x-keygate-permissions"), Some("admin,videos.*"));
        assert_eq!(r.header("x-keygate-key-name"), Some("bot"));
        assert_eq!(r.header("x-keygate-meta"), Some(r#"{"plan":"gold"}"#));
        // What else the key holds is never in a refusal.
        let r = app.verify_with(&[who, require("billing.read")]).await;
        r.expect(403, 1009);
        assert!(!r.text.contains("videos") && !r.text.contains("admin"), "{}", r.text);
    }
    // A removed permission is removed from live tokens at once.
    app.patch(&format!("/credentials/{}", c.client_id), json!({"permissions": ["videos.read"]}))
        .await
        .expect(200, 1000);
    app.verify_with(&[bearer, require("videos.create")]).await.expect(403, 1009);
    app.verify_with(&[bearer, require("videos.read")]).await.expect(200, 1000);
    // A malformed requirement is the proxy's mistake: 400, never a pass.
    // An empty one requires nothing (a proxy's placeholder for a path without a requirement).
    app.verify_with(&[key, require("")]).await.expect(200, 1000);
    app.verify_with(&[key, require("  ")]).await.expect(200, 1000);
    for bad in ["a AND", "(a", "a b", "images.*", "a OR OR b"] {
        let r = app.verify_with(&[key, require(bad)]).await;
        r.expect(400, 1003);
        assert!(r.body["msg"].as_str().unwrap().starts_with("x-keygate-require"), "{bad:?}: {}", r.text);
    }
    let deep = format!("{}a{}", "(".repeat(200), ")".repeat(200));
    app.verify_with(&[key, require(&deep)]).await.expect(400, 1003);
}

#[tokio::test]
async fn roles_grant_permissions_and_a_changed_role_reaches_live_tokens() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let token = app.token(&c).await;
    let bearer = format!("Bearer {token}");
    let bearer = ("authorization", bearer.as_str());
    let put = |perms: serde_json::Value| {
        app.admin_send(reqwest::Method::PUT, "/roles/video-editor", Some(json!({ "permissions": perms })))
    };
    put(json!(["videos.create"])).await.expect(201, 1000);
    put(json!(["videos.create", "videos.delete"])).await.expect(200, 1000);
    let r = app.patch(&format!("/credentials/{}", c.client_id), json!({"roles": ["video-editor"]})).await;
    r.expect(200, 1000);
    app.verify_with(&[bearer, require("videos.delete")]).await.expect(200, 1000);
    let r = app.admin_get("/roles/video-editor").await;
    r.expect(200, 1000);
    assert_eq!(
        (r.data()["credentials"].as_i64(), &r.data()["permissions"]),
        (Some(1), &json!(["videos.create", "videos.delete"]))
    );
    let r = app.admin_get("/roles").await;
    assert_eq!(r.data().as_array().unwrap().len(), 1);

    // The role loses a permission: its holders (and their tokens) lose it at once.
    put(json!(["videos.create"])).await.expect(200, 1000);
    app.verify_with(&[bearer, require("videos.delete")]).await.expect(403, 1009);
    app.verify_with(&[bearer, require("videos.create")]).await.expect(200, 1000);
    // The same change written behind the server's back (the CLI) arrives through the feed.
    let ops = app.external_ops().await;
    ops.put_role(&Audit::system(), "video-editor", vec!["videos.*".into()]).await.unwrap();
    wait_until(Duration::from_secs(3), "the role change reaches the server", || async {
        app.verify_with(&[bearer, require("videos.delete")]).await.status == 200
    })
    .await;

    // A held role cannot be deleted; an unknown one cannot be given; bad names are refused.
    app.admin_send(reqwest::Method::DELETE, "/roles/video-editor", None).await.expect(409, 1003);
    app.patch(&format!("/credentials/{}", c.client_id), json!({"roles": ["nope"]})).await.expect(400, 1003);
    app.admin_send(reqwest::Method::PUT, "/roles/Bad Name", Some(json!({"permissions": []}))).await.expect(400, 1003);
    app.admin_send(reqwest::Method::PUT, "/roles/r", Some(json!({"permissions": ["*", "a b"]})))
        .await
        .expect(400, 1003);
    app.admin_get("/roles/nope").await.expect(404, 1003);
    app.patch(&format!("/credentials/{}", c.client_id), json!({"roles": []})).await.expect(200, 1000);
    app.verify_with(&[bearer, require("videos.create")]).await.expect(403, 1009);
    app.admin_send(reqwest::Method::DELETE, "/roles/video-editor", None).await.expect(200, 1000);
    app.admin_get("/roles/video-editor").await.expect(404, 1003);
}

#[tokio::test]
async fn a_disabled_or_expired_key_and_its_tokens_answer_1101() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let token = app.token(&c).await;
    let path = format!("/credentials/{}", c.client_id);

    app.patch(&path, json!({"enabled": false})).await.expect(200, 1000);
    for r in [app.verify_key(&c.api_key).await, app.verify_bearer(&token).await] {
        r.expect_invalid();
        assert_eq!(r.body["msg"], "Invalid authorization or the request token has expired: the API key is disabled");
    }
    app.get_token(&c.client_id, &c.api_key).await.expect_invalid();
    // Unlike a revoke, reversible: the same key and token work again.
    app.patch(&path, json!({"enabled": true})).await.expect(200, 1000);
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    app.verify_bearer(&token).await.expect_identity(&c, "bearer");

    // An expiry: a token issued now never outlives it.
    let expires = keygate_store::now_ms() + 2_500;
    app.patch(&path, json!({"expiresAt": expires})).await.expect(200, 1000);
    let short = app.token(&c).await;
    let exp = jwt_json(&short).1["exp"].as_i64().unwrap();
    assert!(exp * 1000 <= expires && exp * 1000 > expires - 1_000, "exp {exp} vs {expires}");
    app.verify_bearer(&short).await.expect_identity(&c, "bearer");
    wait_until(Duration::from_secs(5), "the key expires", || async { app.verify_key(&c.api_key).await.status == 401 })
        .await;
    for r in [app.verify_key(&c.api_key).await, app.verify_bearer(&token).await, app.verify_bearer(&short).await] {
        r.expect_invalid();
    }
    let r = app.verify_key(&c.api_key).await;
    assert_eq!(r.body["msg"], "Invalid authorization or the request token has expired: the API key has expired");
    app.get_token(&c.client_id, &c.api_key).await.expect_invalid();
    // Moving the expiry brings the key back (its old token stays dead past its own exp only).
    app.patch(&path, json!({"expiresAt": null})).await.expect(200, 1000);
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    app.verify_bearer(&token).await.expect_identity(&c, "bearer");
}

#[tokio::test]
async fn allowlists_of_the_credential_and_its_account_behind_a_trusted_proxy() {
    let app = TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let c = app.customer().await;
    let key = ("x-api-key", c.api_key.as_str());
    let from = |ip: &'static str| ("x-forwarded-for", ip);
    app.patch(&format!("/credentials/{}", c.client_id), json!({"ipAllowlist": ["203.0.113.0/24", "2001:db8::/32"]}))
        .await
        .expect(200, 1000);
    app.verify_with(&[key, from("203.0.113.9")]).await.expect(200, 1000);
    app.verify_with(&[key, from("2001:db8::7")]).await.expect(200, 1000);
    // What a client writes left of the proxy's entry counts for nothing.
    app.verify_with(&[key, from("203.0.113.9, 198.51.100.1")]).await.expect(403, 1009);
    let r = app.verify_with(&[key, from("198.51.100.1")]).await;
    r.expect(403, 1009);
    assert_eq!(r.body["msg"], "Permission denied: this key may not be used from this address");
    // No forwarded address: the proxy itself (127.0.0.1), not on the list.
    app.verify_with(&[key]).await.expect(403, 1009);
    // getToken from outside the list is refused too; from inside it works.
    let body = json!({"clientId": c.client_id, "clientSecret": c.api_key}).to_string();
    let outside = app
        .send(
            app.client
                .post(app.url("/api/open/v3/getToken"))
                .header("x-forwarded-for", "198.51.100.1")
                .body(body.clone()),
        )
        .await;
    outside.expect(403, 1009);
    let inside = app
        .send(app.client.post(app.url("/api/open/v3/getToken")).header("x-forwarded-for", "203.0.113.5").body(body))
        .await;
    inside.expect(200, 1000);
    // A token is held to the same list.
    let bearer = format!("Bearer {}", inside.body["token"].as_str().unwrap());
    app.verify_with(&[("authorization", &bearer), from("198.51.100.1")]).await.expect(403, 1009);
    app.verify_with(&[("authorization", &bearer), from("203.0.113.5")]).await.expect(200, 1000);

    // The account's list applies as well: both must allow the address.
    app.patch(&format!("/accounts/{}", c.account_id), json!({"ipAllowlist": ["203.0.113.128/25"]}))
        .await
        .expect(200, 1000);
    app.verify_with(&[key, from("203.0.113.9")]).await.expect(403, 1009);
    app.verify_with(&[key, from("203.0.113.200")]).await.expect(200, 1000);
    let r = app.admin_get(&format!("/accounts/{}", c.account_id)).await;
    assert_eq!(r.data()["ipAllowlist"], json!(["203.0.113.128/25"]));
    app.patch(&format!("/accounts/{}", c.account_id), json!({"ipAllowlist": ["nope"]})).await.expect(400, 1003);
    app.patch(&format!("/accounts/{}", c.account_id), json!({"ipAllowlist": []})).await.expect(200, 1000);
    app.patch(&format!("/credentials/{}", c.client_id), json!({"ipAllowlist": []})).await.expect(200, 1000);
    app.verify_with(&[key, from("198.51.100.1")]).await.expect(200, 1000);
}

#[tokio::test]
async fn rotation_keeps_at_most_the_current_and_the_previous_key() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let mut keys = vec![c.api_key.clone()];
    for _ in 0..4 {
        keys.push(app.rotate(&c.client_id, Some("1h")).await);
    }
    let live: Vec<bool> = {
        let mut v = Vec::new();
        for k in &keys {
            v.push(app.verify_key(k).await.status == 200);
        }
        v
    };
    assert_eq!(live, [false, false, false, true, true], "the current key and the one before it");
    let r = app.admin_get(&format!("/credentials/{}", c.client_id)).await;
    let gens = r.data()["liveGenerations"].as_array().unwrap();
    assert_eq!(gens.len(), 2);
    assert!(gens[1]["expiresAt"].is_i64() && gens[0].get("expiresAt").is_none(), "{}", r.text);
    // A shorter grace now ends the previous key sooner (each old key has its own end).
    let newest = app.rotate(&c.client_id, Some("1s")).await;
    app.verify_key(&keys[3]).await.expect_invalid();
    app.verify_key(&keys[4]).await.expect(200, 1000);
    wait_until(Duration::from_secs(4), "the previous key's grace ends", || async {
        app.verify_key(&keys[4]).await.status == 401
    })
    .await;
    app.verify_key(&newest).await.expect(200, 1000);
}

//! A credential's life as the server sees it: revocation, rotation with and without grace,
//! account bans, and token expiry. Tokens die with the state behind them.

use std::time::{Duration, Instant};

use crate::helpers::{TestApp, align_to_second, jwt_json, wait_until};

#[tokio::test]
async fn revoke_kills_the_key_and_its_tokens() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    // A second credential of the same account, which must survive.
    let (other_id, other_key) = app.create_credential(&c.account_id).await;
    let token = app.token(&c).await;
    // Warm the cache first: revocation must invalidate it, not just miss it.
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    app.verify_bearer(&token).await.expect_identity(&c, "bearer");

    let r = app.revoke(&c.client_id).await;
    assert_eq!(r.data()["status"], "revoked");
    assert!(r.data()["revokedAt"].is_i64(), "{}", r.text);

    app.verify_key(&c.api_key).await.expect_invalid();
    app.verify_bearer(&token).await.expect_invalid();
    app.verify_with(&[("x-client-id", &c.client_id), ("x-client-secret", &c.api_key)]).await.expect_invalid();
    app.get_token(&c.client_id, &c.api_key).await.expect_invalid();

    let other = c.clone();
    let other = crate::helpers::Customer { client_id: other_id, api_key: other_key, ..other };
    app.verify_key(&other.api_key).await.expect_identity(&other, "api_key");

    // A revoked credential stays revoked: it cannot be rotated back to life.
    let r = app.admin_post(&format!("/credentials/{}/rotate", c.client_id), None).await;
    r.expect(409, 1003);
    app.verify_key(&c.api_key).await.expect_invalid();
}

#[tokio::test]
async fn rotate_without_grace_kills_the_old_key_and_tokens_at_once() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let old_token = app.token(&c).await;
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    app.verify_bearer(&old_token).await.expect_identity(&c, "bearer");

    let new_key = app.rotate(&c.client_id, None).await;
    assert_ne!(new_key, c.api_key);
    let rotated = c.with_key(&new_key);

    app.verify_key(&c.api_key).await.expect_invalid();
    app.verify_bearer(&old_token).await.expect_invalid();
    app.get_token(&c.client_id, &c.api_key).await.expect_invalid();

    app.verify_key(&new_key).await.expect_identity(&rotated, "api_key");
    let new_token = app.token(&rotated).await;
    app.verify_bearer(&new_token).await.expect_identity(&rotated, "bearer");
    assert_eq!(jwt_json(&old_token).1["gen"], 1);
    assert_eq!(jwt_json(&new_token).1["gen"], 2);

    let r = app.admin_get(&format!("/credentials/{}", c.client_id)).await;
    r.expect(200, 1000);
    assert_eq!(r.data()["generation"], 2);
    assert_eq!(r.data()["liveGenerations"].as_array().unwrap().len(), 1);
    assert!(r.data()["hint"].as_str().unwrap().ends_with(&new_key[28..]));
}

#[tokio::test]
async fn rotate_with_grace_keeps_the_old_key_and_tokens_until_it_ends() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let old_token = app.token(&c).await;
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");

    let new_key = app.rotate(&c.client_id, Some("2s")).await;
    let rotated_at = Instant::now();
    let rotated = c.with_key(&new_key);

    // During the grace: old and new both work, and the old key still gets tokens.
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    app.verify_bearer(&old_token).await.expect_identity(&c, "bearer");
    let grace_token = app.token(&c).await;
    assert_eq!(jwt_json(&grace_token).1["gen"], 1);
    app.verify_key(&new_key).await.expect_identity(&rotated, "api_key");
    let new_token = app.token(&rotated).await;
    app.verify_bearer(&new_token).await.expect_identity(&rotated, "bearer");
    let r = app.admin_get(&format!("/credentials/{}", c.client_id)).await;
    let live = r.data()["liveGenerations"].as_array().unwrap().clone();
    assert_eq!(live.len(), 2, "{}", r.text);
    assert!(live.iter().any(|g| g["generation"] == 1 && g["expiresAt"].is_i64()));
    assert!(live.iter().any(|g| g["generation"] == 2 && g.get("expiresAt").is_none()));
    assert!(rotated_at.elapsed() < Duration::from_millis(1500), "the grace checks took too long to be meaningful");

    // After the grace: the old key and every token of its generation are refused.
    wait_until(Duration::from_secs(5), "the old key is refused after its grace", || async {
        app.verify_key(&c.api_key).await.code() == Some(1101)
    })
    .await;
    app.verify_key(&c.api_key).await.expect_invalid();
    app.verify_bearer(&old_token).await.expect_invalid();
    app.verify_bearer(&grace_token).await.expect_invalid();
    app.get_token(&c.client_id, &c.api_key).await.expect_invalid();
    app.verify_key(&new_key).await.expect_identity(&rotated, "api_key");
    app.verify_bearer(&new_token).await.expect_identity(&rotated, "bearer");
}

#[tokio::test]
async fn ban_refuses_keys_tokens_and_get_token_until_unban() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let bystander = app.customer().await;
    let token = app.token(&c).await;
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    app.verify_bearer(&token).await.expect_identity(&c, "bearer");

    let r = app.ban(&c.account_id, "chargeback").await;
    assert_eq!(r.data()["status"], "banned");
    assert_eq!(r.data()["banReason"], "chargeback");

    app.verify_key(&c.api_key).await.expect_banned();
    app.verify_bearer(&token).await.expect_banned();
    app.verify_with(&[("x-client-id", &c.client_id), ("x-client-secret", &c.api_key)]).await.expect_banned();
    let r = app.get_token(&c.client_id, &c.api_key).await;
    r.expect_banned();
    assert!(r.body.get("token").is_none());
    // A ban is not an authentication failure: no challenge.
    assert!(r.header("www-authenticate").is_none());
    // Wrong secrets stay 1101 for a banned account (a ban is only revealed to its key holder).
    let r = app.get_token(&c.client_id, &bystander.api_key).await;
    r.expect_invalid();
    // Other accounts are untouched.
    app.verify_key(&bystander.api_key).await.expect_identity(&bystander, "api_key");
    // Banning twice is fine.
    app.ban(&c.account_id, "again").await;

    let r = app.unban(&c.account_id).await;
    assert_eq!(r.data()["status"], "active");
    assert!(r.data().get("banReason").is_none(), "{}", r.text);
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    app.verify_bearer(&token).await.expect_identity(&c, "bearer");
    let fresh = app.token(&c).await;
    app.verify_bearer(&fresh).await.expect_identity(&c, "bearer");
}

#[tokio::test]
async fn tokens_expire_after_their_lifetime() {
    let app = TestApp::spawn_with(|l| l.token_ttl = Duration::from_secs(1)).await;
    let c = app.customer().await;
    // Token times are whole seconds: start just after a second begins, so a 1 s token has
    // (nearly) its whole second ahead of it.
    align_to_second().await;
    let token = app.token(&c).await;
    let issued = Instant::now();
    let (_, claims) = jwt_json(&token);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 1);
    app.verify_bearer(&token).await.expect_identity(&c, "bearer");
    assert!(issued.elapsed() < Duration::from_millis(800));

    wait_until(Duration::from_secs(5), "the 1 s token expires", || async {
        app.verify_bearer(&token).await.code() == Some(1101)
    })
    .await;
    app.verify_bearer(&token).await.expect_invalid();
    // Only the token expired: the key and new tokens still work.
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    align_to_second().await;
    let fresh = app.token(&c).await;
    app.verify_bearer(&fresh).await.expect_identity(&c, "bearer");
}

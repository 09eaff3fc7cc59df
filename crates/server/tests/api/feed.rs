//! Writes that bypass this server (the CLI writing into the same SQLite file, another node on
//! the same database) reach its cache through the change feed, within about one poll interval.
//! Each test warms the cache first, so what is measured is invalidation, not a cache miss.

use std::time::Duration;

use keygate_core::audit::Audit;
use keygate_core::model::AccountStatus;
use keygate_core::{AccountId, ClientId};

use crate::helpers::{TestApp, jwt_json, wait_until};

/// The bound the tests hold the server to (the feed interval is 50 ms).
const WITHIN: Duration = Duration::from_secs(1);

#[tokio::test]
async fn external_revocation_is_seen_within_a_second() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let token = app.token(&c).await;
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    app.verify_bearer(&token).await.expect_identity(&c, "bearer");

    let store = app.external_store().await;
    store.revoke_credential(&Audit::system(), ClientId::parse(&c.client_id).unwrap()).await.unwrap();
    let took = wait_until(WITHIN, "the external revocation refuses the key", || async {
        app.verify_key(&c.api_key).await.code() == Some(1101)
    })
    .await;
    eprintln!("external revocation seen after {took:?}");
    app.verify_key(&c.api_key).await.expect_invalid();
    app.verify_bearer(&token).await.expect_invalid();
    app.get_token(&c.client_id, &c.api_key).await.expect_invalid();
}

#[tokio::test]
async fn external_ban_and_unban_are_seen_within_a_second() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let token = app.token(&c).await;
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    app.verify_bearer(&token).await.expect_identity(&c, "bearer");
    let account = AccountId::parse(&c.account_id).unwrap();
    let store = app.external_store().await;

    store
        .set_account_status(&Audit::cli("ops", "db-host"), account, AccountStatus::Banned, Some("cli ban"))
        .await
        .unwrap();
    let took = wait_until(WITHIN, "the external ban refuses the key", || async {
        app.verify_key(&c.api_key).await.code() == Some(1200)
    })
    .await;
    eprintln!("external ban seen after {took:?}");
    app.verify_key(&c.api_key).await.expect_banned();
    app.verify_bearer(&token).await.expect_banned();
    app.get_token(&c.client_id, &c.api_key).await.expect_banned();

    store.set_account_status(&Audit::cli("ops", "db-host"), account, AccountStatus::Active, None).await.unwrap();
    let took = wait_until(WITHIN, "the external unban lets the token in", || async {
        app.verify_bearer(&token).await.code() == Some(1000)
    })
    .await;
    eprintln!("external unban seen after {took:?}");
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    app.verify_bearer(&token).await.expect_identity(&c, "bearer");

    // The admin API shows the events the CLI recorded.
    let r = app.admin_get(&format!("/accounts/{}", c.account_id)).await;
    let events = r.data()["events"].as_array().unwrap();
    assert_eq!(events[0]["actor"], "cli:ops@db-host");
    assert_eq!(events[0]["reason"], "cli ban");
    assert_eq!(events[1]["kind"], "unbanned");
}

#[tokio::test]
async fn external_rotation_is_seen_within_a_second() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let token = app.token(&c).await;
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    app.verify_bearer(&token).await.expect_identity(&c, "bearer");

    // As `keygate credential rotate` does it: the same operations, no authenticator to tell.
    let ops = app.external_ops().await;
    let issued =
        ops.rotate_credential(&Audit::system(), ClientId::parse(&c.client_id).unwrap(), Duration::ZERO).await.unwrap();
    let rotated = c.with_key(issued.api_key.as_str());
    let took = wait_until(WITHIN, "the external rotation refuses the old key", || async {
        app.verify_key(&c.api_key).await.code() == Some(1101)
    })
    .await;
    eprintln!("external rotation seen after {took:?}");
    app.verify_bearer(&token).await.expect_invalid();
    app.verify_key(&rotated.api_key).await.expect_identity(&rotated, "api_key");
    let new_token = app.token(&rotated).await;
    app.verify_bearer(&new_token).await.expect_identity(&rotated, "bearer");

    // Accounts and credentials created behind the server's back work at once.
    let account = ops.create_account(&Audit::system(), "made-by-cli@example.com", "Cli").await.unwrap();
    let cred = ops.create_credential(&Audit::system(), account.id).await.unwrap();
    let r = app.verify_key(&cred.api_key).await;
    r.expect(200, 1000);
    assert_eq!(r.data()["accountId"], account.id.to_hex().as_str());
}

#[tokio::test]
async fn external_signing_key_rotation_is_seen_within_a_second() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let old_token = app.token(&c).await;
    let old_kid = jwt_json(&old_token).0["kid"].clone();

    let store = app.external_store().await;
    let added = store.add_signing_key(&Audit::system(), "kexternal0001").await.unwrap();
    assert_eq!(added.kid, "kexternal0001");
    let took = wait_until(WITHIN, "new tokens carry the new kid", || async {
        jwt_json(&app.token(&c).await).0["kid"] == "kexternal0001"
    })
    .await;
    eprintln!("external signing key seen after {took:?}");
    assert_ne!(old_kid, "kexternal0001");
    app.verify_bearer(&old_token).await.expect_identity(&c, "bearer");
    let new_token = app.token(&c).await;
    app.verify_bearer(&new_token).await.expect_identity(&c, "bearer");

    // Retiring the old key id (as `keygate signing-key retire` would) kills its tokens.
    store.retire_signing_key(&Audit::system(), old_kid.as_str().unwrap()).await.unwrap();
    let took = wait_until(WITHIN, "tokens of the retired kid are refused", || async {
        app.verify_bearer(&old_token).await.code() == Some(1101)
    })
    .await;
    eprintln!("external signing key retirement seen after {took:?}");
    app.verify_bearer(&old_token).await.expect_invalid();
    app.verify_bearer(&new_token).await.expect_identity(&c, "bearer");
}

/// A change-feed entry of a kind this build does not know (written by a newer keygate sharing
/// the database in a rolling upgrade) does not stop the follower: it drops its cache, and what
/// comes after still arrives.
#[tokio::test]
async fn an_unknown_feed_entry_does_not_stop_the_follower() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");

    let pool = sqlx::SqlitePool::connect(&app.database_url).await.unwrap();
    sqlx::query("INSERT INTO changes (entity, entity_id, at) VALUES ('feature_from_the_future', 'x', 0)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let store = app.external_store().await;
    store.revoke_credential(&Audit::system(), ClientId::parse(&c.client_id).unwrap()).await.unwrap();
    wait_until(WITHIN, "the revocation after the unknown entry refuses the key", || async {
        app.verify_key(&c.api_key).await.code() == Some(1101)
    })
    .await;
    let ready = app.send(app.client.get(app.url("/readyz"))).await;
    assert_eq!(ready.status, 200, "the node still follows the feed: {}", ready.text);
}

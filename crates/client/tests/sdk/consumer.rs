//! The customers' clients against a real keygate: `/auth/verify`, the token cache and refresh.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use keygate_client::{ApiKeyClient, AuthMethod, Code, Error, TokenClient};
use keygate_core::audit::Audit;

use crate::support::{Server, Tap, fast_retries, wait_until};

#[tokio::test]
async fn api_key_client_verifies_and_refusals_are_typed() {
    let server = Server::start().await;
    let c = server.customer().await;

    let me = c.key_client(&server.url()).verify().await.expect("the key verifies");
    assert_eq!((me.account_id.as_str(), me.uid, me.client_id.as_str()), (c.account_id.as_str(), c.uid, c.client_id()));
    assert_eq!(me.method, AuthMethod::ApiKey);

    // A well-formed key that keygate does not know: 1101, HTTP 401.
    let unknown = server.customer().await;
    server.admin().revoke_credential(unknown.client_id()).await.unwrap();
    let err = unknown.key_client(&server.url()).verify().await.unwrap_err();
    assert!(
        matches!(err, Error::Api { code: Code::InvalidAuth, status: 401, ref msg, retry_after: None } if !msg.is_empty()),
        "{err:?}"
    );
    // Garbage and an empty key: 1101 and 1102.
    let err = ApiKeyClient::new(&server.url(), "not-a-key").unwrap().verify().await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::InvalidAuth), Some(401)), "{err:?}");
    let err = ApiKeyClient::new(&server.url(), "").unwrap().verify().await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::EmptyAuth), Some(401)), "{err:?}");
}

#[tokio::test]
async fn token_client_verifies_with_one_cached_token() {
    let server = Server::start().await;
    let tap = Tap::start(server.addr).await;
    let c = server.customer().await;
    let client = c.token_client(&tap.url());

    // Twenty callers at once on a cold client share one getToken...
    let results = join_all((0..20).map(|_| client.verify())).await;
    for r in &results {
        let me = r.as_ref().expect("verified with the token");
        assert_eq!((me.account_id.as_str(), me.client_id.as_str()), (c.account_id.as_str(), c.client_id()));
        assert_eq!(me.method, AuthMethod::Bearer);
    }
    assert_eq!(tap.get_tokens(), 1, "one getToken for twenty concurrent callers");
    // ...and later calls, on clones too, reuse it.
    let clone = client.clone();
    for _ in 0..30 {
        clone.verify().await.unwrap();
    }
    assert_eq!(tap.get_tokens(), 1, "one getToken for fifty calls");
    assert_eq!(tap.verifies(), 50);
    // The token is a JWT from this server, and the one the client keeps using.
    let token = client.token().await.unwrap();
    assert_eq!(token.expose().split('.').count(), 3);
    assert_eq!(client.token().await.unwrap(), token);
    assert_eq!(tap.get_tokens(), 1);

    // Forgetting it costs one more getToken.
    client.clear_token().await;
    client.verify().await.unwrap();
    assert_eq!(tap.get_tokens(), 2);
    assert_ne!(client.token().await.unwrap(), token, "a new token (new jti)");

    // A wrong secret: getToken's own 1101, typed, and no verify is attempted.
    let wrong = TokenClient::with_options(&tap.url(), c.client_id(), "kgk_wrong", fast_retries(3)).unwrap();
    let verifies = tap.verifies();
    let err = wrong.verify().await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::InvalidAuth), Some(401)), "{err:?}");
    assert_eq!(tap.verifies(), verifies);
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire() {
    // Two-second tokens: the client must fetch new ones ahead of time and never present an
    // expired one (which keygate would refuse with 1101).
    let server = Server::start_with(|c| c.token_ttl = Duration::from_secs(2)).await;
    let tap = Tap::start(server.addr).await;
    let c = server.customer().await;
    let client = c.token_client(&tap.url());

    let start = Instant::now();
    let mut calls = 0;
    while start.elapsed() < Duration::from_millis(4500) {
        client.verify().await.expect("every call succeeds");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fetched = tap.get_tokens();
    assert_eq!(tap.refusals_1101(), 0, "no expired token was ever presented");
    assert!(fetched >= 4, "tokens refreshed ahead of expiry: {fetched} getToken in 4.5 s");
    assert!(fetched <= 12, "not one getToken per call: {fetched} for {calls} calls");
    assert!(calls > 2 * fetched, "tokens are reused between refreshes: {fetched} for {calls} calls");
}

#[tokio::test]
async fn a_dead_token_is_refreshed_once_then_the_error_is_returned() {
    let server = Server::start().await;
    let tap = Tap::start(server.addr).await;
    let admin = server.admin();
    let c = server.customer().await;
    let client = c.token_client(&tap.url());
    client.verify().await.unwrap();
    assert_eq!(tap.get_tokens(), 1);

    // Kill the cached (year-long) token behind the client's back: rotate the signing key and
    // retire the old key id (the admin API has no retire call; the CLI's `signing-key retire`
    // runs this same operation).
    let old = admin.signing_keys().await.unwrap();
    assert_eq!(old.len(), 1);
    admin.rotate_signing_key().await.unwrap();
    server.state.ops.retire_signing_key(&Audit::system(), &old[0].kid).await.expect("the old key id retires");

    // The next call meets 1101, gets a new token (signed with the new key), and succeeds.
    let me = client.verify().await.expect("refreshed after 1101");
    assert_eq!(me.method, AuthMethod::Bearer);
    assert_eq!((tap.get_tokens(), tap.refusals_1101(), tap.verifies()), (2, 1, 3));
    client.verify().await.unwrap();
    assert_eq!(tap.get_tokens(), 2, "the new token is cached");

    // Revoke the credential: the token dies (1101), the one refresh is refused too (getToken's
    // 1101), and that typed error comes back. No loop: one verify and one getToken.
    admin.revoke_credential(c.client_id()).await.unwrap();
    let (tokens, verifies) = (tap.get_tokens(), tap.verifies());
    let err = client.verify().await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::InvalidAuth, status: 401, .. }), "{err:?}");
    assert_eq!((tap.get_tokens() - tokens, tap.verifies() - verifies), (1, 1));
    // The dead token is gone: the next call asks getToken first, which refuses at once.
    let err = client.verify().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidAuth));
    assert_eq!((tap.get_tokens() - tokens, tap.verifies() - verifies), (2, 1));
}

#[tokio::test]
async fn rotation_with_grace_keeps_the_token_and_without_grace_ends_it() {
    let server = Server::start().await;
    let tap = Tap::start(server.addr).await;
    let admin = server.admin();
    let c = server.customer().await;
    let client = c.token_client(&tap.url());
    client.verify().await.unwrap();

    // With grace, the old secret's token keeps working: no refresh needed.
    let rotated = admin.rotate_credential(c.client_id(), Some(Duration::from_secs(3600))).await.unwrap();
    client.verify().await.expect("the old token works during the grace period");
    assert_eq!((tap.get_tokens(), tap.refusals_1101()), (1, 0));
    // A client with the new key works alongside.
    let fresh = TokenClient::new(&tap.url(), c.client_id(), rotated.api_key.expose()).unwrap();
    assert_eq!(fresh.verify().await.unwrap().client_id, c.client_id());

    // Without grace, the old secret and its tokens stop: 1101, and the refresh with the old
    // secret is refused as well.
    admin.rotate_credential(c.client_id(), None).await.unwrap();
    let err = client.verify().await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::InvalidAuth), Some(401)), "{err:?}");
}

#[tokio::test]
async fn banned_accounts_get_a_typed_1200_and_no_refresh() {
    let server = Server::start().await;
    let tap = Tap::start(server.addr).await;
    let admin = server.admin();
    let c = server.customer().await;
    let keys = c.key_client(&server.url());
    let tokens = c.token_client(&tap.url());
    keys.verify().await.unwrap();
    tokens.verify().await.unwrap();

    admin.ban(&c.account_id, "chargeback fraud").await.unwrap();
    for err in [keys.verify().await.unwrap_err(), tokens.verify().await.unwrap_err()] {
        assert!(
            matches!(err, Error::Api { code: Code::Banned, status: 403, ref msg, retry_after: None } if !msg.is_empty()),
            "{err:?}"
        );
    }
    assert_eq!(tap.get_tokens(), 1, "1200 is not a reason to get a new token");
    // getToken itself refuses a banned account with 1200.
    let cold = c.token_client(&tap.url());
    let err = cold.verify().await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::Banned), Some(403)), "{err:?}");

    // Lifted: both work again, the cached token included.
    admin.unban(&c.account_id, Some("paid")).await.unwrap();
    wait_until(Duration::from_secs(2), "the unban is seen", || async { keys.verify().await.is_ok() }).await;
    tokens.verify().await.expect("the same token works again");
}

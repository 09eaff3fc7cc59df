//! What a key may do and when, through the SDK: a credential's fields at creation and in a
//! change, roles, an account's allowlist, the identity `/auth/verify` answers with, and `1009`
//! as `Error::PermissionDenied` (never retried).

use std::time::{Duration, SystemTime};

use keygate_client::{ApiKeyClient, Code, CredentialFields, Error, unix_ms};

use crate::support::{Server, Tap, fast_retries, unique_email};

#[tokio::test]
async fn a_credential_carries_its_fields_to_verify_and_a_change_reaches_it() {
    let server = Server::start().await;
    let admin = server.admin();
    let account = admin.create_account(&unique_email(), "").await.unwrap();

    let (role, created) = admin.put_role("reader", &["images.read"]).await.unwrap();
    assert!(created);
    assert_eq!((role.name.as_str(), role.permissions.as_slice()), ("reader", &["images.read".to_owned()][..]));
    let (_, created) = admin.put_role("reader", &["images.read", "images.list"]).await.unwrap();
    assert!(!created, "the second put replaces it");

    let in_a_day = SystemTime::now() + Duration::from_secs(86_400);
    let fields = CredentialFields::new()
        .name("  dashboard (read-only) ")
        .meta(serde_json::json!({"team": "web", "n": 3}))
        .expires_at(in_a_day)
        .permissions(["videos.read", "videos.read"])
        .roles(["reader"])
        .ip_allowlist(["127.0.0.1", "::1"]);
    let issued = admin.create_credential_with(&account.id, &fields).await.unwrap();
    let c = &issued.credential;
    assert_eq!(c.name.as_deref(), Some("dashboard (read-only)"), "trimmed by the server");
    assert_eq!(
        c.meta.as_ref().map(|m| serde_json::Value::Object(m.clone())),
        Some(serde_json::json!({"team": "web", "n": 3}))
    );
    assert_eq!(c.expires_at, Some(unix_ms(in_a_day)));
    assert!(c.expiry().is_some_and(|t| t.duration_since(in_a_day).unwrap_or_default() < Duration::from_millis(1)));
    assert!(c.enabled);
    assert_eq!(c.permissions, ["videos.read"], "deduplicated");
    assert_eq!(c.roles, ["reader"]);
    assert_eq!(c.ip_allowlist, ["127.0.0.1/32", "::1/128"]);
    assert_eq!(admin.credential(&issued.client_id).await.unwrap().credential, *c);

    // The identity says who the key is and what it holds (its own and its role's).
    let tap = Tap::start(server.addr).await;
    let client = ApiKeyClient::with_options(&tap.url(), issued.api_key.expose(), fast_retries(5)).unwrap();
    let me = client.verify().await.unwrap();
    assert_eq!(me.name.as_deref(), Some("dashboard (read-only)"));
    let mut held = me.permissions.clone();
    held.sort();
    assert_eq!(held, ["images.list", "images.read", "videos.read"]);
    assert_eq!(me.meta.as_ref().and_then(|m| m.get("n")), Some(&serde_json::json!(3)));
    client.verify_requiring("videos.read AND images.read").await.unwrap();

    // What it does not hold: 1009, its own variant, not retried (five attempts allowed).
    let before = tap.verifies();
    let err = client.verify_requiring("videos.create").await.unwrap_err();
    assert!(
        matches!(err, Error::PermissionDenied { status: 403, ref msg } if msg.contains("requires videos.create")),
        "{err:?}"
    );
    assert_eq!(err.code(), Some(Code::PermissionDenied));
    assert_eq!(tap.verifies() - before, 1, "a 1009 is never retried");
    // A token is held to its credential's permissions (this other one holds none).
    let other = server.customer().await.token_client(&server.url());
    let err = other.verify_requiring("videos.read").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { status: 403, .. }), "{err:?}");

    // A held role cannot be deleted; one nobody holds can.
    assert_eq!(admin.role("reader").await.unwrap().credentials, 1);
    let err = admin.delete_role("reader").await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::ParamError, status: 409, .. }), "{err:?}");

    // Disable: refused at once (1101), and enabled again.
    let off = admin.update_credential(&issued.client_id, &CredentialFields::new().enabled(false)).await.unwrap();
    assert!(!off.credential.enabled);
    assert_eq!(off.credential.name.as_deref(), Some("dashboard (read-only)"), "what it does not name stays");
    let err = client.verify().await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::InvalidAuth, ref msg, .. } if msg.contains("disabled")), "{err:?}");

    // Clearing: null for name, meta and expiry, [] for the lists.
    let cleared = CredentialFields::new()
        .enabled(true)
        .clear_name()
        .clear_meta()
        .never_expires()
        .permissions(Vec::<String>::new())
        .roles(Vec::<String>::new())
        .ip_allowlist(Vec::<String>::new());
    let c = admin.update_credential(&issued.client_id, &cleared).await.unwrap().credential;
    assert!(c.enabled && c.name.is_none() && c.meta.is_none() && c.expires_at.is_none(), "{c:?}");
    assert!(c.permissions.is_empty() && c.roles.is_empty() && c.ip_allowlist.is_empty(), "{c:?}");
    let me = client.verify().await.unwrap();
    assert!(me.name.is_none() && me.permissions.is_empty() && me.meta.is_none(), "{me:?}");
    admin.delete_role("reader").await.unwrap();
    let err = admin.role("reader").await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::ParamError, status: 404, .. }), "{err:?}");
    assert!(admin.roles().await.unwrap().is_empty());

    // An expiry in the past: expired at once.
    let past = CredentialFields::new().expires_at(SystemTime::now() - Duration::from_secs(1));
    admin.update_credential(&issued.client_id, &past).await.unwrap();
    let err = client.verify().await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::InvalidAuth, ref msg, .. } if msg.contains("expired")), "{err:?}");
}

#[tokio::test]
async fn an_account_allowlist_applies_to_its_credentials() {
    let server = Server::start().await;
    let admin = server.admin();
    let customer = server.customer().await;
    let client = customer.key_client(&server.url());
    client.verify().await.unwrap();

    let a = admin.set_account_ip_allowlist(&customer.account_id, &["203.0.113.0/24", "2001:db8::/32"]).await.unwrap();
    assert_eq!(a.account.ip_allowlist, ["2001:db8::/32", "203.0.113.0/24"]);
    assert_eq!(admin.account(&customer.account_id).await.unwrap().account.ip_allowlist, a.account.ip_allowlist);
    // This client is 127.0.0.1: outside it.
    let err = client.verify().await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { status: 403, ref msg } if msg.contains("address")), "{err:?}");
    let err = customer.token_client(&server.url()).verify().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "getToken from outside is refused too: {err:?}");

    let a = admin.set_account_ip_allowlist(&customer.account_id, &["127.0.0.0/8"]).await.unwrap();
    assert_eq!(a.account.ip_allowlist, ["127.0.0.0/8"]);
    client.verify().await.unwrap();
    let a = admin.set_account_ip_allowlist(&customer.account_id, &[]).await.unwrap();
    assert!(a.account.ip_allowlist.is_empty());
    client.verify().await.unwrap();
}

#[tokio::test]
async fn bad_fields_are_typed_refusals_and_create_nothing() {
    let server = Server::start().await;
    let admin = server.admin();
    let account = admin.create_account(&unique_email(), "").await.unwrap();

    for (fields, says) in [
        (CredentialFields::new().roles(["ghost"]), "ghost"),
        (CredentialFields::new().permissions(["bad perm"]), "permission"),
        (CredentialFields::new().ip_allowlist(["10.0.0.0/33"]), "10.0.0.0/33"),
        (CredentialFields::new().name("x".repeat(201)), "name"),
        (CredentialFields::new().meta(serde_json::json!({"big": "x".repeat(4100)})), "meta"),
        (CredentialFields::new().expires_at_ms(-1), "expiresAt"),
    ] {
        let err = admin.create_credential_with(&account.id, &fields).await.unwrap_err();
        assert!(
            matches!(err, Error::Api { code: Code::ParamError, status: 400, ref msg, .. } if msg.contains(says)),
            "{fields:?}: {err:?}"
        );
    }
    // Not an object: refused before anything is sent.
    let err = admin.create_credential_with(&account.id, &CredentialFields::new().meta(serde_json::json!([1]))).await;
    assert!(matches!(err, Err(Error::Invalid(ref m)) if m.contains("JSON object")), "{err:?}");
    assert!(admin.credentials_page(&account.id, None, None).await.unwrap().items.is_empty(), "nothing was created");

    let err = admin.put_role("Bad Name", &["x"]).await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::ParamError, status: 400, .. }), "{err:?}");
    let err = admin.put_role("ok", &["bad perm"]).await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::ParamError, status: 400, .. }), "{err:?}");
    let err = admin.set_account_ip_allowlist(&account.id, &["nowhere"]).await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::ParamError, status: 400, .. }), "{err:?}");
    let err = admin.update_credential("0123456789abcdef01234567", &CredentialFields::new().enabled(false)).await;
    assert!(matches!(err, Err(Error::Api { code: Code::ParamError, status: 404, .. })), "{err:?}");
    let err = admin.set_account_ip_allowlist("0123456789abcdef01234567", &[]).await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::AccountNotFound), Some(404)), "{err:?}");
}

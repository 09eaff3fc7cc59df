//! Every admin API call through `AdminClient`, its typed errors, and lists as streams.

use std::time::Duration;

use futures_util::TryStreamExt;
use keygate_client::{
    AccountQuery, AccountStatus, AdminClient, ApiKeyClient, Code, CredentialStatus, Error, IssuedCredential,
};

use crate::support::{Server, unique_email, wait_until};

#[tokio::test]
async fn accounts_can_be_created_found_banned_and_unbanned() {
    let server = Server::start().await;
    let admin = server.admin();

    let email = unique_email();
    let account = admin.create_account(&format!("  {email} "), "Ada").await.unwrap();
    assert_eq!((account.email.as_str(), account.first_name.as_str()), (email.as_str(), "Ada"));
    assert_eq!(account.status, AccountStatus::Active);
    assert_eq!(account.id.len(), 24);
    assert!(account.created_at > 1_700_000_000_000, "milliseconds: {}", account.created_at);

    let page = admin.accounts_page(&AccountQuery::new().search(&email), None).await.unwrap();
    assert_eq!(page.items, std::slice::from_ref(&account));
    assert!(page.is_last());

    let banned = admin.ban(&account.id, "chargeback fraud").await.unwrap();
    assert_eq!(banned.status, AccountStatus::Banned);
    assert_eq!(banned.ban_reason.as_deref(), Some("chargeback fraud"));
    let unbanned = admin.unban(&account.id, Some("refund settled")).await.unwrap();
    assert_eq!((unbanned.status, unbanned.ban_reason), (AccountStatus::Active, None));
    admin.ban(&account.id, "").await.unwrap(); // an empty reason is none
    admin.unban(&account.id, None).await.unwrap();

    let detail = admin.account(&account.id).await.unwrap();
    assert_eq!(detail.account.id, account.id);
    assert_eq!(detail.account.status, AccountStatus::Active);
    let history: Vec<(&str, Option<&str>, &str)> =
        detail.events.iter().map(|e| (e.kind.as_str(), e.reason.as_deref(), e.actor.as_str())).collect();
    assert_eq!(
        history,
        [
            ("banned", Some("chargeback fraud"), "admin-api"),
            ("unbanned", Some("refund settled"), "admin-api"),
            ("banned", None, "admin-api"),
            ("unbanned", None, "admin-api"),
        ]
    );
    assert!(detail.events.iter().all(|e| e.at >= account.created_at));
}

#[tokio::test]
async fn credentials_can_be_created_read_rotated_revoked_and_counted() {
    let server = Server::start_with(|c| c.usage_flush = Duration::from_millis(100)).await;
    let admin = server.admin();
    let account = admin.create_account(&unique_email(), "").await.unwrap();

    let issued: IssuedCredential = admin.create_credential(&account.id).await.unwrap();
    let key = issued.api_key.expose().to_owned();
    assert_eq!(key.len(), 32);
    assert!(key.starts_with("kgk_"));
    assert_eq!(issued.credential.client_id, issued.client_id);
    assert_eq!(issued.credential.account_id, account.id);
    assert_eq!((issued.credential.status, issued.credential.generation), (CredentialStatus::Active, 1));
    assert_eq!(issued.credential.hint, format!("kgk_...{}", &key[28..]));
    assert!(!format!("{issued:?}").contains(&key[4..]), "Debug shows no key");

    let read = admin.credential(&issued.client_id).await.unwrap();
    assert_eq!(read.credential, issued.credential);
    assert!(read.effective_ratelimits.is_empty() && read.credential.ratelimits.is_empty(), "{read:?}");
    let page = admin.credentials_page(&account.id, None, None).await.unwrap();
    assert_eq!(page.items, std::slice::from_ref(&issued.credential));
    assert!(page.is_last());

    // Usage: requests per day, written in batches (every 100 ms on this server).
    let client = ApiKeyClient::new(&server.url(), key.as_str()).unwrap();
    for _ in 0..3 {
        client.verify().await.unwrap();
    }
    wait_until(Duration::from_secs(5), "usage is written", || async {
        admin.usage(&issued.client_id, Some(7)).await.unwrap().iter().map(|d| d.requests).sum::<u64>() == 3
    })
    .await;
    let usage = admin.usage(&issued.client_id, None).await.unwrap();
    let today = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 / 86_400;
    assert_eq!(usage.iter().map(|d| (d.day, d.requests)).collect::<Vec<_>>(), [(today, 3)]);
    wait_until(Duration::from_secs(5), "lastUsedAt is written", || async {
        admin.credential(&issued.client_id).await.unwrap().credential.last_used_at.is_some()
    })
    .await;

    // Rotation with a grace period: both keys work, two live generations, the old one expiring.
    let rotated = admin.rotate_credential(&issued.client_id, Some(Duration::from_secs(24 * 3600))).await.unwrap();
    assert_eq!(rotated.client_id, issued.client_id);
    assert_ne!(rotated.api_key, issued.api_key);
    assert_eq!(rotated.credential.generation, 2);
    let mut live: Vec<(u32, Option<i64>)> =
        rotated.credential.live_generations.iter().map(|g| (g.generation, g.expires_at)).collect();
    live.sort();
    assert!(matches!(live[..], [(1, Some(_)), (2, None)]), "{live:?}");
    let expiry = live[0].1.unwrap();
    let day_ms = 24 * 3600 * 1000;
    assert!((expiry - rotated.credential.updated_at - day_ms).abs() < 60_000, "about 24 h of grace");
    client.verify().await.expect("the old key works during the grace period");
    let new_client = ApiKeyClient::new(&server.url(), rotated.api_key.expose()).unwrap();
    new_client.verify().await.expect("the new key works");

    // Rotation without grace: the previous key stops at once.
    let again = admin.rotate_credential(&issued.client_id, None).await.unwrap();
    assert_eq!(again.credential.generation, 3);
    let err = new_client.verify().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidAuth));
    let newest = ApiKeyClient::new(&server.url(), again.api_key.expose()).unwrap();
    newest.verify().await.unwrap();

    // Revocation: the key stops everywhere.
    let revoked = admin.revoke_credential(&issued.client_id).await.unwrap();
    assert_eq!(revoked.status, CredentialStatus::Revoked);
    assert!(revoked.revoked_at.is_some());
    assert_eq!(newest.verify().await.unwrap_err().code(), Some(Code::InvalidAuth));
    assert_eq!(admin.credential(&issued.client_id).await.unwrap().credential.status, CredentialStatus::Revoked);
}

#[tokio::test]
async fn signing_keys_can_be_listed_and_rotated() {
    let server = Server::start().await;
    let admin = server.admin();
    let keys = admin.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].retired_at.is_none());
    let c = server.customer().await;
    let tokens = c.token_client(&server.url());
    tokens.verify().await.unwrap();

    let new = admin.rotate_signing_key().await.unwrap();
    assert_ne!(new.kid, keys[0].kid);
    let kids: Vec<String> = admin.signing_keys().await.unwrap().into_iter().map(|k| k.kid).collect();
    assert!(kids.contains(&new.kid) && kids.contains(&keys[0].kid), "{kids:?}");
    tokens.verify().await.expect("tokens of the old key keep verifying");
    tokens.clear_token().await;
    tokens.verify().await.expect("and new ones are signed with the new key");
}

#[tokio::test]
async fn admin_errors_are_typed() {
    let server = Server::start().await;
    let admin = server.admin();
    let unknown = "0123456789abcdef01234567";

    let err = admin.account(unknown).await.unwrap_err();
    assert!(
        matches!(err, Error::Api { code: Code::AccountNotFound, status: 404, ref msg, retry_after: None } if !msg.is_empty()),
        "{err:?}"
    );
    assert_eq!(admin.ban(unknown, "x").await.unwrap_err().code(), Some(Code::AccountNotFound));
    assert_eq!(admin.create_credential(unknown).await.unwrap_err().code(), Some(Code::AccountNotFound));
    let err = admin.credential(unknown).await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(404)), "{err:?}");
    assert_eq!(admin.revoke_credential(unknown).await.unwrap_err().status(), Some(404));

    // Malformed input: 1003 with HTTP 400; a taken email: 1003 with HTTP 409.
    for err in [
        admin.account("not-an-id").await.unwrap_err(),
        admin.create_account("nope", "").await.unwrap_err(),
        admin.accounts_page(&AccountQuery::new().limit(0), None).await.unwrap_err(),
        admin.accounts_page(&AccountQuery::new(), Some("not-a-cursor")).await.unwrap_err(),
        admin.ban(unknown, &"x".repeat(501)).await.unwrap_err(),
    ] {
        assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(400)), "{err:?}");
    }
    let email = unique_email();
    admin.create_account(&email, "").await.unwrap();
    let err = admin.create_account(&email.to_uppercase(), "").await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(409)), "{err:?}");
    let c = server.customer().await;
    for days in [0, 367] {
        let err = admin.usage(c.client_id(), Some(days)).await.unwrap_err();
        assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(400)), "days={days}: {err:?}");
    }
    // Ids are path segments, percent-encoded: no way out of the resource.
    let err = admin.account("../signing-keys").await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
    for id in ["", ".", ".."] {
        assert!(matches!(admin.account(id).await, Err(Error::Invalid(_))), "{id:?}");
        assert!(matches!(admin.revoke_credential(id).await, Err(Error::Invalid(_))), "{id:?}");
    }

    // The wrong admin token, or none.
    let wrong = AdminClient::new(&server.url(), "kga_wrong-admin-token-0123456789abcdef").unwrap();
    let err = wrong.signing_keys().await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::InvalidAuth, status: 401, .. }), "{err:?}");
    let err = AdminClient::new(&server.url(), "").unwrap().signing_keys().await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::EmptyAuth | Code::InvalidAuth, status: 401, .. }), "{err:?}");
    // A customer's key is not the admin token.
    let err = AdminClient::new(&server.url(), c.api_key()).unwrap().signing_keys().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidAuth));
}

#[tokio::test]
async fn lists_are_streams_that_follow_the_cursor() {
    let server = Server::start().await;
    let admin = server.admin();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(admin.create_account(&unique_email(), "").await.unwrap().id);
    }

    // One page at a time.
    let q = AccountQuery::new().limit(2);
    let first = admin.accounts_page(&q, None).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let next = first.next.clone().expect("a next cursor");
    let second = admin.accounts_page(&q, Some(&next)).await.unwrap();
    assert_eq!(second.items.iter().map(|a| &a.id).collect::<Vec<_>>(), [&ids[2], &ids[3]]);

    // The stream walks all three pages (2 + 2 + 1), in order, each account once.
    let all: Vec<String> = admin.accounts(q.clone()).map_ok(|a| a.id).try_collect().await.unwrap();
    assert_eq!(all, ids);
    // Several pages of one item; the default page size; a search.
    let all: Vec<String> = admin.accounts(AccountQuery::new().limit(1)).map_ok(|a| a.id).try_collect().await.unwrap();
    assert_eq!(all, ids);
    assert_eq!(admin.accounts(AccountQuery::new()).try_collect::<Vec<_>>().await.unwrap().len(), 5);
    let found: Vec<_> = admin.accounts(AccountQuery::new().search(&ids[3]).limit(2)).try_collect().await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, ids[3]);
    // A bad query fails the stream with the typed error.
    let err = admin.accounts(AccountQuery::new().limit(5000)).try_collect::<Vec<_>>().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::ParamError));

    // An account's credentials over pages of two: the stream gives exactly what walking the
    // pages by hand gives (in the server's order), each credential once.
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(admin.create_credential(&ids[0]).await.unwrap().client_id);
    }
    let (mut walked, mut after, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let page = admin.credentials_page(&ids[0], Some(2), after.as_deref()).await.unwrap();
        assert!(page.items.len() <= 2);
        pages += 1;
        walked.extend(page.items.into_iter().map(|c| c.client_id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let listed: Vec<String> = admin.credentials(&ids[0], Some(2)).map_ok(|c| c.client_id).try_collect().await.unwrap();
    assert_eq!(listed, walked);
    let (mut sorted, mut created) = (listed.clone(), clients.clone());
    sorted.sort();
    created.sort();
    assert_eq!(sorted, created, "every credential once");
    let err = admin.credentials("0123456789abcdef01234567", None).try_collect::<Vec<_>>().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::AccountNotFound));
}

//! The audit log through `AdminClient`: changes made with the SDK read back by target, account,
//! action and time, who made them (the admin token, from 127.0.0.1, with the request's id), the
//! fields a change changed, paging by cursor as a stream, and a bad filter as a typed `1003`.

use futures_util::TryStreamExt;
use keygate_client::{ActorKind, AuditEntry, AuditFilter, Code, CredentialFields, Error, TargetKind};
use serde_json::json;

use crate::support::{ADMIN_TOKEN, Server, unique_email};

fn actions(entries: &[AuditEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.action.as_str()).collect()
}

#[tokio::test]
async fn audit_log_records_admin_api_changes_and_reads_them_back() {
    let server = Server::start().await;
    let admin = server.admin();

    let account = admin.create_account(&unique_email(), "Ada").await.unwrap();
    let issued = admin.create_credential_with(&account.id, &CredentialFields::new().name("first")).await.unwrap();
    admin.update_credential(&issued.client_id, &CredentialFields::new().name("second")).await.unwrap();
    admin.ban(&account.id, "chargeback fraud").await.unwrap();
    // Another account and credential, which the first account's history must not show.
    let other = server.customer().await;

    // An account's history: its own entries and its credential's, newest first.
    let history = admin.audit(&AuditFilter::new().account(&account.id)).await.unwrap();
    assert!(history.is_last(), "{history:?}");
    let history = history.items;
    assert_eq!(actions(&history), ["account.ban", "credential.update", "credential.create", "account.create"]);
    assert!(history.windows(2).all(|w| w[0].id > w[1].id && w[0].at >= w[1].at), "newest first: {history:#?}");
    let targets: Vec<(TargetKind, &str)> = history.iter().map(|e| (e.target_kind, e.target.as_str())).collect();
    assert_eq!(
        targets,
        [
            (TargetKind::Account, account.id.as_str()),
            (TargetKind::Credential, issued.client_id.as_str()),
            (TargetKind::Credential, issued.client_id.as_str()),
            (TargetKind::Account, account.id.as_str()),
        ]
    );
    for e in &history {
        assert_eq!((e.actor_kind, e.actor.as_str()), (ActorKind::AdminToken, "admin token"), "{e:?}");
        assert_eq!(e.account_id.as_deref(), Some(account.id.as_str()), "{e:?}");
        assert_eq!(e.source_ip.as_deref(), Some("127.0.0.1"), "{e:?}");
        let id = e.request_id.as_deref().unwrap_or_default();
        assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic()), "{e:?}");
        assert!(e.at >= account.created_at, "{e:?}");
    }
    let request_ids: std::collections::HashSet<_> = history.iter().map(|e| e.request_id.clone()).collect();
    assert_eq!(request_ids.len(), history.len(), "one request per change: {request_ids:?}");
    // A creation has no before; the ban says what it changed.
    let (ban, created) = (&history[0], &history[3]);
    assert_eq!(created.before, None);
    assert_eq!(created.field_after("email"), Some(&json!(account.email)));
    assert_eq!(ban.field_before("status"), Some(&json!("active")));
    assert_eq!(ban.field_after("status"), Some(&json!("banned")));
    assert_eq!(ban.field_after("banReason"), Some(&json!("chargeback fraud")));

    // By target: the credential's entries, and the rename's fields before and after (only those).
    let credential = admin.audit(&AuditFilter::new().target(&issued.client_id)).await.unwrap().items;
    assert_eq!(actions(&credential), ["credential.update", "credential.create"]);
    let rename = &credential[0];
    assert_eq!(rename.before, Some(json!({"name": "first"})), "{rename:?}");
    assert_eq!(rename.after, Some(json!({"name": "second"})), "{rename:?}");
    assert_eq!(rename.changed_fields(), ["name"]);
    assert_eq!(credential[1].field_after("name"), Some(&json!("first")));
    assert!(credential[1].after.as_ref().is_some_and(|a| a.get("apiKey").is_none()), "never the key");

    // By kind of action: every credential's entries, of both accounts.
    let by_kind = admin.audit(&AuditFilter::new().action("credential")).await.unwrap().items;
    assert!(by_kind.iter().all(|e| e.target_kind == TargetKind::Credential), "{by_kind:#?}");
    let mut creds: Vec<&str> = by_kind.iter().map(|e| e.target.as_str()).collect();
    creds.dedup();
    assert_eq!(creds, [other.client_id(), issued.client_id.as_str()]);
    assert_eq!(actions(&by_kind), ["credential.create", "credential.update", "credential.create"]);
    // By one action, and by actor.
    let bans = admin.audit(&AuditFilter::new().action("account.ban")).await.unwrap().items;
    assert_eq!(bans, std::slice::from_ref(ban));
    let by_admin = admin.audit(&AuditFilter::new().actor("admin token").account(&account.id)).await.unwrap().items;
    assert_eq!(by_admin, history);
    assert!(admin.audit(&AuditFilter::new().actor("nobody@nowhere")).await.unwrap().items.is_empty());

    // By time: from the first change on, and nothing from tomorrow (dates and milliseconds).
    let since = AuditFilter::new().account(&account.id).since_ms(created.at).until("2999-01-01");
    assert_eq!(admin.audit(&since).await.unwrap().items, history);
    let later = AuditFilter::new().account(&account.id).since_ms(ban.at + 86_400_000);
    assert!(admin.audit(&later).await.unwrap().items.is_empty());
    let before = AuditFilter::new().account(&account.id).until_ms(created.at);
    assert!(admin.audit(&before).await.unwrap().items.is_empty(), "until is exclusive");

    // Pages of one, by hand and as a stream: the same entries in the same order.
    let one = AuditFilter::new().account(&account.id).limit(1);
    let first = admin.audit(&one).await.unwrap();
    assert_eq!(first.items, history[..1]);
    let next = first.next.expect("more pages");
    let second = admin.audit(&one.clone().cursor(next)).await.unwrap();
    assert_eq!(second.items, history[1..2]);
    let streamed: Vec<AuditEntry> = admin.audit_entries(one.clone()).try_collect().await.unwrap();
    assert_eq!(streamed, history);
    // From a cursor: what follows it.
    let rest: Vec<AuditEntry> =
        admin.audit_entries(one.cursor(second.next.expect("more pages"))).try_collect().await.unwrap();
    assert_eq!(rest, history[2..]);
    // The whole log, the other account's entries and keygate's own at start-up included.
    let all: Vec<AuditEntry> = admin.audit_entries(AuditFilter::new().limit(2)).try_collect().await.unwrap();
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    assert!(history.iter().all(|e| all.contains(e)));
    assert!(all.iter().any(|e| e.target == other.account_id), "{all:#?}");
}

#[tokio::test]
async fn audit_request_id_is_the_answer_s_x_request_id() {
    let server = Server::start().await;
    let admin = server.admin();
    let c = server.customer().await;

    // The SDK does not show answer headers: a plain request, to read its x-request-id.
    let res = reqwest::Client::new()
        .patch(format!("{}/admin/v1/credentials/{}", server.url(), c.client_id()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let header = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let page = admin.audit(&AuditFilter::new().target(c.client_id()).action("credential.update")).await.unwrap();
    let [change] = &page.items[..] else { panic!("one change: {page:?}") };
    assert_eq!(change.request_id.as_deref(), Some(header.as_str()));
    assert_eq!(
        (change.before.clone(), change.after.clone()),
        (Some(json!({"enabled": true})), Some(json!({"enabled": false})))
    );
}

#[tokio::test]
async fn a_bad_audit_filter_is_a_typed_1003() {
    let server = Server::start().await;
    let admin = server.admin();
    let bad = [
        AuditFilter::new().action("nope"),
        AuditFilter::new().action("credential.ban"),
        AuditFilter::new().account("not-an-account"),
        AuditFilter::new().since("yesterday"),
        AuditFilter::new().since("2025-02-01").until("2025-01-01"),
        AuditFilter::new().cursor("abc"),
        AuditFilter::new().limit(0),
        AuditFilter::new().limit(1001),
    ];
    for filter in bad {
        let err = admin.audit(&filter).await.unwrap_err();
        assert!(matches!(err, Error::Api { code: Code::ParamError, status: 400, .. }), "{filter:?}: {err:?}");
        // The stream ends with the same error, at once (a 400 is not retried).
        let streamed: Result<Vec<AuditEntry>, Error> = admin.audit_entries(filter.clone()).try_collect().await;
        assert!(matches!(streamed, Err(Error::Api { code: Code::ParamError, status: 400, .. })), "{filter:?}");
    }
    let err = admin.audit(&AuditFilter::new().action("nope")).await.unwrap_err();
    assert!(
        matches!(err, Error::Api { ref msg, .. } if msg.contains("action")),
        "the message names the field: {err:?}"
    );

    // A wrong admin token is refused as for every admin call.
    let stranger = keygate_client::AdminClient::new(&server.url(), "kga_not-the-token-0123456789abcdef").unwrap();
    let err = stranger.audit(&AuditFilter::new()).await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::InvalidAuth), Some(401)), "{err:?}");
}

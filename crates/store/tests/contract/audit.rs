//! The audit log's contract on both backends: every write that takes an `Audit` records one entry
//! in its own transaction (a refused write records none), with the fields that changed on both
//! sides and never a secret; listings filter and page newest first; entries cannot be updated;
//! pruning deletes by age.

use std::future::Future;
use std::sync::Arc;

use keygate_core::ClientId;
use keygate_core::audit::{ActorKind, Audit, AuditEntry, TargetKind};
use keygate_core::credits::{Adjustment, CreditsConfig};
use keygate_core::model::CredentialChange;
use keygate_store::{AuditQuery, CreditScope, Role, Store, StoreError, now_ms};
use serde_json::json;

use super::{hash, new_account};

fn all() -> AuditQuery {
    AuditQuery { limit: 1000, ..AuditQuery::default() }
}

async fn entries(store: &dyn Store, q: AuditQuery) -> Vec<AuditEntry> {
    store.audit_log(&q).await.unwrap()
}

/// The newest entry, which must be the only one written since `count` entries were there.
async fn one_more(store: &dyn Store, count: &mut usize) -> AuditEntry {
    let now = entries(store, all()).await;
    assert_eq!(now.len(), *count + 1, "exactly one entry per write: {:#?}", &now[..now.len().min(3)]);
    *count += 1;
    now[0].clone()
}

async fn none_more(store: &dyn Store, count: usize) {
    assert_eq!(entries(store, all()).await.len(), count, "a refused write records nothing");
}

pub(crate) async fn audit_suite<F, Fut>(store: Arc<dyn Store>, raw: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<u64, String>>,
{
    let s = store.as_ref();
    let started = now_ms();
    let customer =
        Audit::customer("alice@example.com").from_request(Some("203.0.113.9".parse().unwrap()), Some("req-1"));
    let admin = Audit::admin_token().from_request(Some("2001:db8::1".parse().unwrap()), Some("req-2"));
    let cli = Audit::cli("ops", "db-host");
    let mut count = entries(s, all()).await.len();

    // An account created by sign-up: the whole record, the role and whether a password is set,
    // never the hash.
    let secret_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$SECRET-HASH";
    let alice = new_account("alice@example.com");
    let a = s.create_console_account(&customer, &alice, Some(secret_hash), Role::Customer).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!(
        (e.actor_kind, e.actor.as_str(), e.action.as_str()),
        (ActorKind::Customer, "alice@example.com", "account.create")
    );
    assert_eq!((e.target_kind, e.target.as_str()), (TargetKind::Account, a.id.to_hex().as_str()));
    assert_eq!(e.account_id.as_deref(), Some(a.id.to_hex().as_str()));
    assert_eq!((e.source_ip.as_deref(), e.request_id.as_deref()), (Some("203.0.113.9"), Some("req-1")));
    assert_eq!(e.before, None);
    let after = e.after.clone().unwrap();
    assert_eq!(
        (&after["email"], &after["role"], &after["password"]),
        (&json!("alice@example.com"), &json!("customer"), &json!("set"))
    );
    assert!(after.get("updatedAt").is_none(), "what changes with every write is left out");
    assert!(e.at >= started && e.at <= now_ms());

    // A credential, with its fields set at creation: one entry, not two.
    let cid = ClientId::generate((now_ms() / 1000) as u64);
    let named = CredentialChange { name: Some(Some("dashboard".into())), ..CredentialChange::default() };
    s.create_credential(&admin, a.id, cid, &hash("audit-key"), "kgk_...Ab12", &named).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!(
        (e.actor_kind, e.action.as_str(), e.target.as_str()),
        (ActorKind::AdminToken, "credential.create", cid.to_hex().as_str())
    );
    assert_eq!(
        e.account_id.as_deref(),
        Some(a.id.to_hex().as_str()),
        "a credential's entries are its account's history"
    );
    assert_eq!(e.after.as_ref().unwrap()["name"], json!("dashboard"));
    assert_eq!((e.source_ip.as_deref(), e.request_id.as_deref()), (Some("2001:db8::1"), Some("req-2")));

    // A change keeps only what changed, each side with its value.
    let renamed = CredentialChange {
        name: Some(Some("dashboard (read-only)".into())),
        enabled: Some(false),
        ..CredentialChange::default()
    };
    s.update_credential(&cli, cid, &renamed).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!(
        (e.actor_kind, e.actor.as_str(), e.action.as_str()),
        (ActorKind::Cli, "ops@db-host", "credential.update")
    );
    assert_eq!(e.before, Some(json!({"name": "dashboard", "enabled": true})));
    assert_eq!(e.after, Some(json!({"name": "dashboard (read-only)", "enabled": false})));
    assert_eq!((e.source_ip, e.request_id), (None, None));

    // A refused change (a role that does not exist) records nothing: same transaction.
    let bad = CredentialChange { roles: Some(vec!["nope".into()]), ..CredentialChange::default() };
    assert!(matches!(s.update_credential(&cli, cid, &bad).await, Err(StoreError::Conflict(_))));
    none_more(s, count).await;
    assert!(matches!(s.revoke_credential(&cli, ClientId::generate(1)).await, Err(StoreError::NotFound)));
    none_more(s, count).await;

    // Rotation and revocation.
    s.rotate_credential(&admin, cid, &hash("audit-key-2"), "kgk_...Cd34", Some(now_ms() + 60_000)).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!(e.action, "credential.rotate");
    assert_eq!(
        (&e.before.as_ref().unwrap()["generation"], &e.after.as_ref().unwrap()["generation"]),
        (&json!(1), &json!(2))
    );
    s.revoke_credential(&admin, cid).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!(e.action, "credential.revoke");
    assert_eq!(
        (&e.before.as_ref().unwrap()["status"], &e.after.as_ref().unwrap()["status"]),
        (&json!("active"), &json!("revoked"))
    );

    // Bans, limits, allowlists.
    s.set_account_status(&admin, a.id, keygate_core::model::AccountStatus::Banned, Some("fraud")).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!(e.action, "account.ban");
    assert_eq!(e.before, Some(json!({"status": "active", "banReason": null})));
    assert_eq!(e.after, Some(json!({"status": "banned", "banReason": "fraud"})));
    s.set_account_status(&admin, a.id, keygate_core::model::AccountStatus::Active, None).await.unwrap();
    assert_eq!(one_more(s, &mut count).await.action, "account.unban");
    s.set_account_ip_allowlist(&admin, a.id, &["10.0.0.0/8".parse().unwrap()]).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!((e.action.as_str(), e.after.clone()), ("account.update", Some(json!({"ipAllowlist": ["10.0.0.0/8"]}))));

    // Plans and roles: created, changed, deleted (a refused delete records nothing).
    let limit = keygate_core::ratelimit::RateLimit::new("requests", 10, "1m".parse().unwrap());
    s.put_plan(&admin, "pro", std::slice::from_ref(&limit), None).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!(
        (e.action.as_str(), e.target_kind, e.target.as_str(), e.account_id.as_deref()),
        ("plan.create", TargetKind::Plan, "pro", None)
    );
    s.put_plan(&admin, "pro", &[], None).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!(e.action, "plan.update");
    assert_eq!(e.after, Some(json!({"ratelimits": []})));
    s.update_account_limits(&admin, a.id, None, Some(Some("pro"))).await.unwrap();
    assert_eq!(one_more(s, &mut count).await.after, Some(json!({"plan": "pro"})));
    assert!(matches!(s.delete_plan(&admin, "pro").await, Err(StoreError::Conflict(_))));
    none_more(s, count).await;
    s.update_account_limits(&admin, a.id, None, Some(None)).await.unwrap();
    one_more(s, &mut count).await;
    s.delete_plan(&admin, "pro").await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!((e.action.as_str(), e.after.is_none()), ("plan.delete", true));
    assert_eq!(e.before.as_ref().unwrap()["name"], json!("pro"));
    s.put_role(&admin, "reader", &["images.read".to_owned()]).await.unwrap();
    assert_eq!(one_more(s, &mut count).await.action, "role.create");
    s.put_role(&admin, "reader", &["images.read".to_owned(), "videos.read".to_owned()]).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!(e.before, Some(json!({"permissions": ["images.read"]})));
    assert_eq!(e.after, Some(json!({"permissions": ["images.read", "videos.read"]})));
    s.delete_role(&admin, "reader").await.unwrap();
    assert_eq!(one_more(s, &mut count).await.action, "role.delete");

    // Credits: a balance set, adjusted once per idempotency key (a replay records nothing).
    let scope = CreditScope::Account(a.id);
    s.set_credits(&admin, scope, Some(&CreditsConfig { remaining: 100, refill: None }), now_ms()).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!((e.action.as_str(), e.target_kind), ("account.credits", TargetKind::Account));
    assert_eq!(e.before, Some(json!({"credits": null})));
    assert_eq!(e.after, Some(json!({"credits": {"remaining": 100, "refill": null}})));
    s.adjust_credits(&admin, scope, Adjustment::Add(50), Some("pay-1"), now_ms()).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!(e.before, Some(json!({"credits": {"remaining": 100, "refill": null}})));
    assert_eq!(
        e.after,
        Some(json!({"credits": {"remaining": 150, "refill": null, "add": 50, "idempotencyKey": "pay-1"}}))
    );
    assert!(s.adjust_credits(&admin, scope, Adjustment::Add(50), Some("pay-1"), now_ms()).await.unwrap().replayed);
    none_more(s, count).await;

    // Console logins: a password set, changed, cleared; a role.
    s.set_password_hash(&cli, a.id, Some("$argon2id$v=19$SECOND-SECRET")).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!(
        (e.action.as_str(), e.before.clone(), e.after.clone()),
        ("account.password", Some(json!({"password": "set"})), Some(json!({"password": "changed"})))
    );
    s.set_password_hash(&cli, a.id, None).await.unwrap();
    assert_eq!(one_more(s, &mut count).await.after, Some(json!({"password": "none"})));
    s.set_role(&cli, a.id, Role::Operator).await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!((e.action.as_str(), e.after.clone()), ("account.role", Some(json!({"role": "operator"}))));

    // Signing keys and the admin token (the entry says it was reset, never its hash).
    s.add_signing_key(&Audit::system(), "k-audit").await.unwrap();
    let e = one_more(s, &mut count).await;
    assert_eq!(
        (e.actor_kind, e.action.as_str(), e.target_kind),
        (ActorKind::System, "signing_key.add", TargetKind::SigningKey)
    );
    s.retire_signing_key(&admin, "k-audit").await.unwrap();
    assert_eq!(one_more(s, &mut count).await.action, "signing_key.retire");
    assert!(s.put_audited_setting(&cli, "admin_token.reset", "audit_token", b"TOKEN-HASH-BYTES", false).await.unwrap());
    let e = one_more(s, &mut count).await;
    assert_eq!(
        (e.action.as_str(), e.target_kind, e.before.clone(), e.after.clone()),
        ("admin_token.reset", TargetKind::AdminToken, None, None)
    );
    assert!(!s.put_audited_setting(&cli, "admin_token.create", "audit_token", b"OTHER", true).await.unwrap());
    none_more(s, count).await;
    s.put_setting("not-audited", b"x", false).await.unwrap();
    none_more(s, count).await;

    // No secret anywhere in the log.
    let text = serde_json::to_string(&entries(s, all()).await).unwrap();
    for secret in [secret_hash, "SECOND-SECRET", "TOKEN-HASH-BYTES", "audit-key"] {
        assert!(!text.contains(secret), "{secret} is in the audit log");
    }

    // Filters: actor, target, account (the account's entries and its credentials'), action and
    // kind of target, time; newest first; pages by cursor.
    let by = |f: fn(&mut AuditQuery)| {
        let mut q = all();
        f(&mut q);
        q
    };
    let mine = entries(s, by(|q| q.actor = Some("ops@db-host".into()))).await;
    assert!(mine.len() >= 5 && mine.iter().all(|e| e.actor == "ops@db-host"));
    let cred = entries(s, AuditQuery { target: Some(cid.to_hex()), ..all() }).await;
    assert_eq!(
        cred.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["credential.revoke", "credential.rotate", "credential.update", "credential.create"]
    );
    let history = entries(s, AuditQuery { account: Some(a.id), ..all() }).await;
    assert!(
        history.iter().any(|e| e.target_kind == TargetKind::Credential)
            && history.iter().any(|e| e.target_kind == TargetKind::Account)
    );
    assert!(history.iter().all(|e| e.account_id.as_deref() == Some(a.id.to_hex().as_str())));
    assert!(history.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let kinds = entries(s, by(|q| q.action = Some("credential".into()))).await;
    assert_eq!(kinds.len(), 4);
    let bans = entries(s, by(|q| q.action = Some("account.ban".into()))).await;
    assert_eq!(bans.len(), 1);
    assert!(entries(s, AuditQuery { from: Some(now_ms() + 60_000), ..all() }).await.is_empty());
    assert_eq!(
        entries(s, AuditQuery { to: Some(started), ..all() }).await.len(),
        entries(s, all()).await.len() - count_since(s, started).await
    );
    let first = entries(s, AuditQuery { account: Some(a.id), limit: 2, ..all() }).await;
    let second = entries(s, AuditQuery { account: Some(a.id), limit: 2, before_id: Some(first[1].id), ..all() }).await;
    assert_eq!(
        first.iter().chain(&second).map(|e| e.id).collect::<Vec<_>>(),
        history.iter().take(4).map(|e| e.id).collect::<Vec<_>>()
    );

    // Append-only: an UPDATE of an entry is refused by the database itself.
    let refused = raw(format!("UPDATE audit_log SET actor = 'mallory' WHERE id = {}", history[0].id)).await;
    assert!(refused.is_err(), "an entry was updated: {refused:?}");
    assert_eq!(entries(s, all()).await[0].actor, history[0].actor);

    // Pruning deletes what is older than the cut, oldest first, and nothing newer.
    raw(format!("INSERT INTO audit_log (at, actor_kind, actor, action, target_kind, target) VALUES ({}, 'system', 'keygate', 'plan.create', 'plan', 'old')", started - 86_400_000))
        .await
        .unwrap();
    let before = entries(s, all()).await.len();
    assert_eq!(s.prune_audit(started - 1).await.unwrap(), 1 + (before - 1 - count_since(s, started).await) as u64);
    assert!(entries(s, AuditQuery { target: Some("old".into()), ..all() }).await.is_empty());
    assert_eq!(entries(s, all()).await.len(), count_since(s, started).await);
}

/// How many entries are from `since` on.
async fn count_since(store: &dyn Store, since: i64) -> usize {
    entries(store, AuditQuery { from: Some(since), ..all() }).await.len()
}

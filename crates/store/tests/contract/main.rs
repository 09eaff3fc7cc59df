//! The storage contract, as a suite any backend must pass. Each backend gets a `#[tokio::test]`
//! that opens a fresh database and runs [`suite`].

use std::sync::Arc;

use keygate_core::audit::Audit;
use keygate_core::model::{AccountStatus, CredentialStatus};
use keygate_core::{ClientId, MasterKey, SecretHash};
use keygate_store::{Entity, NewAccount, Store, StoreError, now_ms};

mod audit;
mod keys;
mod usage;

fn hash(s: &str) -> SecretHash {
    MasterKey::from_hex(&"07".repeat(32)).unwrap().api_key_hasher().hash(s)
}

fn new_account(email: &str) -> NewAccount {
    NewAccount { email: email.into(), first_name: "F".into() }
}

async fn suite(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    let start = store.last_change_seq().await.unwrap();

    // Accounts.
    let a = store.create_account(&Audit::system(), &new_account("Alice@Example.com")).await.unwrap();
    assert_eq!(a.status, AccountStatus::Active);
    assert_eq!(store.get_account(a.id).await.unwrap(), a);
    assert!(matches!(
        store.create_account(&Audit::system(), &new_account("alice@example.COM")).await,
        Err(StoreError::Conflict(_))
    ));
    let b = store.create_account(&Audit::system(), &new_account("bob_100%@example.com")).await.unwrap();
    assert!(b.uid > a.uid);
    assert!(matches!(store.get_account(keygate_core::AccountId::generate(1)).await, Err(StoreError::NotFound)));
    assert_eq!(store.list_accounts(None, 10, None).await.unwrap().len(), 2);
    assert_eq!(store.list_accounts(Some("100%"), 10, None).await.unwrap(), vec![b.clone()]);
    assert_eq!(store.list_accounts(Some("_"), 10, None).await.unwrap(), vec![b.clone()], "LIKE wildcards are escaped");
    assert_eq!(store.list_accounts(None, 10, Some(a.uid)).await.unwrap(), vec![b.clone()]);

    let banned = store.set_account_status(&Audit::system(), a.id, AccountStatus::Banned, Some("fraud")).await.unwrap();
    assert_eq!((banned.status, banned.ban_reason.as_deref()), (AccountStatus::Banned, Some("fraud")));
    assert_eq!(store.account_state(a.id).await.unwrap().unwrap().status, AccountStatus::Banned);
    let active = store.set_account_status(&Audit::system(), a.id, AccountStatus::Active, None).await.unwrap();
    assert_eq!((active.status, active.ban_reason), (AccountStatus::Active, None));
    let events = store.account_events(a.id).await.unwrap();
    assert_eq!(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["banned", "unbanned"]);
    assert_eq!(events[0].reason.as_deref(), Some("fraud"));

    // Credentials.
    let cid = ClientId::generate(1);
    assert!(matches!(
        store
            .create_credential(
                &Audit::system(),
                keygate_core::AccountId::generate(1),
                cid,
                &hash("x"),
                "h",
                &Default::default()
            )
            .await,
        Err(StoreError::NotFound)
    ));
    let c = store
        .create_credential(&Audit::system(), a.id, cid, &hash("k1"), "kgk_...k1", &Default::default())
        .await
        .unwrap();
    assert_eq!((c.generation, c.status, c.live_generations.len()), (1, CredentialStatus::Active, 1));
    assert!(matches!(
        store.create_credential(&Audit::system(), a.id, cid, &hash("k1b"), "h", &Default::default()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.find_secret(&hash("k1")).await.unwrap(), Some((cid, 1)));
    assert_eq!(store.find_secret(&hash("nope")).await.unwrap(), None);

    // Rotation with grace: both generations live; the old one carries its expiry.
    let until = now_ms() + 60_000;
    let r = store.rotate_credential(&Audit::system(), cid, &hash("k2"), "kgk_...k2", Some(until)).await.unwrap();
    assert_eq!(r.generation, 2);
    assert_eq!(r.hint, "kgk_...k2");
    let state = store.credential_state(cid).await.unwrap().unwrap();
    assert_eq!(state.generations.len(), 2);
    assert_eq!(state.generations.iter().find(|g| g.generation == 1).unwrap().expires_at, Some(until));
    assert_eq!(store.find_secret(&hash("k2")).await.unwrap(), Some((cid, 2)));
    // Rotation without grace: only the newest is left.
    let r = store.rotate_credential(&Audit::system(), cid, &hash("k3"), "kgk_...k3", None).await.unwrap();
    assert_eq!(r.live_generations.iter().map(|g| g.generation).collect::<Vec<_>>(), [3]);
    assert_eq!(store.find_secret(&hash("k1")).await.unwrap(), None);
    assert_eq!(store.find_secret(&hash("k2")).await.unwrap(), None);
    // A second credential for the same account.
    let cid2 = ClientId::generate(2);
    store.create_credential(&Audit::system(), a.id, cid2, &hash("other"), "h", &Default::default()).await.unwrap();
    assert_eq!(store.list_credentials(a.id).await.unwrap().len(), 2);
    assert!(store.list_credentials(b.id).await.unwrap().is_empty());

    // Usage (usage.rs has its contract): batches add up; last_used_at only moves forward.
    use keygate_store::{Granularity, UsageDelta, UsageScope};
    let d = |hour, requests, last_used_at| UsageDelta {
        client_id: cid,
        hour,
        outcome: 1000,
        requests,
        credits: 0,
        last_used_at,
    };
    store.record_usage(&[d(480_000, 5, 1_000), d(480_001, 2, 3_000)]).await.unwrap();
    store.record_usage(&[d(480_001, 3, 2_000)]).await.unwrap();
    let days = store.usage(UsageScope::Credential(cid), 0, i64::MAX, Granularity::Day).await.unwrap();
    assert_eq!(days.iter().map(|b| (b.start, b.requests)).collect::<Vec<_>>(), [(20_000 * 86_400_000, 10)]);
    assert_eq!(store.get_credential(cid).await.unwrap().last_used_at, Some(3_000));

    // Revocation removes the secrets and cannot be undone by rotation.
    let rv = store.revoke_credential(&Audit::system(), cid).await.unwrap();
    assert_eq!(rv.status, CredentialStatus::Revoked);
    assert!(rv.revoked_at.is_some());
    assert_eq!(store.find_secret(&hash("k3")).await.unwrap(), None);
    assert!(matches!(
        store.rotate_credential(&Audit::system(), cid, &hash("k4"), "h", None).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.revoke_credential(&Audit::system(), ClientId::generate(3)).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.credential_state(ClientId::generate(3)).await.unwrap(), None);

    // Every write above is in the feed, in order, naming its entity.
    let changes = store.changes_since(start, 1000).await.unwrap();
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    let kinds: Vec<Entity> = changes.iter().map(|c| c.entity).collect();
    assert_eq!(kinds.iter().filter(|e| **e == Entity::Account).count(), 4, "2 creates + ban + unban");
    assert_eq!(kinds.iter().filter(|e| **e == Entity::Credential).count(), 5, "2 creates + 2 rotations + revoke");
    assert!(changes.iter().any(|c| c.entity == Entity::Credential && c.entity_id == cid.to_hex()));
    assert_eq!(store.last_change_seq().await.unwrap(), changes.last().unwrap().seq);
    assert_eq!(store.changes_since(start, 2).await.unwrap().len(), 2);
    let last = store.last_change_seq().await.unwrap();
    store.prune_changes(now_ms() + 1).await.unwrap();
    assert_eq!(store.last_change_seq().await.unwrap(), last, "pruning keeps the newest entry");

    // Signing keys and settings.
    store.add_signing_key(&Audit::system(), "k-a").await.unwrap();
    store.add_signing_key(&Audit::system(), "k-b").await.unwrap();
    assert!(matches!(store.add_signing_key(&Audit::system(), "k-a").await, Err(StoreError::Conflict(_))));
    let retired = store.retire_signing_key(&Audit::system(), "k-a").await.unwrap();
    assert!(retired.retired_at.is_some());
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys.iter().filter(|k| k.retired_at.is_none()).count(), 1);
    assert!(store.put_setting("s", b"1", true).await.unwrap());
    assert!(!store.put_setting("s", b"2", true).await.unwrap());
    assert_eq!(store.get_setting("s").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert!(store.put_setting("s", b"3", false).await.unwrap());
    assert_eq!(store.get_setting("s").await.unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(store.get_setting("absent").await.unwrap(), None);
    // Taken once: the value, then nothing.
    store.put_setting("once", b"v", true).await.unwrap();
    assert_eq!(store.take_setting("once").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(store.take_setting("once").await.unwrap(), None);
    assert_eq!(store.get_setting("once").await.unwrap(), None);
    assert_eq!(store.take_setting("absent").await.unwrap(), None);
    // Of eight takers at once, one gets it.
    store.put_setting("raced", b"v", true).await.unwrap();
    let takers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_setting("raced").await.unwrap() })
        })
        .collect();
    let mut got = 0;
    for t in takers {
        got += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(got, 1, "a setting is taken once");
    // Pruning by prefix and age: only names with the prefix, only the old ones.
    store.put_setting("claim.a", b"1", false).await.unwrap();
    store.put_setting("claim.b", b"1", false).await.unwrap();
    store.put_setting("claimx", b"1", false).await.unwrap();
    assert_eq!(store.prune_settings("claim.", now_ms() - 60_000).await.unwrap(), 0, "none is old yet");
    assert_eq!(store.prune_settings("claim.", now_ms() + 1).await.unwrap(), 2);
    assert_eq!(store.get_setting("claim.a").await.unwrap(), None);
    assert!(store.get_setting("claimx").await.unwrap().is_some(), "outside the prefix");
    assert!(store.get_setting("s").await.unwrap().is_some(), "outside the prefix");
}

/// The console's part of the contract: logins, roles, sessions.
async fn console_suite(store: Arc<dyn Store>) {
    use keygate_store::Role;
    let start = store.last_change_seq().await.unwrap();
    let c = store
        .create_console_account(
            &Audit::system(),
            &new_account("Carol@Example.com"),
            Some("$argon2id$fake"),
            Role::Customer,
        )
        .await
        .unwrap();
    let op = store
        .create_console_account(&Audit::system(), &new_account("op@example.com"), None, Role::Operator)
        .await
        .unwrap();
    assert!(matches!(
        store.create_console_account(&Audit::system(), &new_account("carol@example.com"), None, Role::Customer).await,
        Err(StoreError::Conflict(_))
    ));
    // An account created the usual way is a customer without a password.
    let plain = store.create_account(&Audit::system(), &new_account("plain@example.com")).await.unwrap();
    let p = store.console_account(plain.id).await.unwrap();
    assert_eq!((p.role, p.password_hash), (Role::Customer, None));
    assert!(matches!(store.console_account(keygate_core::AccountId::generate(1)).await, Err(StoreError::NotFound)));

    // Login lookup: by email, case-insensitive.
    let found = store.console_account_by_email("CAROL@example.COM").await.unwrap().unwrap();
    assert_eq!(found.account, c);
    assert_eq!((found.role, found.password_hash.as_deref()), (Role::Customer, Some("$argon2id$fake")));
    assert!(!format!("{found:?}").contains("fake"), "Debug hides the password hash");
    assert_eq!(store.console_account_by_email("nobody@example.com").await.unwrap(), None);
    assert_eq!(store.console_account(op.id).await.unwrap().role, Role::Operator);

    // Roles and passwords change; neither is an authentication decision for API keys, so the
    // feed only holds the three account creations.
    store.set_role(&Audit::system(), c.id, Role::Operator).await.unwrap();
    assert_eq!(store.console_account(c.id).await.unwrap().role, Role::Operator);
    store.set_role(&Audit::system(), c.id, Role::Customer).await.unwrap();
    store.set_password_hash(&Audit::system(), op.id, Some("$argon2id$op")).await.unwrap();
    assert_eq!(store.console_account(op.id).await.unwrap().password_hash.as_deref(), Some("$argon2id$op"));
    assert!(matches!(
        store.set_role(&Audit::system(), keygate_core::AccountId::generate(1), Role::Operator).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.set_password_hash(&Audit::system(), keygate_core::AccountId::generate(1), None).await,
        Err(StoreError::NotFound)
    ));
    let changes = store.changes_since(start, 100).await.unwrap();
    assert_eq!(changes.len(), 3, "account creations only: {changes:?}");

    // Sessions: found by token hash while live, with their account and role.
    let now = now_ms();
    let (s1, s2, s3) = (hash("session-1"), hash("session-2"), hash("session-3"));
    store.create_session(&s1, c.id, now + 60_000).await.unwrap();
    store.create_session(&s2, c.id, now + 60_000).await.unwrap();
    store.create_session(&s3, op.id, now + 1_000).await.unwrap();
    assert!(matches!(store.create_session(&s1, op.id, now + 1).await, Err(StoreError::Conflict(_))));
    assert!(matches!(
        store.create_session(&hash("x"), keygate_core::AccountId::generate(1), now + 1).await,
        Err(StoreError::NotFound)
    ));
    let live = store.session(&s1, now).await.unwrap().unwrap();
    assert_eq!((live.account.id, live.role, live.expires_at), (c.id, Role::Customer, now + 60_000));
    assert!(live.created_at <= now_ms());
    assert_eq!(store.session(&s3, now).await.unwrap().unwrap().role, Role::Operator);
    assert_eq!(store.session(&s3, now + 1_000).await.unwrap(), None, "expired at expires_at");
    assert_eq!(store.session(&hash("unknown"), now).await.unwrap(), None);
    // A role change shows on the next lookup.
    store.set_role(&Audit::system(), c.id, Role::Operator).await.unwrap();
    assert_eq!(store.session(&s1, now).await.unwrap().unwrap().role, Role::Operator);
    store.set_role(&Audit::system(), c.id, Role::Customer).await.unwrap();

    // Logout ends one session; pruning removes the expired ones.
    store.delete_session(&s2).await.unwrap();
    store.delete_session(&s2).await.unwrap();
    assert_eq!(store.session(&s2, now).await.unwrap(), None);
    assert_eq!(store.session(&s1, now).await.unwrap().map(|s| s.account.id), Some(c.id));
    assert_eq!(store.prune_sessions(now + 1_000).await.unwrap(), 1);
    assert_eq!(store.session(&s3, now).await.unwrap(), None, "pruned");

    // A ban ends every session of the account, in the same transaction; an unban does not revive them.
    store.create_session(&s2, c.id, now + 60_000).await.unwrap();
    store.create_session(&s3, op.id, now + 60_000).await.unwrap();
    store.set_account_status(&Audit::system(), c.id, AccountStatus::Banned, Some("abuse")).await.unwrap();
    assert_eq!(store.session(&s1, now).await.unwrap(), None);
    assert_eq!(store.session(&s2, now).await.unwrap(), None);
    assert!(store.session(&s3, now).await.unwrap().is_some(), "other accounts keep theirs");
    store.set_account_status(&Audit::system(), c.id, AccountStatus::Active, None).await.unwrap();
    assert_eq!(store.session(&s1, now).await.unwrap(), None);

    // Setting a password ends the account's sessions (a reset logs every browser out).
    store.set_password_hash(&Audit::system(), op.id, Some("$argon2id$new")).await.unwrap();
    assert_eq!(store.session(&s3, now).await.unwrap(), None);
    store.create_session(&s3, op.id, now + 60_000).await.unwrap();
    assert_eq!(store.delete_sessions(op.id).await.unwrap(), 1);
    assert_eq!(store.delete_sessions(op.id).await.unwrap(), 0);
}

/// Fails unless `r` is a conflict whose message contains `needle`.
#[track_caller]
fn conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, needle: &str) {
    match r {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains(needle), "{msg:?} lacks {needle:?}"),
        r => panic!("expected a conflict ({needle}), got {r:?}"),
    }
}

/// Rate limits and plans: stored sets of limits round-trip, plans are put, replaced, listed and
/// deleted, the hot path's loads carry every limit that applies, and every write is in the feed.
async fn ratelimits_suite(store: Arc<dyn Store>) {
    use keygate_core::AccountId;
    use keygate_core::decide::AccountState;
    use keygate_core::ratelimit::{AccountLimit, RateLimit, account_limits};
    let rl = |name: &str, limit, duration: &str| RateLimit::new(name, limit, duration.parse().unwrap());
    let feed_since = |after: i64| {
        let store = store.clone();
        async move {
            let changes = store.changes_since(after, 1000).await.unwrap();
            changes.into_iter().map(|c| (c.entity, c.entity_id)).collect::<Vec<_>>()
        }
    };

    let a = store.create_account(&Audit::system(), &new_account("limits@example.com")).await.unwrap();
    let b = store.create_account(&Audit::system(), &new_account("nolimits@example.com")).await.unwrap();
    assert_eq!((a.plan.as_deref(), a.ratelimits.as_slice()), (None, &[][..]));
    let cid = ClientId::generate(41);
    let c = store
        .create_credential(&Audit::system(), a.id, cid, &hash("limited-1"), "h", &Default::default())
        .await
        .unwrap();
    assert!(c.ratelimits.is_empty());
    let ghost_account = AccountId::generate(1);
    let ghost_credential = ClientId::generate(42);

    // A credential's own limits: set, read back by every load, replaced, cleared.
    let start = store.last_change_seq().await.unwrap();
    let own = vec![rl("requests", 10, "1s"), rl("daily", 1_000, "1d")];
    let c = store.set_credential_ratelimits(&Audit::system(), cid, &own).await.unwrap();
    assert_eq!(c.ratelimits, own);
    assert!(c.updated_at >= c.created_at);
    assert_eq!(store.get_credential(cid).await.unwrap().ratelimits, own);
    assert_eq!(store.list_credentials(a.id).await.unwrap()[0].ratelimits, own);
    assert_eq!(store.credential_state(cid).await.unwrap().unwrap().ratelimits, own);
    assert_eq!(feed_since(start).await, [(Entity::Credential, cid.to_hex())]);
    assert!(store.set_credential_ratelimits(&Audit::system(), cid, &[]).await.unwrap().ratelimits.is_empty());
    assert!(store.get_credential(cid).await.unwrap().ratelimits.is_empty());
    store.set_credential_ratelimits(&Audit::system(), cid, &own).await.unwrap();
    assert!(matches!(
        store.set_credential_ratelimits(&Audit::system(), ghost_credential, &own).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(feed_since(start).await.len(), 3, "a failed write appends nothing");

    // Plans: created, read, listed by name, replaced (keeping created_at).
    let start = store.last_change_seq().await.unwrap();
    assert!(store.list_plans().await.unwrap().is_empty());
    assert!(matches!(store.get_plan("pro").await, Err(StoreError::NotFound)));
    let pro = vec![rl("requests", 100, "1s"), rl("monthly", 1_000_000, "30d")];
    let (p, created) = store.put_plan(&Audit::system(), "pro", &pro, None).await.unwrap();
    assert!(created);
    assert_eq!((p.name.as_str(), &p.ratelimits, p.created_at), ("pro", &pro, p.updated_at));
    assert_eq!(store.get_plan("pro").await.unwrap(), p);
    let (free, created) = store.put_plan(&Audit::system(), "free", &[], None).await.unwrap();
    assert!(created);
    assert!(free.ratelimits.is_empty());
    let (basic, _) = store.put_plan(&Audit::system(), "pro-basic", &[rl("requests", 1, "1m")], None).await.unwrap();
    let pro = vec![rl("requests", 200, "1s"), rl("monthly", 2_000_000, "30d"), rl("burst", 50, "1s")];
    let (p2, created) = store.put_plan(&Audit::system(), "pro", &pro, None).await.unwrap();
    assert!(!created);
    assert_eq!((p2.name.as_str(), &p2.ratelimits, p2.created_at), ("pro", &pro, p.created_at));
    assert!(p2.updated_at >= p.updated_at);
    assert_eq!(store.get_plan("pro").await.unwrap(), p2);
    assert_eq!(store.list_plans().await.unwrap(), [free.clone(), p2.clone(), basic.clone()]);
    assert_eq!(
        feed_since(start).await,
        [
            (Entity::Plan, "pro".into()),
            (Entity::Plan, "free".into()),
            (Entity::Plan, "pro-basic".into()),
            (Entity::Plan, "pro".into())
        ]
    );

    // An account's plan and own limits: a missing plan is a conflict (and changes nothing), a
    // missing account is not found.
    let start = store.last_change_seq().await.unwrap();
    conflict(store.update_account_limits(&Audit::system(), a.id, None, Some(Some("gold"))).await, "no plan named");
    conflict(store.update_account_limits(&Audit::system(), a.id, Some(&own), Some(Some("gold"))).await, "gold");
    assert_eq!(store.get_account(a.id).await.unwrap(), a);
    assert!(matches!(
        store.update_account_limits(&Audit::system(), ghost_account, Some(&own), None).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.update_account_limits(&Audit::system(), ghost_account, None, Some(Some("pro"))).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.update_account_limits(&Audit::system(), ghost_account, None, Some(Some("gold"))).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(feed_since(start).await, [], "failed writes append nothing");

    let account_own = vec![rl("requests", 50, "1s"), rl("searches", 5, "1m")];
    let a2 = store.update_account_limits(&Audit::system(), a.id, Some(&account_own), Some(Some("pro"))).await.unwrap();
    assert_eq!((a2.plan.as_deref(), &a2.ratelimits), (Some("pro"), &account_own));
    assert!(a2.updated_at >= a.updated_at);
    assert_eq!((a2.id, a2.uid, &a2.email, a2.created_at), (a.id, a.uid, &a.email, a.created_at));
    assert_eq!(store.get_account(a.id).await.unwrap(), a2);
    assert!(store.list_accounts(None, 100, None).await.unwrap().contains(&a2));
    assert_eq!(store.console_account(a.id).await.unwrap().account, a2);
    assert_eq!(store.console_account_by_email("limits@example.com").await.unwrap().unwrap().account, a2);
    let session = hash("limits-session");
    store.create_session(&session, a.id, now_ms() + 60_000).await.unwrap();
    assert_eq!(store.session(&session, now_ms()).await.unwrap().unwrap().account, a2);
    // Only the plan: the own limits stay. Only the limits: the plan stays. Both at once.
    let a3 = store.update_account_limits(&Audit::system(), a.id, None, Some(Some("free"))).await.unwrap();
    assert_eq!((a3.plan.as_deref(), &a3.ratelimits), (Some("free"), &account_own));
    let a4 = store.update_account_limits(&Audit::system(), a.id, Some(&[]), None).await.unwrap();
    assert_eq!((a4.plan.as_deref(), a4.ratelimits.as_slice()), (Some("free"), &[][..]));
    let a5 = store.update_account_limits(&Audit::system(), a.id, Some(&account_own), Some(Some("pro"))).await.unwrap();
    assert_eq!(store.get_account(a.id).await.unwrap(), a5);
    assert_eq!(
        feed_since(start).await,
        [
            (Entity::Account, a.id.to_hex()),
            (Entity::Account, a.id.to_hex()),
            (Entity::Account, a.id.to_hex()),
            (Entity::Account, a.id.to_hex())
        ]
    );
    assert_eq!(store.plan_accounts("pro").await.unwrap(), 1);
    assert_eq!(store.plan_accounts("free").await.unwrap(), 0);
    assert_eq!(store.plan_accounts("gold").await.unwrap(), 0);

    // The hot path's loads: the credential's own limits, and the account's (its plan's, each
    // overridden by the account's own of the same name, then its own).
    let expected = account_limits(Some(("pro", &pro)), &account_own);
    let plan =
        |name: &str, limit, duration| AccountLimit { limit: rl(name, limit, duration), plan: Some("pro".into()) };
    let mine = |name: &str, limit, duration| AccountLimit { limit: rl(name, limit, duration), plan: None };
    assert_eq!(
        expected,
        [
            plan("monthly", 2_000_000, "30d"),
            plan("burst", 50, "1s"),
            mine("requests", 50, "1s"),
            mine("searches", 5, "1m")
        ],
        "the plan's requests limit is overridden by the account's"
    );
    let state = store.account_state(a.id).await.unwrap().unwrap();
    assert_eq!(state.ratelimits, expected);
    assert_eq!(state, AccountState::new(a5.clone(), Some(&store.get_plan("pro").await.unwrap())));
    let bundle = store.auth_bundle(&hash("limited-1")).await.unwrap().unwrap();
    assert_eq!((bundle.generation, &bundle.credential.ratelimits), (1, &own));
    assert_eq!(bundle.credential, store.credential_state(cid).await.unwrap().unwrap());
    assert_eq!(bundle.account, state);
    // A plan's change shows at the next load of every account on it.
    let pro = vec![rl("requests", 300, "1s")];
    store.put_plan(&Audit::system(), "pro", &pro, None).await.unwrap();
    let state = store.account_state(a.id).await.unwrap().unwrap();
    assert_eq!(state.ratelimits, [mine("requests", 50, "1s"), mine("searches", 5, "1m")]);
    store.update_account_limits(&Audit::system(), a.id, Some(&[rl("searches", 6, "1m")]), None).await.unwrap();
    let expected = [plan("requests", 300, "1s"), mine("searches", 6, "1m")];
    assert_eq!(store.account_state(a.id).await.unwrap().unwrap().ratelimits, expected);
    assert_eq!(store.auth_bundle(&hash("limited-1")).await.unwrap().unwrap().account.ratelimits, expected);
    // An account without a plan or limits has none; an unknown one has no state.
    let b_state = store.account_state(b.id).await.unwrap().unwrap();
    assert_eq!((b_state.id, b_state.ratelimits.len()), (b.id, 0));
    assert_eq!(b_state, AccountState::new(b.clone(), None));
    assert_eq!(store.account_state(ghost_account).await.unwrap(), None);
    // A plan with no limits and an account with only its own.
    let cid_b = ClientId::generate(43);
    store.create_credential(&Audit::system(), b.id, cid_b, &hash("limited-b"), "h", &Default::default()).await.unwrap();
    store
        .update_account_limits(&Audit::system(), b.id, Some(&[rl("requests", 7, "1h")]), Some(Some("free")))
        .await
        .unwrap();
    let bundle = store.auth_bundle(&hash("limited-b")).await.unwrap().unwrap();
    assert!(bundle.credential.ratelimits.is_empty());
    assert_eq!(bundle.account.ratelimits, [mine("requests", 7, "1h")]);

    // Deleting a plan: not while an account is on it; gone afterwards, and in the feed.
    let start = store.last_change_seq().await.unwrap();
    conflict(store.delete_plan(&Audit::system(), "pro").await, "is used by 1 account");
    store.update_account_limits(&Audit::system(), b.id, None, Some(Some("pro"))).await.unwrap();
    conflict(store.delete_plan(&Audit::system(), "pro").await, "is used by 2 accounts");
    assert!(matches!(store.delete_plan(&Audit::system(), "gold").await, Err(StoreError::NotFound)));
    assert_eq!(store.get_plan("pro").await.unwrap().ratelimits, pro);
    // Leaving the plan (`Some(None)`) keeps the own limits.
    let left = store.update_account_limits(&Audit::system(), a.id, None, Some(None)).await.unwrap();
    assert_eq!((left.plan, left.ratelimits), (None, vec![rl("searches", 6, "1m")]));
    let state = store.account_state(a.id).await.unwrap().unwrap();
    assert_eq!(state.ratelimits, [mine("searches", 6, "1m")]);
    store.update_account_limits(&Audit::system(), b.id, Some(&[]), Some(None)).await.unwrap();
    assert_eq!(store.plan_accounts("pro").await.unwrap(), 0);
    store.delete_plan(&Audit::system(), "pro").await.unwrap();
    assert!(matches!(store.get_plan("pro").await, Err(StoreError::NotFound)));
    assert!(matches!(store.delete_plan(&Audit::system(), "pro").await, Err(StoreError::NotFound)));
    assert_eq!(store.list_plans().await.unwrap(), [free.clone(), basic.clone()]);
    conflict(store.update_account_limits(&Audit::system(), a.id, None, Some(Some("pro"))).await, "no plan named");
    assert_eq!(
        feed_since(start).await,
        [
            (Entity::Account, b.id.to_hex()),
            (Entity::Account, a.id.to_hex()),
            (Entity::Account, b.id.to_hex()),
            (Entity::Plan, "pro".into())
        ]
    );
    // A plan deleted and put again is new.
    assert!(store.put_plan(&Audit::system(), "pro", &pro, None).await.unwrap().1);
}

/// Accounts joining a plan while it is deleted: each write either succeeds or says it conflicts,
/// never another error, and no account is left on a missing plan.
async fn plan_race_suite(store: Arc<dyn Store>) {
    let mut accounts = Vec::new();
    for i in 0..8 {
        accounts.push(
            store.create_account(&Audit::system(), &new_account(&format!("race-{i}@example.com"))).await.unwrap().id,
        );
    }
    for round in 0..10 {
        let name = format!("race-{round}");
        store.put_plan(&Audit::system(), &name, &[], None).await.unwrap();
        // The delete starts before, among or after the joins, a different place each round.
        let mut tasks = Vec::new();
        let mut deleter = None;
        for (k, &id) in accounts.iter().enumerate() {
            if k == round % (accounts.len() + 1) {
                let (store, name) = (store.clone(), name.clone());
                deleter = Some(tokio::spawn(async move { store.delete_plan(&Audit::system(), &name).await }));
            }
            let (store, name) = (store.clone(), name.clone());
            tasks.push(tokio::spawn(async move {
                store.update_account_limits(&Audit::system(), id, None, Some(Some(&name))).await.map(|_| ())
            }));
        }
        let deleter = deleter.unwrap_or_else(|| {
            let (store, name) = (store.clone(), name.clone());
            tokio::spawn(async move { store.delete_plan(&Audit::system(), &name).await })
        });
        let mut joined = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => joined += 1,
                Err(StoreError::Conflict(msg)) => assert!(msg.contains("no plan named"), "{msg}"),
                Err(e) => panic!("joining: {e:?}"),
            }
        }
        let deleted = match deleter.await.unwrap() {
            Ok(()) => true,
            Err(StoreError::Conflict(msg)) => {
                assert!(msg.contains("is used by"), "{msg}");
                false
            }
            Err(e) => panic!("deleting: {e:?}"),
        };
        let on_plan = store.plan_accounts(&name).await.unwrap();
        assert_eq!(on_plan, joined, "round {round}");
        assert_eq!(store.get_plan(&name).await.is_ok(), !deleted, "round {round}");
        // Whichever comes first wins outright: joins before the delete refuse it, joins after it fail.
        assert_eq!(deleted, joined == 0, "round {round}: deleted {deleted} with {joined} accounts joined");
        for &id in &accounts {
            store.update_account_limits(&Audit::system(), id, None, Some(None)).await.unwrap();
        }
    }
}

/// A set of rate limits the database holds that is not one (written by hand, or by a broken
/// build) is an error that says so, not a panic nor an empty set. `tamper` runs SQL on it.
async fn malformed_ratelimits<F, Fut>(store: Arc<dyn Store>, tamper: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let a = store.create_account(&Audit::system(), &new_account("malformed@example.com")).await.unwrap();
    let cid = ClientId::generate(51);
    store.create_credential(&Audit::system(), a.id, cid, &hash("malformed"), "h", &Default::default()).await.unwrap();
    store.put_plan(&Audit::system(), "broken", &[], None).await.unwrap();
    store.update_account_limits(&Audit::system(), a.id, None, Some(Some("broken"))).await.unwrap();
    let other = |r: Result<(), StoreError>, what: &str| match r {
        Err(StoreError::Other(msg)) => assert!(msg.contains("malformed rate limits"), "{what}: {msg}"),
        r => panic!("{what}: {r:?}"),
    };
    tamper(format!("UPDATE credentials SET ratelimits = '[{{\"name\":\"x\"}}]' WHERE client_id = '{}'", cid.to_hex()))
        .await;
    other(store.get_credential(cid).await.map(drop), "credential");
    other(store.auth_bundle(&hash("malformed")).await.map(drop), "bundle, credential");
    tamper(format!("UPDATE credentials SET ratelimits = NULL WHERE client_id = '{}'", cid.to_hex())).await;
    store.auth_bundle(&hash("malformed")).await.unwrap().unwrap();
    tamper(format!("UPDATE accounts SET ratelimits = 'not json' WHERE id = '{}'", a.id.to_hex())).await;
    other(store.get_account(a.id).await.map(drop), "account");
    other(store.account_state(a.id).await.map(drop), "account state");
    other(store.auth_bundle(&hash("malformed")).await.map(drop), "bundle, account");
    tamper(format!("UPDATE accounts SET ratelimits = '[]' WHERE id = '{}'", a.id.to_hex())).await;
    assert!(store.get_account(a.id).await.unwrap().ratelimits.is_empty());
    tamper("UPDATE plans SET ratelimits = '{}' WHERE name = 'broken'".into()).await;
    other(store.get_plan("broken").await.map(drop), "plan");
    other(store.list_plans().await.map(drop), "plans");
    other(store.account_state(a.id).await.map(drop), "account state, plan");
    other(store.auth_bundle(&hash("malformed")).await.map(drop), "bundle, plan");
    // A credits refill likewise.
    let refill = |r: Result<(), StoreError>, what: &str| match r {
        Err(StoreError::Other(msg)) => assert!(msg.contains("malformed credits refill"), "{what}: {msg}"),
        r => panic!("{what}: {r:?}"),
    };
    tamper("UPDATE plans SET ratelimits = '[]', credits_refill = '{\"interval\":\"hourly\",\"amount\":1}' WHERE name = 'broken'".into()).await;
    refill(store.get_plan("broken").await.map(drop), "plan");
    refill(store.account_state(a.id).await.map(drop), "account state, plan");
    refill(store.auth_bundle(&hash("malformed")).await.map(drop), "bundle, plan");
    refill(store.credit_balance(keygate_store::CreditScope::Account(a.id), now_ms()).await.map(drop), "balance");
}

/// Credits: balances set, leased, settled, reclaimed, refilled and adjusted, on credentials and on
/// accounts (their own quota or their plan's refill); the hot path's loads carry each balance's
/// policy with its epoch, and the writes that can change a decision are in the feed. Times are
/// passed in (days and months go by as the test says).
async fn credits_suite(store: Arc<dyn Store>) {
    use keygate_core::AccountId;
    use keygate_core::credits::{
        Adjustment, CreditBalance, CreditSource, CreditsConfig, CreditsPolicy, Interval, MAX_CREDITS, Refill,
    };
    use keygate_core::decide::AccountState;
    use keygate_store::{CreditLease, CreditScope, CreditSettlement};

    const DAY: i64 = 86_400_000;
    // 2026-03-10 01:00 UTC.
    const T: i64 = 1_773_100_800_000 + 3_600_000;
    const TTL: i64 = 30_000;
    let day_start = T - T.rem_euclid(DAY);
    let daily = |amount| Refill { interval: Interval::Daily, amount, refill_day: None };
    let own = |remaining| CreditsConfig { remaining, refill: None };
    let settle = |scope, epoch, spent, release| CreditSettlement { scope, epoch, spent, release };
    let feed_since = |after: i64| {
        let store = store.clone();
        async move {
            let changes = store.changes_since(after, 1000).await.unwrap();
            changes.into_iter().map(|c| (c.entity, c.entity_id)).collect::<Vec<_>>()
        }
    };
    // (remaining, leased) at `now`.
    let at = |scope: CreditScope, now: i64| {
        let store = store.clone();
        async move { store.credit_balance(scope, now).await.unwrap().map(|b| (b.remaining, b.leased)) }
    };
    let lease = |holder: &'static str, scope: CreditScope, need: i64, extra: i64, now: i64| {
        let store = store.clone();
        async move { store.lease_credits(holder, scope, need, extra, now, TTL).await.unwrap() }
    };
    let epoch_of = |cid: ClientId| {
        let store = store.clone();
        async move { store.get_credential(cid).await.unwrap().credits }
    };

    let a = store.create_account(&Audit::system(), &new_account("credits@example.com")).await.unwrap();
    let cid = ClientId::generate(61);
    store.create_credential(&Audit::system(), a.id, cid, &hash("credits-1"), "h", &Default::default()).await.unwrap();
    let (cred, acct) = (CreditScope::Credential(cid), CreditScope::Account(a.id));

    // No quota: nothing to read, nothing charged, nothing to adjust; unknown ids are not found.
    assert_eq!(store.credit_balance(cred, T).await.unwrap(), None);
    assert_eq!(store.credit_balance(acct, T).await.unwrap(), None);
    assert_eq!(store.get_credential(cid).await.unwrap().credits, None);
    let account = store.get_account(a.id).await.unwrap();
    assert_eq!((account.credits, account.credits_epoch), (None, 0));
    for ghost in [CreditScope::Credential(ClientId::generate(62)), CreditScope::Account(AccountId::generate(1))] {
        assert!(matches!(store.credit_balance(ghost, T).await, Err(StoreError::NotFound)));
        assert!(matches!(
            store.set_credits(&Audit::system(), ghost, Some(&own(1)), T).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(store.set_credits(&Audit::system(), ghost, None, T).await, Err(StoreError::NotFound)));
        assert!(matches!(
            store.adjust_credits(&Audit::system(), ghost, Adjustment::Add(1), None, T).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(store.lease_credits("n1", ghost, 1, 0, T, TTL).await, Err(StoreError::NotFound)));
        store.settle_credits("n1", &[settle(ghost, 0, 1, true)], T, TTL).await.unwrap();
    }
    conflict(store.adjust_credits(&Audit::system(), cred, Adjustment::Add(1), None, T).await, "no credits quota");
    conflict(store.adjust_credits(&Audit::system(), acct, Adjustment::Set(1), Some("k"), T).await, "no credits quota");
    assert_eq!(lease("n1", cred, 1, 0, T).await, CreditLease { granted: 0, policy: None, unleased: 0 });
    store.settle_credits("n1", &[settle(cred, 0, 1, true)], T, TTL).await.unwrap();
    store.settle_credits("n1", &[], T, TTL).await.unwrap();

    // An own balance: set, read back by every load with its epoch, in the feed.
    let start = store.last_change_seq().await.unwrap();
    store.set_credits(&Audit::system(), cred, Some(&own(100)), T).await.unwrap();
    assert_eq!(feed_since(start).await, [(Entity::Credential, cid.to_hex())]);
    let own_balance = |remaining, leased| CreditBalance {
        remaining,
        leased,
        refill: None,
        source: CreditSource::Own,
        next_refill_at: None,
    };
    assert_eq!(store.credit_balance(cred, T).await.unwrap(), Some(own_balance(100, 0)));
    let policy = |epoch| Some(CreditsPolicy { refill: None, epoch });
    assert_eq!(epoch_of(cid).await, policy(1));
    assert_eq!(store.list_credentials(a.id).await.unwrap()[0].credits, policy(1));
    assert_eq!(store.credential_state(cid).await.unwrap().unwrap().credits, policy(1));
    let bundle = store.auth_bundle(&hash("credits-1")).await.unwrap().unwrap();
    assert_eq!((bundle.credential.credits, bundle.account.credits), (policy(1), None));

    // A lease takes what it needs plus up to `extra`, at most half of what is left beyond the need.
    assert_eq!(lease("n1", cred, 1, 3, T).await, CreditLease { granted: 4, policy: policy(1), unleased: 96 });
    assert_eq!(store.credit_balance(cred, T).await.unwrap(), Some(own_balance(100, 4)));
    assert_eq!(lease("n1", cred, 10, 1_000, T).await, CreditLease { granted: 53, policy: policy(1), unleased: 43 });
    // Less than the need left: nothing is taken.
    assert_eq!(lease("n2", cred, 44, 5, T).await, CreditLease { granted: 0, policy: policy(1), unleased: 43 });
    assert_eq!(at(cred, T).await, Some((100, 57)));
    // Spent credits leave the balance; a release gives back exactly what was granted and not spent.
    store.settle_credits("n1", &[settle(cred, 1, 20, false)], T, TTL).await.unwrap();
    assert_eq!(at(cred, T).await, Some((80, 37)));
    // Under another epoch, or without a lease: nothing.
    store.settle_credits("n1", &[settle(cred, 0, 5, true)], T, TTL).await.unwrap();
    store.settle_credits("n2", &[settle(cred, 1, 5, true)], T, TTL).await.unwrap();
    assert_eq!(at(cred, T).await, Some((80, 37)));
    store.settle_credits("n1", &[settle(cred, 1, 5, true)], T, TTL).await.unwrap();
    assert_eq!(at(cred, T).await, Some((75, 0)));
    store.settle_credits("n1", &[settle(cred, 1, 5, true)], T, TTL).await.unwrap();
    assert_eq!(at(cred, T).await, Some((75, 0)), "the lease ended with its release");

    // A lease not renewed within its TTL is taken back by the balance's next lease, or by
    // reclaiming, with what was reported spent.
    let short = |holder, need, now| {
        let store = store.clone();
        async move { store.lease_credits(holder, cred, need, 0, now, 1_000).await.unwrap().unleased }
    };
    assert_eq!(short("n3", 5, T).await, 70);
    store.settle_credits("n3", &[settle(cred, 1, 2, false)], T + 500, 1_000).await.unwrap();
    assert_eq!(short("n4", 1, T + 1_400).await, 69, "renewed until T + 1500");
    assert_eq!(short("n4", 1, T + 2_000).await, 71, "n3's 3 unspent back, 1 more for n4");
    assert_eq!(at(cred, T + 2_000).await, Some((73, 2)));
    assert_eq!(store.reclaim_credit_leases(T + 2_999).await.unwrap(), 0);
    assert_eq!(store.reclaim_credit_leases(T + 3_001).await.unwrap(), 1);
    assert_eq!(at(cred, T).await, Some((73, 0)));
    assert_eq!(store.reclaim_credit_leases(T + 3_001).await.unwrap(), 0);

    // Setting a balance voids the leases taken before: their unspent part is not given back.
    assert_eq!(lease("n1", cred, 10, 0, T).await.unleased, 63);
    let set = store.adjust_credits(&Audit::system(), cred, Adjustment::Set(50), None, T).await.unwrap();
    assert_eq!((set.balance, set.replayed), (own_balance(50, 0), false));
    assert_eq!(epoch_of(cid).await, policy(2));
    store.settle_credits("n1", &[settle(cred, 1, 4, true)], T, TTL).await.unwrap();
    assert_eq!(at(cred, T).await, Some((50, 0)));
    assert_eq!(lease("n2", cred, 5, 0, T).await, CreditLease { granted: 5, policy: policy(2), unleased: 45 });
    store.set_credits(&Audit::system(), cred, Some(&own(30)), T).await.unwrap();
    assert_eq!(epoch_of(cid).await, policy(3));
    store.settle_credits("n2", &[settle(cred, 2, 0, true)], T, TTL).await.unwrap();
    assert_eq!(at(cred, T).await, Some((30, 0)));
    // A holder's lease of an older epoch is replaced by its next one.
    assert_eq!(lease("n3", cred, 2, 0, T).await.unleased, 28);
    store.adjust_credits(&Audit::system(), cred, Adjustment::Set(20), None, T).await.unwrap();
    assert_eq!(lease("n3", cred, 1, 0, T).await, CreditLease { granted: 1, policy: policy(4), unleased: 19 });
    assert_eq!(at(cred, T).await, Some((20, 1)));
    store.settle_credits("n3", &[settle(cred, 4, 0, true)], T, TTL).await.unwrap();

    // Adjustments: an addition keeps the epoch (leases stay valid), a refund may go below zero.
    let start = store.last_change_seq().await.unwrap();
    assert_eq!(lease("n1", cred, 4, 0, T).await.unleased, 16);
    let added = store.adjust_credits(&Audit::system(), cred, Adjustment::Add(5), None, T).await.unwrap();
    assert_eq!((added.balance, added.replayed), (own_balance(25, 4), false));
    assert_eq!(store.credit_balance(cred, T).await.unwrap(), Some(added.balance));
    assert_eq!(epoch_of(cid).await, policy(4));
    let refunded = store.adjust_credits(&Audit::system(), cred, Adjustment::Add(-30), None, T).await.unwrap();
    assert_eq!(refunded.balance, own_balance(-5, 4));
    assert_eq!(lease("n2", cred, 1, 0, T).await, CreditLease { granted: 0, policy: policy(4), unleased: -9 });
    store.settle_credits("n1", &[settle(cred, 4, 0, true)], T, TTL).await.unwrap();
    assert_eq!(at(cred, T).await, Some((-5, 0)));
    assert_eq!(
        store.adjust_credits(&Audit::system(), cred, Adjustment::Set(8), None, T).await.unwrap().balance,
        own_balance(8, 0)
    );
    assert_eq!(epoch_of(cid).await, policy(5));
    assert_eq!(
        feed_since(start).await,
        vec![(Entity::Credential, cid.to_hex()); 3],
        "each adjustment; not leases, nor a release that leaves the balance at or below zero"
    );
    // With an idempotency key: once; the same key for another adjustment is refused.
    let start = store.last_change_seq().await.unwrap();
    let first = store.adjust_credits(&Audit::system(), cred, Adjustment::Add(3), Some("top-up-1"), T).await.unwrap();
    assert_eq!((first.balance.remaining, first.replayed), (11, false));
    let again = store.adjust_credits(&Audit::system(), cred, Adjustment::Add(3), Some("top-up-1"), T).await.unwrap();
    assert_eq!((again.balance, again.replayed), (first.balance, true));
    conflict(
        store.adjust_credits(&Audit::system(), cred, Adjustment::Add(4), Some("top-up-1"), T).await,
        "was used for another adjustment",
    );
    conflict(store.adjust_credits(&Audit::system(), cred, Adjustment::Set(3), Some("top-up-1"), T).await, "top-up-1");
    assert_eq!(at(cred, T).await, Some((11, 0)));
    assert_eq!(feed_since(start).await, [(Entity::Credential, cid.to_hex())], "a replay appends nothing");
    conflict(store.adjust_credits(&Audit::system(), cred, Adjustment::Add(MAX_CREDITS), None, T).await, "range");
    assert!(store.adjust_credits(&Audit::system(), cred, Adjustment::Set(-1), None, T).await.is_err());
    assert!(store.set_credits(&Audit::system(), cred, Some(&own(-1)), T).await.is_err());
    assert!(store.lease_credits("n1", cred, 0, 0, T, TTL).await.is_err());
    assert_eq!(at(cred, T).await, Some((11, 0)), "refused writes change nothing");

    // A give-back that ends an exhausted balance is in the feed (nodes that refused look again).
    store.adjust_credits(&Audit::system(), cred, Adjustment::Set(4), None, T).await.unwrap();
    assert_eq!(lease("n1", cred, 4, 0, T).await.unleased, 0);
    let start = store.last_change_seq().await.unwrap();
    assert_eq!(lease("n2", cred, 1, 0, T).await.granted, 0);
    store.settle_credits("n1", &[settle(cred, 6, 1, false)], T, TTL).await.unwrap();
    assert_eq!(feed_since(start).await, []);
    store.settle_credits("n1", &[settle(cred, 6, 1, true)], T, TTL).await.unwrap();
    assert_eq!(feed_since(start).await, [(Entity::Credential, cid.to_hex())]);
    assert_eq!(short("n1", 2, T).await, 0);
    let start = store.last_change_seq().await.unwrap();
    assert_eq!(store.reclaim_credit_leases(T + 1_001).await.unwrap(), 1);
    assert_eq!(feed_since(start).await, [(Entity::Credential, cid.to_hex())]);
    assert_eq!(at(cred, T).await, Some((2, 0)));

    // A daily refill: the balance is set to the amount once per UTC day, under a new epoch each
    // time. Read, a due refill counts as done; the next lease or adjustment applies it.
    let refill = daily(10);
    store
        .set_credits(&Audit::system(), cred, Some(&CreditsConfig { remaining: 10, refill: Some(refill) }), T)
        .await
        .unwrap();
    let refilling = |epoch| Some(CreditsPolicy { refill: Some(refill), epoch });
    let balance = |remaining, leased, next| CreditBalance {
        remaining,
        leased,
        refill: Some(refill),
        source: CreditSource::Own,
        next_refill_at: Some(next),
    };
    assert_eq!(epoch_of(cid).await, refilling(7));
    assert_eq!(lease("n1", cred, 4, 0, T).await, CreditLease { granted: 4, policy: refilling(7), unleased: 6 });
    assert_eq!(store.credit_balance(cred, T).await.unwrap(), Some(balance(10, 4, day_start + DAY)));
    let next_day = T + DAY;
    assert_eq!(store.credit_balance(cred, next_day).await.unwrap(), Some(balance(10, 0, day_start + 2 * DAY)));
    assert_eq!(at(cred, T).await, Some((10, 4)), "reading wrote nothing");
    assert_eq!(epoch_of(cid).await, refilling(7));
    assert_eq!(lease("n2", cred, 1, 0, next_day).await, CreditLease { granted: 1, policy: refilling(8), unleased: 9 });
    assert_eq!(
        lease("n3", cred, 1, 0, next_day + 1_000).await,
        CreditLease { granted: 1, policy: refilling(8), unleased: 8 },
        "refilled once"
    );
    assert_eq!(epoch_of(cid).await, refilling(8));
    store.settle_credits("n1", &[settle(cred, 7, 1, true)], next_day, TTL).await.unwrap();
    assert_eq!(at(cred, next_day).await, Some((10, 2)), "the old day's lease is void");
    // Two nodes leasing at once in a new period: one refill.
    let day_after = T + 2 * DAY;
    let (x, y) = tokio::join!(lease("n4", cred, 1, 0, day_after), lease("n5", cred, 1, 0, day_after));
    assert_eq!((x.policy, y.policy, x.unleased.min(y.unleased)), (refilling(9), refilling(9), 8));
    assert_eq!(at(cred, day_after).await, Some((10, 2)));
    let adjusted = store.adjust_credits(&Audit::system(), cred, Adjustment::Add(5), None, T + 3 * DAY).await.unwrap();
    assert_eq!(adjusted.balance, balance(15, 0, day_start + 4 * DAY), "refilled, then added to");
    assert_eq!(epoch_of(cid).await, refilling(10));
    // Removing the quota: not charged any more.
    let start = store.last_change_seq().await.unwrap();
    store.set_credits(&Audit::system(), cred, None, T + 3 * DAY).await.unwrap();
    assert_eq!(feed_since(start).await, [(Entity::Credential, cid.to_hex())]);
    assert_eq!((store.credit_balance(cred, T).await.unwrap(), epoch_of(cid).await), (None, None));
    assert_eq!(lease("n1", cred, 1, 0, T + 3 * DAY).await.policy, None);
    assert_eq!(store.credential_state(cid).await.unwrap().unwrap().credits, None);

    // A monthly refill on the 15th; a refill day past a month's end is its last day.
    const JAN_15: i64 = 1_768_435_200_000;
    const FEB_1: i64 = 1_769_904_000_000;
    const FEB_28: i64 = 1_772_236_800_000;
    let cid2 = ClientId::generate(63);
    store.create_credential(&Audit::system(), a.id, cid2, &hash("credits-2"), "h", &Default::default()).await.unwrap();
    let monthly = Refill { interval: Interval::Monthly, amount: 100, refill_day: Some(15) };
    let c2 = CreditScope::Credential(cid2);
    store
        .set_credits(
            &Audit::system(),
            c2,
            Some(&CreditsConfig { remaining: 30, refill: Some(monthly) }),
            JAN_15 - 5 * DAY,
        )
        .await
        .unwrap();
    let read = store.credit_balance(c2, JAN_15 - 5 * DAY).await.unwrap().unwrap();
    assert_eq!((read.remaining, read.next_refill_at), (30, Some(JAN_15)));
    assert_eq!(lease("n1", c2, 30, 0, JAN_15 - 1).await.unleased, 0, "still January 14th's period");
    let refilled = lease("n1", c2, 1, 0, JAN_15).await;
    assert_eq!((refilled.granted, refilled.unleased, refilled.policy.unwrap().epoch), (1, 99, 2));
    let read = store.credit_balance(c2, JAN_15).await.unwrap().unwrap();
    assert_eq!((read.remaining, read.leased, read.next_refill_at), (100, 1, Some(JAN_15 + 31 * DAY)));
    let month_end = Refill { refill_day: Some(31), ..monthly };
    store
        .set_credits(&Audit::system(), c2, Some(&CreditsConfig { remaining: 5, refill: Some(month_end) }), FEB_1)
        .await
        .unwrap();
    assert_eq!(store.credit_balance(c2, FEB_1).await.unwrap().unwrap().next_refill_at, Some(FEB_28));
    assert_eq!(at(c2, FEB_28 - 1).await, Some((5, 0)));
    assert_eq!(at(c2, FEB_28).await, Some((100, 0)));

    // An account on a plan with credits: its balance follows the plan's refill, stored at its
    // first use, shared by the account's credentials.
    let start = store.last_change_seq().await.unwrap();
    let (metered, created) = store.put_plan(&Audit::system(), "metered", &[], Some(&daily(50))).await.unwrap();
    assert!(created);
    assert_eq!(metered.credits, Some(daily(50)));
    assert_eq!(store.get_plan("metered").await.unwrap(), metered);
    assert_eq!(store.list_plans().await.unwrap(), std::slice::from_ref(&metered));
    assert_eq!(feed_since(start).await, [(Entity::Plan, "metered".into())]);
    let account = store.update_account_limits(&Audit::system(), a.id, None, Some(Some("metered"))).await.unwrap();
    assert_eq!((account.credits, account.credits_epoch), (None, 1));
    let follows = |amount, epoch| Some(CreditsPolicy { refill: Some(daily(amount)), epoch });
    let state = store.account_state(a.id).await.unwrap().unwrap();
    assert_eq!(state.credits, follows(50, 1));
    assert_eq!(state, AccountState::new(account, Some(&metered)));
    assert_eq!(store.auth_bundle(&hash("credits-1")).await.unwrap().unwrap().account, state);
    assert_eq!(
        store.credit_balance(acct, T).await.unwrap(),
        Some(CreditBalance {
            remaining: 50,
            leased: 0,
            refill: Some(daily(50)),
            source: CreditSource::Plan,
            next_refill_at: Some(day_start + DAY)
        })
    );
    assert_eq!(lease("n1", acct, 1, 9, T).await, CreditLease { granted: 10, policy: follows(50, 1), unleased: 40 });
    assert_eq!(at(acct, T).await, Some((50, 10)));
    // One settlement batch over two balances, in any order; a second release of a lease is nothing.
    let l2 = lease("n1", c2, 5, 0, T).await;
    assert_eq!((l2.granted, l2.unleased), (5, 95), "refilled on February 28th");
    let e2 = l2.policy.unwrap().epoch;
    store
        .settle_credits(
            "n1",
            &[settle(c2, e2, 1, false), settle(acct, 1, 3, true), settle(c2, e2, 1, true), settle(acct, 1, 0, true)],
            T,
            TTL,
        )
        .await
        .unwrap();
    assert_eq!((at(acct, T).await, at(c2, T).await), (Some((47, 0)), Some((98, 0))));
    // Another plan: the balance starts again at its amount (leases of the old one are void).
    assert_eq!(lease("n1", acct, 7, 0, T).await.unleased, 40);
    store.put_plan(&Audit::system(), "metered-plus", &[], Some(&daily(20))).await.unwrap();
    let account = store.update_account_limits(&Audit::system(), a.id, None, Some(Some("metered-plus"))).await.unwrap();
    assert_eq!((account.credits, account.credits_epoch), (None, 2));
    assert_eq!(store.account_state(a.id).await.unwrap().unwrap().credits, follows(20, 2));
    assert_eq!(at(acct, T).await, Some((20, 0)));
    store.settle_credits("n1", &[settle(acct, 1, 0, true)], T, TTL).await.unwrap();
    assert_eq!(at(acct, T).await, Some((20, 0)));
    // The same plan again, or other limits: the balance stays.
    assert_eq!(lease("n1", acct, 5, 0, T).await, CreditLease { granted: 5, policy: follows(20, 2), unleased: 15 });
    store.update_account_limits(&Audit::system(), a.id, None, Some(Some("metered-plus"))).await.unwrap();
    assert_eq!(store.update_account_limits(&Audit::system(), a.id, Some(&[]), None).await.unwrap().credits_epoch, 2);
    assert_eq!(at(acct, T).await, Some((20, 5)));
    // The plan's refill changes: it applies from the next refill.
    store.put_plan(&Audit::system(), "metered-plus", &[], Some(&daily(30))).await.unwrap();
    let read = store.credit_balance(acct, T).await.unwrap().unwrap();
    assert_eq!((read.remaining, read.leased, read.refill), (20, 5, Some(daily(30))));
    assert_eq!(at(acct, T + DAY).await, Some((30, 0)));
    // Adjusting it; an idempotency key is per balance.
    let topped = store.adjust_credits(&Audit::system(), acct, Adjustment::Add(3), Some("top-up-1"), T).await.unwrap();
    assert_eq!((topped.balance.remaining, topped.balance.source, topped.replayed), (23, CreditSource::Plan, false));
    // An own quota wins over the plan's, and a plan change leaves it alone.
    let start = store.last_change_seq().await.unwrap();
    store.set_credits(&Audit::system(), acct, Some(&own(7)), T).await.unwrap();
    assert_eq!(feed_since(start).await, [(Entity::Account, a.id.to_hex())]);
    let account = store.get_account(a.id).await.unwrap();
    assert_eq!((account.credits, account.credits_epoch), (policy(3), 3));
    assert_eq!(store.account_state(a.id).await.unwrap().unwrap().credits, policy(3));
    assert_eq!(store.auth_bundle(&hash("credits-2")).await.unwrap().unwrap().account.credits, policy(3));
    assert_eq!(store.credit_balance(acct, T).await.unwrap(), Some(own_balance(7, 0)));
    store.update_account_limits(&Audit::system(), a.id, None, Some(Some("metered"))).await.unwrap();
    assert_eq!(store.credit_balance(acct, T).await.unwrap(), Some(own_balance(7, 0)));
    assert_eq!(store.get_account(a.id).await.unwrap().credits, policy(3));
    // Without its own quota, it follows the plan again, from the plan's amount.
    store.set_credits(&Audit::system(), acct, None, T).await.unwrap();
    let account = store.get_account(a.id).await.unwrap();
    assert_eq!((account.credits, account.credits_epoch), (None, 4));
    assert_eq!(store.account_state(a.id).await.unwrap().unwrap().credits, follows(50, 4));
    let read = store.credit_balance(acct, T).await.unwrap().unwrap();
    assert_eq!((read.remaining, read.source), (50, CreditSource::Plan));
    // Off the plan: no quota.
    store.update_account_limits(&Audit::system(), a.id, None, Some(None)).await.unwrap();
    assert_eq!(store.credit_balance(acct, T).await.unwrap(), None);
    assert_eq!(store.account_state(a.id).await.unwrap().unwrap().credits, None);
    assert_eq!(lease("n1", acct, 1, 0, T).await.policy, None);
    conflict(store.adjust_credits(&Audit::system(), acct, Adjustment::Add(1), None, T).await, "no credits quota");
}

/// Nodes leasing from two balances at once (a credential's own and its account's, which follows
/// its plan and is stored by whichever lease comes first), each node its own holder, on the
/// handles given (two on one database stand for two processes): every credit is handed out once,
/// none twice, none lost, and what the database holds never goes below zero.
async fn credits_race(stores: [Arc<dyn Store>; 2]) {
    use keygate_core::credits::{CreditsConfig, Interval, Refill};
    use keygate_store::{CreditScope, CreditSettlement};
    // One instant for the whole race: no refill happens during it.
    const NOW: i64 = 1_773_100_800_000;
    const TTL: i64 = 30_000;
    let store = &stores[0];
    let a = store.create_account(&Audit::system(), &new_account("credits-race@example.com")).await.unwrap();
    let cid = ClientId::generate(71);
    store
        .create_credential(&Audit::system(), a.id, cid, &hash("credits-race"), "h", &Default::default())
        .await
        .unwrap();
    let refill = Refill { interval: Interval::Daily, amount: 1_000, refill_day: None };
    store.put_plan(&Audit::system(), "race", &[], Some(&refill)).await.unwrap();
    store.update_account_limits(&Audit::system(), a.id, None, Some(Some("race"))).await.unwrap();
    let (cred, acct) = (CreditScope::Credential(cid), CreditScope::Account(a.id));
    store
        .set_credits(&Audit::system(), cred, Some(&CreditsConfig { remaining: 1_000, refill: None }), NOW)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let holder = format!("node-{i}");
            let mut got = [0, 0];
            for round in 0..200 {
                let mut batch = Vec::new();
                for (k, scope) in [cred, acct].into_iter().enumerate() {
                    let lease = store.lease_credits(&holder, scope, 1, 3, NOW, TTL).await.unwrap();
                    assert!(lease.granted >= 0 && lease.unleased >= 0, "{lease:?}");
                    got[k] += lease.granted;
                    let epoch = lease.policy.unwrap().epoch;
                    batch.push(CreditSettlement { scope, epoch, spent: lease.granted, release: true });
                }
                if (i + round) % 2 == 0 {
                    batch.reverse();
                }
                store.settle_credits(&holder, &batch, NOW, TTL).await.unwrap();
            }
            got
        }));
    }
    let mut total = [0, 0];
    for t in tasks {
        let got = t.await.unwrap();
        total = [total[0] + got[0], total[1] + got[1]];
    }
    assert_eq!(total, [1_000, 1_000]);
    for scope in [cred, acct] {
        let balance = store.credit_balance(scope, NOW).await.unwrap().unwrap();
        assert_eq!((balance.remaining, balance.leased), (0, 0), "{scope:?}");
    }
}

#[tokio::test]
async fn sqlite_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/contract.db", dir.path().display());
    suite(keygate_store::connect(&url, true).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_console_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/console.db", dir.path().display());
    console_suite(keygate_store::connect(&url, true).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_ratelimits_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ratelimits.db", dir.path().display());
    ratelimits_suite(keygate_store::connect(&url, true).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_credits_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/credits.db", dir.path().display());
    credits_suite(keygate_store::connect(&url, true).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_credit_leases_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/batch.db", dir.path().display());
    lease_batch_suite(keygate_store::connect(&url, true).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_credits_race_from_two_handles() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/credits-race.db", dir.path().display());
    let s1 = keygate_store::connect(&url, true).await.unwrap();
    let s2 = keygate_store::connect(&url, false).await.unwrap();
    credits_race([s1, s2]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_plan_race() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/race.db", dir.path().display());
    plan_race_suite(keygate_store::connect(&url, true).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_malformed_ratelimits() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/malformed.db", dir.path().display());
    let store = keygate_store::connect(&url, true).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    malformed_ratelimits(store, |sql| {
        let pool = pool.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn sqlite_concurrent_writers_from_two_handles() {
    // Two independent pools on one file stand for a server and a CLI process writing at once.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/two.db", dir.path().display());
    let s1 = keygate_store::connect(&url, true).await.unwrap();
    let s2 = keygate_store::connect(&url, false).await.unwrap();
    let mut tasks = Vec::new();
    for (i, s) in [s1.clone(), s2.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for j in 0..50 {
                let a =
                    s.create_account(&Audit::system(), &new_account(&format!("w{i}-{j}@example.com"))).await.unwrap();
                s.create_credential(
                    &Audit::system(),
                    a.id,
                    ClientId::generate(j),
                    &hash(&format!("{i}-{j}")),
                    "h",
                    &Default::default(),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s1.list_accounts(None, 1000, None).await.unwrap().len(), 100);
    assert_eq!(s2.changes_since(0, 1000).await.unwrap().len(), 200);
}

#[tokio::test]
async fn postgres_contract() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    suite(keygate_store::connect(&db.url, true).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_console_contract() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    console_suite(keygate_store::connect(&db.url, true).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_ratelimits_contract() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    ratelimits_suite(keygate_store::connect(&db.url, true).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_credits_contract() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    credits_suite(keygate_store::connect(&db.url, true).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_credit_leases_in_one_batch() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    lease_batch_suite(keygate_store::connect(&db.url, true).await.unwrap()).await;
}

/// The background refiller's batch: several balances (given in any order, one twice) leased in
/// one transaction, each as a lease of its own would be; an unknown one is `None`; a bad request
/// fails the whole batch and takes nothing.
async fn lease_batch_suite(store: Arc<dyn Store>) {
    use keygate_core::credits::CreditsConfig;
    use keygate_store::{CreditRequest, CreditScope};
    let a = store.create_account(&Audit::system(), &new_account("batch@example.com")).await.unwrap();
    let (c1, c2) = (ClientId::generate(31), ClientId::generate(32));
    store.create_credential(&Audit::system(), a.id, c1, &hash("b1"), "h", &Default::default()).await.unwrap();
    store.create_credential(&Audit::system(), a.id, c2, &hash("b2"), "h", &Default::default()).await.unwrap();
    let now = now_ms();
    let cfg = |remaining| CreditsConfig { remaining, refill: None };
    store.set_credits(&Audit::system(), CreditScope::Credential(c1), Some(&cfg(100)), now).await.unwrap();
    store.set_credits(&Audit::system(), CreditScope::Credential(c2), Some(&cfg(3)), now).await.unwrap();
    store.set_credits(&Audit::system(), CreditScope::Account(a.id), Some(&cfg(1_000)), now).await.unwrap();
    let req = |scope, need, extra| CreditRequest { scope, need, extra };
    let batch = [
        req(CreditScope::Credential(c2), 5, 0),
        req(CreditScope::Account(a.id), 10, 1_000),
        req(CreditScope::Credential(c1), 1, 10),
        req(CreditScope::Credential(ClientId::generate(33)), 1, 0),
        req(CreditScope::Credential(c1), 1, 0),
    ];
    let got = store.lease_credits_many("node-b", &batch, now, 30_000).await.unwrap();
    let granted: Vec<Option<i64>> = got.iter().map(|l| l.map(|l| l.granted)).collect();
    // c2 cannot cover 5 (nothing taken); the account gives 10 + half of the 990 left; c1 gives
    // 1 + 10, then 1 more.
    assert_eq!(granted, [Some(0), Some(505), Some(11), None, Some(1)]);
    let left = |scope| {
        let store = store.clone();
        async move { store.credit_balance(scope, now).await.unwrap().unwrap() }
    };
    assert_eq!(
        (left(CreditScope::Credential(c1)).await.remaining, left(CreditScope::Credential(c1)).await.leased),
        (100, 12)
    );
    assert_eq!(left(CreditScope::Account(a.id)).await.leased, 505);
    assert_eq!(left(CreditScope::Credential(c2)).await.leased, 0);
    let bad = [req(CreditScope::Credential(c1), 1, 0), req(CreditScope::Credential(c2), 0, 0)];
    assert!(store.lease_credits_many("node-b", &bad, now, 30_000).await.is_err());
    assert_eq!(left(CreditScope::Credential(c1)).await.leased, 12, "a failed batch takes nothing");
    assert_eq!(store.lease_credits_many("node-b", &[], now, 30_000).await.unwrap(), []);
}

#[tokio::test]
async fn sqlite_credit_reports_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/reports.db", dir.path().display());
    settle_batch_suite(keygate_store::connect(&url, true).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_credit_reports_in_one_batch() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    settle_batch_suite(keygate_store::connect(&db.url, true).await.unwrap()).await;
}

/// A node's report of many leases at once (more than one statement's worth), in any order: each
/// lease gets what was reported for it under its epoch (reports of one lease add up), nothing
/// under another epoch or without a lease of that holder; then the leases end with a release.
async fn settle_batch_suite(store: Arc<dyn Store>) {
    use keygate_core::credits::CreditsConfig;
    use keygate_store::{CreditRequest, CreditScope, CreditSettlement};
    const N: usize = 510;
    let a = store.create_account(&Audit::system(), &new_account("reports@example.com")).await.unwrap();
    let now = now_ms();
    let cfg = |remaining| CreditsConfig { remaining, refill: None };
    let acct = CreditScope::Account(a.id);
    store.set_credits(&Audit::system(), acct, Some(&cfg(10_000)), now).await.unwrap();
    let mut creds = Vec::new();
    for i in 0..N {
        let cid = ClientId::generate(1_000 + i as u64);
        store
            .create_credential(&Audit::system(), a.id, cid, &hash(&format!("report-{i}")), "h", &Default::default())
            .await
            .unwrap();
        store.set_credits(&Audit::system(), CreditScope::Credential(cid), Some(&cfg(100)), now).await.unwrap();
        creds.push(CreditScope::Credential(cid));
    }
    let mut requests: Vec<CreditRequest> =
        creds.iter().map(|&scope| CreditRequest { scope, need: 10, extra: 0 }).collect();
    requests.push(CreditRequest { scope: acct, need: 1_000, extra: 0 });
    let leases = store.lease_credits_many("node-s", &requests, now, 30_000).await.unwrap();
    let epochs: Vec<i64> = leases.iter().map(|l| l.unwrap().policy.unwrap().epoch).collect();
    let (cred_epoch, acct_epoch) = (epochs[0], epochs[N]);
    let report = |scope, epoch, spent| CreditSettlement { scope, epoch, spent, release: false };
    let spent_of = |i: usize| (i % 7) as i64 + if i < 5 { 1 } else { 0 };
    let mut batch = Vec::new();
    for (i, &scope) in creds.iter().enumerate().rev() {
        batch.push(report(scope, cred_epoch, (i % 7) as i64));
        if i < 5 {
            batch.push(report(scope, cred_epoch, 1));
        }
    }
    batch.push(report(creds[0], cred_epoch + 1, 50));
    batch.push(report(acct, acct_epoch, 60));
    batch.push(report(acct, acct_epoch, 40));
    store.settle_credits("node-s", &batch, now, 30_000).await.unwrap();
    store.settle_credits("node-x", &[report(acct, acct_epoch, 5)], now, 30_000).await.unwrap();
    let at = |scope| {
        let store = store.clone();
        async move {
            let b = store.credit_balance(scope, now).await.unwrap().unwrap();
            (b.remaining, b.leased)
        }
    };
    for (i, &scope) in creds.iter().enumerate() {
        assert_eq!(at(scope).await, (100 - spent_of(i), 10 - spent_of(i)), "credential {i}");
    }
    assert_eq!(at(acct).await, (9_900, 900));
    // Released, with nothing more spent: the unspent part is back, the leases gone.
    let mut releases: Vec<CreditSettlement> =
        creds.iter().map(|&scope| CreditSettlement { scope, epoch: cred_epoch, spent: 0, release: true }).collect();
    releases.push(CreditSettlement { scope: acct, epoch: acct_epoch, spent: 0, release: true });
    store.settle_credits("node-s", &releases, now, 30_000).await.unwrap();
    for (i, &scope) in creds.iter().enumerate() {
        assert_eq!(at(scope).await, (100 - spent_of(i), 0), "credential {i}");
    }
    assert_eq!(at(acct).await, (9_900, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_credits_race() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    // Two pools on one database stand for two nodes.
    let s1 = keygate_store::connect(&db.url, true).await.unwrap();
    let s2 = keygate_store::connect(&db.url, false).await.unwrap();
    credits_race([s1, s2]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_plan_race() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    plan_race_suite(keygate_store::connect(&db.url, true).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_malformed_ratelimits() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    let store = keygate_store::connect(&db.url, true).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    malformed_ratelimits(store, |sql| {
        let pool = pool.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
        }
    })
    .await;
    pool.close().await;
}

#[tokio::test]
async fn postgres_concurrent_migrations_and_feed_order() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    // Three nodes migrating at once: the advisory lock makes them take turns.
    let (a, b, c) = tokio::join!(
        keygate_store::connect(&db.url, true),
        keygate_store::connect(&db.url, true),
        keygate_store::connect(&db.url, true)
    );
    let stores = [a.unwrap(), b.unwrap(), c.unwrap()];
    // Concurrent writers: a follower reading as they go must never see a seq before a smaller one
    // is visible (the feed appends under an advisory lock).
    let follower = stores[0].clone();
    let reader = tokio::spawn(async move {
        let mut cursor = 0;
        let mut seen = Vec::new();
        for _ in 0..400 {
            for ch in follower.changes_since(cursor, 1000).await.unwrap() {
                assert_eq!(ch.seq, cursor + 1, "feed entries became visible out of order");
                cursor = ch.seq;
                seen.push(ch.seq);
            }
            if seen.len() >= 90 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        seen.len()
    });
    let mut writers = Vec::new();
    for (i, s) in stores.iter().cloned().enumerate() {
        writers.push(tokio::spawn(async move {
            for j in 0..30 {
                s.create_account(&Audit::system(), &new_account(&format!("n{i}-{j}@example.com"))).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(reader.await.unwrap(), 90);
}

/// What opening an existing database says, or `Ok` when it opens.
async fn open_existing(url: &str) -> Result<(), String> {
    match keygate_store::Connect::existing().short_lived().open(url).await {
        Ok(store) => store.ping().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// `Connect::existing` creates and changes nothing, and names what is wrong with a database that
/// is not set up, is behind this build, or was migrated by a newer one. `tamper` runs SQL on it.
async fn existing_contract<F, Fut>(url: &str, tamper: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let err = open_existing(url).await.unwrap_err();
    assert!(err.contains("no keygate schema") && err.contains("keygate migrate"), "{err}");
    keygate_store::Connect::migrate().open(url).await.unwrap();
    open_existing(url).await.unwrap();
    // The newest migration set aside: the schema is behind.
    tamper("CREATE TABLE newest_migration AS SELECT * FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)").await;
    tamper("DELETE FROM _sqlx_migrations WHERE version = (SELECT version FROM newest_migration)").await;
    let err = open_existing(url).await.unwrap_err();
    assert!(err.contains("behind this keygate") && err.contains("keygate migrate"), "{err}");
    // Back, with a version this build does not know: a newer keygate's.
    tamper("INSERT INTO _sqlx_migrations SELECT * FROM newest_migration").await;
    tamper("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) SELECT version + 1000000000, description, success, checksum, execution_time FROM newest_migration").await;
    let err = open_existing(url).await.unwrap_err();
    assert!(err.contains("migrated by a newer keygate"), "{err}");
    tamper("DELETE FROM _sqlx_migrations WHERE version > 1000000000").await;
    open_existing(url).await.unwrap();
}

#[tokio::test]
async fn sqlite_existing_database_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("existing.db");
    let url = format!("sqlite://{}", path.display());
    let err = open_existing(&url).await.unwrap_err();
    assert!(err.contains(&format!("database file {} does not exist", path.display())), "{err}");
    assert!(!path.exists(), "opening an existing database created one");
    // An empty file is an empty SQLite database: not keygate's.
    std::fs::write(&path, "").unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    existing_contract(&url, |sql| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn postgres_existing_database_only() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    existing_contract(&db.url, |sql| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    })
    .await;
    pool.close().await;
}

#[tokio::test]
async fn sqlite_keys_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/keys.db", dir.path().display());
    keys::keys_suite(keygate_store::connect(&url, true).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_keys_contract() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    keys::keys_suite(keygate_store::connect(&db.url, true).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_audit_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/audit.db", dir.path().display());
    let store = keygate_store::connect(&url, true).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    audit::audit_suite(store, |sql| {
        let pool = pool.clone();
        async move {
            let done = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.map_err(|e| e.to_string())?;
            Ok(done.rows_affected())
        }
    })
    .await;
}

#[tokio::test]
async fn postgres_audit_contract() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    let store = keygate_store::connect(&db.url, true).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    audit::audit_suite(store, |sql| {
        let pool = pool.clone();
        async move {
            let done = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.map_err(|e| e.to_string())?;
            Ok(done.rows_affected())
        }
    })
    .await;
    pool.close().await;
}

//! The contract of what a key may do and when: a credential's lifecycle fields, roles, account
//! allowlists and the rotation rule, on both backends.

use std::sync::Arc;

use keygate_core::ClientId;
use keygate_core::audit::Audit;
use keygate_core::model::CredentialChange;
use keygate_core::net::Cidr;
use keygate_store::{Entity, Store, StoreError, now_ms};

use super::{hash, new_account};

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub(crate) async fn keys_suite(store: Arc<dyn Store>) {
    let a = store.create_account(&Audit::system(), &new_account("keys@example.com")).await.unwrap();
    let start = store.last_change_seq().await.unwrap();

    // Roles first: a credential can only hold one that exists.
    let (editor, created) =
        store.put_role(&Audit::system(), "video-editor", &words(&["videos.create", "videos.read"])).await.unwrap();
    assert!(created);
    assert_eq!(editor.permissions, words(&["videos.create", "videos.read"]));
    let (reader, _) = store.put_role(&Audit::system(), "reader", &words(&["images.read"])).await.unwrap();
    assert_eq!(store.get_role("reader").await.unwrap(), reader);
    let (empty, _) = store.put_role(&Audit::system(), "empty", &[]).await.unwrap();
    assert!(empty.permissions.is_empty());
    assert_eq!(
        store.list_roles().await.unwrap().iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["empty", "reader", "video-editor"]
    );
    assert!(matches!(store.get_role("nope").await, Err(StoreError::NotFound)));

    // A credential created with its fields, in the same transaction.
    let cid = ClientId::generate(10);
    let meta: keygate_core::model::Meta = serde_json::from_str(r#"{"tier":"gold","n":1,"é":"ü"}"#).unwrap();
    let expires = now_ms() + 3_600_000;
    let change = CredentialChange {
        name: Some(Some("dashboard (read-only) ✓".into())),
        meta: Some(Some(meta.clone())),
        expires_at: Some(Some(expires)),
        enabled: None,
        permissions: Some(words(&["admin", "images.*"])),
        roles: Some(words(&["reader", "video-editor"])),
        ip_allowlist: Some(cidrs(&["10.0.0.0/8", "2001:db8::/32"])),
        ratelimits: None,
    };
    let c = store.create_credential(&Audit::system(), a.id, cid, &hash("keys-1"), "h", &change).await.unwrap();
    assert_eq!(c.name.as_deref(), Some("dashboard (read-only) ✓"));
    assert_eq!(c.meta.as_ref(), Some(&meta));
    assert_eq!((c.expires_at, c.enabled), (Some(expires), true));
    assert_eq!(c.permissions, words(&["admin", "images.*"]));
    assert_eq!(c.roles, words(&["reader", "video-editor"]));
    assert_eq!(c.ip_allowlist, cidrs(&["10.0.0.0/8", "2001:db8::/32"]));
    assert_eq!(store.get_credential(cid).await.unwrap(), c);
    // What a request is decided on: the credential read alone, and with its key in one query.
    let state = store.credential_state(cid).await.unwrap().unwrap();
    let bundle = store.auth_bundle(&hash("keys-1")).await.unwrap().unwrap();
    for s in [&state, &bundle.credential] {
        let granted: Vec<&str> = s.grants.iter().collect();
        assert_eq!(granted, ["admin", "images.*", "images.read", "videos.create", "videos.read"]);
        assert_eq!((s.enabled, s.expires_at), (true, Some(expires)));
        assert_eq!(s.ip_allowlist, cidrs(&["10.0.0.0/8", "2001:db8::/32"]));
        assert_eq!(s.name.as_deref(), Some("dashboard (read-only) ✓"));
        let m: serde_json::Value = serde_json::from_str(s.meta.as_deref().unwrap()).unwrap();
        assert_eq!(m, serde_json::Value::Object(meta.clone()));
    }
    assert_eq!(bundle.credential, state);

    // A role that does not exist: nothing is written.
    let bad = CredentialChange { name: Some(None), roles: Some(words(&["ghost"])), ..Default::default() };
    assert!(
        matches!(store.update_credential(&Audit::system(), cid, &bad).await, Err(StoreError::Conflict(m)) if m.contains("ghost"))
    );
    assert_eq!(store.get_credential(cid).await.unwrap(), c, "a refused change leaves everything as it was");
    assert!(matches!(
        store.create_credential(&Audit::system(), a.id, ClientId::generate(11), &hash("keys-ghost"), "h", &bad).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(store.get_credential(ClientId::generate(11)).await, Err(StoreError::NotFound)));
    assert_eq!(store.find_secret(&hash("keys-ghost")).await.unwrap(), None, "no half-created credential");

    // A change touches only what it names; `Some(None)` clears.
    let off = CredentialChange { enabled: Some(false), expires_at: Some(None), ..Default::default() };
    let c2 = store.update_credential(&Audit::system(), cid, &off).await.unwrap();
    assert_eq!((c2.enabled, c2.expires_at, c2.name.as_deref()), (false, None, c.name.as_deref()));
    assert_eq!(c2.roles, c.roles);
    let clear = CredentialChange {
        name: Some(None),
        meta: Some(None),
        permissions: Some(Vec::new()),
        roles: Some(Vec::new()),
        ip_allowlist: Some(Vec::new()),
        enabled: Some(true),
        ..Default::default()
    };
    let c3 = store.update_credential(&Audit::system(), cid, &clear).await.unwrap();
    assert_eq!((c3.name, c3.meta, c3.enabled), (None, None, true));
    assert!(c3.permissions.is_empty() && c3.roles.is_empty() && c3.ip_allowlist.is_empty());
    assert!(store.credential_state(cid).await.unwrap().unwrap().grants.is_empty());
    assert!(matches!(
        store.update_credential(&Audit::system(), ClientId::generate(12), &off).await,
        Err(StoreError::NotFound)
    ));

    // A role's new permissions are its holders' at once; a held role cannot be deleted.
    store
        .update_credential(
            &Audit::system(),
            cid,
            &CredentialChange { roles: Some(words(&["reader"])), ..Default::default() },
        )
        .await
        .unwrap();
    store.put_role(&Audit::system(), "reader", &words(&["images.read", "images.list"])).await.unwrap();
    let granted: Vec<String> =
        store.credential_state(cid).await.unwrap().unwrap().grants.iter().map(str::to_owned).collect();
    assert_eq!(granted, words(&["images.list", "images.read"]));
    assert_eq!(store.role_holders("reader").await.unwrap(), 1);
    assert!(
        matches!(store.delete_role(&Audit::system(), "reader").await, Err(StoreError::Conflict(m)) if m.contains("1 credential"))
    );
    store.delete_role(&Audit::system(), "empty").await.unwrap();
    assert!(matches!(store.delete_role(&Audit::system(), "empty").await, Err(StoreError::NotFound)));

    // An account's allowlist.
    let a2 = store.set_account_ip_allowlist(&Audit::system(), a.id, &cidrs(&["203.0.113.0/24"])).await.unwrap();
    assert_eq!(a2.ip_allowlist, cidrs(&["203.0.113.0/24"]));
    assert_eq!(store.get_account(a.id).await.unwrap().ip_allowlist, a2.ip_allowlist);
    assert_eq!(store.account_state(a.id).await.unwrap().unwrap().ip_allowlist, a2.ip_allowlist);
    assert_eq!(store.auth_bundle(&hash("keys-1")).await.unwrap().unwrap().account.ip_allowlist, a2.ip_allowlist);
    assert!(matches!(
        store.set_account_ip_allowlist(&Audit::system(), keygate_core::AccountId::generate(1), &[]).await,
        Err(StoreError::NotFound)
    ));

    // Every write appended to the change feed: roles by name, the credential, the account.
    let changes = store.changes_since(start, 1000).await.unwrap();
    let has = |e: Entity, id: &str| changes.iter().any(|c| c.entity == e && c.entity_id == id);
    assert!(has(Entity::Role, "reader") && has(Entity::Role, "video-editor") && has(Entity::Role, "empty"));
    assert!(has(Entity::Credential, &cid.to_hex()) && has(Entity::Account, &a.id.to_hex()));

    // Rotation: the current key and the one before it, at most; each old key its own end.
    let rid = ClientId::generate(13);
    store.create_credential(&Audit::system(), a.id, rid, &hash("rot-1"), "h", &Default::default()).await.unwrap();
    let week = now_ms() + 7 * 86_400_000;
    let r = store.rotate_credential(&Audit::system(), rid, &hash("rot-2"), "h", Some(week)).await.unwrap();
    assert_eq!(gens(&r), [(2, None), (1, Some(week))]);
    // A second rotation with a shorter grace: key 1 ends now, key 2 gets the new grace.
    let day = now_ms() + 86_400_000;
    let r = store.rotate_credential(&Audit::system(), rid, &hash("rot-3"), "h", Some(day)).await.unwrap();
    assert_eq!(gens(&r), [(3, None), (2, Some(day))]);
    assert_eq!(store.find_secret(&hash("rot-1")).await.unwrap(), None);
    // However many rotations, never more than two keys.
    for i in 4..10 {
        let r =
            store.rotate_credential(&Audit::system(), rid, &hash(&format!("rot-{i}")), "h", Some(week)).await.unwrap();
        assert_eq!(gens(&r), [(i, None), (i - 1, Some(week))]);
    }
    for i in 1..8 {
        assert_eq!(store.find_secret(&hash(&format!("rot-{i}"))).await.unwrap(), None, "key {i}");
    }
}

fn gens(c: &keygate_core::model::Credential) -> Vec<(u32, Option<i64>)> {
    c.live_generations.iter().map(|g| (g.generation, g.expires_at)).collect()
}

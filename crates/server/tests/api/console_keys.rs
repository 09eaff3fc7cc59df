//! Credentials in the console beyond their secret: forms applied once (generate, rotate, revoke,
//! ban sent twice do it once), statuses as the decision has them (disabled, expired, refused
//! because the account is banned), a key's settings (name, expiry, permissions, allowlist; an
//! operator's enabled and roles too) edited by its owner or an operator in one change, and an
//! account's IP allowlist.

use keygate_core::ClientId;
use keygate_core::audit::Audit;
use keygate_core::model::CredentialChange;
use keygate_store::now_ms;

use crate::browser::{Browser, account_id, between, html, operator_browser as operator};
use crate::helpers::{TestApp, unique_email};

async fn credential_count(app: &TestApp, email: &str) -> usize {
    let id = account_id(app, email).await.parse().unwrap();
    app.state.ops.list_credentials(id).await.unwrap().len()
}

async fn credential(app: &TestApp, client_id: &str) -> keygate_core::model::Credential {
    app.state.ops.get_credential(client_id.parse::<ClientId>().unwrap()).await.unwrap()
}

/// What the settings forms change (not `last_used_at`, which requests move).
type Settings = (Option<String>, Option<i64>, bool, Vec<String>, Vec<String>, Vec<String>);

async fn settings(app: &TestApp, client_id: &str) -> Settings {
    let c = credential(app, client_id).await;
    (c.name, c.expires_at, c.enabled, c.permissions, c.roles, c.ip_allowlist.iter().map(|n| n.to_string()).collect())
}

/// Posts `fields` with the page's CSRF token, from this site.
async fn post(b: &Browser<'_>, csrf: &str, action: &str, fields: &[(&str, &str)]) -> crate::browser::Page {
    let mut all = vec![("csrf", csrf)];
    all.extend_from_slice(fields);
    b.post_with(action, &all, &[("origin", &b.origin()), ("sec-fetch-site", "same-origin")]).await
}

#[tokio::test]
async fn a_generate_form_sent_twice_makes_one_credential() {
    let app = TestApp::spawn().await;
    let b = Browser::new(&app);
    let email = unique_email();
    b.signup(&email).await;
    let list = b.get("/console/credentials").await;
    let (csrf, key) = (list.csrf(), list.form_key("/console/credentials").expect("the form carries a key"));
    let first = post(&b, &csrf, "/console/credentials", &[("form_key", &key), ("name", "ci")]).await;
    first.expect(200).expect_text("Your new credential");
    let client_id = between(&first.text, r#"<code id="client-id" aria-labelledby="client-id-label">"#, "<").unwrap();
    let api_key =
        between(&first.text, r#"<code id="api-key" class="key" aria-labelledby="api-key-label">"#, "<").unwrap();
    // The refresh of the answer (the same form again): no second credential, no key shown again.
    let again = post(&b, &csrf, "/console/credentials", &[("form_key", &key), ("name", "ci")]).await;
    again.expect_redirect(&format!("/console/credentials?created={client_id}"));
    assert_eq!(credential_count(&app, &email).await, 1);
    let said = b.get(again.location()).await;
    said.expect(200).expect_text("This form had already been sent").expect_text(&client_id).expect_no_text(&api_key);
    app.verify_key(&api_key).await.expect(200, 1000);

    // Two sendings at once (a double click): one credential.
    let key = b.get("/console/credentials").await.form_key("/console/credentials").unwrap();
    let fields = [("form_key", key.as_str())];
    let (x, y) = tokio::join!(
        post(&b, &csrf, "/console/credentials", &fields),
        post(&b, &csrf, "/console/credentials", &fields)
    );
    let mut statuses = [x.status, y.status];
    statuses.sort();
    assert_eq!(statuses, [200, 303], "{}\n{}", x.text, y.text);
    assert_eq!(credential_count(&app, &email).await, 2);

    // A form without a key (or a made-up one) is refused, and makes nothing.
    post(&b, &csrf, "/console/credentials", &[]).await.expect(400).expect_text("This form has expired");
    post(&b, &csrf, "/console/credentials", &[("form_key", "console-nope")]).await.expect(400);
    // Another account's key is not theirs to replay.
    let other = Browser::new(&app);
    other.signup(&unique_email()).await;
    let other_csrf = other.get("/console/credentials").await.csrf();
    post(&other, &other_csrf, "/console/credentials", &[("form_key", &key)]).await.expect(400);
    assert_eq!(credential_count(&app, &email).await, 2);

    // A refused form (an expiry in the past) spends no key: corrected, it goes through.
    let key = b.get("/console/credentials").await.form_key("/console/credentials").unwrap();
    let refused = post(&b, &csrf, "/console/credentials", &[("form_key", &key), ("expires", "2001-01-01")]).await;
    refused.expect(400).expect_text("The expiry must be in the future");
    assert_eq!(refused.form_key("/console/credentials").as_deref(), Some(key.as_str()), "the same form again");
    let made = post(&b, &csrf, "/console/credentials", &[("form_key", &key), ("expires", "2999-01-01 12:00")]).await;
    made.expect(200);
    let made_id = between(&made.text, r#"<code id="client-id" aria-labelledby="client-id-label">"#, "<").unwrap();
    assert_eq!(credential(&app, &made_id).await.expires_at, Some(32_472_187_200_000));
    assert_eq!(credential(&app, &client_id).await.name.as_deref(), Some("ci"));
    assert_eq!(credential_count(&app, &email).await, 3);
}

#[tokio::test]
async fn rotate_revoke_and_ban_sent_twice_are_applied_once() {
    let app = TestApp::spawn().await;
    let b = Browser::new(&app);
    let email = unique_email();
    b.signup(&email).await;
    let (client_id, _, _) = b.generate().await;
    let detail = format!("/console/credentials/{client_id}");
    let page = b.get(&detail).await;
    let (csrf, key) = (page.csrf(), page.form_key(&format!("{detail}/rotate")).expect("a key"));
    let rotated = post(&b, &csrf, &format!("{detail}/rotate"), &[("grace", "0"), ("form_key", &key)]).await;
    rotated.expect(200);
    let new_key =
        between(&rotated.text, r#"<code id="api-key" class="key" aria-labelledby="api-key-label">"#, "<").unwrap();
    // Again: not rotated a second time, so the key just shown still works.
    let again = post(&b, &csrf, &format!("{detail}/rotate"), &[("grace", "0"), ("form_key", &key)]).await;
    again.expect_redirect(&format!("{detail}?form=again"));
    assert_eq!(credential(&app, &client_id).await.generation, 2);
    app.verify_key(&new_key).await.expect(200, 1000);
    b.get(again.location()).await.expect_text("the key was rotated once, not again").expect_no_text(&new_key);

    // Revoke twice: the same answer, and no error.
    let confirm = format!("{detail}/revoke");
    let key = b.get(&confirm).await.form_key(&confirm).expect("a key");
    for _ in 0..2 {
        let done = post(&b, &csrf, &confirm, &[("form_key", &key)]).await;
        done.expect_redirect(&format!("/console/credentials?revoked={client_id}"));
    }
    app.verify_key(&new_key).await.expect_invalid();

    // Ban twice: one ban in the history.
    let (_, op) = operator(&app).await;
    let account = account_id(&app, &email).await;
    let page = format!("/console/admin/accounts/{account}");
    let shown = op.get(&page).await;
    let (op_csrf, key) = (shown.csrf(), shown.form_key(&format!("{page}/ban")).expect("a key"));
    for _ in 0..2 {
        post(&op, &op_csrf, &format!("{page}/ban"), &[("reason", "fraud"), ("form_key", &key)])
            .await
            .expect_redirect(&page);
    }
    let (_, events) = app.state.ops.get_account(account.parse().unwrap()).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "banned").count(), 1, "{events:?}");
    // The unban form's key is not the ban's.
    let shown = op.get(&page).await;
    let unban_key = shown.form_key(&format!("{page}/unban")).expect("a key");
    post(&op, &op_csrf, &format!("{page}/unban"), &[("form_key", &key)]).await.expect(400);
    post(&op, &op_csrf, &format!("{page}/unban"), &[("form_key", &unban_key)]).await.expect_redirect(&page);
}

#[tokio::test]
async fn statuses_say_what_requests_get() {
    let app = TestApp::spawn().await;
    let b = Browser::new(&app);
    let email = unique_email();
    b.signup(&email).await;
    let (disabled, disabled_key, _) = b.generate().await;
    let (expired, _, _) = b.generate().await;
    let (revoked, _, _) = b.generate().await;
    let (active, _, _) = b.generate().await;
    let ops = &app.state.ops;
    ops.update_credential(
        &Audit::system(),
        disabled.parse().unwrap(),
        CredentialChange { enabled: Some(false), ..Default::default() },
    )
    .await
    .unwrap();
    let past = now_ms() - 60_000;
    ops.update_credential(
        &Audit::system(),
        expired.parse().unwrap(),
        CredentialChange { expires_at: Some(Some(past)), ..Default::default() },
    )
    .await
    .unwrap();
    ops.revoke_credential(&Audit::system(), revoked.parse().unwrap()).await.unwrap();
    app.verify_key(&disabled_key).await.expect(401, 1101);

    let status = |text: &str, id: &str| {
        let row = &text[text.find(&format!("<code>{id}</code>")).unwrap_or_else(|| panic!("{id} not in {text}"))..];
        between(row, r#"<span class="status "#, "</span>").unwrap()
    };
    let list = b.get("/console/credentials").await;
    assert_eq!(status(&list.text, &disabled), r#"status-disabled">disabled"#);
    assert_eq!(status(&list.text, &expired), r#"status-expired">expired"#);
    assert_eq!(status(&list.text, &revoked), r#"status-revoked">revoked"#);
    assert_eq!(status(&list.text, &active), r#"status-active">active"#);
    b.get(&format!("/console/credentials/{expired}"))
        .await
        .expect_text(r#"<span class="status status-expired">expired</span>"#);

    // Banned: every key not revoked is refused, and the operator's page says so.
    let (_, op) = operator(&app).await;
    let account = account_id(&app, &email).await;
    app.ban(&account, "fraud").await;
    let page = op.get(&format!("/console/admin/accounts/{account}")).await;
    for id in [&disabled, &expired, &active] {
        assert_eq!(status(&page.text, id), r#"status-banned">refused: account banned"#, "{id}");
    }
    assert_eq!(status(&page.text, &revoked), r#"status-revoked">revoked"#);
    assert_eq!(page.text.matches(">active</span>").count(), 0, "{}", page.text);
}

#[tokio::test]
async fn customers_edit_their_own_keys_only() {
    let app = TestApp::spawn().await;
    let b = Browser::new(&app);
    b.signup(&unique_email()).await;
    let (client_id, api_key, _) = b.generate().await;
    let detail = format!("/console/credentials/{client_id}");
    let action = format!("{detail}/settings");
    let page = b.get(&detail).await;
    page.expect_text(&format!(r#"action="{action}""#))
        .expect_no_text(r#"name="role""#)
        .expect_no_text(r#"name="enabled""#);
    let csrf = page.csrf();
    // What the operator gave the key: the customer may narrow it, never widen it.
    let granted =
        CredentialChange { permissions: Some(vec!["videos.*".into(), "images.*".into()]), ..Default::default() };
    app.state.ops.update_credential(&Audit::system(), client_id.parse().unwrap(), granted).await.unwrap();
    let before = settings(&app, &client_id).await;
    for widen in ["*", "admin", "videos.*\nbilling.read"] {
        let refused = post(&b, &csrf, &action, &[("name", "wider"), ("permissions", widen), ("allowlist", "")]).await;
        refused.expect(400).expect_text("can only be narrowed here");
        assert_eq!(settings(&app, &client_id).await, before, "{widen}: nothing written");
    }
    let fields = [
        ("name", " dashboard <read-only> "),
        ("expires", "2999-01-01 12:00"),
        ("permissions", "videos.create\nimages.*\nvideos.create"),
        ("allowlist", "127.0.0.1\n10.0.0.0/8"),
        // A customer's form cannot enable, disable or give roles.
        ("enabled", ""),
        ("role", "admin"),
    ];
    post(&b, &csrf, &action, &fields).await.expect_redirect(&format!("{detail}?saved=1#settings"));
    let c = credential(&app, &client_id).await;
    assert_eq!(c.name.as_deref(), Some("dashboard <read-only>"));
    assert_eq!(c.expires_at, Some(32_472_187_200_000));
    assert_eq!(c.permissions, ["images.*", "videos.create"]);
    assert_eq!(c.ip_allowlist.iter().map(|n| n.to_string()).collect::<Vec<_>>(), ["10.0.0.0/8", "127.0.0.1/32"]);
    assert!(c.enabled && c.roles.is_empty());
    let saved = settings(&app, &client_id).await;
    let shown = b.get(&format!("{detail}?saved=1")).await;
    shown
        .expect_text("Settings saved")
        .expect_text(&html("dashboard <read-only>"))
        .expect_text("<code>images.*</code>");
    shown.expect_text("2999-01-01 12:00");
    app.verify_key(&api_key).await.expect(200, 1000);

    // The same form again (the expiry as shown): nothing changes, the exact expiry is kept.
    let again = b.get(&detail).await;
    let expires = between(&again.text, r#"name="expires" type="text" maxlength="40" value=""#, "\"").unwrap();
    assert_eq!(expires, "2999-01-01 12:00");

    // Refused forms: the reason in the page, the form as typed, nothing written (not the name either).
    for (field, value, reason) in [
        ("permissions", "videos..create", "videos..create"),
        ("allowlist", "10.0.0.0/8\n10.0.0.0/99", "Line 2"),
        ("expires", "2001-01-01", "The expiry must be in the future"),
        ("expires", "next week", "The expiry must be a date and time in UTC"),
    ] {
        let mut f = vec![("name", "renamed"), ("permissions", "videos.create"), ("allowlist", "")];
        f.retain(|(k, _)| *k != field);
        f.push((field, value));
        let refused = post(&b, &csrf, &action, &f).await;
        refused.expect(400).expect_text(&html(reason)).expect_text(r#"value="renamed""#);
        assert_eq!(settings(&app, &client_id).await, saved, "{field}: nothing written");
    }
    let long = "n".repeat(201);
    post(&b, &csrf, &action, &[("name", &long)]).await.expect(400).expect_text("1 to 200 characters");
    assert_eq!(settings(&app, &client_id).await, saved);

    // Someone else's key: 404, as if it did not exist; no CSRF token: 403.
    let mallory = Browser::new(&app);
    mallory.signup(&unique_email()).await;
    let theirs = mallory.get("/console/credentials").await.csrf();
    post(&mallory, &theirs, &action, &[("name", "mine now"), ("allowlist", "")]).await.expect(404);
    b.post_with(&action, &[("name", "x")], &[("origin", &b.origin())]).await.expect(403);
    assert_eq!(settings(&app, &client_id).await, saved);

    // An operator disabled it: the customer's form cannot enable it again.
    app.state
        .ops
        .update_credential(
            &Audit::system(),
            c.client_id,
            CredentialChange { enabled: Some(false), ..Default::default() },
        )
        .await
        .unwrap();
    post(&b, &csrf, &action, &[("name", "again"), ("enabled", "1")])
        .await
        .expect_redirect(&format!("{detail}?saved=1#settings"));
    let after = credential(&app, &client_id).await;
    assert_eq!((after.name.as_deref(), after.enabled, after.permissions.len()), (Some("again"), false, 0));
    b.get(&detail).await.expect_text("The platform's operators disabled this key");
}

#[tokio::test]
async fn operators_edit_any_key_and_an_accounts_allowlist() {
    let app = TestApp::spawn().await;
    let b = Browser::new(&app);
    let email = unique_email();
    b.signup(&email).await;
    let (client_id, api_key, _) = b.generate().await;
    app.state.ops.put_role(&Audit::system(), "reader", vec!["images.read".into()]).await.unwrap();
    let (_, op) = operator(&app).await;
    let account = account_id(&app, &email).await;
    let page = format!("/console/admin/accounts/{account}");
    let shown = op.get(&page).await;
    let csrf = shown.csrf();
    let action = format!("/console/admin/credentials/{client_id}/settings");
    shown.expect_text(&format!(r#"action="{action}""#)).expect_text(r#"name="role" value="reader""#);

    // Disabled, with a role (the checkbox left unticked is "disabled").
    let fields = [("name", "batch"), ("permissions", ""), ("allowlist", ""), ("role", "reader")];
    post(&op, &csrf, &action, &fields).await.expect_redirect(&format!("{page}?saved={client_id}#settings-{client_id}"));
    let c = credential(&app, &client_id).await;
    assert_eq!((c.name.as_deref(), c.enabled, c.roles.as_slice()), (Some("batch"), false, &["reader".to_owned()][..]));
    let saved = settings(&app, &client_id).await;
    app.verify_key(&api_key).await.expect(401, 1101);
    let shown = op.get(&page).await;
    shown.expect_text(r#"status-disabled">disabled"#).expect_text("granting <code>images.read</code>");
    b.get(&format!("/console/credentials/{client_id}")).await.expect_text(r#"status-disabled">disabled"#);

    // An unknown role: refused, nothing written (the name neither).
    let refused = post(&op, &csrf, &action, &[("name", "other"), ("enabled", "1"), ("role", "nosuch")]).await;
    refused.expect(400).expect_text("nosuch");
    assert_eq!(settings(&app, &client_id).await, saved);
    // Enabled again, without roles.
    post(&op, &csrf, &action, &[("name", "batch"), ("enabled", "1")]).await.expect(303);
    let c = credential(&app, &client_id).await;
    assert!(c.enabled && c.roles.is_empty());
    app.verify_key(&api_key).await.expect(200, 1000);
    // Customers cannot post to the operator's form.
    let theirs = b.get("/console/credentials").await.csrf();
    post(&b, &theirs, &action, &[("name", "x"), ("enabled", "1")]).await.expect(403);

    // The account's allowlist: requests from elsewhere are refused (the test client is 127.0.0.1).
    let allowlist = format!("{page}/allowlist");
    let bad = post(&op, &csrf, &allowlist, &[("allowlist", "203.0.113.0/24\nnot-a-network")]).await;
    bad.expect(400).expect_text("Line 2").expect_text("not-a-network");
    assert!(app.state.ops.store().get_account(account.parse().unwrap()).await.unwrap().ip_allowlist.is_empty());
    post(&op, &csrf, &allowlist, &[("allowlist", "203.0.113.0/24")])
        .await
        .expect_redirect(&format!("{page}?saved=allowlist#allowlist"));
    let a = app.state.ops.store().get_account(account.parse().unwrap()).await.unwrap();
    assert_eq!(a.ip_allowlist.iter().map(|n| n.to_string()).collect::<Vec<_>>(), ["203.0.113.0/24"]);
    op.get(&page).await.expect_text("<code>203.0.113.0/24</code>");
    b.get(&format!("/console/credentials/{client_id}")).await.expect_text("Your account's keys may only be used from");
    app.verify_key(&api_key).await.expect(403, 1009);
    post(&op, &csrf, &allowlist, &[("allowlist", "")]).await.expect(303);
    app.verify_key(&api_key).await.expect(200, 1000);
}

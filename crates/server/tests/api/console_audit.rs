//! The audit log in the console: the operators' page `/console/admin/audit` (who, what, the
//! fields before and after, from where; filters, paging, refused filters), an account's history
//! on its operator page, and a customer's own activity on their credentials page (their own
//! account's entries only, never the operators' names). Values are escaped.

use keygate_core::audit::Audit;
use serde_json::Value;

use crate::browser::{Browser, account_id, between, html, operator_browser as operator};
use crate::helpers::{TestApp, unique_email};

/// The table row (`<tr>…</tr>`) of `text` holding `needle`.
#[track_caller]
fn row<'t>(text: &'t str, needle: &str) -> &'t str {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"));
    let start = text[..at].rfind("<tr>").expect("in a row");
    let end = at + text[at..].find("</tr>").expect("a closed row");
    &text[start..end]
}

/// The actions of the rows listed, in order.
fn actions(text: &str) -> Vec<String> {
    text.split(r#"<code class="audit-action">"#).skip(1).map(|s| s[..s.find('<').unwrap()].to_owned()).collect()
}

/// The audit log of the admin API for this actor.
async fn api_entries(app: &TestApp, actor: &str) -> Vec<Value> {
    let q = crate::browser::serde_urlencoded_like(&[("actor", actor)]);
    let r = app.admin_get(&format!("/audit?{q}")).await;
    r.expect(200, 1000);
    r.data().as_array().expect("a list").clone()
}

#[tokio::test]
async fn operator_changes_are_listed_with_who_what_and_from_where() {
    let app = TestApp::spawn().await;
    let customer = Browser::new(&app);
    let customer_email = unique_email();
    customer.signup(&customer_email).await;
    let (client_id, _, _) = customer.generate().await;
    let account = account_id(&app, &customer_email).await;
    let (op_email, op) = operator(&app).await;

    // The operator renames the key and bans the account, in the console.
    let page = format!("/console/admin/accounts/{account}");
    let settings = format!("/console/admin/credentials/{client_id}/settings");
    op.submit(&page, &settings, &[("name", "batch"), ("enabled", "1")]).await.expect(303);
    op.submit(&page, &format!("{page}/ban"), &[("reason", "card fraud")]).await.expect_redirect(&page);

    // The operators' navigation leads to the audit page.
    let log = op.get("/console/admin/audit").await;
    log.expect(200).expect_text(r#"<a href="/console/admin/audit" aria-current="page">Audit log</a>"#);
    assert!(
        op.get("/console/admin/accounts").await.text.contains(r#"<a href="/console/admin/audit">Audit log</a>"#),
        "the nav links the audit log"
    );
    // Newest first: the ban, the rename, the operator's account (made by keygate), then the
    // customer's own writes, and the first signing key (made by keygate at start-up).
    assert_eq!(
        actions(&log.text),
        [
            "account.ban",
            "credential.update",
            "account.create",
            "credential.create",
            "account.create",
            "signing_key.add"
        ],
        "{}",
        log.text
    );
    assert!(row(&log.text, &account_id(&app, &op_email).await).contains(r#"<span class="audit-kind">keygate</span>"#));
    let ban = row(&log.text, r#"audit-action">account.ban<"#);
    for shown in [
        format!(r#"<span class="audit-kind">operator</span> <span class="audit-actor">{op_email}</span>"#),
        format!(r#"account <a href="/console/admin/accounts/{account}"><code class="wrap-any">{account}</code></a>"#),
        r#"status</span>: <code>&#34;active&#34;</code> → <code>&#34;banned&#34;</code>"#.to_owned(),
        r#"banReason</span>: <code>null</code> → <code>&#34;card fraud&#34;</code>"#.to_owned(),
        r#"<code class="audit-ip">127.0.0.1</code>"#.to_owned(),
    ] {
        assert!(ban.contains(&shown), "{shown:?} not in {ban}");
    }
    let rename = row(&log.text, r#"audit-action">credential.update<"#);
    assert!(rename.contains(&format!(r#"<span class="audit-actor">{op_email}</span>"#)), "{rename}");
    assert!(rename.contains(r#"name</span>: <code>null</code> → <code>&#34;batch&#34;</code>"#), "{rename}");
    assert!(
        rename.contains(&format!(r#"<a href="/console/admin/accounts/{account}#limits-{client_id}">"#)),
        "a credential links to its account's page: {rename}"
    );

    // Written with the client's address and the request's id, as the admin API shows them.
    let entries = api_entries(&app, &op_email).await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    for e in &entries {
        assert_eq!(e["actorKind"], "operator", "{e}");
        assert_eq!(e["actor"], op_email.as_str(), "{e}");
        assert_eq!(e["sourceIp"], "127.0.0.1", "{e}");
        let id = e["requestId"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "a request id: {e}");
        assert!(ban.contains(id) || rename.contains(id), "the page shows request id {id}");
    }
    assert_eq!(entries[0]["after"]["banReason"], "card fraud");

    // The account's page: its history, and a link to the whole log of the account.
    let detail = op.get(&page).await;
    detail.expect(200).expect_text(r#"id="account-history""#);
    let history = between(&detail.text, r#"id="account-history""#, "</table>").unwrap();
    assert_eq!(actions(&history), ["account.ban", "credential.update", "credential.create", "account.create"]);
    let full = format!("/console/admin/audit?account={account}");
    detail.expect_text(&format!(r#"href="{full}""#));
    // The full log of the account: its entries and its credentials', not the others'.
    let theirs = op.get(&full).await;
    theirs.expect(200).expect_text(&format!(r#"value="{account}""#));
    assert_eq!(actions(&theirs.text), ["account.ban", "credential.update", "credential.create", "account.create"]);
    // The operator's own account was created by keygate: not the customer's history.
    let op_account = account_id(&app, &op_email).await;
    assert!(!theirs.text.contains(&op_account), "{}", theirs.text);
}

#[tokio::test]
async fn customers_see_their_own_activity_only() {
    let app = TestApp::spawn().await;
    let alice = Browser::new(&app);
    let alice_email = unique_email();
    alice.signup(&alice_email).await;
    let (alice_key, _, _) = alice.generate().await;
    let detail = format!("/console/credentials/{alice_key}");
    alice.submit(&detail, &format!("{detail}/settings"), &[("name", "mobile app")]).await.expect(303);

    let bob = Browser::new(&app);
    let bob_email = unique_email();
    bob.signup(&bob_email).await;
    let generated =
        bob.submit("/console/credentials", "/console/credentials", &[("name", "bobs-secret-project")]).await;
    generated.expect(200);
    let bob_key = between(&generated.text, r#"<code id="client-id" aria-labelledby="client-id-label">"#, "<").unwrap();

    // Recorded as the customer's own, from the client's address.
    let entries = api_entries(&app, &alice_email).await;
    let kinds: Vec<_> =
        entries.iter().map(|e| (e["action"].as_str().unwrap(), e["actorKind"].as_str().unwrap())).collect();
    assert_eq!(
        kinds,
        [("credential.update", "customer"), ("credential.create", "customer"), ("account.create", "customer")]
    );
    assert!(
        entries.iter().all(|e| e["sourceIp"] == "127.0.0.1" && e["requestId"].as_str().is_some_and(|r| !r.is_empty()))
    );

    // An operator's change to Alice's key: Alice sees that the platform made it, not who.
    let (op_email, op) = operator(&app).await;
    let alice_account = account_id(&app, &alice_email).await;
    let page = format!("/console/admin/accounts/{alice_account}");
    op.submit(
        &page,
        &format!("/console/admin/credentials/{alice_key}/settings"),
        &[("name", "renamed"), ("enabled", "1")],
    )
    .await
    .expect(303);

    let list = alice.get("/console/credentials").await;
    list.expect(200).expect_text(r#"id="activity""#);
    let activity = between(&list.text, r#"id="activity-log""#, "</table>").unwrap();
    assert_eq!(actions(&activity), ["credential.update", "credential.update", "credential.create", "account.create"]);
    let own = row(&activity, r#"&#34;mobile app&#34;</code></li>"#);
    assert!(
        own.contains(&format!(
            r#"<span class="audit-kind">customer</span> <span class="audit-actor">{alice_email}</span>"#
        )),
        "{own}"
    );
    assert!(own.contains(r#"name</span>: <code>null</code> → <code>&#34;mobile app&#34;</code>"#), "{own}");
    assert!(own.contains(r#"<code class="audit-ip">127.0.0.1</code>"#), "{own}");
    assert!(own.contains(&format!(r#"<a href="/console/credentials/{alice_key}">"#)), "{own}");
    let by_op = row(&activity, r#"&#34;renamed&#34;"#);
    assert!(by_op.contains(r#"<span class="audit-kind">operator</span></td>"#), "no operator named: {by_op}");
    assert!(!activity.contains(&op_email), "the operator's email is not shown to customers");
    // Nothing of Bob's.
    for theirs in [&bob_email, &bob_key, &"bobs-secret-project".to_owned()] {
        assert!(!list.text.contains(theirs.as_str()), "{theirs} in Alice's page");
    }
    let bobs = bob.get("/console/credentials").await;
    let bobs = between(&bobs.text, r#"id="activity-log""#, "</table>").unwrap();
    assert_eq!(actions(&bobs), ["credential.create", "account.create"]);
    assert!(bobs.contains("bobs-secret-project") && !bobs.contains(&alice_key) && !bobs.contains(&alice_email));

    // The audit page is the operators'.
    for path in ["/console/admin/audit", "/console/admin/audit?action=account.ban", "/console/admin/audit?actor=x"] {
        alice.get(path).await.expect(403).expect_text("Operators only").expect_no_text("audit-action");
    }
    Browser::new(&app).get("/console/admin/audit").await.expect_redirect("/console/login");
}

#[tokio::test]
async fn filters_paging_and_refused_filters() {
    let app = TestApp::spawn().await;
    let (op_email, op) = operator(&app).await;
    let (first, second) = (app.customer().await, app.customer().await);
    // One ban in the console, one through the admin API.
    let page = format!("/console/admin/accounts/{}", first.account_id);
    op.submit(&page, &format!("{page}/ban"), &[("reason", "spam")]).await.expect_redirect(&page);
    app.ban(&second.account_id, "abuse").await;
    app.unban(&second.account_id).await;

    let bans = op.get("/console/admin/audit?action=account.ban").await;
    bans.expect(200).expect_text(r#"value="account.ban""#);
    assert_eq!(actions(&bans.text), ["account.ban", "account.ban"], "{}", bans.text);
    assert!(row(&bans.text, &second.account_id).contains(r#"<span class="audit-kind">admin API</span>"#));
    assert!(row(&bans.text, &first.account_id).contains(&op_email));
    // A kind of target: all its actions; an actor; a target; an empty field is no filter.
    let account = op.get("/console/admin/audit?action=account&actor=&target=&from=&to=").await;
    let listed = actions(&account.expect(200).text);
    assert!(listed.iter().all(|a| a.starts_with("account.")), "{listed:?}");
    assert!(listed.contains(&"account.unban".to_owned()) && listed.contains(&"account.create".to_owned()));
    let mine = op.get(&format!("/console/admin/audit?actor={op_email}")).await;
    assert_eq!(actions(&mine.text), ["account.ban"]);
    let target = op.get(&format!("/console/admin/audit?target={}", second.client_id)).await;
    assert_eq!(actions(&target.text), ["credential.create"]);
    let future = op.get("/console/admin/audit?from=2999-01-01").await;
    future.expect(200).expect_text("No entry matches.");
    assert!(actions(&future.text).is_empty());

    // More than a page: "Older" leads to the rest, and back to the newest.
    for i in 0..55 {
        app.state.ops.put_role(&Audit::system(), &format!("role-{i}"), vec!["videos.read".into()]).await.unwrap();
    }
    let roles = op.get("/console/admin/audit?action=role.create").await;
    assert_eq!(actions(&roles.text).len(), 50);
    assert!(roles.text.contains("role-54") && !roles.text.contains("role-4<"), "newest first");
    let older = between(&roles.text, r#"<a class="btn btn-small" href=""#, r#"" id="older">"#).expect("an older link");
    let older = older.replace("&#38;", "&");
    assert!(older.starts_with("/console/admin/audit?action=role.create&cursor="), "{older}");
    assert!(!roles.text.contains(r#"id="newest""#));
    let rest = op.get(&older).await;
    rest.expect(200);
    assert_eq!(actions(&rest.text).len(), 5);
    assert!(rest.text.contains("role-0<") && !rest.text.contains("role-54"));
    assert!(!rest.text.contains(r#"id="older""#), "the last page");
    rest.expect_text(r#"href="/console/admin/audit?action=role.create" id="newest""#);

    // A refused filter: the page again, with the reason and the filter as typed, 400.
    for (query, reason) in [
        ("action=credential.delete", "Action must be one of"),
        ("from=yesterday", "From must be an RFC 3339 time"),
        ("from=2026-02-01&to=2026-01-01", "From must be before to."),
        ("account=nope", "Account must be an accountId."),
        ("cursor=-1", "Cursor is not valid."),
    ] {
        let refused = op.get(&format!("/console/admin/audit?{query}")).await;
        refused.expect(400).expect_text(r#"id="audit-error""#).expect_text(reason).expect_text(r#"id="f-actor""#);
        assert!(actions(&refused.text).is_empty(), "{query}: nothing listed");
    }
    op.get("/console/admin/audit?action=credential.delete").await.expect_text(r#"value="credential.delete""#);
    op.get("/console/admin/audit?action=a&action=b").await.expect(400).expect_text("The filter could not be read.");
}

#[tokio::test]
async fn values_are_escaped() {
    let app = TestApp::spawn().await;
    let b = Browser::new(&app);
    let email = unique_email();
    b.signup(&email).await;
    let name = "<script>alert(1)</script>";
    b.submit("/console/credentials", "/console/credentials", &[("name", name)]).await.expect(200);
    let (_, op) = operator(&app).await;
    let account = account_id(&app, &email).await;
    let escaped = html(&format!("\"{name}\""));
    for (who, path) in [
        (&b, "/console/credentials".to_owned()),
        (&op, "/console/admin/audit".to_owned()),
        (&op, format!("/console/admin/accounts/{account}")),
    ] {
        let page = who.get(&path).await;
        page.expect(200).expect_text(&format!("<code>{escaped}</code>")).expect_no_text("<script>alert");
    }
    // A filter's value is echoed escaped too.
    let typed = op.get("/console/admin/audit?actor=%22%3E%3Cscript%3Ealert(2)%3C%2Fscript%3E").await;
    typed.expect(200).expect_no_text("<script>alert").expect_text(&html(r#""><script>alert(2)</script>"#));
}

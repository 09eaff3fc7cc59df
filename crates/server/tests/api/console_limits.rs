//! Rate limits and plans in the web console, as a browser without JavaScript uses it: operators
//! manage plans and set an account's plan and own limits and a credential's own limits with forms
//! (`NAME=LIMIT/DURATION`, one per line); customers see what applies to each key and where it
//! comes from, and cannot change it. Refused forms answer 400 with the form again and change
//! nothing; a used plan cannot be deleted; every form needs its CSRF token; a limit set in the
//! console applies on `/auth/verify` at once (429, code 1005).

use keygate_core::audit::Audit;
use keygate_core::ratelimit::RateLimit;
use keygate_store::Role;

use crate::browser::{Browser, PASSWORD, between, html};
use crate::helpers::{TestApp, unique_email};

/// A logged-in operator (made as the CLI makes one).
pub(crate) async fn operator(app: &TestApp) -> Browser<'_> {
    let email = unique_email();
    let s = &app.state;
    s.ops
        .create_login_account(&Audit::system(), &email, "Op", Some(PASSWORD), Role::Operator, &s.console.passwords)
        .await
        .unwrap();
    let b = Browser::new(app);
    b.login(&email, PASSWORD).await.expect_redirect("/console/credentials");
    b
}

/// A signed-up customer with one credential: (browser, account id, clientId, API key).
pub(crate) async fn customer(app: &TestApp) -> (Browser<'_>, String, String, String) {
    let email = unique_email();
    let b = Browser::new(app);
    b.signup(&email).await;
    let (client_id, key, _) = b.generate().await;
    let id = app.state.ops.store().console_account_by_email(&email).await.unwrap().unwrap().account.id.to_hex();
    (b, id, client_id, key)
}

fn lim(name: &str, limit: u64, duration: &str) -> RateLimit {
    RateLimit::new(name, limit, duration.parse().unwrap())
}

/// An account's plan and own limits, as stored.
async fn account_state(app: &TestApp, id: &str) -> (Option<String>, Vec<RateLimit>) {
    let a = app.state.ops.store().get_account(id.parse().unwrap()).await.unwrap();
    (a.plan, a.ratelimits)
}

async fn credential_limits(app: &TestApp, client_id: &str) -> Vec<RateLimit> {
    app.state.ops.get_credential(client_id.parse().unwrap()).await.unwrap().ratelimits
}

/// One limit as the console lists it.
fn shown(name: &str, limit: u64, duration: &str, source: &str) -> String {
    format!(r#"<li><code>{name}</code> {limit} per {duration} <span class="limit-source">· {source}</span></li>"#)
}

const PLANS: &str = "/console/admin/plans";

#[tokio::test]
async fn console_operators_set_plans_and_limits_and_customers_see_them() {
    let app = TestApp::spawn().await;
    let (cust, account, client_id, key) = customer(&app).await;
    let op = operator(&app).await;
    let account_page = format!("/console/admin/accounts/{account}");

    // Plans: none yet, then one created from lines (blank lines and spaces are fine).
    op.get(PLANS).await.expect(200).expect_text("No plans yet.").expect_text(r#"aria-current="page">Plans</a>"#);
    let saved =
        op.submit(PLANS, PLANS, &[("name", "pro"), ("ratelimits", "requests=100/1m\r\n\r\n daily = 1000/1d ")]).await;
    saved.expect_redirect("/console/admin/plans?saved=pro");
    let (plan, accounts) = app.state.ops.get_plan("pro").await.unwrap();
    assert_eq!((plan.ratelimits, accounts), (vec![lim("requests", 100, "1m"), lim("daily", 1000, "1d")], 0));
    let list = op.get(saved.location()).await;
    list.expect(200).expect_text("Plan pro saved");
    // The console's headers, and nothing inline for the CSP to block.
    assert_eq!(
        list.headers.get("content-security-policy").map(|v| v.to_str().unwrap().starts_with("default-src 'none'")),
        Some(true)
    );
    assert_eq!(list.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    assert!(!list.text.contains("<script>") && !list.text.contains("style="), "{}", list.text);
    let row = between(&list.text, r#"<tr id="plan-pro">"#, "</tr>").expect("a row for pro");
    assert!(
        row.contains("<code>requests</code> 100 per 1m") && row.contains("<code>daily</code> 1000 per 1d"),
        "{row}"
    );
    assert!(row.contains(r#"<td data-label="Accounts" class="plan-accounts">0</td>"#), "{row}");
    // The edit link fills the form with the plan's lines.
    op.get("/console/admin/plans?edit=pro")
        .await
        .expect(200)
        .expect_text("Edit plan pro")
        .expect_text(">requests=100/1m\ndaily=1000/1d</textarea>");
    op.get("/console/admin/plans?edit=nope").await.expect(404);

    // The account: on the plan, with its own limit, saved by one form.
    op.get(&account_page).await.expect(200).expect_text(r#"<option value="pro">pro</option>"#);
    let done = op
        .submit(&account_page, &format!("{account_page}/limits"), &[("plan", "pro"), ("ratelimits", "burst=50/1s")])
        .await;
    done.expect_redirect(&account_page);
    assert_eq!(account_state(&app, &account).await, (Some("pro".into()), vec![lim("burst", 50, "1s")]));
    // The credential: its own limit, which replaces the plan's of the same name.
    let done = op
        .submit(
            &account_page,
            &format!("/console/admin/credentials/{client_id}/limits"),
            &[("ratelimits", "requests=3/1h")],
        )
        .await;
    done.expect_redirect(&account_page);
    assert_eq!(credential_limits(&app, &client_id).await, [lim("requests", 3, "1h")]);

    // The operator's page: the plan picked, the lines, what applies and where from.
    let page = op.get(&account_page).await;
    page.expect(200)
        .expect_text(r#"<option value="pro" selected>pro</option>"#)
        .expect_text(">burst=50/1s</textarea>")
        .expect_text(">requests=3/1h</textarea>");
    let account_limits = between(&page.text, r#"<div id="account-limits">"#, "</div>").unwrap();
    for l in [
        shown("requests", 100, "1m", "plan pro"),
        shown("daily", 1000, "1d", "plan pro"),
        shown("burst", 50, "1s", "account"),
    ] {
        assert!(account_limits.contains(&l), "{l} not in {account_limits}");
    }
    let cred =
        between(&page.text, &format!(r#"<div class="credential-limits" id="limits-{client_id}">"#), "</form>").unwrap();
    for l in [
        shown("requests", 3, "1h", "credential"),
        shown("daily", 1000, "1d", "plan pro"),
        shown("burst", 50, "1s", "account"),
    ] {
        assert!(cred.contains(&l), "{l} not in {cred}");
    }
    assert!(!cred.contains("100 per 1m"), "the credential's own limit replaces the plan's: {cred}");
    let plans = op.get(PLANS).await;
    let row = between(&plans.text, r#"<tr id="plan-pro">"#, "</tr>").unwrap();
    assert!(row.contains(r#"class="plan-accounts">1</td>"#), "{row}");

    // The customer sees the same, worded for them, read-only.
    for path in ["/console/credentials".to_owned(), format!("/console/credentials/{client_id}")] {
        let p = cust.get(&path).await;
        p.expect(200)
            .expect_text(&shown("requests", 3, "1h", "your key"))
            .expect_text(&shown("daily", 1000, "1d", "plan pro"))
            .expect_text(&shown("burst", 50, "1s", "your account"))
            .expect_no_text("100 per 1m")
            .expect_no_text("/limits\"")
            .expect_no_text(r#"name="ratelimits""#);
    }
    // A second key of the account: no own limit, so the plan's "requests" applies to it.
    let (second, _, _) = cust.generate().await;
    let list = cust.get("/console/credentials").await;
    let row = between(&list.text, &format!("/console/credentials/{second}\""), "</tr>").unwrap();
    assert!(row.contains(&shown("requests", 100, "1m", "plan pro")) && !row.contains("your key"), "{row}");

    // It applies at once: 3 per hour for this key.
    for _ in 0..3 {
        app.verify_key(&key).await.expect(200, 1000);
    }
    let r = app.verify_key(&key).await;
    r.expect(429, 1005);
    assert!(r.body["msg"].as_str().unwrap().contains("\"requests\""), "{}", r.text);

    // Emptied in the console: the key's own limit goes, the plan's 100 per minute is left.
    op.submit(&account_page, &format!("/console/admin/credentials/{client_id}/limits"), &[("ratelimits", "")])
        .await
        .expect_redirect(&account_page);
    assert!(credential_limits(&app, &client_id).await.is_empty());
    app.verify_key(&key).await.expect(200, 1000);
}

#[tokio::test]
async fn console_bad_limit_lines_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (_cust, account, client_id, key) = customer(&app).await;
    let op = operator(&app).await;
    let account_page = format!("/console/admin/accounts/{account}");
    op.submit(PLANS, PLANS, &[("name", "free"), ("ratelimits", "requests=10/1s")])
        .await
        .expect_redirect("/console/admin/plans?saved=free");
    op.submit(&account_page, &format!("{account_page}/limits"), &[("plan", "free"), ("ratelimits", "burst=5/1s")])
        .await
        .expect_redirect(&account_page);
    op.submit(&account_page, &format!("/console/admin/credentials/{client_id}/limits"), &[("ratelimits", "key=7/1m")])
        .await
        .expect_redirect(&account_page);
    let before = (account_state(&app, &account).await, credential_limits(&app, &client_id).await);
    let plan_before = app.state.ops.get_plan("free").await.unwrap().0;

    // The plan form: each kind of mistake, named with its line; the form comes back as typed.
    for (lines, says) in [
        ("requests=20/1s\nnonsense", r#"Line 2: "nonsense" is not a rate limit: write NAME=LIMIT/DURATION"#),
        ("requests=ten/1s", r#"Line 1: the limit of "requests" must be a whole number"#),
        ("requests=20/1w", r#"Line 1: the duration of "requests" must be a whole number and a unit"#),
        ("requests=20/31d", "from 1s to 30d"),
        ("Requests=20/1s", r#"Line 1: the name "Requests" must be"#),
        ("a=1/1s\na=2/1m", r#"Rate limit "a" appears twice"#),
        ("<script>alert(1)</script>=1/1s", r#"Line 1: the name "<script>alert(1)</script>" must be"#),
    ] {
        let p = op.submit(PLANS, PLANS, &[("name", "free"), ("ratelimits", lines)]).await;
        p.expect(400).expect_text(&html(says)).expect_text(&format!(">{}</textarea>", html(lines)));
        p.expect_no_text("<script>");
    }
    let p = op.submit(PLANS, PLANS, &[("name", "Bad Name"), ("ratelimits", "requests=1/1s")]).await;
    p.expect(400).expect_text(&html(r#"Plan name "Bad Name" must be"#)).expect_text(r#"value="Bad Name""#);
    assert_eq!(
        app.state.ops.list_plans().await.unwrap(),
        std::slice::from_ref(&plan_before),
        "no plan created or changed"
    );

    // The account form: a bad line, an unknown plan.
    let action = format!("{account_page}/limits");
    let p = op.submit(&account_page, &action, &[("plan", ""), ("ratelimits", "burst=1/1s\nburst")]).await;
    p.expect(400)
        .expect_text(&html(r#"Line 2: "burst" is not a rate limit"#))
        .expect_text(">burst=1/1s\nburst</textarea>")
        .expect_text(r#"<option value="">no plan</option>"#);
    let p = op.submit(&account_page, &action, &[("plan", "nope"), ("ratelimits", "")]).await;
    p.expect(400).expect_text(&html(r#"No plan named "nope""#));
    // A credential's form: the error sits with that credential's form.
    let p = op
        .submit(&account_page, &format!("/console/admin/credentials/{client_id}/limits"), &[("ratelimits", "key=1/0s")])
        .await;
    p.expect(400);
    let form = between(&p.text, &format!(r#"id="limits-{client_id}">"#), "</form>").unwrap();
    assert!(
        form.contains(&html(r#"Line 1: the duration of "key""#)) && form.contains(">key=1/0s</textarea>"),
        "{form}"
    );
    assert!(!p.text.contains(r#"id="limits-error""#), "the account's form has no error: {}", p.text);
    // Unknown targets are 404 pages.
    let csrf = op.get(&account_page).await.csrf();
    let origin = op.origin();
    let same_site = [("origin", origin.as_str())];
    op.post_with(
        "/console/admin/credentials/0123456789abcdef01234567/limits",
        &[("csrf", &csrf), ("ratelimits", "")],
        &same_site,
    )
    .await
    .expect(404);
    op.post_with(
        "/console/admin/accounts/0123456789abcdef01234567/limits",
        &[("csrf", &csrf), ("ratelimits", "")],
        &same_site,
    )
    .await
    .expect(404);

    let after = (account_state(&app, &account).await, credential_limits(&app, &client_id).await);
    assert_eq!(after, before, "nothing changed");
    assert_eq!(app.state.ops.get_plan("free").await.unwrap().0, plan_before);
    app.verify_key(&key).await.expect(200, 1000);
}

#[tokio::test]
async fn console_a_plan_in_use_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let (_cust, account, _client_id, key) = customer(&app).await;
    let op = operator(&app).await;
    let account_page = format!("/console/admin/accounts/{account}");
    op.submit(PLANS, PLANS, &[("name", "free"), ("ratelimits", "requests=2/1h")])
        .await
        .expect_redirect("/console/admin/plans?saved=free");
    op.submit(&account_page, &format!("{account_page}/limits"), &[("plan", "free"), ("ratelimits", "")])
        .await
        .expect_redirect(&account_page);
    // The plan applies to the account's key: 2 per hour.
    for _ in 0..2 {
        app.verify_key(&key).await.expect(200, 1000);
    }
    app.verify_key(&key).await.expect(429, 1005);

    let p = op.submit(PLANS, "/console/admin/plans/free/delete", &[]).await;
    p.expect(409).expect_text(&html(r#"Plan "free" is used by 1 account: move those accounts to another plan"#));
    assert!(p.text.contains(r#"<tr id="plan-free">"#), "the list is shown again: {}", p.text);
    assert!(app.state.ops.get_plan("free").await.is_ok(), "still there");
    assert_eq!(account_state(&app, &account).await.0.as_deref(), Some("free"));

    // Off the plan, it goes; its limit no longer applies.
    op.submit(&account_page, &format!("{account_page}/limits"), &[("plan", ""), ("ratelimits", "")])
        .await
        .expect_redirect(&account_page);
    app.verify_key(&key).await.expect(200, 1000);
    op.submit(PLANS, "/console/admin/plans/free/delete", &[])
        .await
        .expect_redirect("/console/admin/plans?deleted=free");
    assert!(app.state.ops.list_plans().await.unwrap().is_empty());
    op.get("/console/admin/plans?deleted=free")
        .await
        .expect(200)
        .expect_text("Plan free deleted.")
        .expect_text("No plans yet.");
    op.submit(PLANS, "/console/admin/plans/free/delete", &[]).await.expect(404);
}

#[tokio::test]
async fn console_customers_cannot_reach_the_limit_forms() {
    let app = TestApp::spawn().await;
    let (cust, account, client_id, key) = customer(&app).await;
    app.state.ops.put_plan(&Audit::system(), "free", &[lim("requests", 5, "1h")], None).await.unwrap();
    let csrf = cust.get("/console/credentials").await.expect(200).expect_no_text(PLANS).csrf();
    cust.get(PLANS).await.expect(403).expect_text("Operators only");
    cust.get("/console/admin/plans?edit=free").await.expect(403);
    let origin = cust.origin();
    let same_site = [("origin", origin.as_str())];
    for (path, fields) in [
        (PLANS.to_owned(), vec![("name", "mine"), ("ratelimits", "")]),
        ("/console/admin/plans/free/delete".to_owned(), vec![]),
        (
            format!("/console/admin/accounts/{account}/limits"),
            vec![("plan", ""), ("ratelimits", "requests=1000000/1s")],
        ),
        (format!("/console/admin/credentials/{client_id}/limits"), vec![("ratelimits", "requests=1000000/1s")]),
    ] {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend(fields);
        cust.post_with(&path, &all, &same_site).await.expect(403).expect_text("Operators only");
        // Not logged in: to the login page (a cross-site check comes first, so send the origin).
        Browser::new(&app).post_with(&path, &all, &same_site).await.expect_redirect("/console/login");
    }
    Browser::new(&app).get(PLANS).await.expect_redirect("/console/login");
    assert_eq!(app.state.ops.list_plans().await.unwrap().len(), 1, "no plan made or deleted");
    assert_eq!(account_state(&app, &account).await, (None, vec![]));
    assert!(credential_limits(&app, &client_id).await.is_empty());
    app.verify_key(&key).await.expect(200, 1000);
}

#[tokio::test]
async fn console_limit_forms_need_the_csrf_token() {
    let app = TestApp::spawn().await;
    let (other, account, client_id, _key) = customer(&app).await;
    let op = operator(&app).await;
    app.state.ops.put_plan(&Audit::system(), "free", &[lim("requests", 5, "1h")], None).await.unwrap();
    let token = op.get(PLANS).await.csrf();
    let foreign = other.get("/console/credentials").await.csrf();
    let origin = op.origin();
    for (path, fields) in [
        (PLANS.to_owned(), vec![("name", "made"), ("ratelimits", "requests=1/1s")]),
        ("/console/admin/plans/free/delete".to_owned(), vec![]),
        (format!("/console/admin/accounts/{account}/limits"), vec![("plan", "free"), ("ratelimits", "")]),
        (format!("/console/admin/credentials/{client_id}/limits"), vec![("ratelimits", "requests=1/1s")]),
    ] {
        let with = |csrf: Option<&'static str>| {
            let mut all: Vec<(&str, &str)> = csrf.map(|c| ("csrf", c)).into_iter().collect();
            all.extend(fields.iter().copied());
            all
        };
        // Missing, forged, another session's token: 403.
        op.post_with(&path, &with(None), &[("origin", &origin)]).await.expect(403).expect_text("Request refused");
        op.post_with(&path, &with(Some("forged")), &[("origin", &origin)]).await.expect(403);
        let mut all = vec![("csrf", foreign.as_str())];
        all.extend(fields.iter().copied());
        op.post_with(&path, &all, &[("origin", &origin)]).await.expect(403);
        // The right token from another site: 403.
        let mut all = vec![("csrf", token.as_str())];
        all.extend(fields.iter().copied());
        op.post_with(&path, &all, &[("origin", "http://evil.example")]).await.expect(403);
        op.post_with(&path, &all, &[("sec-fetch-site", "cross-site")]).await.expect(403);
    }
    let plans = app.state.ops.list_plans().await.unwrap();
    assert_eq!(plans.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["free"]);
    assert_eq!(account_state(&app, &account).await, (None, vec![]));
    assert!(credential_limits(&app, &client_id).await.is_empty());
    // The same form with its token, from this site, works.
    let mut all = vec![("csrf", token.as_str())];
    all.extend([("name", "made"), ("ratelimits", "requests=1/1s")]);
    op.post_with(PLANS, &all, &[("origin", &origin)]).await.expect_redirect("/console/admin/plans?saved=made");
}

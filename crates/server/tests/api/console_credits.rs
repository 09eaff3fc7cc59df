//! Credits in the web console, as a browser without JavaScript uses it: operators set an
//! account's and a credential's balance and refill (`monthly:500:1`), remove them, and top up,
//! refund or set with an adjustment form whose idempotency key is made when the form is shown
//! (the same form sent twice is applied once); a plan carries a credits refill; customers see
//! what is left of each balance their key is charged to, its refill in words and the next refill
//! in UTC, read-only. Refused forms answer 400 (409 for a conflicting adjustment) with the form
//! again as typed, and change nothing; customers cannot reach the operator's forms.

use std::time::{Duration, UNIX_EPOCH};

use keygate_core::audit::Audit;
use keygate_core::credits::{CreditBalance, CreditSource, CreditsConfig, Interval, Refill};
use keygate_store::{CreditScope, now_ms};

use crate::browser::{Browser, Page, between, html};
use crate::console_limits::{customer, operator};
use crate::helpers::TestApp;

const PLANS: &str = "/console/admin/plans";

fn account_scope(id: &str) -> CreditScope {
    CreditScope::Account(id.parse().unwrap())
}

fn credential_scope(client_id: &str) -> CreditScope {
    CreditScope::Credential(client_id.parse().unwrap())
}

async fn balance(app: &TestApp, scope: CreditScope) -> Option<CreditBalance> {
    app.state.ops.credit_balance(scope).await.unwrap()
}

fn monthly(amount: i64, day: u8) -> Refill {
    Refill { interval: Interval::Monthly, amount, refill_day: Some(day) }
}

fn daily(amount: i64) -> Refill {
    Refill { interval: Interval::Daily, amount, refill_day: None }
}

/// A time as the console shows it: `<time datetime="RFC 3339">YYYY-MM-DD HH:MM UTC</time>`.
fn shown_time(ms: i64) -> String {
    let iso = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string();
    format!("<time datetime=\"{iso}\">{} {}\u{a0}UTC</time>", &iso[..10], &iso[11..16])
}

/// The idempotency key of the adjustment form that posts to `action`.
fn form_key(page: &Page, action: &str) -> String {
    let form = between(&page.text, &format!(r#"action="{action}""#), "</form>")
        .unwrap_or_else(|| panic!("no form for {action} in {}", page.text));
    between(&form, r#"name="idempotency_key" value=""#, "\"").expect("the form carries a key")
}

/// Posts `fields` with `csrf` from this site, as a browser does.
async fn post<'a>(b: &Browser<'a>, csrf: &str, action: &str, fields: &[(&str, &str)]) -> Page {
    let mut all = vec![("csrf", csrf)];
    all.extend_from_slice(fields);
    let origin = b.origin();
    b.post_with(action, &all, &[("origin", &origin), ("sec-fetch-site", "same-origin")]).await
}

/// Opens `page` and sends its adjustment form for `action` (with the key it was shown with).
async fn adjust(b: &Browser<'_>, page: &str, action: &str, op: &str, amount: &str) -> Page {
    let p = b.get(page).await;
    p.expect(200);
    let key = form_key(&p, action);
    post(b, &p.csrf(), action, &[("op", op), ("amount", amount), ("idempotency_key", &key)]).await
}

#[tokio::test]
async fn console_operators_set_top_up_and_remove_credits_and_customers_see_them() {
    let app = TestApp::spawn().await;
    let (cust, account, client_id, key) = customer(&app).await;
    let op = operator(&app).await;
    let page = format!("/console/admin/accounts/{account}");
    let account_action = format!("{page}/credits");
    let account_adjust = format!("{account_action}/adjust");
    let credential_action = format!("/console/admin/credentials/{client_id}/credits");
    let credential_page = format!("/console/credentials/{client_id}");

    // No balance yet: not charged, nothing to adjust or remove; the customer sees no credits.
    let p = op.get(&page).await;
    p.expect(200)
        .expect_text("No balance: the account's requests are not charged.")
        .expect_text("No credits of its own.")
        .expect_text(&format!(r#"action="{account_action}""#))
        .expect_text(&format!(r#"action="{credential_action}""#))
        .expect_text(r#"<label for="credits-remaining-account">"#)
        .expect_text(&format!(r#"<label for="credits-refill-{client_id}">"#))
        .expect_no_text("/credits/adjust\"")
        .expect_no_text("/credits/remove\"");
    cust.get("/console/credentials").await.expect(200).expect_no_text("Credits</th>");
    cust.get(&credential_page).await.expect(200).expect_no_text(r#"id="credits""#);

    // The account: 1000 now, set back to 500 on the 1st of each month. The form's line may
    // carry spaces.
    op.submit(&page, &account_action, &[("remaining", "1000"), ("refill", " monthly:500:1 ")])
        .await
        .expect_redirect(&format!("{page}?credits=saved&of=account#credits"));
    let b = balance(&app, account_scope(&account)).await.unwrap();
    assert_eq!((b.remaining, b.refill, b.source), (1000, Some(monthly(500, 1)), CreditSource::Own));
    let next = b.next_refill_at.unwrap();
    assert_eq!(next, monthly(500, 1).next_refill_at(now_ms()));
    // The credential: 50 of its own, not refilled.
    op.submit(&page, &credential_action, &[("remaining", "50"), ("refill", "")])
        .await
        .expect_redirect(&format!("{page}?credits=saved&of={client_id}#credits-{client_id}"));
    let b = balance(&app, credential_scope(&client_id)).await.unwrap();
    assert_eq!((b.remaining, b.refill, b.source), (50, None, CreditSource::Own));

    // The operator's page shows both; the notice sits by the credential's forms, open.
    let p = op.get(&format!("{page}?credits=saved&of={client_id}")).await;
    p.expect(200);
    assert!(!p.text.contains("<script>") && !p.text.contains("style="), "nothing inline for the CSP: {}", p.text);
    let shown = between(&p.text, r#"<div id="account-credits">"#, "</section>").unwrap();
    for part in [
        r#"<strong class="credits-remaining">1,000</strong> credits left <span class="limit-source">· account</span>"#
            .to_owned(),
        "Refill: 500 every month on day 1.".to_owned(),
        format!("Next refill: {}.", shown_time(next)),
        // The form holds the balance as it is.
        r#"value="1000""#.to_owned(),
        r#"value="monthly:500:1""#.to_owned(),
        format!(r#"action="{account_action}/remove""#),
        format!(r#"action="{account_adjust}""#),
    ] {
        assert!(shown.contains(&part), "{part} not in {shown}");
    }
    assert!(!shown.contains("Balance saved."), "the notice is the credential's: {shown}");
    let cred = between(&p.text, &format!(r#"id="credits-{client_id}">"#), "</details>").unwrap();
    for part in [
        r#"<strong class="credits-remaining">50</strong> credits left <span class="limit-source">· credential</span>"#,
        "No automatic refill.",
        "<details open>",
        "Balance saved.",
    ] {
        assert!(cred.contains(part), "{part} not in {cred}");
    }

    // A top-up sent twice with the same form (a refresh, a double click): applied once.
    let form = op.get(&page).await;
    let csrf = form.csrf();
    let first = form_key(&form, &account_adjust);
    assert_ne!(first, form_key(&op.get(&page).await, &account_adjust), "a new key for each form shown");
    let top_up = [("op", "add"), ("amount", "250"), ("idempotency_key", first.as_str())];
    post(&op, &csrf, &account_adjust, &top_up)
        .await
        .expect_redirect(&format!("{page}?credits=adjusted&of=account#credits"));
    let replayed = post(&op, &csrf, &account_adjust, &top_up).await;
    replayed.expect_redirect(&format!("{page}?credits=replayed&of=account#credits"));
    assert_eq!(balance(&app, account_scope(&account)).await.unwrap().remaining, 1250);
    op.get(replayed.location().split('#').next().unwrap())
        .await
        .expect(200)
        .expect_text("This form had already been sent: the adjustment was applied once, not again.")
        .expect_text(r#"<strong class="credits-remaining">1,250</strong>"#);
    // The same form with another change: refused (409), shown again with a new key.
    let p = post(&op, &csrf, &account_adjust, &[("op", "add"), ("amount", "999"), ("idempotency_key", &first)]).await;
    p.expect(409).expect_text("This form was already sent with another change, which was applied");
    let again = between(&p.text, r#"id="credits-adjust-error-account""#, "</form>").unwrap();
    assert!(again.contains(r#"value="999""#), "{again}");
    assert_ne!(form_key(&p, &account_adjust), first);
    assert_eq!(balance(&app, account_scope(&account)).await.unwrap().remaining, 1250);

    // A refund (below what the form shows is fine), then a new balance; the refill stays.
    adjust(&op, &page, &account_adjust, "add", "-300")
        .await
        .expect_redirect(&format!("{page}?credits=adjusted&of=account#credits"));
    assert_eq!(balance(&app, account_scope(&account)).await.unwrap().remaining, 950);
    adjust(&op, &page, &account_adjust, "set", "700").await.expect(303);
    let b = balance(&app, account_scope(&account)).await.unwrap();
    assert_eq!((b.remaining, b.refill), (700, Some(monthly(500, 1))));
    // The credential's own form: +10.
    adjust(&op, &page, &format!("{credential_action}/adjust"), "add", "+10")
        .await
        .expect_redirect(&format!("{page}?credits=adjusted&of={client_id}#credits-{client_id}"));
    assert_eq!(balance(&app, credential_scope(&client_id)).await.unwrap().remaining, 60);

    // A request is charged to both; the customer sees both balances of the key, read-only.
    app.verify_key(&key).await.expect(200, 1000);
    let list = cust.get("/console/credentials").await;
    list.expect(200).expect_text(r#"<th scope="col">Credits</th>"#);
    let row = between(&list.text, &format!("{credential_page}\""), "</tr>").unwrap();
    for part in [
        r#"<strong>59</strong> left <span class="limit-source">· your key</span>"#.to_owned(),
        r#"<strong>699</strong> left <span class="limit-source">· your account</span>"#.to_owned(),
        format!("500 every month on day 1; next {}", shown_time(next)),
    ] {
        assert!(row.contains(&part), "{part} not in {row}");
    }
    let p = cust.get(&credential_page).await;
    p.expect(200);
    let section = between(&p.text, r#"<section class="card" id="credits""#, "</section>").unwrap();
    for part in [
        r#"<strong class="credits-remaining">59</strong> credits left <span class="limit-source">· your key</span>"#
            .to_owned(),
        r#"<strong class="credits-remaining">699</strong> credits left <span class="limit-source">· your account</span>"#
            .to_owned(),
        "No automatic refill.".to_owned(),
        format!("Refill: 500 every month on day 1. Next refill: {}.", shown_time(next)),
        "charged to each of these balances".to_owned(),
    ] {
        assert!(section.contains(&part), "{part} not in {section}");
    }
    for page in [&list, &p] {
        page.expect_no_text("idempotency_key").expect_no_text("/credits\"").expect_no_text("held by servers");
    }

    // Removed: the credential's, then the account's; nothing is charged any more.
    op.submit(&page, &format!("{credential_action}/remove"), &[])
        .await
        .expect_redirect(&format!("{page}?credits=removed&of={client_id}#credits-{client_id}"));
    assert!(balance(&app, credential_scope(&client_id)).await.is_none());
    op.submit(&page, &format!("{account_action}/remove"), &[])
        .await
        .expect_redirect(&format!("{page}?credits=removed&of=account#credits"));
    assert!(balance(&app, account_scope(&account)).await.is_none());
    op.get(&format!("{page}?credits=removed&of=account"))
        .await
        .expect(200)
        .expect_text("Balance removed.")
        .expect_text("No balance: the account's requests are not charged.")
        .expect_no_text("/credits/remove\"");
    cust.get("/console/credentials").await.expect(200).expect_no_text("Credits</th>");
    cust.get(&credential_page).await.expect(200).expect_no_text(r#"id="credits""#);
    // An unknown notice or target says nothing.
    op.get(&format!("{page}?credits=bogus&of=account")).await.expect(200).expect_no_text("alert-ok");
    op.get(&format!("{page}?credits=saved&of=0123456789abcdef01234567")).await.expect(200).expect_no_text("alert-ok");
}

#[tokio::test]
async fn console_bad_credits_forms_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (_cust, account, client_id, _key) = customer(&app).await;
    let op = operator(&app).await;
    let page = format!("/console/admin/accounts/{account}");
    let account_action = format!("{page}/credits");
    let account_adjust = format!("{account_action}/adjust");
    let credential_action = format!("/console/admin/credentials/{client_id}/credits");
    app.state
        .ops
        .set_credits(
            &Audit::system(),
            account_scope(&account),
            Some(&CreditsConfig { remaining: 100, refill: Some(daily(100)) }),
        )
        .await
        .unwrap();
    let before = (balance(&app, account_scope(&account)).await, balance(&app, credential_scope(&client_id)).await);

    // The balance form: each mistake said, the form shown again as typed.
    for (remaining, refill, says) in [
        ("ten", "", "The balance must be a whole number of credits from 0 to 1000000000000000."),
        ("1.5", "daily:5", "The balance must be a whole number"),
        ("", "daily:5", "The balance must be a whole number"),
        ("-5", "", "Credits must be between 0 and 1000000000000000, got -5."),
        ("1000000000000001", "", "got 1000000000000001"),
        ("10", "weekly:5", r#""weekly:5": a refill is daily:AMOUNT or monthly:AMOUNT[:DAY], e.g. monthly:500:1."#),
        ("10", "monthly:5:40", "In the refill, refillDay must be between 1 and 31, got 40."),
        ("10", "daily:5:1", "In the refill, refillDay applies to a monthly refill only."),
        ("10", "daily:-1", "In the refill, credits must be between 0"),
        ("10", "<script>x</script>", r#""<script>x</script>": a refill is"#),
    ] {
        let p = op.submit(&page, &account_action, &[("remaining", remaining), ("refill", refill)]).await;
        p.expect(400).expect_text(&html(says)).expect_no_text("<script>x");
        let form = between(&p.text, r#"id="credits-set-error-account""#, "</form>").unwrap();
        assert!(
            form.contains(&format!(r#"value="{}""#, html(remaining)))
                && form.contains(&format!(r#"value="{}""#, html(refill))),
            "{form}"
        );
    }
    // A long line is not echoed in the message.
    let long = format!("daily:{}", "9".repeat(100));
    let p = op.submit(&page, &account_action, &[("remaining", "1"), ("refill", &long)]).await;
    p.expect(400).expect_text("A refill is daily:AMOUNT");
    assert_eq!(p.text.matches(&long).count(), 1, "only in the form: {}", p.text);

    // The adjustment form.
    for (kind, amount, says) in [
        ("add", "ten", "The credits to add must be a whole number from -1000000000000000 to 1000000000000000"),
        ("add", "1.5", "The credits to add must be a whole number"),
        ("add", "", "The credits to add must be a whole number"),
        ("add", "1000000000000001", "An adjustment must be between -1000000000000000 and 1000000000000000"),
        ("set", "-5", "Credits must be between 0 and 1000000000000000, got -5."),
        ("drop", "5", "Choose whether to add credits or set the balance."),
    ] {
        let p = adjust(&op, &page, &account_adjust, kind, amount).await;
        p.expect(400).expect_text(&html(says));
        let form = between(&p.text, r#"id="credits-adjust-error-account""#, "</form>").unwrap();
        assert!(form.contains(&format!(r#"value="{}""#, html(amount))), "{form}");
        assert_eq!(form.contains(r#"<option value="set" selected>"#), kind == "set", "{form}");
    }
    // Without its key (a form from elsewhere), nothing is applied.
    let csrf = op.get(&page).await.csrf();
    post(&op, &csrf, &account_adjust, &[("op", "add"), ("amount", "5")])
        .await
        .expect(400)
        .expect_text("This form has expired");
    // A credential without a balance has nothing to adjust: 409, by its form, open.
    let p = op.get(&page).await;
    let p = post(
        &op,
        &p.csrf(),
        &format!("{credential_action}/adjust"),
        &[("op", "add"), ("amount", "5"), ("idempotency_key", "console-test-1")],
    )
    .await;
    p.expect(409);
    let block = between(&p.text, &format!(r#"id="credits-{client_id}">"#), "</details>").unwrap();
    assert!(block.contains("<details open>") && block.contains("No balance applies here: set one first."), "{block}");

    // The plan form's refill.
    let p = op.submit(PLANS, PLANS, &[("name", "pro"), ("ratelimits", ""), ("refill", "monthly:0:0")]).await;
    p.expect(400)
        .expect_text("In the refill, refillDay must be between 1 and 31, got 0.")
        .expect_text(r#"value="monthly:0:0""#)
        .expect_text(r#"value="pro""#);
    assert!(app.state.ops.list_plans().await.unwrap().is_empty(), "no plan made");

    // Unknown or revoked targets.
    for path in [
        "/console/admin/accounts/0123456789abcdef01234567/credits",
        "/console/admin/accounts/0123456789abcdef01234567/credits/adjust",
        "/console/admin/accounts/0123456789abcdef01234567/credits/remove",
        "/console/admin/accounts/nope/credits",
        "/console/admin/credentials/0123456789abcdef01234567/credits",
        "/console/admin/credentials/0123456789abcdef01234567/credits/adjust",
        "/console/admin/credentials/nope/credits/remove",
    ] {
        post(&op, &csrf, path, &[("remaining", "5"), ("op", "add"), ("amount", "5"), ("idempotency_key", "k")])
            .await
            .expect(404);
    }
    app.state.ops.revoke_credential(&Audit::system(), client_id.parse().unwrap()).await.unwrap();
    post(&op, &csrf, &credential_action, &[("remaining", "5"), ("refill", "")])
        .await
        .expect(400)
        .expect_text("This credential is revoked");

    let after = (balance(&app, account_scope(&account)).await, balance(&app, credential_scope(&client_id)).await);
    assert_eq!(after, before, "nothing changed");
}

#[tokio::test]
async fn console_plans_carry_a_credits_refill() {
    let app = TestApp::spawn().await;
    let (cust, account, client_id, key) = customer(&app).await;
    let op = operator(&app).await;
    let page = format!("/console/admin/accounts/{account}");

    op.get(PLANS).await.expect(200).expect_text(r#"<label for="plan-refill">"#);
    op.submit(PLANS, PLANS, &[("name", "pro"), ("ratelimits", "requests=100/1m"), ("refill", "daily:100")])
        .await
        .expect_redirect("/console/admin/plans?saved=pro");
    assert_eq!(app.state.ops.get_plan("pro").await.unwrap().0.credits, Some(daily(100)));
    let list = op.get(PLANS).await;
    let row = between(&list.text, r#"<tr id="plan-pro">"#, "</tr>").unwrap();
    assert!(row.contains(r#"<td data-label="Credits" class="plan-credits">100 every day</td>"#), "{row}");
    op.get("/console/admin/plans?edit=pro").await.expect(200).expect_text(r#"value="daily:100""#);

    // An account on it follows the plan's refill: no balance of its own to remove.
    op.submit(&page, &format!("{page}/limits"), &[("plan", "pro"), ("ratelimits", "")]).await.expect_redirect(&page);
    let b = balance(&app, account_scope(&account)).await.unwrap();
    assert_eq!((b.remaining, b.source), (100, CreditSource::Plan));
    let next = daily(100).next_refill_at(now_ms());
    let p = op.get(&page).await;
    let shown = between(&p.text, r#"<div id="account-credits">"#, "</section>").unwrap();
    for part in [
        r#"<strong class="credits-remaining">100</strong> credits left <span class="limit-source">· plan pro</span>"#
            .to_owned(),
        format!("Refill: 100 every day. Next refill: {}.", shown_time(next)),
        "The balance follows the plan's refill".to_owned(),
    ] {
        assert!(shown.contains(&part), "{part} not in {shown}");
    }
    assert!(!shown.contains("/credits/remove\"") && shown.contains("/credits/adjust\""), "{shown}");
    app.verify_key(&key).await.expect(200, 1000);
    cust.get(&format!("/console/credentials/{client_id}"))
        .await
        .expect(200)
        .expect_text(r#"<strong class="credits-remaining">99</strong> credits left <span class="limit-source">· plan pro</span>"#)
        .expect_text(&format!("Refill: 100 every day. Next refill: {}.", shown_time(next)));

    // A form from before the field existed keeps the plan's refill; an empty field removes it.
    op.submit(PLANS, PLANS, &[("name", "pro"), ("ratelimits", "requests=50/1m")])
        .await
        .expect_redirect("/console/admin/plans?saved=pro");
    assert_eq!(app.state.ops.get_plan("pro").await.unwrap().0.credits, Some(daily(100)));
    op.submit(PLANS, PLANS, &[("name", "pro"), ("ratelimits", "requests=50/1m"), ("refill", " ")])
        .await
        .expect_redirect("/console/admin/plans?saved=pro");
    assert_eq!(app.state.ops.get_plan("pro").await.unwrap().0.credits, None);
    assert!(balance(&app, account_scope(&account)).await.is_none(), "the plan's accounts are not charged");
    let list = op.get(PLANS).await;
    let row = between(&list.text, r#"<tr id="plan-pro">"#, "</tr>").unwrap();
    assert!(row.contains(r#"class="plan-credits"><span class="muted">none</span></td>"#), "{row}");
}

#[tokio::test]
async fn console_customers_cannot_reach_the_credits_forms() {
    let app = TestApp::spawn().await;
    let (cust, account, client_id, _key) = customer(&app).await;
    let op = operator(&app).await;
    let config = CreditsConfig { remaining: 100, refill: None };
    app.state.ops.set_credits(&Audit::system(), account_scope(&account), Some(&config)).await.unwrap();
    let before = (balance(&app, account_scope(&account)).await, balance(&app, credential_scope(&client_id)).await);

    let csrf = cust.get("/console/credentials").await.expect(200).csrf();
    cust.get(&format!("/console/admin/accounts/{account}")).await.expect(403).expect_text("Operators only");
    let origin = cust.origin();
    let same_site = [("origin", origin.as_str())];
    let fields = [
        ("remaining", "1000000"),
        ("refill", "daily:1000000"),
        ("op", "add"),
        ("amount", "1000000"),
        ("idempotency_key", "k1"),
    ];
    let paths = [
        format!("/console/admin/accounts/{account}/credits"),
        format!("/console/admin/accounts/{account}/credits/adjust"),
        format!("/console/admin/accounts/{account}/credits/remove"),
        format!("/console/admin/credentials/{client_id}/credits"),
        format!("/console/admin/credentials/{client_id}/credits/adjust"),
        format!("/console/admin/credentials/{client_id}/credits/remove"),
    ];
    let op_csrf = op.get(&format!("/console/admin/accounts/{account}")).await.csrf();
    for path in &paths {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend(fields);
        cust.post_with(path, &all, &same_site).await.expect(403).expect_text("Operators only");
        // Not logged in: to the login page.
        Browser::new(&app).post_with(path, &all, &same_site).await.expect_redirect("/console/login");
        // An operator's form needs its token, from this site.
        let mut forged = vec![("csrf", "forged")];
        forged.extend(fields);
        op.post_with(path, &forged, &[("origin", &op.origin())]).await.expect(403).expect_text("Request refused");
        let mut theirs = vec![("csrf", op_csrf.as_str())];
        theirs.extend(fields);
        op.post_with(path, &theirs, &[("origin", "http://evil.example")]).await.expect(403);
        op.post_with(path, &theirs, &[("sec-fetch-site", "cross-site")]).await.expect(403);
    }
    let after = (balance(&app, account_scope(&account)).await, balance(&app, credential_scope(&client_id)).await);
    assert_eq!(after, before, "nothing changed");
}

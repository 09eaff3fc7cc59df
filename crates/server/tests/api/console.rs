//! The web console (`/console`) over HTTP, as a browser without JavaScript would use it: cookies,
//! forms with their CSRF tokens, redirects not followed (so every answer is checked). The
//! security points: cookie flags, CSRF, login throttling, one Argon2 verification per attempt,
//! session expiry and logout, bans, sign-up switched off, ownership, the operator area, headers,
//! and a secret shown only in the answer that created it.

use std::time::Duration;

use keygate_console::SecureCookies;
use keygate_core::audit::Audit;
use keygate_server::Config;
use keygate_store::Role;

use crate::browser::account_id;
use crate::browser::{Browser, PASSWORD, between};
use crate::helpers::{TestApp, unique_email, wait_until};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An operator account with a console password, made as the CLI makes it.
async fn operator(app: &TestApp) -> String {
    let email = unique_email();
    let s = &app.state;
    s.ops
        .create_login_account(&Audit::system(), &email, "Op", Some(PASSWORD), Role::Operator, &s.console.passwords)
        .await
        .unwrap();
    email
}

#[tokio::test]
async fn console_pages_carry_security_headers() {
    let app = TestApp::spawn().await;
    let b = Browser::new(&app);
    b.get("/console").await.expect_redirect("/console/login");
    let slash = b.get("/console/").await;
    assert_eq!((slash.status, slash.location()), (308, "/console"));
    let email = unique_email();
    b.signup(&email).await;
    for path in ["/console/login", "/console/signup", "/console/credentials", "/console/nope"] {
        let p = Browser::new(&app).get(path).await;
        let p = if path == "/console/credentials" { b.get(path).await } else { p };
        assert_eq!(p.header("content-security-policy"), Some(CSP), "{path}");
        assert_eq!(p.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(p.header("referrer-policy"), Some("same-origin"), "{path}");
        assert_eq!(p.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(p.header("cache-control"), Some("no-store"), "{path}");
        if path != "/console/nope" {
            assert_eq!(p.header("content-type"), Some("text/html; charset=utf-8"), "{path}");
            // No inline script or style anywhere: the CSP would block it.
            assert!(!p.text.contains("<script>") && !p.text.contains("style="), "{path}");
        }
    }
    assert_eq!(b.get("/console/nope").await.status, 404);
    // A wrong method under /console is the console's too (an HTML page, not the API envelope).
    let p = b.get("/console/logout").await;
    assert_eq!((p.status, p.header("content-type")), (404, Some("text/html; charset=utf-8")));
    let js = b.get("/console/static/app.js").await.expect(200).text.clone();
    assert!(js.contains("data-copy"));
    let css = b.get("/console/static/app.css").await;
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("content-security-policy"), Some(CSP));
}

#[tokio::test]
async fn the_console_has_a_favicon() {
    let app = TestApp::spawn().await;
    let b = Browser::new(&app);
    let icon = b.get("/console/static/favicon.svg").await;
    icon.expect(200);
    assert_eq!(icon.header("content-type"), Some("image/svg+xml"));
    assert!(icon.text.starts_with("<svg") && icon.text.trim_end().ends_with("</svg>"), "{}", icon.text);
    assert_eq!(icon.header("content-security-policy"), Some(CSP));
    // Where a browser looks by itself, and where every page says it is.
    let ico = b.get("/console/favicon.ico").await;
    assert_eq!((ico.status, ico.location()), (308, "/console/static/favicon.svg"));
    for path in ["/console/login", "/console/signup"] {
        let page = b.get(path).await;
        page.expect(200);
        assert!(
            page.text.contains(r#"<link rel="icon" href="/console/static/favicon.svg" type="image/svg+xml">"#),
            "{path}: {}",
            page.text
        );
    }
}

#[tokio::test]
async fn cookie_flags() {
    let app = TestApp::spawn().await;
    // Over plain HTTP: HttpOnly, SameSite=Lax, Path=/console, not Secure.
    let b = Browser::new(&app);
    let login = b.get("/console/login").await;
    let csrf_cookie = login.set_cookie("kg_csrf").expect("a pre-session cookie");
    assert!(csrf_cookie.contains("; Path=/console") && csrf_cookie.contains("; HttpOnly"), "{csrf_cookie}");
    assert!(csrf_cookie.contains("; SameSite=Lax") && !csrf_cookie.contains("Secure"), "{csrf_cookie}");
    let session = b.signup(&unique_email()).await.set_cookie("kg_session").expect("a session cookie");
    for flag in ["; Path=/console", "; HttpOnly", "; SameSite=Lax", "; Max-Age=43200"] {
        assert!(session.contains(flag), "{flag} missing in {session}");
    }
    assert!(!session.contains("Secure"), "{session}");
    let token = b.cookie("kg_session").unwrap();
    assert!(token.len() >= 43, "a 256-bit token: {token}");

    // Behind a TLS-terminating proxy ("auto"): Secure.
    let b = Browser::with_headers(&app, &[("x-forwarded-proto", "https")]);
    assert!(b.get("/console/login").await.set_cookie("kg_csrf").unwrap().ends_with("; Secure"));
    let session = b.signup(&unique_email()).await.set_cookie("kg_session").unwrap();
    assert!(session.ends_with("; Secure"), "{session}");

    // Forced on and off.
    let on = TestApp::spawn_with(|l| l.console_secure_cookies = SecureCookies::Always).await;
    assert!(Browser::new(&on).get("/console/login").await.set_cookie("kg_csrf").unwrap().ends_with("; Secure"));
    let off = TestApp::spawn_with(|l| l.console_secure_cookies = SecureCookies::Never).await;
    let b = Browser::with_headers(&off, &[("x-forwarded-proto", "https")]);
    assert!(!b.signup(&unique_email()).await.set_cookie("kg_session").unwrap().contains("Secure"));
}

#[tokio::test]
async fn csrf_is_required_on_every_form() {
    let app = TestApp::spawn().await;
    let b = Browser::new(&app);
    b.signup(&unique_email()).await;
    let other = Browser::new(&app);
    other.signup(&unique_email()).await;
    let token = b.get("/console/credentials").await.csrf();
    let foreign = other.get("/console/credentials").await.csrf();
    assert_ne!(token, foreign, "tokens are per session");
    let origin = format!("http://{}", app.addr);

    // Missing, wrong, another session's: 403.
    b.post("/console/credentials", &[]).await.expect(403);
    b.post("/console/credentials", &[("csrf", "forged")]).await.expect(403);
    b.post("/console/credentials", &[("csrf", &foreign)]).await.expect(403);
    // The right token, but the browser says the form came from another site: 403.
    b.post_with("/console/credentials", &[("csrf", &token)], &[("origin", "http://evil.example")]).await.expect(403);
    b.post_with("/console/credentials", &[("csrf", &token)], &[("origin", "null")]).await.expect(403);
    b.post_with("/console/credentials", &[("csrf", &token)], &[("sec-fetch-site", "cross-site")]).await.expect(403);
    let refused = b.post("/console/logout", &[]).await;
    refused.expect(403);
    assert!(refused.text.contains("1009"), "{}", refused.text);
    // Nothing was created by the refused forms; the right one, from this site, works.
    assert!(b.get("/console/credentials").await.text.contains("No credentials yet"));
    let key = b.get("/console/credentials").await.form_key("/console/credentials").expect("a form key");
    b.post_with("/console/credentials", &[("csrf", &token), ("form_key", &key)], &[("origin", &origin)])
        .await
        .expect(200);
    b.get("/console/credentials").await.expect(200);
    assert!(b.get("/console/credentials").await.text.contains("<table class=\"list\" id=\"credentials\">"));

    // Login and sign-up: the pre-session cookie and its token.
    let fresh = Browser::new(&app);
    let fields = [("email", "x@example.com"), ("password", PASSWORD)];
    fresh.post("/console/login", &fields).await.expect(403); // no cookie at all
    let login_token = fresh.get("/console/login").await.csrf();
    fresh.post("/console/login", &fields).await.expect(403); // cookie, no token
    let mut with_token = vec![("csrf", login_token.as_str())];
    with_token.extend_from_slice(&fields);
    fresh.post_with("/console/login", &with_token, &[("origin", "https://evil.example")]).await.expect(403);
    fresh.set("kg_csrf", &"A".repeat(43)); // the cookie the token was not made for
    fresh.post("/console/login", &with_token).await.expect(403);
    let signup = [("email", "y@example.com"), ("password", PASSWORD), ("password_confirm", PASSWORD)];
    fresh.post("/console/signup", &signup).await.expect(403);
    assert!(app.state.ops.store().console_account_by_email("y@example.com").await.unwrap().is_none());
}

#[tokio::test]
async fn login_is_throttled_per_account() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    Browser::new(&app).signup(&email).await;
    let b = Browser::new(&app);
    for _ in 0..5 {
        let p = b.login(&email, "wrong password!").await;
        p.expect(401);
        assert!(p.text.contains("Wrong email or password."), "{}", p.text);
    }
    let checks = app.state.console.passwords.verifications();
    // The 6th attempt is refused before any password check, even with the right password.
    let p = b.login(&email, PASSWORD).await;
    p.expect(429);
    assert!(p.text.contains("1005") && p.text.contains("Too many failed sign-in attempts"), "{}", p.text);
    assert!(p.header("retry-after").is_some_and(|s| s.parse::<u64>().unwrap() > 0));
    assert_eq!(app.state.console.passwords.verifications(), checks, "no Argon2 work for a throttled attempt");
    assert!(b.cookie("kg_session").is_none());
    // The email's case does not reset the count; another account is not affected.
    b.login(&email.to_uppercase(), PASSWORD).await.expect(429);
    let other = unique_email();
    Browser::new(&app).signup(&other).await;
    b.login(&other, PASSWORD).await.expect_redirect("/console/credentials");
}

#[tokio::test]
async fn login_is_throttled_per_ip() {
    // keygate behind a proxy on this machine, configured as trusted.
    let app = TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let email = unique_email();
    Browser::new(&app).signup(&email).await;
    // Clients behind a local proxy are told apart by the address it appends to X-Forwarded-For.
    let attacker = Browser::with_headers(&app, &[("x-forwarded-for", "198.51.100.1, 203.0.113.7")]);
    for i in 0..20 {
        attacker.login(&format!("guess{i}@example.com"), "wrong password!").await.expect(401);
    }
    let p = attacker.login(&email, PASSWORD).await;
    p.expect(429);
    assert!(p.text.contains("1005"));
    // A forged earlier entry does not help: the proxy's own (last) entry counts.
    let forging = Browser::with_headers(&app, &[("x-forwarded-for", "192.0.2.99, 203.0.113.7")]);
    forging.login(&email, PASSWORD).await.expect(429);
    // The account itself is not locked for everyone else.
    let elsewhere = Browser::with_headers(&app, &[("x-forwarded-for", "203.0.113.8")]);
    elsewhere.login(&email, PASSWORD).await.expect_redirect("/console/credentials");
}

/// Hardening finding 3: without trusted proxies, X-Forwarded-For is the client's own writing and
/// changes nothing: 26 failed logins, each with another X-Forwarded-For, are throttled as one
/// client's.
#[tokio::test]
async fn a_clients_own_forwarded_for_does_not_escape_the_throttle() {
    let app = TestApp::spawn().await;
    let mut throttled = 0;
    for i in 0..26 {
        let b = Browser::with_headers(&app, &[("x-forwarded-for", &format!("198.51.100.{i}"))]);
        let p = b.login(&format!("guess{i}@example.com"), "wrong password!").await;
        if p.status == 429 {
            throttled += 1;
        }
    }
    assert!(throttled >= 6, "only {throttled} of 26 attempts were throttled: the header let them pose as others");
}

#[tokio::test]
async fn every_login_attempt_costs_one_argon2_verification() {
    let app = TestApp::spawn().await;
    let passwords = &app.state.console.passwords;
    let email = unique_email();
    Browser::new(&app).signup(&email).await;
    let no_password = app.create_account().await["email"].as_str().unwrap().to_owned();
    let b = Browser::new(&app);
    let mut answers = Vec::new();
    for (who, password) in
        [("unknown@example.com", PASSWORD), (email.as_str(), "wrong password!"), (no_password.as_str(), PASSWORD)]
    {
        let before = passwords.verifications();
        let p = b.login(who, password).await;
        assert_eq!(passwords.verifications(), before + 1, "{who:?}: exactly one verification");
        p.expect(401);
        answers.push(p.text.replace(who, "EMAIL"));
    }
    // Even an empty email (a hand-made form) costs the same.
    let before = passwords.verifications();
    b.login("", PASSWORD).await.expect(401);
    assert_eq!(passwords.verifications(), before + 1);
    // The same page whatever was wrong.
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:#?}");
    let before = passwords.verifications();
    b.login(&email, PASSWORD).await.expect_redirect("/console/credentials");
    assert_eq!(passwords.verifications(), before + 1);
}

#[tokio::test]
async fn sessions_expire_and_logout_ends_them() {
    let app = TestApp::spawn_with(|l: &mut Config| l.console_session_ttl = Duration::from_secs(2)).await;
    let email = unique_email();
    let b = Browser::new(&app);
    let p = b.signup(&email).await;
    assert!(p.set_cookie("kg_session").unwrap().contains("Max-Age=2"));
    b.get("/console/credentials").await.expect(200);

    // Logout: the cookie is cleared and the session is gone server-side (a copy is worthless).
    let stolen = b.cookie("kg_session").unwrap();
    let csrf = b.get("/console/credentials").await.csrf();
    let out = b.post("/console/logout", &[("csrf", &csrf)]).await;
    out.expect_redirect("/console/login");
    assert!(out.set_cookie("kg_session").unwrap().contains("Max-Age=0"));
    b.get("/console/credentials").await.expect_redirect("/console/login");
    let replay = Browser::new(&app);
    replay.set("kg_session", &stolen);
    let p = replay.get("/console/credentials").await;
    p.expect_redirect("/console/login");
    assert!(p.set_cookie("kg_session").unwrap().contains("Max-Age=0"), "a stale cookie is dropped");

    // Expiry: absolute, 2 s here.
    b.login(&email, PASSWORD).await.expect_redirect("/console/credentials");
    b.get("/console/credentials").await.expect(200);
    let started = std::time::Instant::now();
    while b.get("/console/credentials").await.status == 200 {
        assert!(started.elapsed() < Duration::from_secs(5), "the session outlived its 2 s lifetime");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.get("/console/credentials").await.expect_redirect("/console/login");
}

#[tokio::test]
async fn a_banned_account_cannot_log_in_and_its_sessions_end() {
    let app = TestApp::spawn().await;
    let email = unique_email();
    let b = Browser::new(&app);
    b.signup(&email).await;
    let (client_id, key, _) = b.generate().await;
    app.verify_key(&key).await.expect(200, 1000);
    let id = account_id(&app, &email).await;

    app.ban(&id, "fraud").await;
    app.verify_key(&key).await.expect_banned();
    // The open session ended with the ban.
    b.get("/console/credentials").await.expect_redirect("/console/login");
    b.get(&format!("/console/credentials/{client_id}")).await.expect_redirect("/console/login");
    // And the right password does not let the account back in.
    let p = Browser::new(&app).login(&email, PASSWORD).await;
    p.expect(403);
    assert!(p.text.contains("suspended") && p.text.contains("1200"), "{}", p.text);

    app.unban(&id).await;
    b.login(&email, PASSWORD).await.expect_redirect("/console/credentials");
    app.verify_key(&key).await.expect(200, 1000);
}

#[tokio::test]
async fn signup_can_be_switched_off() {
    let app = TestApp::spawn_with(|l| l.console_signup = false).await;
    let b = Browser::new(&app);
    let login = b.get("/console/login").await;
    login.expect(200);
    assert!(!login.text.contains("/console/signup"), "no sign-up link");
    let p = b.get("/console/signup").await;
    p.expect(403);
    assert!(p.text.contains("Sign-up is closed"));
    // A hand-made POST, with a valid pre-session token, is refused too.
    let token = login.csrf();
    let email = unique_email();
    let fields = [("csrf", token.as_str()), ("email", &email), ("password", PASSWORD), ("password_confirm", PASSWORD)];
    b.post("/console/signup", &fields).await.expect(403);
    assert!(app.state.ops.store().console_account_by_email(&email).await.unwrap().is_none());
    // Accounts made by operators (CLI) still log in.
    let op = operator(&app).await;
    b.login(&op, PASSWORD).await.expect_redirect("/console/credentials");
}

#[tokio::test]
async fn customers_only_reach_their_own_credentials() {
    let app = TestApp::spawn().await;
    let alice = Browser::new(&app);
    alice.signup(&unique_email()).await;
    let (client_id, key, _) = alice.generate().await;
    let mallory = Browser::new(&app);
    mallory.signup(&unique_email()).await;
    let csrf = mallory.get("/console/credentials").await.csrf();

    for path in [format!("/console/credentials/{client_id}"), format!("/console/credentials/{client_id}/revoke")] {
        mallory.get(&path).await.expect(404);
    }
    mallory.post(&format!("/console/credentials/{client_id}/revoke"), &[("csrf", &csrf)]).await.expect(404);
    mallory.post(&format!("/console/credentials/{client_id}/rotate"), &[("csrf", &csrf)]).await.expect(404);
    assert!(!mallory.get("/console/credentials").await.text.contains(&client_id));
    // Malformed and unknown ids look the same.
    mallory.get("/console/credentials/not-an-id").await.expect(404);
    mallory.get("/console/credentials/0123456789abcdef01234567").await.expect(404);
    app.verify_key(&key).await.expect(200, 1000);
    alice.get(&format!("/console/credentials/{client_id}")).await.expect(200);
}

#[tokio::test]
async fn the_operator_area_is_for_operators() {
    let app = TestApp::spawn().await;
    let customer_email = unique_email();
    let customer = Browser::new(&app);
    customer.signup(&customer_email).await;
    let (client_id, key, _) = customer.generate().await;
    let (other_id, other_key, _) = customer.generate().await;
    let customer_id = account_id(&app, &customer_email).await;
    let csrf = customer.get("/console/credentials").await.csrf();

    // Customers: refused everywhere in the operator area, and no link to it.
    assert!(!customer.get("/console/credentials").await.text.contains("/console/admin"));
    for path in [
        "/console/admin/accounts".to_owned(),
        format!("/console/admin/accounts/{customer_id}"),
        format!("/console/admin/credentials/{client_id}/revoke"),
    ] {
        customer.get(&path).await.expect(403);
    }
    let fields = [("csrf", csrf.as_str()), ("reason", "self-service")];
    customer.post(&format!("/console/admin/accounts/{customer_id}/ban"), &fields).await.expect(403);
    customer.post(&format!("/console/admin/credentials/{client_id}/revoke"), &fields).await.expect(403);
    app.verify_key(&key).await.expect(200, 1000);

    // Operators: search, see the account, ban with a reason, unban, revoke any credential.
    let op_email = operator(&app).await;
    let op = Browser::new(&app);
    op.login(&op_email, PASSWORD).await.expect_redirect("/console/credentials");
    assert!(op.get("/console/credentials").await.text.contains("/console/admin/accounts"));
    let list = op.get(&format!("/console/admin/accounts?q={}", &customer_email[..8])).await;
    list.expect(200);
    let op_id = account_id(&app, &op_email).await;
    assert!(list.text.contains(&format!(">{customer_email}</a>")), "{}", list.text);
    assert!(!list.text.contains(&op_id), "the search narrows the list: {}", list.text);
    let all = op.get("/console/admin/accounts").await;
    assert!(all.text.contains(&op_id) && all.text.contains(&customer_id));
    let page = format!("/console/admin/accounts/{customer_id}");
    let detail = op.get(&page).await;
    assert!(detail.text.contains(&client_id) && detail.text.contains(&other_id));
    assert!(!detail.text.contains(&key));

    let banned = op.submit(&page, &format!("{page}/ban"), &[("reason", "card fraud <b>#42</b>")]).await;
    banned.expect_redirect(&page);
    app.verify_key(&key).await.expect_banned();
    let detail = op.get(&page).await;
    assert!(detail.text.contains("card fraud &#60;b&#62;#42&#60;/b&#62;"), "escaped reason in {}", detail.text);
    assert!(detail.text.contains(&format!("by console:{op_email}")), "{}", detail.text);
    let history = app.state.ops.store().account_events(customer_id.parse().unwrap()).await.unwrap();
    assert_eq!(history.last().unwrap().reason.as_deref(), Some("card fraud <b>#42</b>"));
    // A ban needs a reason; an operator cannot ban themselves.
    op.submit(&page, &format!("{page}/unban"), &[]).await.expect_redirect(&page);
    app.verify_key(&key).await.expect(200, 1000);
    op.submit(&page, &format!("{page}/ban"), &[("reason", " ")]).await.expect(400);
    let own = format!("/console/admin/accounts/{op_id}");
    let csrf = op.get(&own).await.csrf();
    op.post(&format!("{own}/ban"), &[("csrf", &csrf), ("reason", "oops")]).await.expect(400);

    let confirm = format!("/console/admin/credentials/{other_id}/revoke");
    let c = op.get(&confirm).await;
    c.expect(200);
    assert!(c.text.contains(&customer_email), "the confirmation names the owner");
    op.submit(&confirm, &confirm, &[]).await.expect_redirect(&page);
    app.verify_key(&other_key).await.expect_invalid();
    app.verify_key(&key).await.expect(200, 1000);
}

#[tokio::test]
async fn a_secret_is_shown_only_in_the_answer_that_made_it() {
    let app = TestApp::spawn().await;
    let b = Browser::new(&app);
    b.signup(&unique_email()).await;
    let (client_id, key, created) = b.generate().await;
    assert!(key.starts_with("kgk_") && key.len() == 32, "{key}");
    assert_eq!(created.header("cache-control"), Some("no-store"));
    assert!(created.text.contains("You will not see it again"));
    app.verify_key(&key).await.expect(200, 1000);
    let token = app.get_token(&client_id, &key).await;
    token.expect(200, 1000);
    let hint = format!("kgk_...{}", &key[key.len() - 4..]);

    let detail = format!("/console/credentials/{client_id}");
    let pages = ["/console/credentials", detail.as_str(), &format!("{detail}/revoke")];
    for path in pages {
        let p = b.get(path).await;
        p.expect(200);
        assert!(!p.text.contains(&key), "{path} shows the API key");
        assert!(p.text.contains(&hint) || path.ends_with("revoke"), "{path} shows the hint");
    }

    // Rotation with grace: the new key in the answer only; the old one keeps working meanwhile.
    let rotated = b.submit(&detail, &format!("{detail}/rotate"), &[("grace", "1h")]).await;
    rotated.expect(200);
    let new_key = between(&rotated.text, r#"<code id="api-key" class="key" aria-labelledby="api-key-label">"#, "<")
        .expect("the new key");
    assert_ne!(new_key, key);
    assert!(!rotated.text.contains(&key), "the old key is not shown again");
    assert!(rotated.text.contains("keeps working until"));
    app.verify_key(&key).await.expect(200, 1000);
    app.verify_key(&new_key).await.expect(200, 1000);
    for path in pages {
        let p = b.get(path).await;
        assert!(!p.text.contains(&key) && !p.text.contains(&new_key), "{path} shows a key");
    }
    assert!(b.get("/console/credentials").await.text.contains("old key until"));
    // Without grace the previous key stops at once.
    let again = b.submit(&detail, &format!("{detail}/rotate"), &[("grace", "0")]).await;
    again.expect(200);
    app.verify_key(&new_key).await.expect_invalid();
}

#[tokio::test]
async fn revoking_in_the_console_refuses_the_key_and_its_tokens() {
    let app = TestApp::spawn().await;
    let b = Browser::new(&app);
    b.signup(&unique_email()).await;
    let (client_id, key, _) = b.generate().await;
    let r = app.get_token(&client_id, &key).await;
    r.expect(200, 1000);
    let token = r.body["token"].as_str().unwrap().to_owned();
    app.verify_bearer(&token).await.expect(200, 1000);

    let confirm = format!("/console/credentials/{client_id}/revoke");
    let page = b.get(&confirm).await;
    page.expect(200);
    assert!(page.text.contains("Revoke this credential?") && page.text.contains("Yes, revoke it"));
    // Nothing happens until the confirmation is posted.
    app.verify_key(&key).await.expect(200, 1000);
    let done = b.submit(&confirm, &confirm, &[]).await;
    done.expect_redirect(&format!("/console/credentials?revoked={client_id}"));
    app.verify_key(&key).await.expect_invalid();
    app.verify_bearer(&token).await.expect_invalid();
    let list = b.get(done.location()).await;
    assert!(list.text.contains("was revoked") && list.text.contains("status-revoked"), "{}", list.text);
    // A revoked credential has no revoke or rotate action left.
    b.get(&confirm).await.expect_redirect(&format!("/console/credentials/{client_id}"));
    assert!(!b.get(&format!("/console/credentials/{client_id}")).await.text.contains("Rotate key"));
}

#[tokio::test]
async fn the_usage_chart_counts_requests_per_day() {
    let app = TestApp::spawn_with(|l| l.usage_flush = Duration::from_millis(50)).await;
    let b = Browser::new(&app);
    b.signup(&unique_email()).await;
    let (client_id, key, _) = b.generate().await;
    let detail = format!("/console/credentials/{client_id}");
    let fresh = b.get(&detail).await;
    assert!(fresh.text.contains(r#"<dd id="last-used">never</dd>"#), "{}", fresh.text);
    assert_eq!(fresh.text.matches(r#"<rect class="bar""#).count(), 30);
    for _ in 0..3 {
        app.verify_key(&key).await.expect(200, 1000);
    }
    wait_until(Duration::from_secs(5), "usage shows on the credential page", || async {
        b.get(&detail).await.text.contains(r#"<strong id="usage-total">3</strong>"#)
    })
    .await;
    let page = b.get(&detail).await;
    assert!(!page.text.contains(r#"<dd id="last-used">never</dd>"#));
    assert_eq!(page.text.matches(r#"data-requests="3""#).count(), 1, "today's bar");
    assert!(page.text.contains(": 3 requests</title>"));
    assert!(b.get("/console/credentials").await.text.contains("\u{a0}UTC</td>"), "last used in the list");
}

/// Hardening finding 4: five wrong passwords from one place stop guesses from there, not the
/// account's owner signing in from elsewhere (OWASP: throttle by account and address, no
/// lockout anyone can cause).
#[tokio::test]
async fn a_guesser_cannot_lock_the_owner_out() {
    let app = TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let email = unique_email();
    Browser::new(&app).signup(&email).await;
    let guesser = Browser::with_headers(&app, &[("x-forwarded-for", "198.51.100.1")]);
    for _ in 0..5 {
        guesser.login(&email, "wrong password!").await.expect(401);
    }
    guesser.login(&email, PASSWORD).await.expect(429);
    let owner = Browser::with_headers(&app, &[("x-forwarded-for", "203.0.113.50")]);
    owner.login(&email, PASSWORD).await.expect_redirect("/console/credentials");
}

/// Hardening finding 5: sign-ups are throttled per address (100 accounts in 4 s before).
#[tokio::test]
async fn sign_ups_are_throttled_per_address() {
    let app = TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let from = [("x-forwarded-for", "198.51.100.2")];
    for _ in 0..10 {
        Browser::with_headers(&app, &from).signup(&unique_email()).await;
    }
    let flood = Browser::with_headers(&app, &from);
    let fields = [
        ("email", unique_email()),
        ("first_name", "F".to_owned()),
        ("password", PASSWORD.to_owned()),
        ("password_confirm", PASSWORD.to_owned()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = flood.submit("/console/signup", "/console/signup", &fields).await;
    p.expect(429);
    assert!(p.header("retry-after").is_some());
    // Another address is not affected.
    Browser::with_headers(&app, &[("x-forwarded-for", "203.0.113.51")]).signup(&unique_email()).await;
}

//! Sign-up confirmed by email (`[email]`), against a real SMTP conversation: keygate's lettre
//! client sending to the test's SMTP sink. Hardening finding 5: with email, the sign-up page no
//! longer tells whether an email is registered.

use std::time::Duration;

use keygate_core::Secret;
use keygate_server::config::Config;
use keygate_testkit::{Mail, SmtpSink};

use crate::browser::{Browser, PASSWORD, Page, between, html};
use crate::helpers::{TestApp, unique_email};

/// Where the mailed links point: deliberately not the test server's own address, so a link
/// taken from the request's `Host` would show.
const CONSOLE_URL: &str = "https://console.example.test/console";
const MAIL_WAIT: Duration = Duration::from_secs(15);

fn with_email(c: &mut Config, smtp_url: &str) {
    c.email.smtp_url = Some(Secret::new(smtp_url));
    c.email.from = Some("Example API <no-reply@example.test>".into());
    c.email.console_url = Some(CONSOLE_URL.into());
    // Several sign-ups in one test stand for several visitors.
    c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
}

async fn sign_up(b: &Browser<'_>, email: &str, password: &str) -> Page {
    let fields = [("email", email), ("first_name", "Ada"), ("password", password), ("password_confirm", password)];
    b.submit("/console/signup", "/console/signup", &fields).await
}

/// The token of the link in a sign-up mail.
fn token_of(mail: &Mail) -> String {
    let text = mail.text();
    let link = format!("{CONSOLE_URL}/signup/confirm?token=");
    between(&text, &link, "\n").unwrap_or_else(|| panic!("no link to {link} in:\n{text}")).trim().to_owned()
}

/// Presses the confirmation page's button with a CSRF token the browser was given.
async fn press(b: &Browser<'_>, csrf: &str, token: &str) -> Page {
    let origin = b.origin();
    b.post_with(
        "/console/signup/confirm",
        &[("csrf", csrf), ("token", token)],
        &[("origin", &origin), ("sec-fetch-site", "same-origin")],
    )
    .await
}

/// The page, with what depends on the visitor (the email, a CSRF token) taken out.
fn shape(p: &Page, email: &str) -> String {
    let text = p.text.replace(&html(email), "EMAIL");
    match between(&text, r#"name="csrf" value=""#, "\"") {
        Some(csrf) if !csrf.is_empty() => text.replace(&csrf, "CSRF"),
        _ => text,
    }
}

#[tokio::test]
async fn with_email_an_account_is_made_only_by_its_link_and_a_taken_email_is_not_told() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(|c| with_email(c, &sink.url())).await;
    let email = unique_email();
    let visitor = Browser::with_headers(&app, &[("x-forwarded-for", "198.51.100.10")]);
    let new = sign_up(&visitor, &email, PASSWORD).await;
    new.expect(200).expect_text("Check your email").expect_text(&html(&email));
    assert!(new.set_cookie("kg_session").is_none(), "no session before the link");
    // No account yet: its password does not sign in.
    Browser::new(&app).login(&email, PASSWORD).await.expect(401);

    let mails = sink.wait_for(&email, 1, MAIL_WAIT).await;
    assert_eq!(mails[0].from, "no-reply@example.test");
    assert_eq!(mails[0].header("subject").as_deref(), Some("Confirm your new account"));
    let token = token_of(&mails[0]);
    assert!(token.len() >= 43, "a 256-bit token: {token}");
    // Opening the link (as a mail scanner would) shows a button and makes nothing.
    let confirm_path = format!("/console/signup/confirm?token={token}");
    let owner = Browser::new(&app);
    owner.get(&confirm_path).await.expect(200).expect_text(&html(&email)).expect_text("Create account");
    Browser::new(&app).login(&email, PASSWORD).await.expect(401);
    // The button makes the account and signs its owner in.
    let made = owner.submit(&confirm_path, "/console/signup/confirm", &[("token", &token)]).await;
    made.expect_redirect("/console/credentials");
    assert!(made.set_cookie("kg_session").is_some());
    owner.get("/console/credentials").await.expect(200).expect_text(&html(&email));
    Browser::new(&app).login(&email, PASSWORD).await.expect_redirect("/console/credentials");
    // The link works once.
    owner.get(&confirm_path).await.expect(400).expect_text("This link is not valid");
    let again = Browser::new(&app);
    let csrf = again.get("/console/login").await.csrf();
    press(&again, &csrf, &token).await.expect(400).expect_text("This link is not valid");

    // The same email again, from someone else: the same answer as for a new email; its owner gets
    // a mail saying so, without a link that makes anything.
    let taken =
        sign_up(&Browser::with_headers(&app, &[("x-forwarded-for", "203.0.113.9")]), &email, "another long password")
            .await;
    taken.expect(200);
    assert_eq!(shape(&taken, &email), shape(&new, &email), "a taken email is answered as a new one");
    let mails = sink.wait_for(&email, 2, MAIL_WAIT).await;
    assert_eq!(mails[1].header("subject").as_deref(), Some("You already have an account"));
    let text = mails[1].text();
    assert!(!text.contains("token="), "{text}");
    assert!(text.contains(&format!("{CONSOLE_URL}/login")), "{text}");
    // And the account keeps its password.
    Browser::new(&app).login(&email, "another long password").await.expect(401);

    // Wrong or malformed tokens: the same "not valid" page.
    for bad in ["", "short", &"A".repeat(43), "../../etc", &format!("{token}x")] {
        owner.get(&format!("/console/signup/confirm?token={bad}")).await.expect(400);
    }
    owner.get("/console/signup/confirm").await.expect(400);
}

#[tokio::test]
async fn with_email_the_form_is_still_checked_and_mails_nothing_when_wrong() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(|c| with_email(c, &sink.url())).await;
    let b = Browser::new(&app);
    let email = unique_email();
    sign_up(&b, &email, "short").await.expect(400).expect_text("at least");
    let fields = [("email", email.as_str()), ("password", PASSWORD), ("password_confirm", "a different password")];
    b.submit("/console/signup", "/console/signup", &fields).await.expect(400).expect_text("The two passwords differ");
    sign_up(&b, "not-an-email", PASSWORD).await.expect(400).expect_text("name@example.com");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.mails().is_empty(), "no mail for a refused form: {:#?}", sink.mails());
}

#[tokio::test]
async fn a_sign_up_link_expires() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(|c| {
        with_email(c, &sink.url());
        c.email.signup_link_ttl = Duration::from_secs(1);
    })
    .await;
    let email = unique_email();
    sign_up(&Browser::new(&app), &email, PASSWORD).await.expect(200);
    let token = token_of(&sink.wait_for(&email, 1, MAIL_WAIT).await[0]);
    let b = Browser::new(&app);
    let path = format!("/console/signup/confirm?token={token}");
    let shown = b.get(&path).await;
    shown.expect(200);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    b.get(&path).await.expect(400).expect_text("This link is not valid");
    // Pressing a button shown before it expired does not make the account either.
    press(&b, &shown.csrf(), &token).await.expect(400);
    Browser::new(&app).login(&email, PASSWORD).await.expect(401);
}

#[tokio::test]
async fn one_address_gets_at_most_three_mails_per_window() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(|c| with_email(c, &sink.url())).await;
    let email = unique_email();
    for i in 0..5 {
        let b = Browser::with_headers(&app, &[("x-forwarded-for", &format!("198.51.100.{}", 20 + i))]);
        // Every visitor gets the same answer; the mailbox is not flooded.
        sign_up(&b, &email, PASSWORD).await.expect(200).expect_text("Check your email");
    }
    sink.wait_for(&email, 3, MAIL_WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.mails_to(&email).len(), 3);
}

#[tokio::test]
async fn a_relay_that_is_down_does_not_change_the_answer() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let app = TestApp::spawn_with(|c| with_email(c, &format!("smtp://{closed}"))).await;
    let email = unique_email();
    sign_up(&Browser::new(&app), &email, PASSWORD).await.expect(200).expect_text("Check your email");
    // The failure is counted (and logged) where an operator looks.
    let deadline = tokio::time::Instant::now() + MAIL_WAIT;
    loop {
        let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
        if text.lines().any(|l| {
            l.starts_with("keygate_console_emails_total")
                && l.contains(r#"kind="signup_link""#)
                && l.contains(r#"outcome="failed""#)
        }) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no failed mail counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

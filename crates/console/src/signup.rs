//! Sign-up: a visitor creates a customer account.
//!
//! Without `[email]` the account is made at once and the visitor signed in; an email that has an
//! account already is refused as such (the one place the console tells it; throttled per address).
//!
//! With `[email]` (OWASP's advice against account enumeration): the form is checked (email,
//! password policy, the two passwords), the password hashed, and the page answers "check your
//! email" whether or not the email has an account. A new email gets a link, valid for
//! `signup_link_ttl`, that makes the account; a registered one gets a note saying so and no link
//! (`mail`). Both branches hash the password and look the email up, so they take the same time.
//! The pending sign-up (email, first name, password hash) is a row of the settings table under
//! the HMAC of the link's token, never the token; opening the link shows a button (mail scanners
//! that fetch links make no account), and pressing it takes the row once, makes the account and
//! signs its owner in.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use keygate_core::audit::Audit;
use keygate_store::{Role, StoreError, now_ms};
use serde::{Deserialize, Serialize};

use super::mail::{Kind, Mailer};
use super::pages::{public_form, start_session};
use super::session::{self, PublicPost};
use super::{ConsoleError, MessagePage, Nav, csrf, render};
use crate::ConsoleState;
use keygate_ops::OpsError;

/// The settings' names of pending sign-ups start with this.
const PENDING: &str = "console.signup.";

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    nav: Nav,
    csrf: String,
    email: String,
    first_name: String,
    error: Option<String>,
    min_len: usize,
}

#[derive(Template)]
#[template(path = "signup_confirm.html")]
struct ConfirmPage {
    nav: Nav,
    csrf: String,
    email: String,
    token: String,
}

pub(super) async fn signup_form(State(s): State<ConsoleState>, headers: HeaderMap) -> Result<Response, ConsoleError> {
    if !s.signup {
        return Err(ConsoleError::SignupClosed);
    }
    if session::current(&headers, &s).await?.is_some() {
        return Ok(Redirect::to("/console/credentials").into_response());
    }
    Ok(public_form(&s, &headers, |csrf| {
        let page = SignupPage {
            nav: Nav::anonymous(),
            csrf,
            email: String::new(),
            first_name: String::new(),
            error: None,
            min_len: keygate_ops::password::MIN_LEN,
        };
        render(StatusCode::OK, &page)
    }))
}

#[derive(Deserialize)]
pub(super) struct SignupForm {
    email: String,
    #[serde(default)]
    first_name: String,
    password: String,
    password_confirm: String,
}

/// A sign-up waiting for its link.
#[derive(Serialize, Deserialize)]
struct Pending {
    email: String,
    first_name: String,
    password_hash: String,
    expires_at: i64,
}

pub(super) async fn signup(
    State(s): State<ConsoleState>,
    post: PublicPost<SignupForm>,
) -> Result<Response, ConsoleError> {
    let console = &s;
    if !console.signup {
        return Err(ConsoleError::SignupClosed);
    }
    let PublicPost { form, ip, request_id, secure, pre_session } = post;
    console.throttle.check_signup(ip).map_err(ConsoleError::Throttled)?;
    console.throttle.signed_up(ip);
    let again = |error: String| {
        let page = SignupPage {
            nav: Nav::anonymous(),
            csrf: csrf::for_pre_session(&console.csrf_hasher, &pre_session),
            email: form.email.trim().to_owned(),
            first_name: form.first_name.trim().to_owned(),
            error: Some(error),
            min_len: keygate_ops::password::MIN_LEN,
        };
        Ok(render(StatusCode::BAD_REQUEST, &page))
    };
    if form.password != form.password_confirm {
        return again("The two passwords differ.".into());
    }
    let audit = Audit::customer(form.email.trim()).from_request(ip, request_id.as_deref());
    let Some(mailer) = &console.mailer else {
        let account = match s
            .ops
            .create_login_account(
                &audit,
                &form.email,
                &form.first_name,
                Some(&form.password),
                Role::Customer,
                &console.passwords,
            )
            .await
        {
            Ok(a) => a,
            Err(OpsError::Store(StoreError::Conflict(_))) => {
                // Counts against the IP: sign-up must not become a fast way to test which emails exist.
                console.throttle.fail(None, ip);
                return again("An account with this email already exists. Sign in instead.".into());
            }
            Err(OpsError::Invalid(m)) => return again(super::capitalise(&m)),
            Err(e) => return Err(e.into()),
        };
        tracing::info!(account = %account.id, "console: sign-up");
        return start_session(&s, account.id, secure).await;
    };

    // With email: everything the form itself can be wrong about first (none of it depends on
    // whether the email has an account), then the same work and the same answer either way.
    let new = match keygate_ops::check_new_login(&form.email, &form.first_name) {
        Ok(n) => n,
        Err(OpsError::Invalid(m)) => return again(super::capitalise(&m)),
        Err(e) => return Err(e.into()),
    };
    let Some(to) = Mailer::address(&new.email) else {
        return again("Email must look like name@example.com".into());
    };
    let password_hash = match keygate_ops::hash_new_password(&console.passwords, &form.password).await {
        Ok(h) => h,
        Err(OpsError::Invalid(m)) => return again(super::capitalise(&m)),
        Err(e) => return Err(e.into()),
    };
    let store = s.ops.store();
    let now = now_ms();
    if let Err(e) = store.prune_settings(PENDING, now - mailer.link_ttl.as_millis() as i64).await {
        tracing::warn!(error = %e, "console: pruning expired sign-ups failed");
    }
    let registered = store.console_account_by_email(&new.email).await?.is_some();
    let kind = if registered { Kind::AlreadyRegistered } else { Kind::SignupLink };
    let message = if registered {
        mailer.already_registered(to)
    } else {
        let token = session::new_token();
        let pending = Pending {
            email: new.email.clone(),
            first_name: new.first_name.clone(),
            password_hash,
            expires_at: now + mailer.link_ttl.as_millis() as i64,
        };
        let value = serde_json::to_vec(&pending).map_err(|e| ConsoleError::Internal(e.to_string()))?;
        store.put_setting(&pending_name(&s, &token), &value, true).await?;
        mailer.signup_link(to, &token)
    };
    match message {
        Some(m) if console.throttle.may_mail(&new.email) => mailer.send(kind, m),
        Some(_) => mailer.throttled(kind),
        None => {}
    }
    tracing::info!(ip = ?ip, "console: sign-up asked for; a mail is on its way");
    let page = MessagePage {
        nav: Nav::anonymous(),
        title: "Check your email".into(),
        message: format!(
            "We sent a mail to {}. Open the link in it within {} to finish creating your account. \
             Nothing arrived? Look in the spam folder, or sign up again in a few minutes.",
            new.email,
            super::mail::in_words(mailer.link_ttl),
        ),
        code: None,
        link: ("/console/login", "Back to sign-in"),
    };
    Ok(render(StatusCode::OK, &page))
}

/// The setting that holds the sign-up of the link with `token`.
fn pending_name(s: &ConsoleState, token: &str) -> String {
    format!("{PENDING}{}", hex::encode(s.session_hasher.hash(&format!("signup:{token}")).as_bytes()))
}

/// The token a link carries, if it has the shape of one (a new token's characters and length).
fn token_shape(token: &str) -> Option<&str> {
    let ok =
        (32..=64).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(token)
}

fn link_not_valid() -> Response {
    let page = MessagePage {
        nav: Nav::anonymous(),
        title: "This link is not valid".into(),
        message: "It has expired, was used already, or was copied incompletely. Sign up again to get a new one.".into(),
        code: None,
        link: ("/console/signup", "Sign up"),
    };
    render(StatusCode::BAD_REQUEST, &page)
}

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    #[serde(default)]
    token: String,
}

fn decode(value: &[u8]) -> Option<Pending> {
    serde_json::from_slice::<Pending>(value).ok().filter(|p| p.expires_at > now_ms())
}

/// The link from the mail: a page with the button that makes the account.
pub(super) async fn confirm_form(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ConsoleError> {
    if !s.signup || s.mailer.is_none() {
        return Err(ConsoleError::SignupClosed);
    }
    let token = query.map(|Query(q)| q.token).unwrap_or_default();
    let Some(token) = token_shape(&token) else { return Ok(link_not_valid()) };
    let Some(pending) = s.ops.store().get_setting(&pending_name(&s, token)).await?.as_deref().and_then(decode) else {
        return Ok(link_not_valid());
    };
    Ok(public_form(&s, &headers, |csrf| {
        let page = ConfirmPage { nav: Nav::anonymous(), csrf, email: pending.email, token: token.to_owned() };
        render(StatusCode::OK, &page)
    }))
}

#[derive(Deserialize)]
pub(super) struct ConfirmForm {
    #[serde(default)]
    token: String,
}

/// The button: takes the pending sign-up once, makes the account, signs its owner in.
pub(super) async fn confirm(
    State(s): State<ConsoleState>,
    post: PublicPost<ConfirmForm>,
) -> Result<Response, ConsoleError> {
    if !s.signup || s.mailer.is_none() {
        return Err(ConsoleError::SignupClosed);
    }
    let PublicPost { form, ip, request_id, secure, .. } = post;
    let Some(token) = token_shape(&form.token) else { return Ok(link_not_valid()) };
    let Some(pending) = s.ops.store().take_setting(&pending_name(&s, token)).await?.as_deref().and_then(decode) else {
        return Ok(link_not_valid());
    };
    let audit = Audit::customer(&pending.email).from_request(ip, request_id.as_deref());
    let account = match s
        .ops
        .create_login_account_hashed(
            &audit,
            &pending.email,
            &pending.first_name,
            &pending.password_hash,
            Role::Customer,
        )
        .await
    {
        Ok(a) => a,
        Err(OpsError::Store(StoreError::Conflict(_))) => {
            // Only the mailbox's owner has the link: telling them is no leak.
            let page = MessagePage {
                nav: Nav::anonymous(),
                title: "You already have an account".into(),
                message: format!("{} has an account already. Sign in with its password.", pending.email),
                code: None,
                link: ("/console/login", "Sign in"),
            };
            return Ok(render(StatusCode::CONFLICT, &page));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(account = %account.id, "console: sign-up confirmed by email");
    start_session(&s, account.id, secure).await
}

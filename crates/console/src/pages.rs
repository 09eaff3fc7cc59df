//! Customer pages: login, logout (sign-up is `signup`), and "API Credentials" (list, generate with an optional
//! name and expiry, usage, rotate, revoke, the status of each, its settings: name, expiry,
//! permissions and IP allowlist, and the rate limits and credits that apply to it, read-only),
//! with the account's own activity from the audit log (its entries and its credentials' only).
//! Generate, rotate and revoke are applied once per form (`forms`). A customer only ever reaches
//! their own credentials: anyone else's answer 404, as if they did not exist.

use askama::Template;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use keygate_core::credits::CreditBalance;
use keygate_core::model::{Account, AccountStatus, Credential, CredentialStatus};
use keygate_core::ratelimit::EffectiveLimit;
use keygate_core::{AccountId, BusinessCode, ClientId};
use keygate_store::{CreditScope, DAY_MS, Granularity, UsageScope, now_ms};
use serde::Deserialize;

use super::audit::{self, AuditRow};
use super::credits::{BalanceView, Holder};
use super::forms::{self, Applied, Before};
use super::keys::{self, SettingsForm, SettingsView, Typed};
use super::limits::{self, LimitRow, Reader};
use super::session::{self, PRE_SESSION_COOKIE, Post, PublicPost, SESSION_COOKIE, User};
use super::signup;
use super::svg::{self, Chart};
use super::{ConsoleError, Nav, csrf, fmt_time, iso_time, render};
use crate::ConsoleState;
use keygate_ops::OpsError;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_form).post(login))
        .route("/signup", get(signup::signup_form).post(signup::signup))
        .route("/signup/confirm", get(signup::confirm_form).post(signup::confirm))
        .route("/logout", post(logout))
        .route("/credentials", get(credentials).post(generate))
        .route("/credentials/{client_id}", get(credential))
        .route("/credentials/{client_id}/settings", post(save_settings))
        .route("/credentials/{client_id}/rotate", post(rotate))
        .route("/credentials/{client_id}/revoke", get(revoke_confirm).post(revoke))
}

/// A form without fields of its own (only the CSRF token).
#[derive(Deserialize)]
pub(super) struct NoFields {}

async fn index(State(s): State<ConsoleState>, headers: HeaderMap) -> Result<Redirect, ConsoleError> {
    Ok(match session::current(&headers, &s).await? {
        Some(_) => Redirect::to("/console/credentials"),
        None => Redirect::to("/console/login"),
    })
}

// ---- Login, sign-up, logout ---------------------------------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Nav,
    csrf: String,
    email: String,
    error: Option<String>,
    signup: bool,
}

/// The pre-session cookie a request has, or a new one to set.
fn pre_session(headers: &HeaderMap) -> (String, bool) {
    match session::cookie(headers, PRE_SESSION_COOKIE) {
        Some(v) if v.len() >= 32 && v.len() <= 64 => (v.to_owned(), false),
        _ => (session::new_token(), true),
    }
}

/// A page with a public form (login, sign-up, its confirmation), made by `page` from the CSRF token
/// of the visitor's pre-session cookie; the cookie is set when the visitor had none.
pub(super) fn public_form(s: &ConsoleState, headers: &HeaderMap, page: impl FnOnce(String) -> Response) -> Response {
    let (cookie, new) = pre_session(headers);
    let mut res = page(csrf::for_pre_session(&s.csrf_hasher, &cookie));
    if new {
        let c = session::set_cookie(PRE_SESSION_COOKIE, &cookie, None, session::secure(headers, s.secure_cookies));
        res.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&c).expect("a cookie is a header value"));
    }
    res
}

async fn login_form(State(s): State<ConsoleState>, headers: HeaderMap) -> Result<Response, ConsoleError> {
    if session::current(&headers, &s).await?.is_some() {
        return Ok(Redirect::to("/console/credentials").into_response());
    }
    Ok(public_form(&s, &headers, |csrf| {
        let page = LoginPage { nav: Nav::anonymous(), csrf, email: String::new(), error: None, signup: s.signup };
        render(StatusCode::OK, &page)
    }))
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
}

/// Creates a session for `account` and answers with its cookie and a redirect to the console.
pub(super) async fn start_session(
    s: &ConsoleState,
    account: AccountId,
    secure: bool,
) -> Result<Response, ConsoleError> {
    let token = session::new_token();
    let ttl = s.session_ttl;
    let store = s.ops.store();
    // Expired sessions are dead weight: drop them while we are writing anyway.
    if let Err(e) = store.prune_sessions(now_ms()).await {
        tracing::warn!(error = %e, "console: pruning expired sessions failed");
    }
    store.create_session(&s.session_hasher.hash(&token), account, now_ms() + ttl.as_millis() as i64).await?;
    let mut res = Redirect::to("/console/credentials").into_response();
    let c = session::set_cookie(SESSION_COOKIE, &token, Some(ttl.as_secs().max(1)), secure);
    res.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&c).expect("a cookie is a header value"));
    Ok(res)
}

async fn login(State(s): State<ConsoleState>, post: PublicPost<LoginForm>) -> Result<Response, ConsoleError> {
    let PublicPost { form, ip, secure, pre_session, .. } = post;
    let console = &s;
    let email = form.email.trim();
    // Refused before any password check: throttled attempts cost no Argon2 work.
    console.throttle.check(Some(email), ip).map_err(ConsoleError::Throttled)?;
    let found = if email.is_empty() || email.len() > 254 {
        None
    } else {
        s.ops.store().console_account_by_email(email).await?
    };
    // One verification whatever happens: against the account's hash, or a dummy one.
    let ok = console
        .passwords
        .verify(&form.password, found.as_ref().and_then(|a| a.password_hash.as_deref()))
        .await
        .map_err(|e| ConsoleError::Internal(e.to_string()))?;
    let account = match found {
        Some(a) if ok => a,
        _ => {
            console.throttle.fail(Some(email), ip);
            tracing::info!(ip = ?ip, "console: failed login");
            let page = LoginPage {
                nav: Nav::anonymous(),
                csrf: csrf::for_pre_session(&console.csrf_hasher, &pre_session),
                email: email.to_owned(),
                error: Some("Wrong email or password.".into()),
                signup: console.signup,
            };
            let mut res = render(StatusCode::UNAUTHORIZED, &page);
            res.extensions_mut().insert(BusinessCode::InvalidAuth);
            return Ok(res);
        }
    };
    if account.account.status != AccountStatus::Active {
        // Said only to whoever knows the password.
        let page = super::MessagePage {
            nav: Nav::anonymous(),
            title: "Account suspended".into(),
            message: "This account has been suspended and cannot sign in. Contact the platform's operators.".into(),
            code: Some(BusinessCode::Banned.as_u32()),
            link: ("/console/login", "Back to sign-in"),
        };
        let mut res = render(StatusCode::FORBIDDEN, &page);
        res.extensions_mut().insert(BusinessCode::Banned);
        return Ok(res);
    }
    console.throttle.succeed(email, ip);
    tracing::info!(account = %account.account.id, "console: login");
    start_session(&s, account.account.id, secure).await
}

async fn logout(State(s): State<ConsoleState>, post: Post<NoFields>) -> Result<Response, ConsoleError> {
    s.ops.store().delete_session(&post.user.token_hash).await?;
    let mut res = Redirect::to("/console/login").into_response();
    let c = session::set_cookie(SESSION_COOKIE, "", Some(0), post.user.secure);
    res.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&c).expect("a cookie is a header value"));
    Ok(res)
}

// ---- API Credentials ----------------------------------------------------------------------------

/// A credential as the pages list it. Never holds a secret: only the stored hint.
pub(super) struct CredentialRow {
    pub client_id: String,
    pub hint: String,
    pub name: Option<String>,
    /// Not revoked: it can still be changed, rotated or revoked.
    pub live: bool,
    /// What its requests get now: active, disabled, expired, revoked, "refused: account banned".
    pub status: &'static str,
    /// Its `status-<class>`.
    pub status_class: &'static str,
    /// When it stops working (as shown, RFC 3339, passed).
    pub expires: Option<(String, String, bool)>,
    pub created: String,
    pub created_iso: String,
    pub last_used: Option<String>,
    /// When an older secret stops working (after a rotation with grace).
    pub grace_until: Option<String>,
    /// The rate limits its requests count against, where the page shows them.
    pub limits: Vec<LimitRow>,
    /// The credits balances its requests are charged to (its own, its account's), where the
    /// page shows them.
    pub credits: Vec<BalanceView>,
}

impl CredentialRow {
    /// `account_banned`: its account's keys are all refused.
    pub fn of(c: &Credential, account_banned: bool) -> Self {
        let now = now_ms();
        let (status, status_class) = keys::status(c, account_banned, now);
        Self {
            client_id: c.client_id.to_hex(),
            hint: c.hint.clone(),
            name: c.name.clone(),
            live: c.status == CredentialStatus::Active,
            status,
            status_class,
            expires: c.expires_at.map(|t| (fmt_time(t), iso_time(t), t <= now)),
            created: fmt_time(c.created_at),
            created_iso: iso_time(c.created_at),
            last_used: c.last_used_at.map(fmt_time),
            grace_until: c
                .live_generations
                .iter()
                .filter(|g| g.generation != c.generation && g.is_live(now))
                .filter_map(|g| g.expires_at)
                .max()
                .map(fmt_time),
            limits: Vec::new(),
            credits: Vec::new(),
        }
    }
}

fn banned(a: &Account) -> bool {
    a.status == AccountStatus::Banned
}

/// The credits an active credential's requests are charged to, for its owner: its own balance,
/// then its account's (`account`: the account's, looked up once for a page of credentials).
async fn customer_credits(
    s: &ConsoleState,
    c: &Credential,
    account: &Account,
    account_balance: Option<&CreditBalance>,
) -> Result<Vec<BalanceView>, ConsoleError> {
    if c.status != CredentialStatus::Active {
        return Ok(Vec::new());
    }
    let own = s.ops.credit_balance(CreditScope::Credential(c.client_id)).await?;
    let own = own.map(|b| BalanceView::of(&b, Holder::Credential, Reader::Customer));
    let shared =
        account_balance.map(|b| BalanceView::of(b, Holder::Account(account.plan.as_deref()), Reader::Customer));
    Ok(own.into_iter().chain(shared).collect())
}

#[derive(Template)]
#[template(path = "credentials.html")]
struct CredentialsPage {
    nav: Nav,
    rows: Vec<CredentialRow>,
    revoked: Option<String>,
    /// The generate form had been sent before: the credential it made (not made again).
    created_before: Option<String>,
    /// What a replayed form applied once did (see [`form_notice`]).
    form: Option<&'static str>,
    /// Some credential has credits: the list shows them.
    credits: bool,
    /// The generate form: its key, the name and expiry as typed, why it was refused.
    form_key: String,
    name: String,
    expires: String,
    error: Option<String>,
    /// The latest entries of the audit log about the account and its credentials.
    activity: Vec<AuditRow>,
}

#[derive(Deserialize)]
struct Notice {
    revoked: Option<String>,
    created: Option<String>,
    form: Option<String>,
}

/// What a page says of a replayed form (`?form=`: "pending", "failed", or "again" for a rotation);
/// other words are not echoed.
pub(super) fn form_notice(form: Option<&str>) -> Option<&'static str> {
    match form? {
        "pending" => Some(
            "This form had already been sent and is still being handled, or its handling was interrupted: \
             nothing was done again. Check this page before sending it again.",
        ),
        "failed" => Some(
            "This form had already been sent and was refused then: nothing was done. Send it again from this page.",
        ),
        "again" => Some(
            "This form had already been sent: the key was rotated once, not again. The new key was shown once, \
             in the answer to that form; if you did not store it, rotate the key again.",
        ),
        _ => None,
    }
}

async fn credentials(
    user: User,
    State(s): State<ConsoleState>,
    notice: Result<Query<Notice>, QueryRejection>,
) -> Result<Response, ConsoleError> {
    let notice = notice.ok().map(|Query(n)| n);
    credentials_page(&s, &user, notice, None).await
}

/// The generate form as it was refused.
struct Refused {
    form_key: String,
    name: String,
    expires: String,
    error: String,
}

async fn credentials_page(
    s: &ConsoleState,
    user: &User,
    notice: Option<Notice>,
    refused: Option<Refused>,
) -> Result<Response, ConsoleError> {
    let list = s.ops.list_credentials(user.account.id).await?;
    // Only a well-formed clientId of one's own is echoed.
    let own_id = |r: Option<String>| {
        r.and_then(|r| r.parse::<ClientId>().ok())
            .filter(|id| list.iter().any(|c| c.client_id == *id))
            .map(|id| id.to_hex())
    };
    let (revoked, created_before, form) = match notice {
        Some(n) => (own_id(n.revoked), own_id(n.created), form_notice(n.form.as_deref())),
        None => (None, None, None),
    };
    // The account's limits once, combined with each credential's own.
    let shared = limits::shared(&s.ops.account_limits(&user.account).await?);
    let account_balance = s.ops.credit_balance(CreditScope::Account(user.account.id)).await?;
    let mut rows = Vec::with_capacity(list.len());
    for c in &list {
        rows.push(CredentialRow {
            limits: LimitRow::all(&EffectiveLimit::for_credential(&c.ratelimits, &shared), Reader::Customer),
            credits: customer_credits(s, c, &user.account, account_balance.as_ref()).await?,
            ..CredentialRow::of(c, banned(&user.account))
        });
    }
    let credits = rows.iter().any(|r| !r.credits.is_empty());
    // The customer's own account only.
    let activity = s.ops.account_history(user.account.id, audit::PAGE).await?;
    let status = if refused.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let (form_key, name, expires, error) = match refused {
        Some(r) => (r.form_key, r.name, r.expires, Some(r.error)),
        None => (forms::new_key(), String::new(), String::new(), None),
    };
    let page = CredentialsPage {
        nav: Nav::of(user, "credentials"),
        rows,
        revoked,
        created_before,
        form,
        credits,
        form_key,
        name,
        expires,
        error,
        activity: audit::rows(&activity, Reader::Customer),
    };
    Ok(render(status, &page))
}

/// The one page that shows a secret: the answer to the POST that made it. Not stored anywhere,
/// never reachable by a GET or a redirect; `Cache-Control: no-store` like every console page.
#[derive(Template)]
#[template(path = "secret.html")]
struct SecretPage {
    nav: Nav,
    client_id: String,
    api_key: String,
    rotated: bool,
    grace_until: Option<String>,
    base_url: String,
}

/// The URL this server is reached at, for the examples on the secret page.
fn base_url(headers: &HeaderMap, s: &ConsoleState) -> String {
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split(',').next())
        .map(str::trim)
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
        .unwrap_or("localhost");
    let scheme =
        if session::secure(headers, crate::SecureCookies::Auto) || s.secure_cookies == crate::SecureCookies::Always {
            "https"
        } else {
            "http"
        };
    format!("{scheme}://{host}")
}

#[derive(Deserialize)]
struct GenerateForm {
    /// Made when the form was shown: the same form sent again makes no second credential.
    #[serde(default)]
    form_key: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires: String,
}

async fn generate(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    post: Post<GenerateForm>,
) -> Result<Response, ConsoleError> {
    let Post { user, form } = post;
    let change = match keys::creation(&form.name, &form.expires, now_ms()) {
        Ok(c) => c,
        Err(m) => {
            let refused = Refused {
                form_key: form.form_key,
                name: form.name,
                expires: form.expires,
                error: super::capitalise(&m),
            };
            return credentials_page(&s, &user, None, Some(refused)).await;
        }
    };
    let account = user.account.id;
    let audit = user.audit();
    let create = || async { Ok(s.ops.create_credential_with(&audit, account, change).await?) };
    let issued = match forms::once(&s, account, &form.form_key, "generate", create, |i| i.client_id.to_hex()).await? {
        Applied::Now(issued) => issued,
        // Its API key was shown once, in the answer to the first sending: not again.
        Applied::Before(Before::Done(id)) => {
            return Ok(Redirect::to(&format!("/console/credentials?created={id}")).into_response());
        }
        Applied::Before(Before::Pending) => {
            return Ok(Redirect::to("/console/credentials?form=pending").into_response());
        }
        Applied::Before(Before::Failed) => return Ok(Redirect::to("/console/credentials?form=failed").into_response()),
    };
    tracing::info!(account = %account, client_id = %issued.client_id, "console: credential created");
    let page = SecretPage {
        nav: Nav::of(&user, "credentials"),
        client_id: issued.client_id.to_hex(),
        api_key: issued.api_key,
        rotated: false,
        grace_until: None,
        base_url: base_url(&headers, &s),
    };
    Ok(render(StatusCode::OK, &page))
}

/// The caller's own credential, or 404 (also for anyone else's).
async fn own(s: &ConsoleState, user: &User, client_id: &str) -> Result<Credential, ConsoleError> {
    let id: ClientId = client_id.parse().map_err(|_| ConsoleError::NotFound)?;
    let c = s.ops.get_credential(id).await?;
    if c.account_id != user.account.id {
        return Err(ConsoleError::NotFound);
    }
    Ok(c)
}

#[derive(Template)]
#[template(path = "credential.html")]
struct CredentialPage {
    nav: Nav,
    c: CredentialRow,
    generation: u32,
    chart: Chart,
    settings: SettingsView,
    /// Its settings form (a live credential's).
    form: Option<SettingsForm>,
    /// The networks the account's keys may be used from (set by the operators; empty: anywhere).
    account_allowlist: Vec<String>,
    /// The rotate form's key.
    form_key: String,
    /// What a replayed form did (see [`form_notice`]).
    replayed: Option<&'static str>,
}

#[derive(Deserialize)]
struct CredentialNotice {
    saved: Option<String>,
    form: Option<String>,
}

async fn credential(
    user: User,
    State(s): State<ConsoleState>,
    Path(client_id): Path<String>,
    notice: Result<Query<CredentialNotice>, QueryRejection>,
) -> Result<Response, ConsoleError> {
    let c = own(&s, &user, &client_id).await?;
    let notice = notice.ok().map(|Query(n)| n);
    let saved = notice.as_ref().is_some_and(|n| n.saved.is_some());
    let replayed = notice.and_then(|n| form_notice(n.form.as_deref()));
    credential_page(&s, &user, c, None, saved, replayed).await
}

/// A credential's page; 400 with its settings form as typed when `refused`.
async fn credential_page(
    s: &ConsoleState,
    user: &User,
    c: Credential,
    refused: Option<(Typed, String)>,
    saved: bool,
    replayed: Option<&'static str>,
) -> Result<Response, ConsoleError> {
    let today = now_ms().div_euclid(DAY_MS);
    let (from, to) = ((today - (svg::DAYS - 1)) * DAY_MS, (today + 1) * DAY_MS);
    let usage = s.ops.store().usage(UsageScope::Credential(c.client_id), from, to, Granularity::Day).await?;
    let limits = LimitRow::all(&s.ops.credential_limits(&c).await?, Reader::Customer);
    let account_balance = s.ops.credit_balance(CreditScope::Account(user.account.id)).await?;
    let credits = customer_credits(s, &c, &user.account, account_balance.as_ref()).await?;
    let status = if refused.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let form = (c.status == CredentialStatus::Active).then(|| {
        let f = SettingsForm::new(&c, format!("/console/credentials/{}/settings", c.client_id.to_hex()), None);
        let f = match &refused {
            Some((typed, error)) => f.refused(typed, error.clone()),
            None => f,
        };
        SettingsForm { saved, ..f }
    });
    let page = CredentialPage {
        nav: Nav::of(user, "credentials"),
        c: CredentialRow { limits, credits, ..CredentialRow::of(&c, banned(&user.account)) },
        generation: c.generation,
        chart: svg::chart(&usage, today),
        settings: SettingsView::of(&c, now_ms()),
        form,
        account_allowlist: SettingsView::allowlist_of(&user.account.ip_allowlist),
        form_key: forms::new_key(),
        replayed,
    };
    Ok(render(status, &page))
}

/// Saves a credential's name, expiry, permissions and allowlist (one change: all or nothing).
async fn save_settings(
    State(s): State<ConsoleState>,
    Path(client_id): Path<String>,
    post: Post<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let c = own(&s, &post.user, &client_id).await?;
    if c.status != CredentialStatus::Active {
        return Err(ConsoleError::BadRequest("This credential is revoked: its settings no longer matter.".into()));
    }
    let typed = Typed::from_fields(&post.form);
    let change = match typed.change(&c, false, now_ms()) {
        Ok(change) => change,
        Err(m) => return credential_page(&s, &post.user, c, Some((typed, super::capitalise(&m))), false, None).await,
    };
    match s.ops.update_credential(&post.user.audit(), c.client_id, change).await {
        Ok(_) => {}
        Err(OpsError::Invalid(m)) => {
            return credential_page(&s, &post.user, c, Some((typed, super::capitalise(&m))), false, None).await;
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(account = %post.user.account.id, client_id = %c.client_id, "console: credential settings saved");
    Ok(Redirect::to(&format!("/console/credentials/{}?saved=1#settings", c.client_id.to_hex())).into_response())
}

#[derive(Deserialize)]
struct RotateForm {
    #[serde(default)]
    grace: String,
    #[serde(default)]
    form_key: String,
}

async fn rotate(
    State(s): State<ConsoleState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    post: Post<RotateForm>,
) -> Result<Response, ConsoleError> {
    let c = own(&s, &post.user, &client_id).await?;
    let grace = match post.form.grace.trim() {
        "" | "0" | "none" => std::time::Duration::ZERO,
        g => humantime::parse_duration(g)
            .map_err(|_| ConsoleError::BadRequest("The grace period must be a duration like 1h or 7d.".into()))?,
    };
    let id = c.client_id.to_hex();
    let action = format!("rotate:{id}");
    let run = || async { Ok(s.ops.rotate_credential(&post.user.audit(), c.client_id, grace).await?) };
    let issued = match forms::once(&s, post.user.account.id, &post.form.form_key, &action, run, |i| {
        i.credential.generation.to_string()
    })
    .await?
    {
        Applied::Now(issued) => issued,
        // Rotated once, not again (a second rotation would end the key just shown).
        Applied::Before(b) => {
            let form = match b {
                Before::Done(_) => "again",
                Before::Pending => "pending",
                Before::Failed => "failed",
            };
            return Ok(Redirect::to(&format!("/console/credentials/{id}?form={form}")).into_response());
        }
    };
    tracing::info!(account = %post.user.account.id, client_id = %c.client_id, "console: credential rotated");
    let page = SecretPage {
        nav: Nav::of(&post.user, "credentials"),
        client_id: issued.client_id.to_hex(),
        api_key: issued.api_key,
        rotated: true,
        grace_until: (!grace.is_zero()).then(|| fmt_time(now_ms() + grace.as_millis() as i64)),
        base_url: base_url(&headers, &s),
    };
    Ok(render(StatusCode::OK, &page))
}

/// The confirmation step before a revocation (customers' and operators').
#[derive(Template)]
#[template(path = "revoke.html")]
pub(super) struct RevokePage {
    pub nav: Nav,
    pub c: CredentialRow,
    /// The owner's email, shown to operators.
    pub owner: Option<String>,
    pub action: String,
    pub cancel: String,
    /// The form's key: sent twice, it is applied once.
    pub form_key: String,
}

async fn revoke_confirm(
    user: User,
    State(s): State<ConsoleState>,
    Path(client_id): Path<String>,
) -> Result<Response, ConsoleError> {
    let c = own(&s, &user, &client_id).await?;
    let id = c.client_id.to_hex();
    if c.status != CredentialStatus::Active {
        return Ok(Redirect::to(&format!("/console/credentials/{id}")).into_response());
    }
    let page = RevokePage {
        nav: Nav::of(&user, "credentials"),
        c: CredentialRow::of(&c, banned(&user.account)),
        owner: None,
        action: format!("/console/credentials/{id}/revoke"),
        cancel: format!("/console/credentials/{id}"),
        form_key: forms::new_key(),
    };
    Ok(render(StatusCode::OK, &page))
}

/// A form with only its key (and the CSRF token).
#[derive(Deserialize)]
pub(super) struct KeyForm {
    #[serde(default)]
    pub form_key: String,
}

/// Revokes a credential once per form; a credential already revoked is not an error: the answer
/// is the same as the first one's. `Err(notice)`: a replay of a form that did not finish (`pending`)
/// or was refused (`failed`).
pub(super) async fn revoke_once(
    s: &ConsoleState,
    user: &User,
    c: &Credential,
    form_key: &str,
) -> Result<Result<(), &'static str>, ConsoleError> {
    if c.status == CredentialStatus::Revoked {
        return Ok(Ok(()));
    }
    let action = format!("revoke:{}", c.client_id.to_hex());
    let audit = user.audit();
    let run = || async {
        match s.ops.revoke_credential(&audit, c.client_id).await {
            Ok(_) => Ok(()),
            // Revoked in the meantime (by another sending, or someone else): done all the same.
            Err(OpsError::NotFound(_)) => match s.ops.get_credential(c.client_id).await?.status {
                CredentialStatus::Revoked => Ok(()),
                CredentialStatus::Active => Err(ConsoleError::NotFound),
            },
            Err(e) => Err(e.into()),
        }
    };
    Ok(match forms::once(s, user.account.id, form_key, &action, run, |_| String::new()).await? {
        Applied::Now(()) | Applied::Before(Before::Done(_)) => Ok(()),
        Applied::Before(Before::Pending) => Err("pending"),
        Applied::Before(Before::Failed) => Err("failed"),
    })
}

async fn revoke(
    State(s): State<ConsoleState>,
    Path(client_id): Path<String>,
    post: Post<KeyForm>,
) -> Result<Redirect, ConsoleError> {
    let c = own(&s, &post.user, &client_id).await?;
    if let Err(form) = revoke_once(&s, &post.user, &c, &post.form.form_key).await? {
        return Ok(Redirect::to(&format!("/console/credentials?form={form}")));
    }
    tracing::info!(account = %post.user.account.id, client_id = %c.client_id, "console: credential revoked");
    Ok(Redirect::to(&format!("/console/credentials?revoked={}", c.client_id.to_hex())))
}

//! The web console, `/console`: customers sign up, log in and manage their API credentials
//! ("Login -> API -> API Credentials") and see the rate limits and credits that apply to them;
//! operators search accounts, ban and unban them, revoke any credential, manage plans and set
//! accounts' and credentials' rate limits and credits. Server-rendered HTML (askama templates,
//! escaped by default, checked at compile time), plain forms that work without JavaScript; one
//! small script for copy buttons.
//!
//! - `session`: session cookies and the request extractors (`User`, `Operator`, `Post`,
//!   `PublicPost`: same-site check, CSRF token, session);
//! - `csrf`: `Origin` / `Sec-Fetch-Site` checks and the derived CSRF tokens;
//! - `throttle`: failed logins per account and per IP, sign-ups per IP, mails per address;
//! - `pages` (customers, login), `signup` and `admin` (operators): the handlers and their
//!   templates;
//! - `mail`: the mails of sign-up (over SMTP, in the background), when `[email]` is set;
//! - `audit`: the audit log as pages show it (the operators' page, an account's history, a
//!   customer's own activity);
//! - `limits`: rate limits as forms take them (`NAME=LIMIT/DURATION` per line) and pages show them;
//! - `credits`: credits balances as pages show them and the operator's forms take them;
//! - `keys`: a credential's name, expiry, permissions, roles, allowlist and status, shown and edited;
//! - `forms`: forms applied once (generate, rotate, revoke, ban, unban), by a key made with the form;
//! - `svg`: the usage chart.
//!
//! Every console answer carries a strict Content-Security-Policy (no inline script or style),
//! `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`, `X-Frame-Options: DENY`, and
//! pages are `Cache-Control: no-store`. Customer operations go through [`keygate_ops::Ops`], like the
//! admin API and the CLI, so they validate and invalidate caches the same way; passwords are
//! [`keygate_ops::Passwords`] (Argon2id on the blocking pool, a dummy hash for unknown emails).
#![forbid(unsafe_code)]

mod admin;
mod audit;
mod credits;
mod csrf;
mod forms;
mod keys;
mod limits;
mod mail;
mod pages;
mod session;
mod signup;
mod svg;
mod throttle;

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use keygate_core::{BusinessCode, MasterKey, SecretHasher};

use keygate_ops::{Ops, OpsError, Passwords};
use keygate_store::StoreError;

pub use mail::{MailSettings, Mailer};
pub use throttle::Limits;

/// The console's parsers of untrusted text (cookies, origins, form fields), for the fuzz target
/// `console_forms` (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::credits::{parse_adjustment, parse_balance, parse_refill, refill_words};
    pub use crate::csrf::{matches, same_origin};
    pub use crate::keys::{allowlist_lines, creation, expiry_input, parse_allowlist, parse_expiry, parse_permissions};
    pub use crate::limits::{parse_lines as parse_limits, to_lines as limits_lines};
    pub use crate::session::{cookie, secure};
}

/// What the console is configured with.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Whether visitors may create accounts.
    pub signup: bool,
    /// Absolute lifetime of a login session.
    pub session_ttl: Duration,
    pub secure_cookies: SecureCookies,
    /// Failed-login throttling.
    pub limits: Limits,
    /// Sign-up confirmed by an emailed link (`None`: accounts are made at once).
    pub mail: Option<MailSettings>,
}

/// When console cookies carry `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecureCookies {
    /// When the request came through a TLS-terminating proxy (`X-Forwarded-Proto: https` or
    /// `Forwarded: proto=https`). keygate itself serves plain HTTP.
    #[default]
    Auto,
    Always,
    Never,
}

impl std::str::FromStr for SecureCookies {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "true" | "always" => Ok(Self::Always),
            "false" | "never" => Ok(Self::Never),
            _ => Err(format!("console_secure_cookies {s:?}: use \"auto\", true or false")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for SecureCookies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Self::Always),
            Raw::Bool(false) => Ok(Self::Never),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The console's state: its settings, secrets, login throttle, and the operations it calls.
pub struct Console {
    pub ops: Ops,
    pub passwords: Passwords,
    throttle: throttle::Throttle,
    session_hasher: SecretHasher,
    csrf_hasher: SecretHasher,
    signup: bool,
    mailer: Option<Mailer>,
    session_ttl: Duration,
    secure_cookies: SecureCookies,
}

pub(crate) type ConsoleState = Arc<Console>;

impl Console {
    /// Fails when the mail settings cannot be used ([`MailSettings::check`]).
    pub fn new(settings: ConsoleSettings, master: &MasterKey, ops: Ops) -> anyhow::Result<Self> {
        let mailer = settings.mail.as_ref().map(Mailer::new).transpose().map_err(anyhow::Error::msg)?;
        Ok(Self {
            ops,
            passwords: Passwords::new(master),
            throttle: throttle::Throttle::new(settings.limits),
            session_hasher: master.console_session_hasher(),
            csrf_hasher: master.console_csrf_hasher(),
            signup: settings.signup,
            mailer,
            session_ttl: settings.session_ttl,
            secure_cookies: settings.secure_cookies,
        })
    }
}

/// The console's routes, to be nested under `/console`. Every path below `/console` is the
/// console's (unknown ones get its 404 page, never the gateway).
pub fn router<S>(console: Arc<Console>) -> Router<S> {
    Router::new()
        .merge(pages::routes())
        .merge(admin::routes())
        .merge(audit::routes())
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .route("/static/favicon.svg", get(favicon))
        // Where browsers look when a page names no icon (a page of the console always does).
        .route("/favicon.ico", get(|| async { Redirect::permanent(FAVICON) }))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn(security_headers))
        .with_state(console)
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages show account data, and some a secret: never stored by a browser or a proxy.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

async fn css() -> impl IntoResponse {
    static_file("text/css; charset=utf-8", include_str!("../static/app.css"))
}

async fn js() -> impl IntoResponse {
    static_file("text/javascript; charset=utf-8", include_str!("../static/app.js"))
}

const FAVICON: &str = "/console/static/favicon.svg";

async fn favicon() -> impl IntoResponse {
    static_file("image/svg+xml", include_str!("../static/favicon.svg"))
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> ConsoleError {
    ConsoleError::NotFound
}

/// Renders a page with a status.
pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console: template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal error").into_response()
        }
    }
}

/// The navigation bar's view of the visitor.
pub(crate) struct Nav {
    /// The logged-in account's email (None: not logged in).
    pub email: Option<String>,
    pub operator: bool,
    /// For the logout form.
    pub csrf: String,
    /// Which entry is current: "credentials", "accounts", "plans", "audit" or "".
    pub current: &'static str,
}

impl Nav {
    pub fn anonymous() -> Self {
        Self { email: None, operator: false, csrf: String::new(), current: "" }
    }

    pub fn of(user: &session::User, current: &'static str) -> Self {
        Self { email: Some(user.account.email.clone()), operator: user.is_operator(), csrf: user.csrf.clone(), current }
    }
}

/// A page with a heading and a message (errors, refusals).
#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    nav: Nav,
    title: String,
    message: String,
    code: Option<u32>,
    link: (&'static str, &'static str),
}

/// Why a console request was not served. Rendered as an HTML page (never the JSON envelope);
/// the business code goes into the page and the response's extensions (access log, metrics).
#[derive(Debug)]
pub enum ConsoleError {
    /// No valid session: to the login page (and the stale cookie is dropped).
    LoginRequired {
        had_cookie: bool,
        secure: bool,
    },
    /// Cross-site, or a missing or wrong CSRF token.
    Csrf,
    /// The login and sign-up forms need the pre-session cookie.
    CookiesRequired,
    OperatorsOnly,
    SignupClosed,
    NotFound,
    BadRequest(String),
    /// Too many failed logins.
    Throttled(Duration),
    Unavailable(String),
    Internal(String),
}

impl From<OpsError> for ConsoleError {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::NotFound(_) => Self::NotFound,
            OpsError::Invalid(m) | OpsError::Conflict(m) => Self::BadRequest(m),
            OpsError::Store(e) => e.into(),
            OpsError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<StoreError> for ConsoleError {
    fn from(e: StoreError) -> Self {
        match e {
            // Pages look records up by the id in their address: a missing one is a 404 page.
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict(m) => Self::BadRequest(m),
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Other(m) => Self::Internal(m),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        use BusinessCode as C;
        let (status, code, title, message): (StatusCode, C, &str, String) = match self {
            Self::LoginRequired { had_cookie, secure } => {
                let mut res = Redirect::to("/console/login").into_response();
                if had_cookie {
                    let clear = session::set_cookie(session::SESSION_COOKIE, "", Some(0), secure);
                    res.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear).expect("cookie"));
                }
                return res;
            }
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                C::PermissionDenied,
                "Request refused",
                "This form was not accepted: it came from another site, or it has expired. \
                 Go back, reload the page and try again."
                    .into(),
            ),
            Self::CookiesRequired => (
                StatusCode::FORBIDDEN,
                C::PermissionDenied,
                "Cookies required",
                "Signing in needs cookies for this site. Enable them, reload the page and try again.".into(),
            ),
            Self::OperatorsOnly => (
                StatusCode::FORBIDDEN,
                C::PermissionDenied,
                "Operators only",
                "This part of the console is for the platform's operators.".into(),
            ),
            Self::SignupClosed => (
                StatusCode::FORBIDDEN,
                C::PermissionDenied,
                "Sign-up is closed",
                "New accounts cannot be created here. Ask the platform's operators for an account.".into(),
            ),
            Self::NotFound => {
                (StatusCode::NOT_FOUND, C::ParamError, "Not found", "There is nothing at this address.".into())
            }
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, C::ParamError, "Not accepted", capitalise(&m)),
            Self::Throttled(wait) => {
                let minutes = wait.as_secs().div_ceil(60).max(1);
                let mut res = render(
                    StatusCode::TOO_MANY_REQUESTS,
                    &MessagePage {
                        nav: Nav::anonymous(),
                        title: "Too many attempts".into(),
                        message: format!(
                            "Too many failed sign-in attempts. For your security, signing in is paused: \
                             try again in {minutes} minute{}.",
                            if minutes == 1 { "" } else { "s" }
                        ),
                        code: Some(C::TooFrequent.as_u32()),
                        link: ("/console/login", "Back to sign-in"),
                    },
                );
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
                res.extensions_mut().insert(C::TooFrequent);
                return res;
            }
            Self::Unavailable(cause) => {
                tracing::error!(%cause, "console: store unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    C::Unavailable,
                    "Temporarily unavailable",
                    "The service is temporarily unavailable. Try again in a moment.".into(),
                )
            }
            Self::Internal(cause) => {
                tracing::error!(%cause, "console: request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    C::Internal,
                    "Something went wrong",
                    "An internal error occurred.".into(),
                )
            }
        };
        let mut res = render(
            status,
            &MessagePage {
                nav: Nav::anonymous(),
                title: title.into(),
                message,
                code: Some(code.as_u32()),
                link: ("/console", "Back to the console"),
            },
        );
        res.extensions_mut().insert(code);
        res
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => {
            let mut out: String = f.to_uppercase().collect();
            out.push_str(c.as_str());
            if !out.ends_with('.') {
                out.push('.');
            }
            out
        }
        None => String::new(),
    }
}

/// A Unix-milliseconds time as "2025-01-31 14:05 UTC".
pub(crate) fn fmt_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // A no-break space keeps "UTC" with the time when a narrow column wraps.
    format!("{} {}\u{a0}UTC", &s[..10], &s[11..16])
}

/// A Unix-milliseconds time as an RFC 3339 string, for `<time datetime>`.
pub(crate) fn iso_time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

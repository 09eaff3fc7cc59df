//! Console sessions and the extractors of console requests.
//!
//! A session is a random 256-bit token in the `kg_session` cookie (`HttpOnly`, `SameSite=Lax`,
//! `Path=/console`, `Secure` per `console_secure_cookies`); the database keeps only its HMAC
//! (see [`keygate_core::MasterKey::console_session_hasher`]) with the account and an absolute
//! expiry. Every console request reads the session together with its account, so a ban (which
//! also deletes the sessions), a demotion or an expiry applies to the very next request.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_core::SecretHash;
use keygate_core::audit::Audit;
use keygate_core::model::{Account, AccountStatus};
use keygate_store::{Role, now_ms};
use rand::RngCore;
use serde::de::DeserializeOwned;

use super::{ConsoleError, csrf};
use crate::ConsoleState;
use crate::SecureCookies;

pub const SESSION_COOKIE: &str = "kg_session";
/// The random value the login and sign-up forms' CSRF token is bound to.
pub const PRE_SESSION_COOKIE: &str = "kg_csrf";
/// Largest console form body.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// A new random token (256 bits, base64url).
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// The value of cookie `name`, from every `Cookie` header.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Whether cookies set on this request should carry `Secure`.
pub fn secure(headers: &HeaderMap, mode: SecureCookies) -> bool {
    match mode {
        SecureCookies::Always => true,
        SecureCookies::Never => false,
        SecureCookies::Auto => {
            let forwarded_proto = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
            let forwarded = headers
                .get(header::FORWARDED)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|v| v.split(';').any(|kv| kv.trim().eq_ignore_ascii_case("proto=https")));
            forwarded_proto || forwarded
        }
    }
}

/// A `Set-Cookie` value. `max_age` None: a browser-session cookie; Some(0): deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// The client's address for throttling and logs: as the server worked it out (the TCP peer, or
/// through `trusted_proxies` the address the nearest untrusted hop is), else the TCP peer. A
/// client's own `X-Forwarded-For` never counts: it could pose as any address.
pub fn client_ip(parts: &Parts) -> Option<IpAddr> {
    if let Some(c) = parts.extensions.get::<keygate_core::net::ClientAddr>() {
        return Some(c.ip);
    }
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_canonical())
}

/// The request's id, as the server's observer set it (never the client's own).
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The logged-in account of a console request.
#[derive(Debug, Clone)]
pub struct User {
    pub account: Account,
    pub role: Role,
    pub token_hash: SecretHash,
    /// The CSRF token of this session's forms.
    pub csrf: String,
    /// Whether cookies should carry `Secure` (for logout's clearing cookie).
    pub secure: bool,
    /// The client's address and the request's id, for the audit log.
    pub ip: Option<IpAddr>,
    pub request_id: Option<String>,
}

impl User {
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// Who this user is in the audit log: an operator or a customer, by email, from where.
    pub fn audit(&self) -> Audit {
        let who = if self.is_operator() {
            Audit::operator(&self.account.email)
        } else {
            Audit::customer(&self.account.email)
        };
        who.from_request(self.ip, self.request_id.as_deref())
    }

    pub fn require_operator(&self) -> Result<(), ConsoleError> {
        if self.is_operator() { Ok(()) } else { Err(ConsoleError::OperatorsOnly) }
    }
}

/// The session a request presents, if any and still valid.
pub async fn current(headers: &HeaderMap, state: &ConsoleState) -> Result<Option<User>, ConsoleError> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else { return Ok(None) };
    let console = state;
    let token_hash = console.session_hasher.hash(token);
    let store = state.ops.store();
    let Some(session) = store.session(&token_hash, now_ms()).await? else {
        return Ok(None);
    };
    if session.account.status != AccountStatus::Active {
        // Bans delete sessions; this covers a session created in a race with one.
        store.delete_sessions(session.account.id).await?;
        return Ok(None);
    }
    Ok(Some(User {
        csrf: csrf::for_session(&console.csrf_hasher, &token_hash),
        account: session.account,
        role: session.role,
        token_hash,
        secure: secure(headers, console.secure_cookies),
        ip: None,
        request_id: request_id(headers),
    }))
}

impl FromRequestParts<ConsoleState> for User {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Self, ConsoleError> {
        let mut user = current(&parts.headers, state).await?.ok_or(ConsoleError::LoginRequired {
            had_cookie: cookie(&parts.headers, SESSION_COOKIE).is_some(),
            secure: secure(&parts.headers, state.secure_cookies),
        })?;
        user.ip = client_ip(parts);
        Ok(user)
    }
}

/// An operator's session; customers are refused with 403.
pub struct Operator(pub User);

impl FromRequestParts<ConsoleState> for Operator {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Self, ConsoleError> {
        let user = User::from_request_parts(parts, state).await?;
        user.require_operator()?;
        Ok(Operator(user))
    }
}

async fn read_form(body: Body) -> Result<(Vec<(String, String)>, bytes::Bytes), ConsoleError> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| ConsoleError::BadRequest("The form could not be read (too large?).".into()))?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| ConsoleError::BadRequest("The form could not be read.".into()))?;
    Ok((fields, bytes))
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConsoleError> {
    serde_urlencoded::from_bytes(bytes).map_err(|_| ConsoleError::BadRequest("The form is missing a field.".into()))
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A state-changing form of a logged-in session: the request must come from this site, carry
/// the session's CSRF token, and the session must be valid. Checked in that order (so a
/// cross-site POST is refused with 403 whatever its cookies).
pub struct Post<T> {
    pub user: User,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<ConsoleState> for Post<T> {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, state: &ConsoleState) -> Result<Self, ConsoleError> {
        let (mut parts, body) = req.into_parts();
        if !csrf::same_origin(&parts.headers, parts.uri.authority().map(|a| a.as_str())) {
            return Err(ConsoleError::Csrf);
        }
        let user = User::from_request_parts(&mut parts, state).await?;
        let (fields, bytes) = read_form(body).await?;
        if !csrf::matches(field(&fields, csrf::FIELD), &user.csrf) {
            tracing::info!(account = %user.account.id, "console: form refused, CSRF token missing or wrong");
            return Err(ConsoleError::Csrf);
        }
        Ok(Post { user, form: parse(&bytes)? })
    }
}

/// The login and sign-up forms: same-site, and a CSRF token bound to the pre-session cookie.
pub struct PublicPost<T> {
    pub form: T,
    pub ip: Option<IpAddr>,
    pub request_id: Option<String>,
    pub secure: bool,
    /// The pre-session cookie, to re-render the form with the same token.
    pub pre_session: String,
}

impl<T: DeserializeOwned> FromRequest<ConsoleState> for PublicPost<T> {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, state: &ConsoleState) -> Result<Self, ConsoleError> {
        let (parts, body) = req.into_parts();
        if !csrf::same_origin(&parts.headers, parts.uri.authority().map(|a| a.as_str())) {
            return Err(ConsoleError::Csrf);
        }
        let Some(pre_session) = cookie(&parts.headers, PRE_SESSION_COOKIE).map(str::to_owned) else {
            return Err(ConsoleError::CookiesRequired);
        };
        let (fields, bytes) = read_form(body).await?;
        let expected = csrf::for_pre_session(&state.csrf_hasher, &pre_session);
        if !csrf::matches(field(&fields, csrf::FIELD), &expected) {
            return Err(ConsoleError::Csrf);
        }
        Ok(PublicPost {
            form: parse(&bytes)?,
            ip: client_ip(&parts),
            request_id: request_id(&parts.headers),
            secure: secure(&parts.headers, state.secure_cookies),
            pre_session,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_and_secure() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; kg_session=abc"));
        h.append(header::COOKIE, HeaderValue::from_static("kg_csrf=xyz"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, PRE_SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "kg"), None);
        assert!(!secure(&h, SecureCookies::Auto));
        assert!(secure(&h, SecureCookies::Always));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(secure(&h, SecureCookies::Auto));
        assert!(!secure(&h, SecureCookies::Never));
        let mut f = HeaderMap::new();
        f.insert(header::FORWARDED, HeaderValue::from_static("for=1.2.3.4;proto=https"));
        assert!(secure(&f, SecureCookies::Auto));
        assert_eq!(
            set_cookie("n", "v", Some(60), true),
            "n=v; Path=/console; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        assert_eq!(new_token().len(), 43);
    }
}

//! Cross-site request forgery defences, two independent layers on every state-changing form:
//!
//! 1. The browser's own word: a POST whose `Sec-Fetch-Site` is neither `same-origin` nor `none`,
//!    or whose `Origin` is not this server (or is `null`), is refused. A cross-site form cannot
//!    set those headers, nor `X-Forwarded-Host`, which stands for `Host` behind a proxy.
//! 2. A synchronizer token in a hidden field: for a session, HMAC(console CSRF key, session
//!    token hash); before login (login and sign-up forms), HMAC(key, the random `kg_csrf` cookie),
//!    a signed double submit. Tokens are derived, not stored, and compared in constant time.

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_core::{SecretHash, SecretHasher};
use subtle::ConstantTimeEq;

/// The hidden field's name.
pub const FIELD: &str = "csrf";

fn token(hasher: &SecretHasher, domain: &str, value: &str) -> String {
    URL_SAFE_NO_PAD.encode(hasher.hash(&format!("{domain}:{value}")).as_bytes())
}

/// The token of the forms of a logged-in session.
pub fn for_session(hasher: &SecretHasher, session: &SecretHash) -> String {
    token(hasher, "session", &hex::encode(session.as_bytes()))
}

/// The token of the login and sign-up forms, bound to the pre-session cookie.
pub fn for_pre_session(hasher: &SecretHasher, cookie: &str) -> String {
    token(hasher, "pre-session", cookie)
}

/// Constant-time comparison of a presented token with the expected one.
pub fn matches(presented: Option<&str>, expected: &str) -> bool {
    presented.is_some_and(|p| p.len() == expected.len() && bool::from(p.as_bytes().ct_eq(expected.as_bytes())))
}

fn strip_default_port(authority: &str, scheme: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    a.strip_suffix(default).map(str::to_owned).unwrap_or(a)
}

/// Whether the browser says this request comes from this site (absent headers, as from
/// non-browser clients, are no evidence against: the token still has to match). `uri_authority` is
/// the request URI's (HTTP/2 requests may carry it instead of a `Host` header).
pub fn same_origin(headers: &HeaderMap, uri_authority: Option<&str>) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str(), Ok("same-origin" | "none"))
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split(',').next())
        .or(uri_authority)
        .unwrap_or_default();
    !host.is_empty()
        && strip_default_port(authority, scheme) == strip_default_port(host, scheme)
        && !authority.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origins() {
        assert!(same_origin(&headers(&[("host", "a.example:8080")]), None));
        assert!(same_origin(&headers(&[("host", "a.example:8080"), ("origin", "http://a.example:8080")]), None));
        assert!(same_origin(&headers(&[("host", "A.example"), ("origin", "https://a.example:443")]), None));
        assert!(same_origin(
            &headers(&[
                ("host", "127.0.0.1:9000"),
                ("x-forwarded-host", "console.example"),
                ("origin", "https://console.example")
            ]),
            None
        ));
        assert!(!same_origin(&headers(&[("host", "a.example"), ("origin", "https://evil.example")]), None));
        assert!(!same_origin(&headers(&[("host", "a.example"), ("origin", "null")]), None));
        assert!(!same_origin(&headers(&[("host", "a.example"), ("sec-fetch-site", "cross-site")]), None));
        assert!(!same_origin(&headers(&[("host", "a.example"), ("sec-fetch-site", "same-site")]), None));
        assert!(same_origin(&headers(&[("host", "a.example"), ("sec-fetch-site", "same-origin")]), None));
        assert!(same_origin(&headers(&[("origin", "https://h2.example")]), Some("h2.example")));
        assert!(!same_origin(&headers(&[("origin", "https://h2.example")]), None));
    }

    #[test]
    fn tokens() {
        let m = keygate_core::MasterKey::generate();
        let h = m.console_csrf_hasher();
        let s = m.console_session_hasher().hash("token");
        let t = for_session(&h, &s);
        assert!(matches(Some(&t), &t));
        assert!(!matches(Some(&t[1..]), &t));
        assert!(!matches(None, &t));
        assert_ne!(t, for_session(&h, &m.console_session_hasher().hash("other")));
        assert_ne!(for_pre_session(&h, "c"), for_pre_session(&h, "d"));
    }
}

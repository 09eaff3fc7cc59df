//! The web console's parsers of untrusted text (`keygate_console::fuzzing`): the `Cookie` header
//! (`cookie`), the same-site check (`same_origin`) and `Secure` detection (`secure`), the CSRF
//! comparison (`matches`), form bodies (`application/x-www-form-urlencoded`, as the extractors
//! read them), and what the forms' fields hold: rate limits (`NAME=LIMIT/DURATION` per line),
//! allowlists, expiries, permissions, refills, balances and adjustments, a new key's name and
//! expiry (`creation`).
//! Invariants: nothing panics; a cookie's value is a trimmed, non-empty piece of one header
//! without `;`; a request without `Origin` and `Sec-Fetch-Site` is same-site, one whose
//! `Sec-Fetch-Site` is `cross-site` is not; `matches` is equality; every parser's answer reads
//! back from the form the page shows it in (limits, allowlist, refill, expiry to the minute,
//! adjustment); errors are short (they are shown on the page, with at most 60 characters of
//! what was typed).
//! Input: a first line naming the parser (`cookie`, `origin`, `form`, `limits`, `allowlist`,
//! `expiry`, `permissions`, `refill`, `balance`, `add`, `set`, `creation`), the rest its text
//! (for `cookie` and `origin`: headers, `NAME:VALUE` a line); any other first line: the whole
//! input is tried as each of them.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use keygate_console::SecureCookies;
use keygate_console::fuzzing as f;
use keygate_core::credits::Adjustment;
use libfuzzer_sys::fuzz_target;

/// Longer than any message a form shows: the fixed text plus 60 characters echoed (at most 4
/// bytes each) and a line number.
const MAX_ERROR: usize = 600;

fn short(e: &str) {
    assert!(e.len() <= MAX_ERROR, "an error of {} bytes: {e:?}", e.len());
}

fn headers(text: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in text.split(|b| *b == b'\n').take(16) {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(&line[colon + 1..])) {
            h.append(n, v);
        }
    }
    h
}

fn cookies(raw: &[u8]) {
    let h = headers(raw);
    for name in ["kg_session", "kg_csrf", ""] {
        if let Some(v) = f::cookie(&h, name) {
            assert!(!v.is_empty() && v == v.trim() && !v.contains(';'), "{v:?}");
            let whole = h.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).any(|c| c.contains(v));
            assert!(whole, "{v:?} is in no Cookie header");
        }
    }
    for mode in [SecureCookies::Auto, SecureCookies::Always, SecureCookies::Never] {
        let s = f::secure(&h, mode);
        assert!(match mode {
            SecureCookies::Always => s,
            SecureCookies::Never => !s,
            SecureCookies::Auto => true,
        });
    }
}

fn origin(raw: &[u8]) {
    let h = headers(raw);
    let authority = std::str::from_utf8(raw).ok().and_then(|s| s.lines().last());
    let same = f::same_origin(&h, authority);
    if !h.contains_key(http::header::ORIGIN) && !h.contains_key("sec-fetch-site") {
        assert!(same, "no Origin and no Sec-Fetch-Site: no evidence of another site");
    }
    if h.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site") {
        assert!(!same, "Sec-Fetch-Site: cross-site passed");
    }
}

fn form(raw: &[u8]) {
    if let Ok(fields) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw) {
        // What a form's fields decode to encodes back to the same fields.
        let again = serde_urlencoded::to_string(&fields).expect("fields encode");
        let back: Vec<(String, String)> = serde_urlencoded::from_str(&again).expect("encoded fields decode");
        assert_eq!(back, fields);
        let token = fields.first().map(|(_, v)| v.as_str());
        assert!(f::matches(token, token.unwrap_or("x")) == token.is_some());
        if let Some((_, v)) = fields.first() {
            assert!(!f::matches(Some(v), &format!("{v}x")));
        }
    }
}

fn text_parsers(text: &str, which: Option<&str>) {
    let on = |name: &str| which.is_none_or(|w| w == name);
    if on("limits") {
        match f::parse_limits(text) {
            Ok(set) => assert_eq!(f::parse_limits(&f::limits_lines(&set)), Ok(set)),
            Err(e) => short(&e),
        }
    }
    if on("allowlist") {
        match f::parse_allowlist(text) {
            Ok(list) => assert_eq!(f::parse_allowlist(&f::allowlist_lines(&list)), Ok(list)),
            Err(e) => short(&e),
        }
    }
    if on("expiry") {
        match f::parse_expiry(text) {
            Ok(Some(ms)) => {
                assert!(ms >= 0);
                assert_eq!(f::parse_expiry(&f::expiry_input(ms)), Ok(Some(ms - ms % 60_000)), "{ms}");
            }
            Ok(None) => assert!(text.trim().is_empty()),
            Err(e) => short(&e),
        }
    }
    if on("permissions") {
        for p in f::parse_permissions(text) {
            assert!(!p.is_empty() && !p.contains(',') && !p.contains(char::is_whitespace), "{p:?}");
        }
    }
    if on("refill") {
        match f::parse_refill(text) {
            Ok(Some(r)) => {
                assert_eq!(f::parse_refill(&r.to_string()), Ok(Some(r)), "{r}");
                let _ = f::refill_words(&r);
            }
            Ok(None) => assert!(text.trim().is_empty()),
            Err(e) => short(&e),
        }
    }
    if on("balance") {
        if let Ok(n) = f::parse_balance(text) {
            assert_eq!(f::parse_balance(&n.to_string()), Ok(n));
        }
    }
    for op in ["add", "set"] {
        if on(op) {
            match f::parse_adjustment(op, text) {
                Ok(Adjustment::Add(n)) => {
                    assert_eq!(f::parse_adjustment("add", &n.to_string()), Ok(Adjustment::Add(n)))
                }
                Ok(Adjustment::Set(n)) => {
                    assert_eq!(f::parse_adjustment("set", &n.to_string()), Ok(Adjustment::Set(n)))
                }
                Err(e) => short(&e),
            }
        }
    }
    if on("creation") {
        let (name, expires) = text.split_once('\n').unwrap_or((text, ""));
        match f::creation(name, expires, 1_798_675_200_000) {
            Ok(change) => assert!(change.name.flatten().is_none_or(|n| n == name.trim() && !n.is_empty())),
            Err(e) => short(&e),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (first, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let named = match first {
        b"cookie" => Some("cookie"),
        b"origin" => Some("origin"),
        b"form" => Some("form"),
        b"limits" | b"allowlist" | b"expiry" | b"permissions" | b"refill" | b"balance" | b"add" | b"set"
        | b"creation" => std::str::from_utf8(first).ok(),
        _ => None,
    };
    let input = if named.is_some() { rest } else { data };
    match named {
        Some("cookie") => cookies(input),
        Some("origin") => origin(input),
        Some("form") => form(input),
        Some(which) => {
            if let Ok(text) = std::str::from_utf8(input) {
                text_parsers(text, Some(which));
            }
        }
        None => {
            cookies(input);
            origin(input);
            form(input);
            text_parsers(&String::from_utf8_lossy(input), None);
        }
    }
});

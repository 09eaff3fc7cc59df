//! The real `keygate_auth::Authenticator::authenticate` on a `HeaderMap` built from fuzzed header
//! names and values, against an in-memory SQLite store (`keygate_fuzz::fixture`).
//! Input: one header a line, `NAME:VALUE` (any bytes; the value is everything after the colon,
//! spaces included; repeated names are appended). In a value, `{key:NAME}`, `{token:NAME}` and
//! `{cid:NAME}` stand for a seeded credential's API key, token and clientId (NAME: `good`, `zero`,
//! `revoked`, `rotated-old`, `rotated-new`, `banned`, `limited`, `plain-c`, or an index), and
//! `{token:NAME:POS:BYTE}` for its token with the byte at POS replaced.
//! Invariants: no store error; a request presenting a seeded secret gets exactly what that secret's
//! state says (pass as that credential and method, 1005, 1101, 1200), anything else is refused;
//! asking again gives the same answer (the cached path agrees with the store's); the answer
//! renders (identity headers, RateLimit headers, the refusal's envelope and status).
#![no_main]

use axum_core::response::IntoResponse;
use http::{HeaderMap, HeaderName, HeaderValue};
use keygate_auth::{ApiError, StatusMode};
use keygate_fuzz::{Known, Outcome, fixture};
use libfuzzer_sys::fuzz_target;

fn known(name: &str) -> Option<&'static Known> {
    let known = &fixture().known;
    known.iter().find(|k| k.name == name).or_else(|| known.get(name.parse::<usize>().ok()?))
}

/// What a `{...}` placeholder stands for, if it is one.
fn expand(inner: &str) -> Option<Vec<u8>> {
    let mut parts = inner.split(':');
    let (kind, name) = (parts.next()?, parts.next()?);
    let k = known(name)?;
    let mut out = match kind {
        "key" => k.key.clone().into_bytes(),
        "token" => k.token.clone().into_bytes(),
        "cid" => k.client_id.to_hex().into_bytes(),
        _ => return None,
    };
    if let (Some(pos), Some(byte)) = (parts.next(), parts.next()) {
        let (pos, byte) = (pos.parse::<usize>().ok()?, byte.bytes().next()?);
        let i = pos % out.len();
        out[i] = byte;
    }
    Some(out)
}

fn value(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(open) = rest.iter().position(|b| *b == b'{') {
        out.extend_from_slice(&rest[..open]);
        let after = &rest[open + 1..];
        match after.iter().position(|b| *b == b'}') {
            Some(close) => match std::str::from_utf8(&after[..close]).ok().and_then(expand) {
                Some(v) => {
                    out.extend_from_slice(&v);
                    rest = &after[close + 1..];
                }
                None => {
                    out.push(b'{');
                    rest = after;
                }
            },
            None => {
                out.push(b'{');
                rest = after;
            }
        }
    }
    out.extend_from_slice(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n').take(16) {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(&value(&line[colon + 1..])))
        else {
            continue;
        };
        headers.append(name, value);
    }
    let first = f.authenticate(&headers);
    f.check(&headers, &first);
    // Again: now from the caches (the key's or token's entry), which must agree.
    let second = f.authenticate(&headers);
    assert_eq!(Outcome::of(&first), Outcome::of(&second), "a second, cached answer differs");

    match first {
        Ok(identity) => {
            let mut out = HeaderMap::new();
            identity.set_headers(&mut out);
            identity.set_ratelimit_headers(&mut out);
            let json = serde_json::to_vec(&identity).expect("an identity serialises");
            assert_eq!(serde_json::from_slice::<keygate_auth::Identity>(&json).expect("and reads back"), identity);
        }
        Err(e) => {
            let api = ApiError::from(e);
            let (status, code) = (api.status(), api.code());
            let res = api.into_response();
            assert_eq!(res.status(), status);
            assert_eq!(res.extensions().get::<keygate_core::BusinessCode>(), Some(&code));
            let res = StatusMode::Always200.apply(res);
            assert_eq!(res.status(), http::StatusCode::OK);
        }
    }
});

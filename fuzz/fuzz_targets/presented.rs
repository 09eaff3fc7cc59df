//! `keygate_core::decide::presented`: which credential a request's four headers present.
//! Input: four lines, `Authorization`, `x-api-key`, `x-client-id`, `x-client-secret`; a line
//! starting with `=` is the header with the rest as its value, any other line (or none) is the
//! header absent.
//! Invariants: the value returned is a trimmed, non-empty piece of the header it came from;
//! `Authorization` (when non-empty) alone decides; a Bearer value shaped like one of our keys is an
//! API key; the pair needs both halves.
#![no_main]

use keygate_core::ApiKey;
use keygate_core::decide::{AuthFailure, InvalidReason, Presented, presented};
use libfuzzer_sys::fuzz_target;

/// `part` is a sub-slice of `whole` (not only equal text).
fn within(part: &str, whole: &str) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

fn given(v: Option<&str>) -> bool {
    v.is_some_and(|v| !v.trim().is_empty())
}

fn ok_value(v: &str) {
    assert!(!v.is_empty());
    assert_eq!(v, v.trim());
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n').map(|l| l.strip_prefix('='));
    let mut next = || lines.next().flatten();
    let (authorization, x_api_key, x_client_id, x_client_secret) = (next(), next(), next(), next());
    let result = presented(authorization, x_api_key, x_client_id, x_client_secret);
    if let Err(f) = result {
        let _ = (f.code().as_u32(), f.reason());
    }
    if given(authorization) {
        let auth = authorization.unwrap();
        // Authorization wins: the other headers change nothing.
        assert_eq!(result, presented(authorization, None, None, None));
        match result {
            Ok(Presented::ApiKey(v)) => {
                ok_value(v);
                assert!(within(v, auth) && ApiKey::has_prefix(v));
            }
            Ok(Presented::Bearer(v)) => {
                ok_value(v);
                assert!(within(v, auth) && !ApiKey::has_prefix(v));
            }
            Ok(Presented::ClientPair { .. }) => panic!("a pair from Authorization"),
            Err(AuthFailure::Missing) | Err(AuthFailure::Invalid(InvalidReason::UnsupportedScheme)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
        if let Ok(Presented::ApiKey(v) | Presented::Bearer(v)) = result {
            let scheme = auth.trim().split_once(' ').map(|(s, _)| s);
            assert!(scheme.is_some_and(|s| s.eq_ignore_ascii_case("bearer")));
            // The value is what follows the scheme; the scheme and value again give the same answer.
            let again = format!("Bearer {v}");
            assert_eq!(presented(Some(&again), None, None, None), result);
        }
        return;
    }
    if given(x_api_key) {
        let key = x_api_key.unwrap();
        match result {
            Ok(Presented::ApiKey(v)) => {
                ok_value(v);
                assert!(within(v, key));
                assert_eq!(v, key.trim());
            }
            other => panic!("x-api-key given, got {other:?}"),
        }
        return;
    }
    match (given(x_client_id), given(x_client_secret)) {
        (true, true) => match result {
            Ok(Presented::ClientPair { client_id, secret }) => {
                ok_value(client_id);
                ok_value(secret);
                assert!(within(client_id, x_client_id.unwrap()) && within(secret, x_client_secret.unwrap()));
            }
            other => panic!("pair given, got {other:?}"),
        },
        _ => assert_eq!(result, Err(AuthFailure::Missing)),
    }
});

//! getToken's body (`POST /api/open/v3/getToken`): the server's own parser
//! (`keygate_server::routes::extract::parse`) into its own `GetTokenRequest`, then, as the handler
//! does, `Authenticator::issue_token` with the two fields against the in-memory fixture (whose
//! fixed clientIds and keys the seed corpus carries).
//! Invariants: only a JSON object parses; a refusal's message never contains the input (it names
//! a position and a kind of problem); a token is issued exactly for a seeded pair whose state
//! lets it in, and that token verifies and authenticates as the same credential.
#![no_main]

use http::{HeaderMap, HeaderValue, header};
use keygate_auth::{ApiError, AuthError};
use keygate_core::decide::AuthFailure;
use keygate_fuzz::{Expect, Outcome, fixture};
use keygate_server::routes::extract;
use keygate_server::routes::protocol::GetTokenRequest;
use libfuzzer_sys::fuzz_target;

/// The two fields, read as the server's `GetTokenRequest` reads them (its fields are private).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields {
    client_id: Option<String>,
    client_secret: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    let parsed = extract::parse::<GetTokenRequest>(data);
    let req = match parsed {
        Err(ApiError::BadRequest(msg)) => {
            let shape = msg.split(" (line ").next().unwrap_or_default();
            assert!(
                [
                    "request body must be a JSON object",
                    "request body is not valid JSON",
                    "request body has a field of the wrong type or is missing one",
                ]
                .contains(&shape),
                "unexpected message {msg:?}"
            );
            if let Some(pos) = msg.strip_prefix(shape) {
                assert!(pos.is_empty() || pos.chars().all(|c| c.is_ascii_digit() || " (line,column)".contains(c)));
            }
            return;
        }
        Err(other) => panic!("a body is refused as bad request only, not {other:?}"),
        // (serde skips the fields it does not know without checking their numbers or UTF-8, so
        // a body that parses is not always one `serde_json::Value` reads.)
        Ok(_) => serde_json::from_slice::<Fields>(data).expect("the fields read as the server reads them"),
    };
    assert_eq!(data.iter().find(|b| !b.is_ascii_whitespace()), Some(&b'{'), "parsed a body that is not an object");
    let (client_id, secret) = (req.client_id.unwrap_or_default(), req.client_secret.unwrap_or_default());

    let f = fixture();
    f.auth.feed_succeeded();
    let issued = f.rt.block_on(f.auth.issue_token(&client_id, &secret));
    let (cid, secret) = (client_id.trim(), secret.trim());
    let expect = if cid.is_empty() || secret.is_empty() {
        None
    } else {
        f.known
            .iter()
            .find(|k| k.key == secret)
            .map(|k| (k, if k.client_id.to_hex() == cid { k.key_expect } else { Expect::Invalid }))
    };
    match (&issued, expect) {
        (Err(AuthError::Refused(AuthFailure::Missing)), None) if cid.is_empty() || secret.is_empty() => {}
        (Err(AuthError::Refused(AuthFailure::Invalid(_))), None) if !cid.is_empty() && !secret.is_empty() => {}
        (Ok(token), Some((k, Expect::Pass))) => {
            let subject =
                f.auth.keyring().verify(token, keygate_store::now_ms() / 1000).expect("issued token verifies");
            assert_eq!((subject.client_id, subject.account_id), (k.client_id, k.account_id));
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
            let got = f.authenticate(&h);
            assert!(matches!(Outcome::of(&got), Outcome::Pass { client_id, .. } if client_id == k.client_id));
        }
        (Err(AuthError::Limited(_)), Some((_, Expect::Limited))) => {}
        (Err(AuthError::Refused(AuthFailure::Invalid(_))), Some((_, Expect::Invalid))) => {}
        (Err(AuthError::Refused(AuthFailure::Banned)), Some((_, Expect::Banned))) => {}
        (got, want) => panic!("getToken for ({cid:?}, {secret:?}): got {got:?}, want {:?}", want.map(|w| w.1)),
    }
});

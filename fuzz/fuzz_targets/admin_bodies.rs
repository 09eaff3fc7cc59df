//! The admin API's request bodies and path parameters.
//!
//! The server's body types are `pub(crate)`, so this target parses into copies of their shapes
//! (same serde attributes, `crates/server/src/routes/admin.rs`) with the server's own parser
//! (`keygate_server::routes::extract::parse`, public), then runs the public validation the handlers
//! and `keygate_ops` apply to the fields: `ratelimit::validate`, `valid_name`, `validate_email`,
//! `parse_grace`, `parse_account_id` / `parse_client_id`; and reads the public answer types a
//! client parses (`Identity`, `Account`, `Credential`, `Plan`, `EffectiveLimit`).
//! Invariants: the OpenAPI patterns the server publishes (`GRACE_PATTERN`, `NAME_PATTERN`,
//! `WINDOW_PATTERN`) agree with the parsers; ids round-trip; answers round-trip through JSON.
//! Input: a first line naming what the rest is (`create-account`, `account-patch`, `ban`,
//! `credential-patch`, `rotate`, `plan`, `id`, `grace`, `name`, `identity`, `account`,
//! `credential`, `plan-answer`, `effective`); any other first line: the whole input is tried as
//! each of them.
#![no_main]

use std::sync::OnceLock;

use keygate_auth::Identity;
use keygate_core::AccountId;
use keygate_core::model::{Account, Credential, Plan};
use keygate_core::ratelimit::{self, EffectiveLimit, RateLimit, Window};
use keygate_server::routes::extract;
use libfuzzer_sys::fuzz_target;
use regex::Regex;
use serde::Deserialize;
use serde::de::DeserializeOwned;

// Copies of the admin API's body shapes.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct CreateAccount {
    email: String,
    #[serde(default)]
    first_name: String,
}

fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AccountPatch {
    ratelimits: Option<Vec<RateLimit>>,
    #[serde(default, deserialize_with = "present")]
    plan: Option<Option<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BanRequest {
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CredentialPatch {
    ratelimits: Option<Vec<RateLimit>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateRequest {
    grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PlanBody {
    ratelimits: Vec<RateLimit>,
}

struct Patterns {
    grace: Regex,
    name: Regex,
    window: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        grace: Regex::new(keygate_ops::GRACE_PATTERN).unwrap(),
        name: Regex::new(ratelimit::NAME_PATTERN).unwrap(),
        window: Regex::new(ratelimit::WINDOW_PATTERN).unwrap(),
    })
}

fn body<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    match extract::parse::<T>(data) {
        Ok(t) => {
            // Only an object (serde would also fill a struct from an array of its fields).
            assert_eq!(data.iter().find(|b| !b.is_ascii_whitespace()), Some(&b'{'));
            Some(t)
        }
        Err(keygate_auth::ApiError::BadRequest(msg)) => {
            assert!(msg.starts_with("request body "), "{msg:?}");
            None
        }
        Err(other) => panic!("refused as {other:?}"),
    }
}

/// An optional body as `OptionalJson` reads it: empty, white space or `null` is the default.
fn optional_body<T: DeserializeOwned + Default>(data: &[u8]) -> Option<T> {
    let text = data.trim_ascii();
    if text.is_empty() || text == b"null" { Some(T::default()) } else { body(data) }
}

fn check_set(set: &[RateLimit]) {
    if ratelimit::validate(set).is_ok() {
        for l in set {
            check_name(&l.name);
            assert!(patterns().name.is_match(&l.name));
            assert_eq!(l.to_string().parse::<RateLimit>().as_ref(), Ok(l));
        }
    }
}

fn check_name(s: &str) {
    assert_eq!(ratelimit::valid_name(s), patterns().name.is_match(s), "NAME_PATTERN and valid_name differ on {s:?}");
}

fn check_grace(s: &str) {
    let parsed = keygate_ops::parse_grace(s);
    assert_eq!(
        parsed.is_ok(),
        patterns().grace.is_match(s),
        "GRACE_PATTERN and parse_grace differ on {s:?}: {parsed:?}"
    );
    if let Ok(d) = parsed {
        assert!(d <= keygate_ops::MAX_GRACE);
    }
    if let Ok(w) = s.parse::<Window>() {
        assert!(patterns().window.is_match(s), "WINDOW_PATTERN refuses the window {s:?}");
        assert!(patterns().window.is_match(&w.to_string()));
    }
}

fn check_id(s: &str) {
    if let Ok(id) = keygate_ops::parse_account_id(s) {
        assert_eq!(id.to_hex(), s);
        assert_eq!(s.parse::<AccountId>(), Ok(id));
        assert_eq!(serde_json::from_value::<AccountId>(s.into()).unwrap(), id);
    }
    if let Ok(id) = keygate_ops::parse_client_id(s) {
        assert_eq!(id.to_hex(), s);
        assert_eq!(id.to_string(), s);
        assert_eq!(serde_json::to_value(id).unwrap(), serde_json::Value::from(s));
    }
}

fn round_trip<T: DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let json = serde_json::to_vec(&v).expect("serialises");
        let again: T = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{v:?} does not read back: {e}"));
        assert_eq!(again, v);
    }
}

const KINDS: [&str; 14] = [
    "create-account",
    "account-patch",
    "ban",
    "credential-patch",
    "rotate",
    "plan",
    "id",
    "grace",
    "name",
    "identity",
    "account",
    "credential",
    "plan-answer",
    "effective",
];

fn check(kind: &str, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match kind {
        "create-account" => {
            if let Some(req) = body::<CreateAccount>(data)
                && let Ok(email) = keygate_ops::validate_email(&req.email)
            {
                assert_eq!(email, req.email.trim());
                assert!(email.contains('@') && email.len() <= 254);
            }
        }
        "account-patch" => {
            if let Some(req) = body::<AccountPatch>(data) {
                if let Some(set) = &req.ratelimits {
                    check_set(set);
                }
                if let Some(Some(plan)) = &req.plan {
                    check_name(plan);
                }
            }
        }
        "ban" => {
            let _ = optional_body::<BanRequest>(data).map(|b| b.reason.map(|r| r.trim().chars().count()));
        }
        "credential-patch" => {
            if let Some(CredentialPatch { ratelimits: Some(set) }) = body::<CredentialPatch>(data) {
                check_set(&set);
            }
        }
        "rotate" => {
            if let Some(req) = optional_body::<RotateRequest>(data) {
                check_grace(req.grace.as_deref().unwrap_or_default());
            }
        }
        "plan" => {
            if let Some(req) = body::<PlanBody>(data) {
                check_set(&req.ratelimits);
            }
        }
        "id" => check_id(&text),
        "grace" => check_grace(&text),
        "name" => check_name(&text),
        "identity" => round_trip::<Identity>(data),
        "account" => round_trip::<Account>(data),
        "credential" => round_trip::<Credential>(data),
        "plan-answer" => round_trip::<Plan>(data),
        "effective" => round_trip::<Vec<EffectiveLimit>>(data),
        _ => unreachable!("{kind}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let (first, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    match KINDS.iter().find(|k| k.as_bytes() == first) {
        Some(kind) => check(kind, rest),
        None => {
            for kind in KINDS {
                check(kind, data);
            }
        }
    }
});

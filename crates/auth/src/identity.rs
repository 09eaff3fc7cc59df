//! Who an authenticated request is, and the HTTP headers that carry credentials in and the
//! identity on (to an upstream, or back to the proxy that asked `/auth/verify`).

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, header};
use keygate_core::model::AuthMethod;
use keygate_core::{AccountId, ClientId};
use serde::{Deserialize, Serialize};

/// Who an authenticated request is. The tower Layer puts it in the request's extensions; handlers
/// take it as an extractor (`async fn h(identity: Identity)`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub account_id: AccountId,
    pub uid: i64,
    pub client_id: ClientId,
    pub method: AuthMethod,
    /// Where each rate limit that applies stands after this request (absent when none applies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ratelimits: Vec<crate::ratelimit::LimitStatus>,
    /// The credits left after this request, as the deciding process knows it (exact on one node;
    /// with several, what the database held at this process's last lease plus what it holds):
    /// the smallest of the balances charged. Absent when no balance applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits_remaining: Option<i64>,
    /// The credential's name, effective permissions and metadata (shared by its requests).
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Profile))]
    pub profile: Arc<Profile>,
}

/// What a credential says about itself to the upstream and in `/auth/verify`'s answer: its name,
/// the permissions it holds (its own and its roles', wildcards as granted) and its metadata. Made
/// once when the credential is loaded, with its header values.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub meta: Option<serde_json::Value>,
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    headers: ProfileHeaders,
    /// `permissions` and `meta` as JSON text, made once: a request's answer copies them.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    json: ProfileJson,
}

#[derive(Debug, Clone, Default)]
struct ProfileJson {
    permissions: Option<Box<serde_json::value::RawValue>>,
    meta: Option<Box<serde_json::value::RawValue>>,
}

/// Made from the same fields, so the same whenever they are.
impl PartialEq for ProfileJson {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for ProfileJson {}

/// As a derived one would (`name`, `permissions`, `meta`, each only when present), with the
/// permissions and the metadata written from their JSON made once.
impl Serialize for Profile {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        if let Some(name) = &self.name {
            map.serialize_entry("name", name)?;
        }
        match &self.json.permissions {
            Some(raw) => map.serialize_entry("permissions", raw)?,
            None if !self.permissions.is_empty() => map.serialize_entry("permissions", &self.permissions)?,
            None => {}
        }
        match (&self.json.meta, &self.meta) {
            (Some(raw), _) => map.serialize_entry("meta", raw)?,
            (None, Some(meta)) => map.serialize_entry("meta", meta)?,
            (None, None) => {}
        }
        map.end()
    }
}

/// The profile's identity headers, made once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProfileHeaders {
    name: Option<HeaderValue>,
    permissions: Option<HeaderValue>,
    meta: Option<HeaderValue>,
}

impl Profile {
    pub fn of(c: &keygate_core::decide::CredentialState) -> Self {
        let permissions: Vec<String> = c.grants.iter().map(str::to_owned).collect();
        let meta = c.meta.as_deref().and_then(|m| serde_json::from_str(m).ok());
        let headers = ProfileHeaders {
            name: c.name.as_deref().and_then(|n| HeaderValue::from_str(&percent_encode(n)).ok()),
            permissions: (!permissions.is_empty())
                .then(|| HeaderValue::from_str(&permissions.join(",")).ok())
                .flatten(),
            meta: c.meta.as_deref().and_then(|m| HeaderValue::from_str(&ascii_json(m)).ok()),
        };
        let json = ProfileJson {
            permissions: (!permissions.is_empty())
                .then(|| serde_json::value::to_raw_value(&permissions).ok())
                .flatten(),
            meta: meta.as_ref().and_then(|m| serde_json::value::to_raw_value(m).ok()),
        };
        Self { name: c.name.clone(), permissions, meta, headers, json }
    }
}

/// A name as a header value: `%`, control characters and everything outside ASCII
/// percent-encoded as UTF-8 bytes (RFC 3986), the rest as it is.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// JSON text with every character outside ASCII written as a `\u` escape (still the same JSON),
/// so that it is a valid header value.
fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// `x-api-key: {API Key}`, the vendor's recommended method.
pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// The legacy pair, as headers.
pub static X_CLIENT_ID: HeaderName = HeaderName::from_static("x-client-id");
pub static X_CLIENT_SECRET: HeaderName = HeaderName::from_static("x-client-secret");

/// Every header a credential can arrive in (the gateway strips them before forwarding).
pub fn credential_headers() -> [&'static HeaderName; 4] {
    [&header::AUTHORIZATION, &X_API_KEY, &X_CLIENT_ID, &X_CLIENT_SECRET]
}

pub static H_ACCOUNT_ID: HeaderName = HeaderName::from_static("x-keygate-account-id");
pub static H_UID: HeaderName = HeaderName::from_static("x-keygate-uid");
pub static H_CLIENT_ID: HeaderName = HeaderName::from_static("x-keygate-client-id");
pub static H_METHOD: HeaderName = HeaderName::from_static("x-keygate-auth-method");
/// The credits left after the request (only where a balance applies).
pub static H_CREDITS_REMAINING: HeaderName = HeaderName::from_static("x-keygate-credits-remaining");
/// The credential's name, percent-encoded where it is not printable ASCII (only when it has one).
pub static H_KEY_NAME: HeaderName = HeaderName::from_static("x-keygate-key-name");
/// The permissions the credential holds, comma-separated (only when it holds any).
pub static H_PERMISSIONS: HeaderName = HeaderName::from_static("x-keygate-permissions");
/// The credential's metadata, as JSON in ASCII (only when it has some).
pub static H_META: HeaderName = HeaderName::from_static("x-keygate-meta");
/// The permissions a request requires, as the proxy asking `/auth/verify` says (an expression:
/// `videos.create AND (images.read OR admin)`).
pub static X_KEYGATE_REQUIRE: HeaderName = HeaderName::from_static("x-keygate-require");
/// What a request costs, in credits, as the proxy asking `/auth/verify` says (default 1).
pub static X_KEYGATE_COST: HeaderName = HeaderName::from_static("x-keygate-cost");
/// Every identity header starts with this; a client's own are dropped before keygate sets them.
pub const IDENTITY_HEADER_PREFIX: &str = "x-keygate-";

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What a request costs in credits, as a request extension: set it before the Layer (an
/// earlier layer or a router's per-route layer) to override the Layer's own cost for the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost(pub u64);

/// The cost `/auth/verify`'s caller asks for in `x-keygate-cost` (absent: 1).
pub fn cost_header(h: &HeaderMap) -> Result<u64, crate::envelope::ApiError> {
    let Some(v) = h.get(&X_KEYGATE_COST) else { return Ok(1) };
    let max = keygate_core::credits::MAX_CREDITS as u64;
    v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).filter(|c| *c <= max).ok_or_else(|| {
        crate::envelope::ApiError::BadRequest(format!(
            "x-keygate-cost must be a whole number of credits from 0 to {max}"
        ))
    })
}

/// The permissions a request requires, as a request extension: set it before the Layer (a
/// router's per-route layer) to override the Layer's own requirement for the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Require(pub Arc<keygate_core::permission::Requirement>);

/// The client's address, as a request extension the Layer reads for IP allowlists (set it from
/// axum's `ConnectInfo` or from a trusted proxy's header; absent, no allowlisted key is let in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub std::net::IpAddr);

/// The requirement `/auth/verify`'s caller sets in `x-keygate-require` (absent or empty: none).
///
/// A proxy sends the same few requirements (one per location) over and over, and parsing one
/// costs more than the rest of the decision, so each thread keeps the last [`PARSED_KEPT`] it
/// parsed, by their exact text (a value not among them is parsed and replaces the oldest; a
/// malformed one is parsed every time, never kept).
pub fn require_header(
    h: &HeaderMap,
) -> Result<Option<Arc<keygate_core::permission::Requirement>>, crate::envelope::ApiError> {
    use keygate_core::permission::Requirement;
    /// The requirements parsed last, by their text, oldest first.
    type Kept = std::collections::VecDeque<(Box<[u8]>, Arc<Requirement>)>;
    thread_local! {
        static PARSED: std::cell::RefCell<Kept> = const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
    }
    let Some(v) = h.get(&X_KEYGATE_REQUIRE) else { return Ok(None) };
    let kept = PARSED.with_borrow(|p| p.iter().find(|(text, _)| **text == *v.as_bytes()).map(|(_, r)| r.clone()));
    if kept.is_some() {
        return Ok(kept);
    }
    let text = v.to_str().map_err(|_| {
        crate::envelope::ApiError::BadRequest("x-keygate-require must be a permission expression in ASCII".into())
    })?;
    // An empty value requires nothing, as an absent header (a proxy's placeholder for a path
    // without a requirement may expand to nothing).
    if text.trim().is_empty() {
        return Ok(None);
    }
    let parsed: Arc<Requirement> = Arc::new(text.parse().map_err(|e: keygate_core::permission::PermissionError| {
        crate::envelope::ApiError::BadRequest(format!("x-keygate-require: {e}"))
    })?);
    PARSED.with_borrow_mut(|p| {
        if p.len() == PARSED_KEPT {
            p.pop_front();
        }
        p.push_back((text.as_bytes().into(), parsed.clone()));
    });
    Ok(Some(parsed))
}

/// How many parsed `x-keygate-require` values each thread keeps (see [`require_header`]).
pub const PARSED_KEPT: usize = 16;

impl Identity {
    /// Sets the `x-keygate-*` identity headers: on `/auth/verify` answers, and on requests the
    /// gateway forwards upstream.
    pub fn set_headers(&self, h: &mut HeaderMap) {
        h.insert(&H_ACCOUNT_ID, HeaderValue::from_bytes(&self.account_id.hex_bytes()).expect("hex is a valid header"));
        h.insert(&H_UID, HeaderValue::from(self.uid));
        h.insert(&H_CLIENT_ID, HeaderValue::from_bytes(&self.client_id.hex_bytes()).expect("hex is a valid header"));
        h.insert(&H_METHOD, HeaderValue::from_static(self.method.as_str()));
        if let Some(left) = self.credits_remaining {
            h.insert(&H_CREDITS_REMAINING, HeaderValue::from(left));
        }
        let p = &self.profile.headers;
        for (name, value) in [(&H_KEY_NAME, &p.name), (&H_PERMISSIONS, &p.permissions), (&H_META, &p.meta)] {
            if let Some(v) = value {
                h.insert(name, v.clone());
            }
        }
    }

    /// Sets `RateLimit-Policy` and `RateLimit` for the limits that apply (none: nothing).
    pub fn set_ratelimit_headers(&self, h: &mut HeaderMap) {
        crate::ratelimit::set_headers(&self.ratelimits, h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_require(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(&X_KEYGATE_REQUIRE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_requirement_sent_again_is_parsed_once_per_thread() {
        let h = with_require("videos.create AND (images.read OR admin)");
        let first = require_header(&h).unwrap().unwrap();
        let again = require_header(&h).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the second is the kept one");
        assert_eq!(*first, "videos.create AND (images.read OR admin)".parse().unwrap());
        // Another text is another requirement, even one that means the same.
        let other = require_header(&with_require("(images.read OR admin) AND videos.create")).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
    }

    #[test]
    fn more_requirements_than_are_kept_are_each_still_what_they_say() {
        let texts: Vec<String> = (0..PARSED_KEPT * 3).map(|i| format!("svc{i}.read OR admin")).collect();
        for _ in 0..2 {
            for t in &texts {
                let got = require_header(&with_require(t)).unwrap().unwrap();
                assert_eq!(*got, t.parse().unwrap(), "{t}");
            }
        }
    }

    #[test]
    fn malformed_and_empty_requirements_are_never_kept() {
        for _ in 0..3 {
            assert!(require_header(&with_require("videos.create AND")).is_err());
            assert!(require_header(&with_require("  ")).unwrap().is_none());
        }
        assert!(require_header(&HeaderMap::new()).unwrap().is_none());
        let mut h = HeaderMap::new();
        h.insert(&X_KEYGATE_REQUIRE, HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert!(require_header(&h).is_err(), "not ASCII");
    }
}

#[cfg(test)]
mod profile_tests {
    use super::*;
    use keygate_core::decide::CredentialState;

    /// The answer's JSON is what the fields say, whether written from the JSON made once or not.
    #[test]
    fn a_profile_serializes_as_its_fields() {
        let mut c = CredentialState::new(ClientId::generate(1), AccountId::generate(1));
        assert_eq!(serde_json::to_value(Profile::of(&c)).unwrap(), serde_json::json!({}));
        c.name = Some("ci \"bot\" é".into());
        c.meta = Some(r#"{"team":"vidéo","n":[1,2]}"#.into());
        c.grants = keygate_core::permission::Grants::new(["videos.*", "images.read"].map(String::from)).unwrap();
        let p = Profile::of(&c);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "name": "ci \"bot\" é",
                "permissions": p.permissions,
                "meta": {"team": "vidéo", "n": [1, 2]},
            })
        );
        assert_eq!(p.permissions.len(), 2);
        // And back, as the SDK reads it.
        let back: Profile = serde_json::from_value(v).unwrap();
        assert_eq!((back.name, back.permissions, back.meta), (p.name.clone(), p.permissions.clone(), p.meta.clone()));
    }
}

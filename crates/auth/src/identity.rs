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
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
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
        Self { name: c.name.clone(), permissions, meta, headers }
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
pub fn require_header(
    h: &HeaderMap,
) -> Result<Option<keygate_core::permission::Requirement>, crate::envelope::ApiError> {
    let Some(v) = h.get(&X_KEYGATE_REQUIRE) else { return Ok(None) };
    let text = v.to_str().map_err(|_| {
        crate::envelope::ApiError::BadRequest("x-keygate-require must be a permission expression in ASCII".into())
    })?;
    // An empty value requires nothing, as an absent header (a proxy's placeholder for a path
    // without a requirement may expand to nothing).
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e: keygate_core::permission::PermissionError| {
        crate::envelope::ApiError::BadRequest(format!("x-keygate-require: {e}"))
    })
}

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

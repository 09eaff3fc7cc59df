//! Who an authenticated request is, and the HTTP headers that carry credentials in and the
//! identity on (to an upstream, or back to the proxy that asked `/auth/verify`).

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
    }

    /// Sets `RateLimit-Policy` and `RateLimit` for the limits that apply (none: nothing).
    pub fn set_ratelimit_headers(&self, h: &mut HeaderMap) {
        crate::ratelimit::set_headers(&self.ratelimits, h);
    }
}

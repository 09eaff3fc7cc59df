//! The one error type of keygate's HTTP answers and the one response envelope,
//! `{"code", "msg", ...}`, shared by `/auth/verify`, getToken, the gateway, the tower Layer and the
//! admin API.
//!
//! The business code and HTTP status of an answer are decided here and nowhere else
//! ([`ApiError::code`], [`ApiError::status`], [`StatusMode`]). A 5xx body never carries its cause
//! (the log does), and an authentication failure's body never says which check failed.

use axum_core::body::Body;
use axum_core::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use keygate_core::BusinessCode;
use keygate_core::decide::{AuthFailure, InvalidReason};
use keygate_store::StoreError;
use serde::{Deserialize, Serialize};

use crate::authenticator::AuthError;

/// The response envelope. `data` is present on success with a payload; `next`, on a page of a
/// list that goes on, is the cursor to pass as `after` for the next page.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope<T: Serialize> {
    pub code: BusinessCode,
    pub msg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `value` as a JSON response with `status`.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    // Most answers fit: one allocation instead of growing from serde_json's 128 bytes.
    let mut body = Vec::with_capacity(512);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => {
            let mut res = Response::new(Body::from(body));
            *res.status_mut() = status;
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            res
        }
        Err(e) => ApiError::Internal(format!("serialising a response: {e}")).into_response(),
    }
}

/// A success envelope `{"code":1000,"msg":"OK","data":...}` with HTTP 200.
pub fn ok<T: Serialize>(data: T) -> Response {
    created_with(StatusCode::OK, data)
}

/// A success envelope with another 2xx status (201 for a creation).
pub fn created_with<T: Serialize>(status: StatusCode, data: T) -> Response {
    let msg = BusinessCode::Success.default_msg();
    json(status, &Envelope { code: BusinessCode::Success, msg, data: Some(data), next: None })
}

/// A page of a list: `data` the items, `next` the cursor of the next page (absent on the last).
pub fn page<T: Serialize>(items: Vec<T>, next: Option<String>) -> Response {
    let msg = BusinessCode::Success.default_msg();
    json(StatusCode::OK, &Envelope { code: BusinessCode::Success, msg, data: Some(items), next })
}

/// What a "not found" answer is about. Only a missing account has a code of its own (the vendor's
/// 1109); the others are parameter errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Account,
    Credential,
    SigningKey,
    Plan,
    Role,
    /// No endpoint (or gateway route) at this path.
    Route,
}

impl Resource {
    /// The message of a "not found" answer about this.
    pub fn not_found(self) -> &'static str {
        match self {
            Self::Account => "account not found",
            Self::Credential => "credential not found",
            Self::SigningKey => "no such signing key",
            Self::Plan => "plan not found",
            Self::Role => "role not found",
            Self::Route => "route not found",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Credential => "credential",
            Self::SigningKey => "signing key",
            Self::Plan => "plan",
            Self::Role => "role",
            Self::Route => "route",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Authentication refused (1101 / 1102 / 1200).
    #[error("authentication failed: {}", .0.reason())]
    Auth(AuthFailure),
    /// A rate limit refused the request (1005, HTTP 429 with `Retry-After` and `RateLimit`).
    #[error("rate limited by {:?}", .0.refused_by)]
    RateLimited(Box<crate::ratelimit::Limited>),
    /// The credits left do not cover the request (1006, HTTP 402: retrying will not help until
    /// the balance is topped up or refilled).
    #[error("insufficient credits: {} left, the request costs {}", .0.remaining, .0.cost)]
    NoCredits(crate::authenticator::NoCredits),
    /// The credential may not do this, or not from here (1009, HTTP 403).
    #[error("permission denied: {:?}", .0.denial)]
    Denied(Box<crate::authenticator::Denied>),
    /// Bad input (1003), with a message safe to show.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Body over the configured limit (1003, HTTP 413).
    #[error("request body too large")]
    TooLarge,
    #[error("{}", .0.not_found())]
    NotFound(Resource),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller is authenticated but may not do this (1009).
    #[error("permission denied")]
    Forbidden,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The client sent its request body too slowly (HTTP 408).
    #[error("request timeout: {0}")]
    RequestTimeout(String),
    /// The client went away before its request was complete (nginx's 499).
    #[error("client closed the request: {0}")]
    ClientClosed(String),
    /// The upstream refused, reset or closed the connection.
    #[error("upstream unavailable: {0}")]
    BadGateway(String),
    /// The upstream did not answer in time.
    #[error("upstream timed out: {0}")]
    GatewayTimeout(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // Callers name what was not found (`ApiError::NotFound`); one that did not expect it
            // to be missing meets a bug, not bad input.
            StoreError::NotFound => Self::Internal("the store found nothing where something was expected".into()),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Other(m) => Self::Internal(m),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Refused(f) => Self::Auth(f),
            AuthError::Store(e) => e.into(),
            AuthError::Limited(l) => Self::RateLimited(l),
            AuthError::NoCredits(n) => Self::NoCredits(*n),
            AuthError::Denied(d) => Self::Denied(d),
        }
    }
}

impl ApiError {
    pub fn code(&self) -> BusinessCode {
        match self {
            Self::Auth(f) => f.code(),
            Self::RateLimited(_) => BusinessCode::TooFrequent,
            Self::NoCredits(_) => BusinessCode::InsufficientQuota,
            Self::BadRequest(_) | Self::TooLarge | Self::Conflict(_) => BusinessCode::ParamError,
            // The vendor's "account does not exist"; other missing things are parameter errors.
            Self::NotFound(Resource::Account) => BusinessCode::AccountNotFound,
            Self::NotFound(_) | Self::MethodNotAllowed => BusinessCode::ParamError,
            Self::Forbidden | Self::Denied(_) => BusinessCode::PermissionDenied,
            Self::Unavailable(_) => BusinessCode::Unavailable,
            Self::Internal(_) => BusinessCode::Internal,
            Self::BadGateway(_) => BusinessCode::UpstreamUnavailable,
            Self::GatewayTimeout(_) => BusinessCode::UpstreamTimeout,
            Self::RequestTimeout(_) => BusinessCode::RequestTimeout,
            Self::ClientClosed(_) => BusinessCode::ClientClosed,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Auth(AuthFailure::Banned) => StatusCode::FORBIDDEN,
            Self::Auth(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::NoCredits(_) => StatusCode::PAYMENT_REQUIRED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Forbidden | Self::Denied(_) => StatusCode::FORBIDDEN,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::ClientClosed(_) => StatusCode::from_u16(499).expect("499 is a valid status"),
        }
    }
}

/// An answer without data: every refusal and error (the business code and a message safe to
/// show), and plain successes such as `/healthz`.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Outcome<'a> {
    pub code: BusinessCode,
    pub msg: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let msg: String = match &self {
            Self::BadRequest(m) | Self::Conflict(m) => m.clone(),
            Self::NotFound(what) => what.not_found().into(),
            Self::TooLarge => "Request body too large".into(),
            Self::MethodNotAllowed => "Method not allowed".into(),
            Self::Unavailable(cause)
            | Self::Internal(cause)
            | Self::BadGateway(cause)
            | Self::GatewayTimeout(cause) => {
                tracing::error!(code = code.as_u32(), %cause, "request failed");
                code.default_msg().into()
            }
            // The client's doing, not a fault of keygate or the upstream: no error in the log.
            Self::RequestTimeout(cause) | Self::ClientClosed(cause) => {
                tracing::info!(code = code.as_u32(), %cause, "request abandoned by the client");
                code.default_msg().into()
            }
            // Which limit, and when to retry: the caller's own limits, nothing about others.
            Self::RateLimited(l) => match l.retry_after {
                Some(secs) => {
                    format!("{}: rate limit {} (retry after {secs} s)", code.default_msg(), names(&l.refused_by))
                }
                None => format!("{}: rate limit {} allows no requests", code.default_msg(), names(&l.refused_by)),
            },
            // What the request costs and what is left: the caller's own balance.
            Self::NoCredits(n) => {
                format!(
                    "{}: the request costs {} and {} credits are left",
                    code.default_msg(),
                    n.cost,
                    n.remaining.max(0)
                )
            }
            // What was required, so the customer knows what to ask for; never what else the
            // key holds, nor an allowlist.
            Self::Denied(d) => match (&d.denial, &d.required) {
                (keygate_core::decide::Denial::Permission, Some(required)) => {
                    format!("{}: requires {required}", code.default_msg())
                }
                _ => format!("{}: this key may not be used from this address", code.default_msg()),
            },
            // A key its owner can fix: said plainly (a revoked or unknown key stays generic).
            Self::Auth(AuthFailure::Invalid(InvalidReason::Expired)) => {
                format!("{}: the API key has expired", code.default_msg())
            }
            Self::Auth(AuthFailure::Invalid(InvalidReason::Disabled)) => {
                format!("{}: the API key is disabled", code.default_msg())
            }
            _ => code.default_msg().into(),
        };
        let mut res = json(self.status(), &Outcome { code, msg: &msg });
        if let Self::RateLimited(l) = &self {
            if let Some(secs) = l.retry_after {
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            crate::ratelimit::set_headers(&l.statuses, res.headers_mut());
        }
        if let Self::NoCredits(n) = &self {
            res.headers_mut().insert(&crate::identity::H_CREDITS_REMAINING, HeaderValue::from(n.remaining.max(0)));
        }
        // For the access log and metrics.
        res.extensions_mut().insert(code);
        // RFC 6750 section 3: a protected resource answers 401 with a Bearer challenge.
        if let Self::Auth(f) = self {
            let challenge = match f {
                AuthFailure::Missing => r#"Bearer realm="keygate""#,
                AuthFailure::Invalid(_) => r#"Bearer realm="keygate", error="invalid_token""#,
                AuthFailure::Banned => "",
            };
            if !challenge.is_empty() {
                res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            }
        }
        res
    }
}

/// `"a"` or `"a", "b"`: limit names for a message.
fn names(names: &[String]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// How HTTP statuses are chosen for protocol answers: getToken, and refusals of API calls by the
/// gateway and the tower Layer. (`/auth/verify` always uses real statuses: proxies need them.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StatusMode {
    /// 401 for 1101/1102 (with `WWW-Authenticate`), 403 for 1200, 400 for 1003.
    #[default]
    Standard,
    /// Every protocol answer is HTTP 200; only `code` tells (the vendor's observed behaviour).
    #[serde(rename = "always-200", alias = "always200")]
    Always200,
}

impl StatusMode {
    /// Applies the mode to a protocol answer.
    pub fn apply(self, mut res: Response) -> Response {
        if self == Self::Always200 && res.status() != StatusCode::OK {
            *res.status_mut() = StatusCode::OK;
            res.headers_mut().remove(header::WWW_AUTHENTICATE);
        }
        res
    }
}

impl std::str::FromStr for StatusMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        keygate_core::from_name(s).map_err(|e| format!("http status mode: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::decide::InvalidReason;

    #[test]
    fn codes_and_statuses() {
        let cases = [
            (ApiError::Auth(AuthFailure::Missing), 401, 1102),
            (ApiError::Auth(AuthFailure::Invalid(InvalidReason::UnknownKey)), 401, 1101),
            (ApiError::Auth(AuthFailure::Banned), 403, 1200),
            (ApiError::NotFound(Resource::Account), 404, 1109),
            (ApiError::NotFound(Resource::Credential), 404, 1003),
            (ApiError::Forbidden, 403, 1009),
            (ApiError::Unavailable("x".into()), 503, 1503),
            (ApiError::BadGateway("x".into()), 502, 1502),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status().as_u16(), e.code().as_u32()), (status, code), "{e:?}");
        }
    }

    #[test]
    fn always_200_keeps_the_code() {
        let res = StatusMode::Always200.apply(ApiError::Auth(AuthFailure::Missing).into_response());
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert_eq!(res.extensions().get::<BusinessCode>(), Some(&BusinessCode::EmptyAuth));
        let res = StatusMode::Standard.apply(ApiError::Auth(AuthFailure::Missing).into_response());
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        for (name, mode) in [
            ("standard", StatusMode::Standard),
            ("always-200", StatusMode::Always200),
            ("always200", StatusMode::Always200),
        ] {
            assert_eq!(name.parse::<StatusMode>(), Ok(mode));
        }
        let err = "sometimes".parse::<StatusMode>().unwrap_err();
        assert!(err.contains("always-200"), "{err}");
    }
}

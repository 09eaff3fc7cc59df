//! The one error type of the HTTP layer and the one response envelope, `{"code", "msg", ...}`.
//!
//! The business code and HTTP status are decided here and nowhere else. A 5xx body never carries
//! its cause (the log does), and an authentication failure's body never says which check failed.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_core::BusinessCode;
use keygate_core::decide::AuthFailure;
use keygate_store::StoreError;
use serde::Serialize;

/// The response envelope. `data` is present on success with a payload.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    pub code: BusinessCode,
    pub msg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

/// A success envelope `{"code":1000,"msg":"OK","data":...}`.
pub fn ok<T: Serialize>(data: T) -> Json<Envelope<T>> {
    Json(Envelope { code: BusinessCode::Success, msg: BusinessCode::Success.default_msg(), data: Some(data) })
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Authentication refused (1101 / 1102 / 1200).
    #[error("authentication failed: {}", .0.reason())]
    Auth(AuthFailure),
    /// Bad input (1003), with a message safe to show.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Body over the configured limit (1003, HTTP 413).
    #[error("request body too large")]
    TooLarge,
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(String),
    /// The admin API refused its caller (1009).
    #[error("permission denied")]
    Forbidden,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
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
            StoreError::NotFound => Self::NotFound("not found"),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Other(m) => Self::Internal(m),
        }
    }
}

impl ApiError {
    pub fn code(&self) -> BusinessCode {
        match self {
            Self::Auth(f) => f.code(),
            Self::BadRequest(_) | Self::TooLarge | Self::Conflict(_) => BusinessCode::ParamError,
            // The vendor's "account does not exist"; other missing things are parameter errors.
            Self::NotFound("account") => BusinessCode::AccountNotFound,
            Self::NotFound(_) | Self::MethodNotAllowed => BusinessCode::ParamError,
            Self::Forbidden => BusinessCode::PermissionDenied,
            Self::Unavailable(_) => BusinessCode::Unavailable,
            Self::Internal(_) => BusinessCode::Internal,
            Self::BadGateway(_) => BusinessCode::UpstreamUnavailable,
            Self::GatewayTimeout(_) => BusinessCode::UpstreamTimeout,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Auth(AuthFailure::Banned) => StatusCode::FORBIDDEN,
            Self::Auth(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: BusinessCode,
    msg: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let msg: String = match &self {
            Self::BadRequest(m) | Self::Conflict(m) => m.clone(),
            Self::NotFound(what) => format!("{what} not found"),
            Self::TooLarge => "Request body too large".into(),
            Self::MethodNotAllowed => "Method not allowed".into(),
            Self::Unavailable(cause)
            | Self::Internal(cause)
            | Self::BadGateway(cause)
            | Self::GatewayTimeout(cause) => {
                tracing::error!(code = code.as_u32(), %cause, "request failed");
                code.default_msg().into()
            }
            _ => code.default_msg().into(),
        };
        let mut res = (self.status(), Json(ErrorBody { code, msg: &msg })).into_response();
        // For the access log and metrics (see `observe`).
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

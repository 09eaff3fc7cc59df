//! The vendor's protocol: `POST /api/open/v3/getToken` and the verify endpoint that nginx
//! `auth_request` / Envoy `ext_authz` call (`/auth/verify`, any method, any path suffix).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use keygate_core::BusinessCode;
use keygate_core::model::Identity;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::AuthError;
use crate::error::{ApiError, ok};
use crate::routes::extract;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetTokenRequest {
    client_id: Option<String>,
    client_secret: Option<String>,
}

#[derive(Serialize)]
struct GetTokenResponse {
    code: BusinessCode,
    msg: &'static str,
    token: String,
}

pub async fn get_token(
    State(state): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rej| {
        if rej.into_response().status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadRequest("could not read the request body".into())
        }
    })?;
    // The message is fixed: a type error on clientSecret must not echo the secret back.
    let req: GetTokenRequest = extract::parse(&body).map_err(|_| {
        ApiError::BadRequest("body must be JSON {\"clientId\": string, \"clientSecret\": string}".into())
    })?;
    let result = state
        .auth
        .issue_token(req.client_id.as_deref().unwrap_or_default(), req.client_secret.as_deref().unwrap_or_default())
        .await;
    match result {
        Ok(token) => Ok(Json(GetTokenResponse { code: BusinessCode::Success, msg: "OK", token }).into_response()),
        Err(e) => {
            log_refusal("getToken", &e);
            Err(e.into())
        }
    }
}

pub static H_ACCOUNT_ID: HeaderName = HeaderName::from_static("x-keygate-account-id");
pub static H_UID: HeaderName = HeaderName::from_static("x-keygate-uid");
pub static H_CLIENT_ID: HeaderName = HeaderName::from_static("x-keygate-client-id");
pub static H_METHOD: HeaderName = HeaderName::from_static("x-keygate-auth-method");

/// Takes the whole request (only its headers are read) so that they are not copied.
pub async fn verify(State(state): State<AppState>, req: axum::extract::Request) -> Result<Response, ApiError> {
    match state.auth.authenticate(req.headers()).await {
        Ok(identity) => {
            let mut res = ok(identity.clone()).into_response();
            set_identity_headers(res.headers_mut(), &identity);
            res.extensions_mut().insert(identity);
            Ok(res)
        }
        Err(e) => {
            log_refusal("verify", &e);
            Err(e.into())
        }
    }
}

/// The `x-keygate-*` identity headers: on `/auth/verify` answers, and on requests the gateway
/// forwards upstream.
pub fn set_identity_headers(h: &mut HeaderMap, id: &Identity) {
    h.insert(&H_ACCOUNT_ID, HeaderValue::from_bytes(&id.account_id.hex_bytes()).expect("hex is a valid header"));
    h.insert(&H_UID, HeaderValue::from(id.uid));
    h.insert(&H_CLIENT_ID, HeaderValue::from_bytes(&id.client_id.hex_bytes()).expect("hex is a valid header"));
    h.insert(&H_METHOD, HeaderValue::from_static(id.method.as_str()));
}

fn log_refusal(endpoint: &'static str, e: &AuthError) {
    if let AuthError::Refused(f) = e {
        tracing::debug!(endpoint, code = f.code().as_u32(), reason = f.reason(), "authentication refused");
    }
}

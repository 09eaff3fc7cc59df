//! The vendor's protocol: `POST /api/open/v3/getToken` and the verify endpoint that nginx
//! `auth_request` / Envoy `ext_authz` call (`/auth/verify`, any method, any path suffix).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use keygate_auth::ApiError;
use keygate_auth::envelope::ok;
use keygate_core::BusinessCode;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
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
    let body = body.map_err(extract::body_rejection)?;
    // The message is fixed: a type error on clientSecret must not echo the secret back.
    let req: GetTokenRequest = extract::parse(&body).map_err(|_| {
        ApiError::BadRequest("body must be JSON {\"clientId\": string, \"clientSecret\": string}".into())
    })?;
    let result = state
        .auth
        .authenticator()
        .issue_token(req.client_id.as_deref().unwrap_or_default(), req.client_secret.as_deref().unwrap_or_default())
        .await;
    match result {
        Ok(token) => Ok(Json(GetTokenResponse { code: BusinessCode::Success, msg: "OK", token }).into_response()),
        Err(e) => {
            e.log("getToken");
            Err(e.into())
        }
    }
}

/// Takes the whole request (only its headers are read) so that they are not copied.
pub async fn verify(State(state): State<AppState>, req: axum::extract::Request) -> Result<Response, ApiError> {
    match state.auth.authenticator().authenticate(req.headers()).await {
        Ok(identity) => {
            let mut res = ok(&identity);
            identity.set_headers(res.headers_mut());
            res.extensions_mut().insert(identity);
            Ok(res)
        }
        Err(e) => {
            e.log("verify");
            Err(e.into())
        }
    }
}

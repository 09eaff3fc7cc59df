//! The admin API, `/admin/v1/...`, for operators. Authenticated by the admin token
//! (`Authorization: Bearer kga_...`), never by customers' keys or tokens.

use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use keygate_core::decide::{AuthFailure, InvalidReason};
use keygate_core::model::{Account, Credential};
use keygate_store::AccountEvent;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::error::{ApiError, ok};
use crate::keys;
use crate::ops::{parse_account_id, parse_client_id};
use crate::routes::extract::JsonBody;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts", post(create_account).get(list_accounts))
        .route("/accounts/{id}", get(get_account))
        .route("/accounts/{id}/ban", post(ban))
        .route("/accounts/{id}/unban", post(unban))
        .route("/accounts/{id}/credentials", post(create_credential).get(list_credentials))
        .route("/credentials/{client_id}", get(get_credential))
        .route("/credentials/{client_id}/revoke", post(revoke))
        .route("/credentials/{client_id}/rotate", post(rotate))
        .route("/credentials/{client_id}/usage", get(usage))
        .route("/signing-keys", get(signing_keys))
        .route("/signing-keys/rotate", post(rotate_signing_key))
}

/// Proof that the caller holds the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Auth(AuthFailure::Missing))?;
        let hash = state.admin_hasher.hash(presented);
        let expected = match &state.config.admin_token {
            Some(configured) => state.admin_hasher.hash(configured),
            None => keys::admin_token_hash(state.auth.store().as_ref())
                .await?
                .ok_or(ApiError::Auth(AuthFailure::Invalid(InvalidReason::UnknownKey)))?,
        };
        if hash.ct_eq(&expected) {
            Ok(Admin)
        } else {
            tracing::info!("admin API: invalid admin token");
            Err(ApiError::Auth(AuthFailure::Invalid(InvalidReason::UnknownKey)))
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateAccount {
    email: String,
    #[serde(default)]
    first_name: String,
}

async fn create_account(
    _: Admin,
    State(s): State<AppState>,
    JsonBody(req): JsonBody<CreateAccount>,
) -> Result<impl IntoResponse, ApiError> {
    let account = s.ops.create_account(&req.email, &req.first_name).await?;
    Ok((StatusCode::CREATED, ok(account)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    q: Option<String>,
    limit: Option<u32>,
    after: Option<i64>,
}

async fn list_accounts(
    _: Admin,
    State(s): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<impl Serialize>, ApiError> {
    let Query(q) = query.map_err(|_| ApiError::BadRequest("query must be q=TEXT&limit=N&after=UID".into()))?;
    Ok(ok(s.ops.list_accounts(q.q.as_deref(), q.limit, q.after).await?))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccountDetail {
    #[serde(flatten)]
    account: Account,
    events: Vec<AccountEvent>,
}

async fn get_account(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<impl Serialize>, ApiError> {
    let (account, events) = s.ops.get_account(parse_account_id(&id)?).await?;
    Ok(ok(AccountDetail { account, events }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BanRequest {
    reason: Option<String>,
}

async fn ban(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<impl Serialize>, ApiError> {
    let req: BanRequest = if body.iter().all(u8::is_ascii_whitespace) {
        BanRequest::default()
    } else {
        crate::routes::extract::parse(&body)?
    };
    Ok(ok(s.ops.set_banned(parse_account_id(&id)?, true, req.reason.as_deref(), "admin-api").await?))
}

async fn unban(_: Admin, State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<impl Serialize>, ApiError> {
    Ok(ok(s.ops.set_banned(parse_account_id(&id)?, false, None, "admin-api").await?))
}

async fn create_credential(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, ok(s.ops.create_credential(parse_account_id(&id)?).await?)))
}

async fn list_credentials(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<impl Serialize>, ApiError> {
    Ok(ok(s.ops.list_credentials(parse_account_id(&id)?).await?))
}

async fn get_credential(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<impl Serialize>, ApiError> {
    let c: Credential = s.ops.get_credential(parse_client_id(&id)?).await?;
    Ok(ok(c))
}

async fn revoke(_: Admin, State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<impl Serialize>, ApiError> {
    Ok(ok(s.ops.revoke_credential(parse_client_id(&id)?).await?))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateRequest {
    /// Grace period, e.g. "24h"; the old secret and its tokens keep working that long.
    grace: Option<String>,
}

async fn rotate(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<impl Serialize>, ApiError> {
    let req: RotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateRequest::default()
    } else {
        crate::routes::extract::parse(&body)?
    };
    let grace = match req.grace.as_deref() {
        None | Some("") => Duration::ZERO,
        Some(g) => humantime::parse_duration(g)
            .map_err(|_| ApiError::BadRequest("grace must be a duration like \"24h\"".into()))?,
    };
    Ok(ok(s.ops.rotate_credential(parse_client_id(&id)?, grace).await?))
}

#[derive(Deserialize)]
struct UsageQuery {
    days: Option<u32>,
}

/// Requests per UTC day (`day` = days since 1970-01-01) over the last `days` (default 30).
async fn usage(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<impl Serialize>, ApiError> {
    let Query(q) = query.map_err(|_| ApiError::BadRequest("query must be days=N".into()))?;
    let days = q.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::BadRequest("days must be between 1 and 366".into()));
    }
    let client_id = parse_client_id(&id)?;
    s.ops.get_credential(client_id).await?;
    let since = keygate_store::now_ms().div_euclid(86_400_000) - i64::from(days) + 1;
    Ok(ok(s.auth.store().usage(client_id, since).await?))
}

async fn signing_keys(_: Admin, State(s): State<AppState>) -> Result<Json<impl Serialize>, ApiError> {
    Ok(ok(s.auth.store().signing_keys().await?))
}

async fn rotate_signing_key(_: Admin, State(s): State<AppState>) -> Result<Json<impl Serialize>, ApiError> {
    let key = s.auth.store().add_signing_key(&keys::new_kid()).await?;
    s.auth.set_keyring(keys::load_keyring(s.auth.store().as_ref(), &s.master).await?);
    Ok(ok(key))
}

//! The admin API, `/admin/v1/...`, for operators. Authenticated by the admin token
//! (`Authorization: Bearer kga_...`), never by customers' keys or tokens. Handlers are thin: the
//! [`Admin`] extractor, typed path ids and bodies ([`super::extract`]), one [`keygate_ops::Ops`]
//! call, the envelope.

use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use keygate_auth::ApiError;
use keygate_auth::envelope::{created_with, ok, page};
use keygate_core::decide::{AuthFailure, InvalidReason};
use keygate_core::model::Account;
use keygate_core::{AccountId, ClientId};
use keygate_store::AccountEvent;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::routes::extract::{JsonBody, OptionalJson, Path, Query, QueryShape};

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
        if state.admin_token.matches(state.ops.store().as_ref(), presented).await? {
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
) -> Result<Response, ApiError> {
    Ok(created_with(StatusCode::CREATED, s.ops.create_account(&req.email, &req.first_name).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    q: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

impl QueryShape for ListQuery {
    const SHAPE: &'static str = "q=TEXT&limit=N&after=CURSOR";
}

async fn list_accounts(_: Admin, State(s): State<AppState>, Query(q): Query<ListQuery>) -> Result<Response, ApiError> {
    let p = s.ops.list_accounts(q.q.as_deref(), q.limit, q.after.as_deref()).await?;
    Ok(page(p.items, p.next))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccountDetail {
    #[serde(flatten)]
    account: Account,
    events: Vec<AccountEvent>,
}

async fn get_account(_: Admin, State(s): State<AppState>, Path(id): Path<AccountId>) -> Result<Response, ApiError> {
    let (account, events) = s.ops.get_account(id).await?;
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
    Path(id): Path<AccountId>,
    OptionalJson(req): OptionalJson<BanRequest>,
) -> Result<Response, ApiError> {
    Ok(ok(s.ops.ban(id, req.reason.as_deref(), "admin-api").await?))
}

async fn unban(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<AccountId>,
    OptionalJson(req): OptionalJson<BanRequest>,
) -> Result<Response, ApiError> {
    Ok(ok(s.ops.unban(id, req.reason.as_deref(), "admin-api").await?))
}

async fn create_credential(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<Response, ApiError> {
    Ok(created_with(StatusCode::CREATED, s.ops.create_credential(id).await?))
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<u32>,
    after: Option<String>,
}

impl QueryShape for PageQuery {
    const SHAPE: &'static str = "limit=N&after=CURSOR";
}

async fn list_credentials(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<AccountId>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let p = s.ops.credentials_page(id, q.limit, q.after.as_deref()).await?;
    Ok(page(p.items, p.next))
}

async fn get_credential(_: Admin, State(s): State<AppState>, Path(id): Path<ClientId>) -> Result<Response, ApiError> {
    Ok(ok(s.ops.get_credential(id).await?))
}

async fn revoke(_: Admin, State(s): State<AppState>, Path(id): Path<ClientId>) -> Result<Response, ApiError> {
    Ok(ok(s.ops.revoke_credential(id).await?))
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
    Path(id): Path<ClientId>,
    OptionalJson(req): OptionalJson<RotateRequest>,
) -> Result<Response, ApiError> {
    let grace = match req.grace.as_deref() {
        None | Some("") => Duration::ZERO,
        Some(g) => humantime::parse_duration(g)
            .map_err(|_| ApiError::BadRequest("grace must be a duration like \"24h\"".into()))?,
    };
    Ok(ok(s.ops.rotate_credential(id, grace).await?))
}

#[derive(Deserialize)]
struct UsageQuery {
    days: Option<u32>,
}

impl QueryShape for UsageQuery {
    const SHAPE: &'static str = "days=N";
}

/// Requests per UTC day (`day` = days since 1970-01-01) over the last `days` (default 30).
async fn usage(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<ClientId>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    Ok(ok(s.ops.usage(id, q.days.unwrap_or(30)).await?))
}

async fn signing_keys(_: Admin, State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(ok(s.ops.signing_keys().await?))
}

async fn rotate_signing_key(_: Admin, State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(ok(s.ops.rotate_signing_key().await?))
}

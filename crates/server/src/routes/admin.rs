//! The admin API, `/admin/v1/...`, for operators. Authenticated by the admin token
//! (`Authorization: Bearer kga_...`), never by customers' keys or tokens. Handlers are thin: the
//! [`Admin`] extractor, typed path ids and bodies ([`super::extract`]), one [`keygate_ops::Ops`]
//! call, the envelope.

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post, put};
use keygate_auth::ApiError;
use keygate_auth::envelope::{Envelope, Outcome, created_with, ok, page};
use keygate_core::audit::Audit;
use keygate_core::credits::{CreditBalance, CreditsConfig};
use keygate_core::decide::{AuthFailure, InvalidReason};
use keygate_core::model::{Account, Credential, CredentialChange, Plan};
use keygate_core::net::Cidr;
use keygate_core::ratelimit::{EffectiveLimit, RateLimit};
use keygate_core::{AccountId, ClientId};
use keygate_ops::IssuedCredential;
use keygate_store::{AccountEvent, CreditScope, SigningKey};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::routes::extract::{JsonBody, OptionalJson, Path, Query, QueryShape};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts", post(create_account).get(list_accounts))
        .route("/accounts/{id}", get(get_account).patch(patch_account))
        .route("/accounts/{id}/ban", post(ban))
        .route("/accounts/{id}/unban", post(unban))
        .route("/accounts/{id}/credentials", post(create_credential).get(list_credentials))
        .route("/accounts/{id}/usage", get(super::usage::account_usage))
        .route("/credentials/{client_id}", get(get_credential).patch(patch_credential))
        .route("/credentials/{client_id}/revoke", post(revoke))
        .route("/credentials/{client_id}/rotate", post(rotate))
        .route("/credentials/{client_id}/usage", get(super::usage::credential_usage))
        .merge(super::credits::router())
        .merge(super::keys::router())
        .merge(super::audit::router())
        .route("/plans", get(list_plans))
        .route("/plans/{name}", put(put_plan).get(get_plan).delete(delete_plan))
        .route("/signing-keys", get(signing_keys))
        .route("/signing-keys/rotate", post(rotate_signing_key))
        .route("/signing-keys/{kid}/retire", post(retire_signing_key))
}

/// Proof that the caller holds the admin token, and who it is for the audit log: the admin
/// token, from the client's address (behind trusted proxies, the client's), with the request's id.
pub(crate) struct Admin(pub(crate) Audit);

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
            Ok(Admin(request_audit(parts, Audit::admin_token())))
        } else {
            tracing::info!("admin API: invalid admin token");
            Err(ApiError::Auth(AuthFailure::Invalid(InvalidReason::UnknownKey)))
        }
    }
}

/// `audit` with the request's client address and id (set by the observer before any handler).
pub(crate) fn request_audit(parts: &Parts, audit: Audit) -> Audit {
    let ip = parts.extensions.get::<keygate_core::net::ClientAddr>().map(|c| c.ip);
    let id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok());
    audit.from_request(ip, id)
}

/// A new account.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateAccount {
    /// name@example.com, at most 254 characters; unique (case-insensitive).
    #[schema(format = "email", max_length = 254, example = "dev@example.com")]
    email: String,
    /// At most 100 characters, none of them a control character.
    #[serde(default)]
    #[schema(max_length = 100, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$", example = "Dev")]
    first_name: String,
}
#[utoipa::path(
    post,
    path = "/admin/v1/accounts",
    tag = "admin",
    security(("adminToken" = [])),
    request_body = CreateAccount,
    responses(
        (status = 201, description = "1000: the account", body = Envelope<Account>),
        (status = 400, description = "1003: a malformed id, query or body", body = Outcome),
        (status = 409, description = "1003: the email is taken", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn create_account(
    Admin(audit): Admin,
    State(s): State<AppState>,
    JsonBody(req): JsonBody<CreateAccount>,
) -> Result<Response, ApiError> {
    Ok(created_with(StatusCode::CREATED, s.ops.create_account(&audit, &req.email, &req.first_name).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Matches email or id substrings.
    q: Option<String>,
    /// Accounts per page, 1 to 1000 [default: 100].
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` cursor of the previous page (an account uid).
    #[param(pattern = "^[0-9]{1,18}$")]
    after: Option<String>,
}

impl QueryShape for ListQuery {
    const SHAPE: &'static str = "q=TEXT&limit=N&after=CURSOR";
}
#[utoipa::path(
    get,
    path = "/admin/v1/accounts",
    tag = "admin",
    security(("adminToken" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "1000: a page of accounts by uid; `next` when more follow", body = Envelope<Vec<Account>>),
        (status = 400, description = "1003: a malformed id, query or body", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn list_accounts(
    _: Admin,
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let p = s.ops.list_accounts(q.q.as_deref(), q.limit, q.after.as_deref()).await?;
    Ok(page(p.items, p.next))
}

/// An account and its history (bans, unbans).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountDetail {
    #[serde(flatten)]
    account: Account,
    /// The rate limits its requests count against (shared by its credentials): the plan's, each
    /// replaced by the account's own of the same name, and its own.
    effective_ratelimits: Vec<EffectiveLimit>,
    /// Its credits balance, shared by its credentials (its own, or its plan's refill); absent:
    /// no quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    credits: Option<CreditBalance>,
    events: Vec<AccountEvent>,
}

impl AccountDetail {
    async fn of(s: &AppState, account: Account, events: Vec<AccountEvent>) -> Result<Self, ApiError> {
        let effective_ratelimits = s.ops.account_limits(&account).await?;
        let credits = s.ops.credit_balance(CreditScope::Account(account.id)).await?;
        Ok(Self { account, effective_ratelimits, credits, events })
    }
}
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}",
    tag = "admin",
    security(("adminToken" = [])),
    params(("id" = AccountId, Path, description = "The account id")),
    responses(
        (status = 200, description = "1000: the account and its history", body = Envelope<AccountDetail>),
        (status = 400, description = "1003: a malformed id, query or body", body = Outcome),
        (status = 404, description = "1109: no such account", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn get_account(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<Response, ApiError> {
    let (account, events) = s.ops.get_account(id).await?;
    Ok(ok(AccountDetail::of(&s, account, events).await?))
}

/// `Some(None)` for an explicit `null`, `None` for a field left out.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// What to change on an account; fields left out stay as they are.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AccountPatch {
    /// The account's own rate limits, shared by its credentials: the whole set (`[]` removes
    /// them). Each overrides the plan's limit of the same name.
    #[schema(max_items = 16)]
    ratelimits: Option<Vec<RateLimit>>,
    /// The plan (`null` removes it).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", example = "pro")]
    plan: Option<Option<String>>,
    /// The account's own credits balance, shared by its credentials, and its refill (`null`
    /// removes it: the plan's refill applies, if it has one, else requests are not charged).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<CreditsConfig>)]
    credits: Option<Option<CreditsConfig>>,
    /// The networks its credentials may be used from (IPv4/IPv6 CIDRs or addresses; `[]`:
    /// anywhere). A credential's own allowlist applies as well.
    #[schema(value_type = Option<Vec<super::keys::Network>>, max_items = 256, example = json!(["203.0.113.0/24"]))]
    ip_allowlist: Option<Vec<String>>,
}
#[utoipa::path(
    patch,
    path = "/admin/v1/accounts/{id}",
    tag = "admin",
    security(("adminToken" = [])),
    params(("id" = AccountId, Path, description = "The account id")),
    request_body = AccountPatch,
    responses(
        (status = 200, description = "1000: the account as changed: every node counts its requests against the new limits within the feed bound, keeping what was spent", body = Envelope<AccountDetail>),
        (status = 400, description = "1003: a malformed id or body, an invalid limit or credits setting, no such plan", body = Outcome),
        (status = 404, description = "1109: no such account", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn patch_account(
    Admin(audit): Admin,
    State(s): State<AppState>,
    Path(id): Path<AccountId>,
    JsonBody(req): JsonBody<AccountPatch>,
) -> Result<Response, ApiError> {
    let plan = req.plan.as_ref().map(|p| p.as_deref());
    // Everything is checked before anything is written.
    check_credits(req.credits.as_ref())?;
    let allowlist = req.ip_allowlist.as_deref().map(networks).transpose()?;
    if let Some(list) = &allowlist {
        keygate_core::model::check_allowlist(list.clone()).map_err(ApiError::BadRequest)?;
    }
    if let Some(list) = allowlist {
        s.ops.set_account_ip_allowlist(&audit, id, list).await?;
    }
    if req.ratelimits.is_some() || plan.is_some() {
        s.ops.update_account_limits(&audit, id, req.ratelimits.as_deref(), plan).await?;
    }
    if let Some(credits) = req.credits {
        s.ops.set_credits(&audit, CreditScope::Account(id), credits.as_ref()).await?;
    }
    let (account, events) = s.ops.get_account(id).await?;
    Ok(ok(AccountDetail::of(&s, account, events).await?))
}

/// Why (kept in the account's history). The body may be left out.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BanRequest {
    /// At most 500 characters.
    #[schema(max_length = 500, example = "fraud")]
    reason: Option<String>,
}
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/ban",
    tag = "admin",
    security(("adminToken" = [])),
    params(("id" = AccountId, Path, description = "The account id")),
    request_body = Option<BanRequest>,
    responses(
        (status = 200, description = "1000: banned (again, if it was): its keys and tokens answer 1200", body = Envelope<Account>),
        (status = 400, description = "1003: a malformed id, query or body", body = Outcome),
        (status = 404, description = "1109: no such account", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn ban(
    Admin(audit): Admin,
    State(s): State<AppState>,
    Path(id): Path<AccountId>,
    OptionalJson(req): OptionalJson<BanRequest>,
) -> Result<Response, ApiError> {
    Ok(ok(s.ops.ban(&audit, id, req.reason.as_deref()).await?))
}
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/unban",
    tag = "admin",
    security(("adminToken" = [])),
    params(("id" = AccountId, Path, description = "The account id")),
    request_body = Option<BanRequest>,
    responses(
        (status = 200, description = "1000: active again", body = Envelope<Account>),
        (status = 400, description = "1003: a malformed id, query or body", body = Outcome),
        (status = 404, description = "1109: no such account", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn unban(
    Admin(audit): Admin,
    State(s): State<AppState>,
    Path(id): Path<AccountId>,
    OptionalJson(req): OptionalJson<BanRequest>,
) -> Result<Response, ApiError> {
    Ok(ok(s.ops.unban(&audit, id, req.reason.as_deref()).await?))
}
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/credentials",
    tag = "admin",
    security(("adminToken" = [])),
    params(("id" = AccountId, Path, description = "The account id")),
    request_body(content = Option<CredentialPatch>, description = "What the credential may do and when, set with it (all optional; the body may be left out)"),
    responses(
        (status = 201, description = "1000: the credential and its API key, shown this once", body = Envelope<IssuedCredential>),
        (status = 400, description = "1003: a malformed id, query or body; an invalid field; no such role", body = Outcome),
        (status = 404, description = "1109: no such account", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn create_credential(
    Admin(audit): Admin,
    State(s): State<AppState>,
    Path(id): Path<AccountId>,
    OptionalJson(req): OptionalJson<CredentialPatch>,
) -> Result<Response, ApiError> {
    check_credits(req.credits.as_ref())?;
    let credits = req.credits.flatten();
    let mut issued = s.ops.create_credential_with(&audit, id, req.change()?).await?;
    if let Some(config) = credits {
        let scope = CreditScope::Credential(issued.client_id);
        if let Err(e) = s.ops.set_credits(&audit, scope, Some(&config)).await {
            // Nobody has seen the key: take it back rather than leave it without its quota.
            let _ = s.ops.revoke_credential(&audit, issued.client_id).await;
            return Err(e.into());
        }
        issued.credential = s.ops.get_credential(issued.client_id).await?;
    }
    Ok(created_with(StatusCode::CREATED, issued))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Items per page, 1 to 1000 [default: 100].
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` cursor of the previous page (a clientId).
    #[param(pattern = "^[0-9a-f]{24}$")]
    after: Option<String>,
}

impl QueryShape for PageQuery {
    const SHAPE: &'static str = "limit=N&after=CURSOR";
}
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}/credentials",
    tag = "admin",
    security(("adminToken" = [])),
    params(("id" = AccountId, Path, description = "The account id"), PageQuery),
    responses(
        (status = 200, description = "1000: a page of the account's credentials, oldest first; `next` when more follow", body = Envelope<Vec<Credential>>),
        (status = 400, description = "1003: a malformed id, query or body", body = Outcome),
        (status = 404, description = "1109: no such account", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn list_credentials(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<AccountId>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let p = s.ops.credentials_page(id, q.limit, q.after.as_deref()).await?;
    Ok(page(p.items, p.next))
}
#[utoipa::path(
    get,
    path = "/admin/v1/credentials/{client_id}",
    tag = "admin",
    security(("adminToken" = [])),
    params(("client_id" = ClientId, Path, description = "The credential's clientId")),
    responses(
        (status = 200, description = "1000: the credential (never its key) and the rate limits that apply to it", body = Envelope<CredentialDetail>),
        (status = 400, description = "1003: a malformed id, query or body", body = Outcome),
        (status = 404, description = "1003: no such credential", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn get_credential(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<ClientId>,
) -> Result<Response, ApiError> {
    let credential = s.ops.get_credential(id).await?;
    Ok(ok(CredentialDetail::of(&s, credential).await?))
}

/// A credential and the rate limits its requests count against.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CredentialDetail {
    #[serde(flatten)]
    credential: Credential,
    /// Its own limits, then its account's (the plan's and the account's own) that it does not
    /// override: every one must pass.
    effective_ratelimits: Vec<EffectiveLimit>,
    /// Its own credits balance; absent: none (its account's may still apply).
    #[serde(skip_serializing_if = "Option::is_none")]
    credits: Option<CreditBalance>,
}

impl CredentialDetail {
    async fn of(s: &AppState, credential: Credential) -> Result<Self, ApiError> {
        let effective_ratelimits = s.ops.credential_limits(&credential).await?;
        let credits = s.ops.credit_balance(CreditScope::Credential(credential.client_id)).await?;
        Ok(Self { credential, effective_ratelimits, credits })
    }
}

impl CredentialPatch {
    /// The fields as one change, times read (credits are set on their own).
    fn change(&self) -> Result<CredentialChange, ApiError> {
        let expires_at = match &self.expires_at {
            Some(Some(t)) => Some(Some(t.ms("expiresAt")?)),
            Some(None) => Some(None),
            None => None,
        };
        Ok(CredentialChange {
            name: self.name.clone(),
            meta: self.meta.clone(),
            expires_at,
            enabled: self.enabled,
            permissions: self.permissions.clone(),
            roles: self.roles.clone(),
            ip_allowlist: self.ip_allowlist.as_deref().map(networks).transpose()?,
            ratelimits: self.ratelimits.clone(),
        })
    }
}

/// An allowlist as the body gives it, each network read (the message names the bad one).
fn networks(list: &[String]) -> Result<Vec<Cidr>, ApiError> {
    list.iter().map(|n| n.parse().map_err(|e| ApiError::BadRequest(format!("ipAllowlist: {e}")))).collect()
}

/// A credits setting checked before any write of the same request.
fn check_credits(credits: Option<&Option<CreditsConfig>>) -> Result<(), ApiError> {
    match credits {
        Some(Some(c)) => c.validate().map_err(|e| ApiError::BadRequest(e.to_string())),
        _ => Ok(()),
    }
}

/// What to change on a credential (or set when creating one); fields left out stay as they are.
#[derive(Deserialize, Default, Clone, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CredentialPatch {
    /// A name for people, 1 to 200 characters (`null` removes it); sent upstream
    /// (`x-keygate-key-name`) and in `/auth/verify`'s answer.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$", example = "dashboard (read-only)")]
    name: Option<Option<String>>,
    /// A JSON object of up to 4 KB (`null` removes it); sent upstream (`x-keygate-meta`) and in
    /// `/auth/verify`'s answer.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>, example = json!({"tier": "gold"}))]
    meta: Option<Option<keygate_core::model::Meta>>,
    /// When the credential and its tokens stop working (1101 "expired"): Unix ms or RFC 3339
    /// (`null`: never).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<super::keys::TimeValue>)]
    expires_at: Option<Option<super::keys::TimeValue>>,
    /// `false`: refused (1101 "disabled") until set back to `true`; unlike a revoke, reversible.
    enabled: Option<bool>,
    /// Its own permissions, the whole set (`[]`: none): names (`videos.create`), `prefix.*` or `*`.
    #[schema(value_type = Option<Vec<super::keys::Grant>>, max_items = 1000, example = json!(["videos.create", "images.*"]))]
    permissions: Option<Vec<String>>,
    /// The roles it holds, the whole set (`[]`: none); each must exist.
    #[schema(value_type = Option<Vec<super::keys::RoleName>>, max_items = 64, example = json!(["video-editor"]))]
    roles: Option<Vec<String>>,
    /// The networks it may be used from (IPv4/IPv6 CIDRs or addresses; `[]`: anywhere); its
    /// account's allowlist applies as well.
    #[schema(value_type = Option<Vec<super::keys::Network>>, max_items = 256, example = json!(["203.0.113.7", "2001:db8::/32"]))]
    ip_allowlist: Option<Vec<String>>,
    /// The credential's own rate limits, counted for it alone: the whole set (`[]` removes them).
    /// Each overrides the plan's limit of the same name; the account's own limits apply as well.
    #[schema(max_items = 16)]
    ratelimits: Option<Vec<RateLimit>>,
    /// The credential's own credits balance and its refill (`null` removes it: requests are not
    /// charged to the credential; its account's balance, if any, still applies).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<CreditsConfig>)]
    credits: Option<Option<CreditsConfig>>,
}
#[utoipa::path(
    patch,
    path = "/admin/v1/credentials/{client_id}",
    tag = "admin",
    security(("adminToken" = [])),
    params(("client_id" = ClientId, Path, description = "The credential's clientId")),
    request_body = CredentialPatch,
    responses(
        (status = 200, description = "1000: the credential as changed, with the limits that apply to it", body = Envelope<CredentialDetail>),
        (status = 400, description = "1003: a malformed id or body, an invalid limit or credits setting", body = Outcome),
        (status = 404, description = "1003: no such credential", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn patch_credential(
    Admin(audit): Admin,
    State(s): State<AppState>,
    Path(id): Path<ClientId>,
    JsonBody(req): JsonBody<CredentialPatch>,
) -> Result<Response, ApiError> {
    check_credits(req.credits.as_ref())?;
    let change = req.change()?;
    s.ops.update_credential(&audit, id, change).await?;
    if let Some(credits) = req.credits {
        s.ops.set_credits(&audit, CreditScope::Credential(id), credits.as_ref()).await?;
    }
    let credential = s.ops.get_credential(id).await?;
    Ok(ok(CredentialDetail::of(&s, credential).await?))
}
#[utoipa::path(
    post,
    path = "/admin/v1/credentials/{client_id}/revoke",
    tag = "admin",
    security(("adminToken" = [])),
    params(("client_id" = ClientId, Path, description = "The credential's clientId")),
    responses(
        (status = 200, description = "1000: revoked: its key and tokens answer 1101 everywhere", body = Envelope<Credential>),
        (status = 400, description = "1003: a malformed id, query or body", body = Outcome),
        (status = 404, description = "1003: no such credential", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn revoke(
    Admin(audit): Admin,
    State(s): State<AppState>,
    Path(id): Path<ClientId>,
) -> Result<Response, ApiError> {
    Ok(ok(s.ops.revoke_credential(&audit, id).await?))
}

/// The body may be left out (no grace: the old key stops at once).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RotateRequest {
    /// Grace period: a whole number and one unit (`s`, `m`, `h`, `d`), e.g. "24h", at most 90
    /// days; the old secret and its tokens keep working that long.
    #[schema(
        example = "24h",
        pattern = "^$|^(([0-9]|[1-9][0-9]{1,5}|[1-6][0-9]{6}|7[0-6][0-9]{5}|77[0-6][0-9]{4}|777[0-5][0-9]{3}|7776000)s|([0-9]|[1-9][0-9]{1,4}|1[01][0-9]{4}|12[0-8][0-9]{3}|129[0-5][0-9]{2}|129600)m|([0-9]|[1-9][0-9]{1,2}|1[0-9]{3}|20[0-9]{2}|21[0-5][0-9]|2160)h|([0-9]|[1-8][0-9]|90)d)$"
    )]
    grace: Option<String>,
}
#[utoipa::path(
    post,
    path = "/admin/v1/credentials/{client_id}/rotate",
    tag = "admin",
    security(("adminToken" = [])),
    params(("client_id" = ClientId, Path, description = "The credential's clientId")),
    request_body = Option<RotateRequest>,
    responses(
        (status = 200, description = "1000: the new API key, shown this once; the old one works for the grace period", body = Envelope<IssuedCredential>),
        (status = 409, description = "1003: the credential is revoked", body = Outcome),
        (status = 400, description = "1003: a malformed id, query or body", body = Outcome),
        (status = 404, description = "1003: no such credential", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn rotate(
    Admin(audit): Admin,
    State(s): State<AppState>,
    Path(id): Path<ClientId>,
    OptionalJson(req): OptionalJson<RotateRequest>,
) -> Result<Response, ApiError> {
    let grace = keygate_ops::parse_grace(req.grace.as_deref().unwrap_or_default())?;
    Ok(ok(s.ops.rotate_credential(&audit, id, grace).await?))
}

#[utoipa::path(
    get,
    path = "/admin/v1/signing-keys",
    tag = "admin",
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "1000: the JWT signing key ids (never a secret)", body = Envelope<Vec<SigningKey>>),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn signing_keys(_: Admin, State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(ok(s.ops.signing_keys().await?))
}
#[utoipa::path(
    post,
    path = "/admin/v1/signing-keys/rotate",
    tag = "admin",
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "1000: the new key id: new tokens use it, existing ones keep verifying", body = Envelope<SigningKey>),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn rotate_signing_key(Admin(audit): Admin, State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(ok(s.ops.rotate_signing_key(&audit).await?))
}

/// A signing key id in the path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct KidPath {
    /// The key id, as `GET /signing-keys` lists it.
    #[param(pattern = "^k[0-9a-f]{12}$")]
    kid: String,
}

#[utoipa::path(
    post,
    path = "/admin/v1/signing-keys/{kid}/retire",
    tag = "admin",
    security(("adminToken" = [])),
    params(KidPath),
    responses(
        (status = 200, description = "1000: retired: tokens signed with it are refused (1101) everywhere", body = Envelope<SigningKey>),
        (status = 404, description = "1003: no such signing key", body = Outcome),
        (status = 409, description = "1003: it is the only live key: rotate first", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn retire_signing_key(
    Admin(audit): Admin,
    State(s): State<AppState>,
    axum::extract::Path(p): axum::extract::Path<KidPath>,
) -> Result<Response, ApiError> {
    Ok(ok(s.ops.retire_signing_key(&audit, &p.kid).await?))
}

/// A plan's name in the path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct PlanPath {
    /// The plan's name.
    #[param(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", example = "pro")]
    name: String,
}

/// A plan's rate limits.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PlanBody {
    /// The whole set (`[]`: a plan without limits).
    #[schema(max_items = 16)]
    ratelimits: Vec<RateLimit>,
    /// How the credits balance of its accounts refills (accounts with credits of their own keep
    /// theirs); absent: the plan gives no credits quota.
    #[serde(default)]
    credits: Option<keygate_core::credits::Refill>,
}

/// A plan and how many accounts are on it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PlanDetail {
    #[serde(flatten)]
    plan: Plan,
    accounts: u64,
}
#[utoipa::path(
    get,
    path = "/admin/v1/plans",
    tag = "admin",
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "1000: every plan, by name", body = Envelope<Vec<Plan>>),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn list_plans(_: Admin, State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(ok(s.ops.list_plans().await?))
}
#[utoipa::path(
    put,
    path = "/admin/v1/plans/{name}",
    tag = "admin",
    security(("adminToken" = [])),
    params(PlanPath),
    request_body = PlanBody,
    responses(
        (status = 201, description = "1000: created", body = Envelope<Plan>),
        (status = 200, description = "1000: replaced: every account on it counts against the new limits within the feed bound, keeping what was spent", body = Envelope<Plan>),
        (status = 400, description = "1003: a malformed name or body, an invalid limit", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn put_plan(
    Admin(audit): Admin,
    State(s): State<AppState>,
    axum::extract::Path(p): axum::extract::Path<PlanPath>,
    JsonBody(req): JsonBody<PlanBody>,
) -> Result<Response, ApiError> {
    let (plan, created) = s.ops.put_plan(&audit, &p.name, &req.ratelimits, req.credits.as_ref()).await?;
    Ok(created_with(if created { StatusCode::CREATED } else { StatusCode::OK }, plan))
}
#[utoipa::path(
    get,
    path = "/admin/v1/plans/{name}",
    tag = "admin",
    security(("adminToken" = [])),
    params(PlanPath),
    responses(
        (status = 200, description = "1000: the plan and how many accounts are on it", body = Envelope<PlanDetail>),
        (status = 404, description = "1003: no such plan", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn get_plan(
    _: Admin,
    State(s): State<AppState>,
    axum::extract::Path(p): axum::extract::Path<PlanPath>,
) -> Result<Response, ApiError> {
    let (plan, accounts) = s.ops.get_plan(&p.name).await?;
    Ok(ok(PlanDetail { plan, accounts }))
}
#[utoipa::path(
    delete,
    path = "/admin/v1/plans/{name}",
    tag = "admin",
    security(("adminToken" = [])),
    params(PlanPath),
    responses(
        (status = 200, description = "1000: deleted", body = Outcome),
        (status = 404, description = "1003: no such plan", body = Outcome),
        (status = 409, description = "1003: accounts are on it: move them first", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn delete_plan(
    Admin(audit): Admin,
    State(s): State<AppState>,
    axum::extract::Path(p): axum::extract::Path<PlanPath>,
) -> Result<Response, ApiError> {
    s.ops.delete_plan(&audit, &p.name).await?;
    let msg = keygate_core::BusinessCode::Success.default_msg();
    Ok(keygate_auth::envelope::json(StatusCode::OK, &Outcome { code: keygate_core::BusinessCode::Success, msg }))
}

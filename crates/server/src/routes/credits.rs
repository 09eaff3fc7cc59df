//! The admin API's credits endpoints: a balance, and top-ups, refunds and corrections
//! (`POST .../credits`), applied once per idempotency key. Setting a balance and its refill is a
//! field of the credential's and the account's `PATCH` (see [`super::admin`]).

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use keygate_auth::ApiError;
use keygate_auth::envelope::{Envelope, Outcome, ok};
use keygate_core::audit::Audit;
use keygate_core::credits::{Adjustment, CreditBalance};
use keygate_core::{AccountId, ClientId};
use keygate_store::CreditScope;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::routes::admin::Admin;
use crate::routes::extract::{JsonBody, Path};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/credentials/{client_id}/credits", post(adjust_credential).get(credential_balance))
        .route("/accounts/{id}/credits", post(adjust_account).get(account_balance))
}

/// Exactly one of `add` and `set` (read as one object, so that a body with both or neither gets
/// a message saying so; [`CreditsChangeDoc`] is how the document describes it).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreditsChange {
    #[serde(default, deserialize_with = "keygate_core::credits::whole_credits_opt")]
    add: Option<i64>,
    #[serde(default, deserialize_with = "keygate_core::credits::whole_credits_opt")]
    set: Option<i64>,
    idempotency_key: Option<String>,
}

/// A top-up or refund (`add`), or a correction (`set`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Only the document's: requests are read as `CreditsChange`.
pub(crate) enum CreditsChangeDoc {
    Add(AddCredits),
    Set(SetCredits),
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct AddCredits {
    /// Credits to add (a top-up after a payment) or, negative, to take away (a refund); the
    /// balance may go below zero.
    #[schema(minimum = -1_000_000_000_000_000_i64, maximum = 1_000_000_000_000_000_i64, example = 10000)]
    add: i64,
    /// Applies the change once: a retry with the same key and change answers the balance and
    /// changes nothing; the same key with another change is refused (409). Kept 30 days.
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$", example = "payment-7f3a")]
    idempotency_key: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct SetCredits {
    /// The balance to set (credits leased by nodes before are void).
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    set: i64,
    /// As for `add`.
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    idempotency_key: Option<String>,
}

/// A balance after a change.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreditsChanged {
    #[serde(flatten)]
    balance: CreditBalance,
    /// The idempotency key had been used for this change: nothing was applied now.
    replayed: bool,
}

async fn adjust(s: &AppState, audit: &Audit, scope: CreditScope, req: CreditsChange) -> Result<Response, ApiError> {
    let adjustment = match (req.add, req.set) {
        (Some(n), None) => Adjustment::Add(n),
        (None, Some(n)) => Adjustment::Set(n),
        _ => return Err(ApiError::BadRequest("give exactly one of add and set".into())),
    };
    let adjusted = s.ops.adjust_credits(audit, scope, adjustment, req.idempotency_key.as_deref()).await?;
    Ok(ok(CreditsChanged { balance: adjusted.balance, replayed: adjusted.replayed }))
}

/// The balance, or a 409 without a quota (nothing to show is not an error of the path).
async fn balance(s: &AppState, scope: CreditScope) -> Result<Response, ApiError> {
    match s.ops.credit_balance(scope).await? {
        Some(b) => Ok(ok(b)),
        None => Err(ApiError::Conflict("no credits quota applies: set one with PATCH".into())),
    }
}

#[utoipa::path(
    post,
    path = "/admin/v1/credentials/{client_id}/credits",
    tag = "admin",
    security(("adminToken" = [])),
    params(("client_id" = ClientId, Path, description = "The credential's clientId")),
    request_body = CreditsChangeDoc,
    responses(
        (status = 200, description = "1000: the balance after the change (every node can spend a top-up within the feed bound)", body = Envelope<CreditsChanged>),
        (status = 400, description = "1003: a malformed id or body, not exactly one of add and set, out of range", body = Outcome),
        (status = 404, description = "1003: no such credential", body = Outcome),
        (status = 409, description = "1003: the credential has no credits quota, or the idempotency key was used for another change", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn adjust_credential(
    Admin(audit): Admin,
    State(s): State<AppState>,
    Path(id): Path<ClientId>,
    JsonBody(req): JsonBody<CreditsChange>,
) -> Result<Response, ApiError> {
    adjust(&s, &audit, CreditScope::Credential(id), req).await
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/credits",
    tag = "admin",
    security(("adminToken" = [])),
    params(("id" = AccountId, Path, description = "The account id")),
    request_body = CreditsChangeDoc,
    responses(
        (status = 200, description = "1000: the balance after the change (every node can spend a top-up within the feed bound)", body = Envelope<CreditsChanged>),
        (status = 400, description = "1003: a malformed id or body, not exactly one of add and set, out of range", body = Outcome),
        (status = 404, description = "1109: no such account", body = Outcome),
        (status = 409, description = "1003: the account has no credits quota, or the idempotency key was used for another change", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn adjust_account(
    Admin(audit): Admin,
    State(s): State<AppState>,
    Path(id): Path<AccountId>,
    JsonBody(req): JsonBody<CreditsChange>,
) -> Result<Response, ApiError> {
    adjust(&s, &audit, CreditScope::Account(id), req).await
}

#[utoipa::path(
    get,
    path = "/admin/v1/credentials/{client_id}/credits",
    tag = "admin",
    security(("adminToken" = [])),
    params(("client_id" = ClientId, Path, description = "The credential's clientId")),
    responses(
        (status = 200, description = "1000: the credential's own balance", body = Envelope<CreditBalance>),
        (status = 400, description = "1003: a malformed id", body = Outcome),
        (status = 404, description = "1003: no such credential", body = Outcome),
        (status = 409, description = "1003: the credential has no credits quota of its own", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn credential_balance(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<ClientId>,
) -> Result<Response, ApiError> {
    balance(&s, CreditScope::Credential(id)).await
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}/credits",
    tag = "admin",
    security(("adminToken" = [])),
    params(("id" = AccountId, Path, description = "The account id")),
    responses(
        (status = 200, description = "1000: the account's balance (its own, or its plan's refill)", body = Envelope<CreditBalance>),
        (status = 400, description = "1003: a malformed id", body = Outcome),
        (status = 404, description = "1109: no such account", body = Outcome),
        (status = 409, description = "1003: no credits quota applies to the account", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn account_balance(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<AccountId>,
) -> Result<Response, ApiError> {
    balance(&s, CreditScope::Account(id)).await
}

//! The vendor's protocol: `POST /api/open/v3/getToken` and the verify endpoint that nginx
//! `auth_request` / Envoy `ext_authz` call (`/auth/verify`, any method, any path suffix).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use keygate_auth::authenticator::Access;
use keygate_auth::envelope::{Envelope, Outcome, ok};
use keygate_auth::{ApiError, Identity};
use keygate_core::BusinessCode;
use keygate_core::net::ClientAddr;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::routes::extract;

/// The vendor's getToken body. Both fields are needed; a missing or empty one answers 1102.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"clientId": "64db241f6d9e5c4bd136c187", "clientSecret": "kgk_7Hq2...API key"}))]
pub struct GetTokenRequest {
    /// The credential's clientId.
    #[schema(required)]
    client_id: Option<String>,
    /// The credential's API key.
    #[schema(required)]
    client_secret: Option<String>,
}

/// getToken's answer: the vendor's shape, the token beside the code (no `data`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct GetTokenResponse {
    /// 1000.
    code: BusinessCode,
    msg: &'static str,
    /// An HS256 JWT for `Authorization: Bearer`, valid for `token_ttl` (366 days by default) or
    /// until its credential is revoked or rotated out, or its account banned.
    token: String,
}

/// Trade a clientId and its API key (the `clientSecret`) for a token.
///
/// Answers with real HTTP statuses by default; with `http_status = "always-200"` every answer is
/// HTTP 200 and only `code` tells.
#[utoipa::path(
    post,
    path = "/api/open/v3/getToken",
    tag = "protocol",
    request_body = GetTokenRequest,
    security(()),
    responses(
        (status = 200, description = "1000: the token", body = GetTokenResponse),
        (status = 400, description = "1003: the body is not a JSON object with string fields", body = Outcome),
        (status = 401, description = "1102: clientId or clientSecret missing; 1101: unknown clientId, wrong secret, revoked or rotated-out credential",
            body = Outcome, headers(("www-authenticate" = String, description = "RFC 6750 Bearer challenge"))),
        (status = 403, description = "1200: the account is banned; 1009: the credential may not be used from the client's address", body = Outcome),
        (status = 413, description = "1003: the body is over max_body_bytes", body = Outcome),
        (status = 429, description = "1005: a rate limit of the credential or its account refused it", body = Outcome, headers(
            ("retry-after" = u64, description = "seconds until it would pass (absent: a limit is 0)"),
            ("ratelimit-policy" = String, description = "draft-ietf-httpapi-ratelimit-headers: \"name\";q=LIMIT;w=SECONDS per limit"),
            ("ratelimit" = String, description = "\"name\";r=REMAINING;t=SECONDS per limit"),
        )),
        (status = 503, description = "1503: the store could not answer in time", body = Outcome),
    )
)]
pub async fn get_token(
    State(state): State<AppState>,
    client: Option<axum::Extension<ClientAddr>>,
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
        .issue_token_from(
            req.client_id.as_deref().unwrap_or_default(),
            req.client_secret.as_deref().unwrap_or_default(),
            client.map(|c| c.ip),
        )
        .await;
    match result {
        Ok(token) => Ok(Json(GetTokenResponse { code: BusinessCode::Success, msg: "OK", token }).into_response()),
        Err(e) => {
            e.log("getToken");
            Err(e.into())
        }
    }
}

/// Authenticate the request's own credential, for nginx `auth_request`, Caddy `forward_auth` and
/// Envoy `ext_authz`.
///
/// Any method and any path below `/auth/verify` (the proxy's original path can follow). The
/// credential: `x-api-key`, or `Authorization: Bearer` (a token from getToken, or the API key
/// itself), or `x-client-id` + `x-client-secret`. Always real HTTP statuses, which proxies need.
/// Where a credits balance applies, the request is charged `x-keygate-cost` credits (default 1).
#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/auth/verify",
    tag = "protocol",
    security(("apiKey" = []), ("bearerToken" = []), ("clientId" = [], "clientSecret" = [])),
    params(
        ("x-keygate-cost" = Option<CostHeader>, Header, description = "Credits the request costs where a balance applies (0: needs a positive balance, charges nothing) [default: 1]"),
        ("x-keygate-require" = Option<RequireHeader>, Header, description = "The permissions the request requires, an expression: `videos.create AND (images.read OR admin)` [default: none; empty: none]"),
    ),
    responses(
        (status = 200, description = "1000: who the caller is", body = Envelope<Identity>, headers(
            ("x-keygate-account-id" = String, description = "the account id"),
            ("x-keygate-uid" = i64, description = "the account's uid"),
            ("x-keygate-client-id" = String, description = "the credential's clientId"),
            ("x-keygate-auth-method" = String, description = "api_key, bearer or client_secret"),
            ("x-keygate-credits-remaining" = i64, description = "where a credits balance applies: what is left after this request"),
            ("x-keygate-key-name" = String, description = "the credential's name, percent-encoded outside printable ASCII (when it has one)"),
            ("x-keygate-permissions" = String, description = "the permissions the credential holds, comma-separated (when it holds any)"),
            ("x-keygate-meta" = String, description = "the credential's metadata, JSON (when it has some)"),
            ("ratelimit-policy" = String, description = "when rate limits apply: \"name\";q=LIMIT;w=SECONDS per limit (draft-ietf-httpapi-ratelimit-headers)"),
            ("ratelimit" = String, description = "when rate limits apply: \"name\";r=REMAINING;t=SECONDS per limit"),
        )),
        (status = 401, description = "1102: no credential; 1101: invalid, unknown, revoked, disabled or expired",
            body = Outcome, headers(("www-authenticate" = String, description = "RFC 6750 Bearer challenge"))),
        (status = 400, description = "1003: x-keygate-cost is not a whole number from 0 to 10^15, or x-keygate-require is not a permission expression", body = Outcome),
        (status = 402, description = "1006: the credits left do not cover the cost (nothing was charged)", body = Outcome, headers(
            ("x-keygate-credits-remaining" = i64, description = "what is left"),
        )),
        (status = 403, description = "1200: the account is banned; 1009: the credential does not hold what x-keygate-require asks (the message says what), or may not be used from the client's address", body = Outcome),
        (status = 429, description = "1005: a rate limit refused it (nothing was counted against the others)", body = Outcome, headers(
            ("retry-after" = u64, description = "seconds until it would pass (absent: a limit is 0)"),
            ("ratelimit-policy" = String, description = "\"name\";q=LIMIT;w=SECONDS per limit"),
            ("ratelimit" = String, description = "\"name\";r=REMAINING;t=SECONDS per limit"),
        )),
        (status = 503, description = "1503: the store could not answer in time", body = Outcome),
    )
)]
pub async fn verify(State(state): State<AppState>, req: axum::extract::Request) -> Result<Response, ApiError> {
    authenticate(state, req).await
}

/// `/auth/verify` with a path after it (the proxied request's), answered the same way.
#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/auth/verify/{rest}",
    tag = "protocol",
    params(
        ("rest" = String, Path, description = "Anything: the original path, ignored"),
        ("x-keygate-cost" = Option<CostHeader>, Header, description = "Credits the request costs where a balance applies [default: 1]"),
        ("x-keygate-require" = Option<RequireHeader>, Header, description = "The permissions the request requires [default: none]"),
    ),
    security(("apiKey" = []), ("bearerToken" = []), ("clientId" = [], "clientSecret" = [])),
    responses(
        (status = 200, description = "1000: who the caller is", body = Envelope<Identity>),
        (status = 401, description = "1102 or 1101", body = Outcome),
        (status = 400, description = "1003: a malformed x-keygate-cost or x-keygate-require", body = Outcome),
        (status = 402, description = "1006: the credits left do not cover the cost", body = Outcome),
        (status = 403, description = "1200: the account is banned; 1009: permission denied", body = Outcome),
        (status = 429, description = "1005: a rate limit refused it", body = Outcome),
        (status = 503, description = "1503: the store could not answer in time", body = Outcome),
    )
)]
pub async fn verify_rest(State(state): State<AppState>, req: axum::extract::Request) -> Result<Response, ApiError> {
    authenticate(state, req).await
}

/// `x-keygate-cost`, as the document describes it: a whole number of credits up to 10^15.
/// (Only the document's: the header is read by `keygate_auth::identity::cost_header`.)
pub(crate) struct CostHeader;

impl utoipa::PartialSchema for CostHeader {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(keygate_core::credits::MAX_CREDITS))
            .into()
    }
}

impl utoipa::ToSchema for CostHeader {}

/// `x-keygate-require`, as the document describes it: the characters an expression is made of, at
/// most 1000 bytes (the grammar itself, with its parentheses, is no regular language: the header
/// is read by `keygate_auth::identity::require_header`).
pub(crate) struct RequireHeader;

impl utoipa::PartialSchema for RequireHeader {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[A-Za-z0-9_.:() \t-]*$"))
            .max_length(Some(keygate_core::permission::MAX_REQUIREMENT_LEN))
            .into()
    }
}

impl utoipa::ToSchema for RequireHeader {}

/// Takes the whole request (only its headers are read) so that they are not copied.
async fn authenticate(state: AppState, req: axum::extract::Request) -> Result<Response, ApiError> {
    let cost = keygate_auth::identity::cost_header(req.headers())?;
    let required = keygate_auth::identity::require_header(req.headers())?;
    let client_ip = req.extensions().get::<ClientAddr>().map(|c| c.ip);
    let access = Access { cost, require: required.as_deref(), client_ip };
    match state.auth.authenticator().authorize(req.headers(), &access).await {
        Ok(identity) => {
            let mut res = ok(&identity);
            // Room for the identity, rate-limit and request-id headers at once (the map would
            // otherwise grow, and rehash, as they are added).
            res.headers_mut().reserve(16);
            identity.set_headers(res.headers_mut());
            identity.set_ratelimit_headers(res.headers_mut());
            res.extensions_mut().insert(identity);
            Ok(res)
        }
        Err(e) => {
            e.log("verify");
            Err(e.into())
        }
    }
}

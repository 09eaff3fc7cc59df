//! Roles (`/admin/v1/roles`), and the fields of a credential that say what it may do and when
//! (the body of a credential's creation and PATCH, turned into one `CredentialChange`).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use keygate_auth::ApiError;
use keygate_auth::envelope::{Envelope, Outcome, created_with, ok};
use keygate_core::model::KeyRole;
use serde::{Deserialize, Serialize};

use super::admin::Admin;
use crate::app::AppState;
use crate::routes::extract::JsonBody;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/roles", get(list_roles))
        .route("/roles/{name}", get(get_role).put(put_role).delete(delete_role))
}

/// A time as Unix milliseconds or an RFC 3339 date-time (`2026-12-31T23:59:59Z`) or date.
#[derive(Deserialize, Debug, Clone, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum TimeValue {
    /// Unix milliseconds.
    Ms(i64),
    /// RFC 3339: `2026-12-31T23:59:59Z`, `2026-12-31T23:59:59+01:00`, or a date (its midnight, UTC).
    Text(String),
}

impl TimeValue {
    pub(crate) fn ms(&self, name: &str) -> Result<i64, ApiError> {
        match self {
            Self::Ms(ms) => Ok(*ms),
            Self::Text(s) => Ok(keygate_ops::usage::parse_time(name, s)?),
        }
    }
}

/// A string as the document describes it (only the document's: keygate reads these with its own
/// parsers, which also refuse what a pattern cannot say, like a permission named `and`).
fn string_schema(pattern: &str, max: usize, example: &str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(Some(max))
        .examples([serde_json::json!(example)])
        .into()
}

/// A role's name: 1 to 64 of a-z, 0-9, and `_ . -` after the first.
pub(crate) struct RoleName;

impl utoipa::PartialSchema for RoleName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema("^[a-z0-9][a-z0-9_.-]{0,63}$", 64, "video-editor")
    }
}

impl utoipa::ToSchema for RoleName {}

/// A permission a credential or a role is granted: a name (`videos.create`), `prefix.*` or `*`.
pub(crate) struct Grant;

impl utoipa::PartialSchema for Grant {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(r"^(\*|[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*(\.\*)?)$", 102, "videos.create")
    }
}

impl utoipa::ToSchema for Grant {}

/// A network: an IPv4 or IPv6 address, or one in CIDR form.
pub(crate) struct Network;

impl utoipa::PartialSchema for Network {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(r"^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$", 43, "203.0.113.0/24")
    }
}

impl utoipa::ToSchema for Network {}

/// A role's name in the path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct RolePath {
    /// The role's name.
    #[param(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", example = "video-editor")]
    name: String,
}

/// A role's permissions.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RoleBody {
    /// The whole set: names (`videos.create`), `prefix.*` or `*`.
    #[schema(value_type = Vec<Grant>, max_items = 1000, example = json!(["videos.create", "images.*"]))]
    permissions: Vec<String>,
}

/// A role and how many credentials hold it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoleDetail {
    #[serde(flatten)]
    role: KeyRole,
    credentials: u64,
}

#[utoipa::path(
    get,
    path = "/admin/v1/roles",
    tag = "admin",
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "1000: every role, by name", body = Envelope<Vec<KeyRole>>),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn list_roles(_: Admin, State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(ok(s.ops.list_roles().await?))
}

#[utoipa::path(
    put,
    path = "/admin/v1/roles/{name}",
    tag = "admin",
    security(("adminToken" = [])),
    params(RolePath),
    request_body = RoleBody,
    responses(
        (status = 201, description = "1000: created", body = Envelope<KeyRole>),
        (status = 200, description = "1000: replaced: every credential holding it, and its tokens, has the new permissions within the feed bound", body = Envelope<KeyRole>),
        (status = 400, description = "1003: a malformed name, body or permission", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn put_role(
    Admin(audit): Admin,
    State(s): State<AppState>,
    axum::extract::Path(p): axum::extract::Path<RolePath>,
    JsonBody(req): JsonBody<RoleBody>,
) -> Result<Response, ApiError> {
    let (role, created) = s.ops.put_role(&audit, &p.name, req.permissions).await?;
    Ok(created_with(if created { StatusCode::CREATED } else { StatusCode::OK }, role))
}

#[utoipa::path(
    get,
    path = "/admin/v1/roles/{name}",
    tag = "admin",
    security(("adminToken" = [])),
    params(RolePath),
    responses(
        (status = 200, description = "1000: the role and how many credentials hold it", body = Envelope<RoleDetail>),
        (status = 404, description = "1003: no such role", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn get_role(
    _: Admin,
    State(s): State<AppState>,
    axum::extract::Path(p): axum::extract::Path<RolePath>,
) -> Result<Response, ApiError> {
    let (role, credentials) = s.ops.get_role(&p.name).await?;
    Ok(ok(RoleDetail { role, credentials }))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/roles/{name}",
    tag = "admin",
    security(("adminToken" = [])),
    params(RolePath),
    responses(
        (status = 200, description = "1000: deleted", body = Outcome),
        (status = 404, description = "1003: no such role", body = Outcome),
        (status = 409, description = "1003: credentials hold it: take it from them first", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn delete_role(
    Admin(audit): Admin,
    State(s): State<AppState>,
    axum::extract::Path(p): axum::extract::Path<RolePath>,
) -> Result<Response, ApiError> {
    s.ops.delete_role(&audit, &p.name).await?;
    let msg = keygate_core::BusinessCode::Success.default_msg();
    Ok(keygate_auth::envelope::json(StatusCode::OK, &Outcome { code: keygate_core::BusinessCode::Success, msg }))
}

//! The admin API's usage, for billing: `GET /admin/v1/credentials/{clientId}/usage` and
//! `GET /admin/v1/accounts/{id}/usage`, by hour or day and outcome, as JSON in the envelope or
//! as CSV. The period is checked by [`keygate_ops::UsageRequest::range`] (the CLI's
//! `keygate usage export` checks it the same way).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use keygate_auth::ApiError;
use keygate_auth::envelope::{Envelope, Outcome, ok};
use keygate_core::{AccountId, ClientId};
use keygate_ops::{UsageRequest, UsageSummary};
use keygate_store::{Granularity, UsageScope, now_ms};
use serde::Deserialize;

use crate::app::AppState;
use crate::routes::admin::Admin;
use crate::routes::extract::{Path, Query, QueryShape};

/// What an answer is written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum UsageFormat {
    /// The envelope, `data`: one entry per hour or day.
    #[default]
    Json,
    /// `text/csv`, no envelope: a header line, then one line per hour or day, credential and outcome.
    Csv,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageQuery {
    /// The earliest start of an hour or day to include: RFC 3339 (`2025-02-01T00:00:00Z`,
    /// `2025-02-01T01:00:00+01:00`), a date (`2025-02-01`, midnight UTC) or Unix ms
    /// [default: 30 days, or 24 hours, before `to`].
    #[param(
        pattern = "^([0-9]{1,15}|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])([Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))?)$",
        example = "2025-02-01T00:00:00Z"
    )]
    from: Option<String>,
    /// The end, exclusive (hours or days that start before it), in the same forms
    /// [default: the end of the current day, or hour]. At most 366 days after `from`.
    #[param(
        pattern = "^([0-9]{1,15}|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])([Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))?)$",
        example = "2025-03-01"
    )]
    to: Option<String>,
    /// UTC days, or hours (only within the last 7 days) [default: day].
    #[param(inline)]
    granularity: Option<Granularity>,
    /// `json` (the envelope) or `csv` (a billing export) [default: json].
    #[param(inline)]
    format: Option<UsageFormat>,
    /// The last `days` UTC days, today included, 1 to 366: the first form of this query, kept;
    /// not with `from`, `to` or `granularity=hour`.
    #[param(minimum = 1, maximum = 366)]
    days: Option<u32>,
}

impl QueryShape for UsageQuery {
    const SHAPE: &'static str = "from=TIME&to=TIME&granularity=day|hour&format=json|csv (or days=N)";
}

/// Usage of a credential or an account over the period `q` names, in its format.
async fn answer(s: &AppState, scope: UsageScope, q: UsageQuery) -> Result<Response, ApiError> {
    let range = UsageRequest { from: q.from, to: q.to, granularity: q.granularity, days: q.days }.range(now_ms())?;
    Ok(match q.format.unwrap_or_default() {
        UsageFormat::Json => ok(s.ops.usage(scope, range).await?),
        UsageFormat::Csv => {
            let name = match scope {
                UsageScope::Credential(id) => format!("usage-{id}.csv"),
                UsageScope::Account(id) => format!("usage-account-{id}.csv"),
            };
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
                ],
                s.ops.usage_csv(scope, range).await?,
            )
                .into_response()
        }
    })
}

/// A credential's requests per UTC day (or hour) and outcome, and the credits they spent.
#[utoipa::path(
    get,
    path = "/admin/v1/credentials/{client_id}/usage",
    operation_id = "usage",
    tag = "admin",
    security(("adminToken" = [])),
    params(("client_id" = ClientId, Path, description = "The credential's clientId"), UsageQuery),
    responses(
        (status = 200, description = "1000: one entry per hour or day with requests, by outcome (business code); \
            with `format=csv`, `start,client_id,outcome,requests,credits` lines (`start` in RFC 3339, UTC)",
            content(
                (Envelope<Vec<UsageSummary>> = "application/json"),
                (String = "text/csv", example = "start,client_id,outcome,requests,credits\n2025-02-01T00:00:00Z,64db241f6d9e5c4bd136c188,1000,120,240\n"),
            )
        ),
        (status = 400, description = "1003: a malformed id or query; a period that is empty, longer than 366 days, or hourly beyond the last 7 days", body = Outcome),
        (status = 404, description = "1003: no such credential", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn credential_usage(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<ClientId>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    answer(&s, UsageScope::Credential(id), q).await
}

/// An account's requests per UTC day (or hour) and outcome, summed over its credentials (revoked
/// ones too), and the credits they spent. As CSV, one line per credential (no sums).
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}/usage",
    operation_id = "account_usage",
    tag = "admin",
    security(("adminToken" = [])),
    params(("id" = AccountId, Path, description = "The account id"), UsageQuery),
    responses(
        (status = 200, description = "1000: one entry per hour or day with requests, by outcome (business code), of all its credentials; \
            with `format=csv`, `start,client_id,outcome,requests,credits` lines for each of its credentials",
            content(
                (Envelope<Vec<UsageSummary>> = "application/json"),
                (String = "text/csv", example = "start,client_id,outcome,requests,credits\n2025-02-01T00:00:00Z,64db241f6d9e5c4bd136c188,1000,120,240\n2025-02-01T00:00:00Z,64db241f6d9e5c4bd136c189,1005,3,0\n"),
            )
        ),
        (status = 400, description = "1003: a malformed id or query; a period that is empty, longer than 366 days, or hourly beyond the last 7 days", body = Outcome),
        (status = 404, description = "1109: no such account", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn account_usage(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<AccountId>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    answer(&s, UsageScope::Account(id), q).await
}

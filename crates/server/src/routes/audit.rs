//! The audit log in the admin API: `GET /admin/v1/audit`, newest first, by cursor. There is no
//! way to change or delete an entry through any door; the retention setting prunes old ones.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use keygate_auth::ApiError;
use keygate_auth::envelope::{Envelope, Outcome, page};
use keygate_core::audit::AuditEntry;
use keygate_ops::audit::AuditFilter;
use serde::Deserialize;

use crate::app::AppState;
use crate::routes::admin::Admin;
use crate::routes::extract::{Query, QueryShape};

pub fn router() -> Router<AppState> {
    Router::new().route("/audit", get(list_audit))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Exactly this actor: an email (console), `USER@HOST` (CLI), `admin token`, `keygate`.
    #[param(max_length = 320)]
    actor: Option<String>,
    /// Exactly this target: an accountId, clientId, plan or role name, signing key id, `admin_token`.
    #[param(max_length = 320)]
    target: Option<String>,
    /// An account's history: its own entries and its credentials'.
    #[param(pattern = "^$|^[0-9a-f]{24}$")]
    account: Option<String>,
    /// An action (`credential.update`), or a kind of target for all of its actions (`credential`).
    #[param(
        pattern = "^$|^(account|credential|plan|role|signing_key|admin_token)(\\.(create|ban|unban|update|role|password|credits|revoke|rotate|delete|add|retire|reset))?$"
    )]
    action: Option<String>,
    /// From this time (RFC 3339, a date, or Unix ms), inclusive.
    from: Option<String>,
    /// Until this time (RFC 3339, a date, or Unix ms), exclusive.
    to: Option<String>,
    /// The `next` cursor of the previous page.
    #[param(pattern = "^$|^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
    /// Entries per page, 1 to 1000 [default: 100].
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

impl QueryShape for AuditQuery {
    const SHAPE: &'static str = "actor=TEXT&target=ID&account=ID&action=ACTION&from=TIME&to=TIME&cursor=CURSOR&limit=N";
}

#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    tag = "admin",
    security(("adminToken" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "1000: a page of audit entries, newest first; `next` when more follow. \
            Each says when, who (`actorKind`, `actor`), the action and its target, the fields that changed \
            before and after (never a secret), the client's address and the request id", body = Envelope<Vec<AuditEntry>>),
        (status = 400, description = "1003: a malformed filter, time or cursor", body = Outcome),
        (status = 401, description = "1102: no admin token; 1101: a wrong one", body = Outcome),
        (status = 503, description = "1503: the store could not answer", body = Outcome),
    )
)]
pub(crate) async fn list_audit(
    _: Admin,
    State(s): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let filter = AuditFilter {
        actor: q.actor,
        target: q.target,
        account: q.account,
        action: q.action,
        from: q.from,
        to: q.to,
        cursor: q.cursor,
        limit: q.limit,
    };
    let p = s.ops.audit_log(&filter).await?;
    Ok(page(p.items, p.next))
}

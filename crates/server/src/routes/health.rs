//! `/healthz`: the process is up. `/readyz`: the store answers and the change feed is being
//! followed, so this node's authentication decisions are current.

use axum::extract::State;
use axum::response::Response;
use keygate_auth::ApiError;
use keygate_auth::envelope::{Envelope, Outcome, json, ok};
use keygate_core::BusinessCode;

use crate::app::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "1000", body = Outcome)))]
pub async fn healthz() -> Response {
    json(
        axum::http::StatusCode::OK,
        &Envelope::<()> {
            code: BusinessCode::Success,
            msg: BusinessCode::Success.default_msg(),
            data: None,
            next: None,
        },
    )
}

/// What `/readyz` answers when ready.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// "sqlite" or "postgres".
    backend: &'static str,
    /// The newest change-feed entry applied.
    feed_cursor: i64,
    /// Milliseconds since the change feed was last followed.
    feed_age_ms: i64,
    /// How rate limits are counted: "shared" (through Redis, which answers), "shared, redis
    /// unreachable" (the fail mode applies), or "per node".
    ratelimits: &'static str,
}

/// Readiness: the store answers and the change feed is followed, so this node's decisions are
/// current.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "1000: ready", body = Envelope<Readiness>),
        (status = 503, description = "1503: the store does not answer, or the feed was not followed within fail_static", body = Outcome),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let auth = state.auth.authenticator();
    if !auth.cache_trusted() {
        return Err(ApiError::Unavailable(format!(
            "readiness: the change feed was last followed {} ms ago, past the fail-static window",
            auth.feed_age_ms()
        )));
    }
    auth.store().ping().await.map_err(|e| ApiError::Unavailable(format!("readiness: {e}")))?;
    Ok(ok(Readiness {
        backend: auth.store().backend(),
        feed_cursor: state.auth.feed_cursor(),
        feed_age_ms: auth.feed_age_ms(),
        ratelimits: match auth.limiter.shared_state() {
            Some(true) => "shared",
            Some(false) => "shared, redis unreachable",
            None => "per node",
        },
    }))
}

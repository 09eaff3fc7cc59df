//! `/healthz`: the process is up. `/readyz`: the store answers and the change feed is being
//! followed, so this node's authentication decisions are current.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use keygate_auth::ApiError;
use keygate_auth::envelope::{Envelope, json, ok};
use keygate_core::BusinessCode;
use serde_json::json;

use crate::app::AppState;

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

pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let auth = state.auth.authenticator();
    if !auth.cache_trusted() {
        return Err(ApiError::Unavailable(format!(
            "readiness: the change feed was last followed {} ms ago, past the fail-static window",
            auth.feed_age_ms()
        )));
    }
    auth.store().ping().await.map_err(|e| ApiError::Unavailable(format!("readiness: {e}")))?;
    Ok(ok(json!({
        "backend": auth.store().backend(),
        "feedCursor": state.auth.feed_cursor(),
        "feedAgeMs": auth.feed_age_ms(),
    }))
    .into_response())
}

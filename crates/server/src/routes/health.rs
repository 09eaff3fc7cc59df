//! `/healthz`: the process is up. `/readyz`: the store answers and the change feed is being
//! followed, so this node's authentication decisions are current.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::app::AppState;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"code": 1000, "msg": "OK"}))
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if !state.auth.cache_trusted() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"code": 1503, "msg": "Change feed not followed within the fail-static window"})),
        );
    }
    match state.auth.store().ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(
                json!({"code": 1000, "msg": "OK", "data": {"backend": state.auth.store().backend(), "feedCursor": *state.feed_cursor.borrow(), "feedAgeMs": state.auth.feed_age_ms()}}),
            ),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"code": 1503, "msg": "Store unavailable"})))
        }
    }
}

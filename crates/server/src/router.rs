//! Which code serves a request. [`router`] holds keygate's own endpoints; [`Dispatch`] sends
//! `/auth/verify` and gateway paths past the router (their hot path), everything else through it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use keygate_auth::{ApiError, Resource};
use keygate_gateway::Gateway;
use tower_http::catch_panic::CatchPanicLayer;

use crate::app::AppState;
use crate::observe::Observer;
use crate::routes;

/// Where the admin API lives. The whole namespace is keygate's: the gateway never proxies a path
/// under it, not even one no admin handler matches.
pub const ADMIN_PREFIX: &str = "/admin/v1";
const VERIFY_PATH: &str = "/auth/verify";

/// Paths that [`router`] serves (exactly, or as a prefix covering the path and what is under it).
/// (`/openapi.json` is not among them: behind a gateway it is the upstream's; keygate's own
/// document is always at `/admin/v1/openapi.json`.)
const OWN_EXACT: &[&str] = &["/api/open/v3/getToken", "/healthz", "/metrics", "/readyz"];
const OWN_PREFIXES: &[&str] = &[VERIFY_PATH, ADMIN_PREFIX, "/console"];

/// Whether `path` is one of keygate's own endpoints (never proxied).
pub fn is_own_path(path: &str) -> bool {
    OWN_EXACT.contains(&path)
        || OWN_PREFIXES
            .iter()
            .any(|p| path.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// keygate's own endpoints. Paths it does not know answer 404 in the envelope (the console's, its
/// HTML 404 page); the gateway is not behind the router (see [`Dispatch`]).
pub fn router(state: AppState, observer: Observer, max_body_bytes: usize) -> Router {
    let protocol = Router::new()
        .route("/api/open/v3/getToken", post(routes::protocol::get_token))
        .layer(middleware::from_fn_with_state(state.clone(), status_mode));
    Router::new()
        .merge(protocol)
        .route(VERIFY_PATH, any(routes::protocol::verify))
        .route("/auth/verify/{*rest}", any(routes::protocol::verify_rest))
        .route("/healthz", get(routes::health::healthz))
        .route("/metrics", get(crate::observe::metrics_handler))
        .route("/readyz", get(routes::health::readyz))
        .route("/openapi.json", get(crate::openapi::handler))
        .route("/admin/v1/openapi.json", get(crate::openapi::handler))
        .nest(ADMIN_PREFIX, routes::admin::router())
        .nest("/console", keygate_console::router(state.console.clone()))
        .route("/console/", get(|| async { axum::response::Redirect::permanent("/console") }))
        .fallback(|| async { ApiError::NotFound(Resource::Route) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| ApiError::Internal("handler panicked".into()).into_response()))
        .layer(middleware::from_fn_with_state(observer, crate::observe::middleware))
        .with_state(state)
}

/// With `http_status = "always-200"`, protocol answers keep their envelope but use HTTP 200,
/// as the vendor's own clients expect.
async fn status_mode(State(state): State<AppState>, req: Request, next: Next) -> Response {
    state.auth.status_mode().apply(next.run(req).await)
}

/// Serves one request: keygate's own endpoints through the router; `/auth/verify` and, with a
/// gateway configured, every other path straight to their handlers, past the router's routing,
/// layers and fallback (the hot paths, measured by `bench/gateway.sh`).
#[derive(Clone)]
pub struct Dispatch {
    router: Router,
    state: AppState,
    gateway: Option<Arc<Gateway>>,
    observer: Observer,
}

impl Dispatch {
    pub fn new(state: AppState, gateway: Option<Arc<Gateway>>, observer: Observer, max_body_bytes: usize) -> Self {
        Self { router: router(state.clone(), observer.clone(), max_body_bytes), state, gateway, observer }
    }

    pub fn call(&self, req: Request) -> impl Future<Output = Result<Response, Infallible>> + Send + use<> {
        use futures_util::future::Either;
        use tower::Service;
        let path = req.uri().path();
        // `/auth/verify` (nginx auth_request, Envoy ext_authz) is on every request of the API
        // behind that proxy: served directly too, with the router's route labels.
        if let Some(rest) = path.strip_prefix(VERIFY_PATH)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            let label = if rest.is_empty() { VERIFY_PATH } else { "/auth/verify/{*rest}" };
            let state = self.state.clone();
            return Either::Right(Either::Left(direct(self.observer.clone(), req, Some(label), |req| async move {
                routes::protocol::verify(State(state), req).await.into_response()
            })));
        }
        match &self.gateway {
            Some(gateway) if !is_own_path(path) => {
                let gateway = gateway.clone();
                Either::Right(Either::Right(direct(self.observer.clone(), req, None, |req| async move {
                    gateway.proxy(req).await
                })))
            }
            _ => Either::Left(self.router.clone().call(req)),
        }
    }
}

/// One request to `handler` past the router: observed (the route label is `label`, or the
/// gateway's route), and a panic answers 500 as the router's CatchPanicLayer does.
async fn direct<F, Fut>(
    observer: Observer,
    req: Request,
    label: Option<&'static str>,
    handler: F,
) -> Result<Response, Infallible>
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    use futures_util::FutureExt;
    let observed = observer.observe(req, label, handler);
    Ok(std::panic::AssertUnwindSafe(observed)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| ApiError::Internal("handler panicked".into()).into_response()))
}

#[cfg(test)]
mod tests {
    use super::is_own_path;

    #[test]
    fn own_paths() {
        for p in ["/admin/v1", "/admin/v1/", "/admin/v1/nope", "/admin/v1/accounts/x/y", "/console", "/console/x"] {
            assert!(is_own_path(p), "{p}");
        }
        for p in ["/auth/verify", "/auth/verify/a/b", "/api/open/v3/getToken", "/healthz", "/readyz", "/metrics"] {
            assert!(is_own_path(p), "{p}");
        }
        for p in ["/admin", "/admin/v10", "/admin/v1x", "/v1/admin/v1", "/", "/consoles", "/healthz/", "/auth/verifyx"]
        {
            assert!(!is_own_path(p), "{p}");
        }
    }
}

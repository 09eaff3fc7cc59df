//! keygate as tower middleware: [`AuthLayer`] wraps any `tower::Service<http::Request<B>>` (an
//! axum `Router`, a tonic server, a hyper service) and decides every request with the same
//! [`Authenticator::authenticate`] the gateway and `/auth/verify` call. An authenticated request
//! goes on with its [`Identity`] in the request's extensions (handlers take it as an extractor);
//! a refused one gets the protocol's envelope (1101 / 1102 / 1200, or 1503 when the store cannot
//! answer) in the configured [`StatusMode`], and the inner service never sees it.
//!
//! ```no_run
//! # async fn demo(auth: keygate_auth::Auth) {
//! use axum::{Router, routing::get};
//! use keygate_auth::Identity;
//!
//! async fn hello(identity: Identity) -> String {
//!     format!("hello, account {}", identity.account_id)
//! }
//! let app: Router = Router::new()
//!     .route("/hello", get(hello))
//!     .route("/public", get(|| async { "no key needed" }))
//!     .layer(auth.layer().public("/public"));
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::Request;
use http::request::Parts;
use tower_layer::Layer;
use tower_service::Service;

use crate::authenticator::Access;
use crate::authenticator::Authenticator;
use crate::envelope::{ApiError, StatusMode};
use crate::identity::{ClientIp, Cost, Identity, Require};
use keygate_core::permission::Requirement;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Authenticates every request before the inner service sees it. Made by [`crate::Auth::layer`].
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    status_mode: StatusMode,
    /// Path prefixes let through unauthenticated.
    public: Arc<[String]>,
    /// Credits a request costs under a path prefix (the longest wins; default 1).
    costs: Arc<[(String, u64)]>,
    /// The permissions required under a path prefix (the longest wins; default none).
    requires: Arc<[(String, Arc<Requirement>)]>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>, status_mode: StatusMode) -> Self {
        Self {
            auth,
            status_mode,
            public: Arc::from(Vec::new()),
            costs: Arc::from(Vec::new()),
            requires: Arc::from(Vec::new()),
        }
    }

    /// Lets requests under `prefix` through without authentication (by path segments: `/public`
    /// covers `/public` and `/public/x`, not `/publicity`). They carry no [`Identity`]; a handler
    /// that wants one anyway takes `Option<Identity>`.
    pub fn public(mut self, prefix: impl Into<String>) -> Self {
        let mut list = self.public.to_vec();
        list.push(prefix.into());
        self.public = Arc::from(list);
        self
    }

    fn is_public(&self, path: &str) -> bool {
        under_any(&self.public, path)
    }

    /// Requests under `prefix` cost `credits` where a balance applies (by path segments, the
    /// longest prefix wins; 0 needs a positive balance and charges nothing) [default: 1]. A
    /// [`Cost`] extension on the request, set by an earlier layer, overrides it.
    pub fn cost(mut self, prefix: impl Into<String>, credits: u64) -> Self {
        let mut list = self.costs.to_vec();
        list.push((prefix.into(), credits));
        list.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        self.costs = Arc::from(list);
        self
    }

    /// Requests under `prefix` must hold the permissions `required` asks for (by path segments,
    /// the longest prefix wins), else they are refused with 1009 naming the requirement. A
    /// [`Require`] extension on the request, set by an earlier layer, overrides it.
    ///
    /// ```
    /// # fn demo(layer: keygate_auth::AuthLayer) -> Result<keygate_auth::AuthLayer, keygate_core::permission::PermissionError> {
    /// let layer = layer.require("/videos", "videos.create AND (images.read OR admin)".parse()?);
    /// # Ok(layer) }
    /// ```
    pub fn require(mut self, prefix: impl Into<String>, required: Requirement) -> Self {
        let mut list = self.requires.to_vec();
        list.push((prefix.into(), Arc::new(required)));
        list.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        self.requires = Arc::from(list);
        self
    }

    fn requirement_of<B>(&self, req: &Request<B>) -> Option<Arc<Requirement>> {
        if let Some(Require(r)) = req.extensions().get::<Require>() {
            return Some(r.clone());
        }
        let path = req.uri().path();
        self.requires.iter().find(|(p, _)| under_any(std::slice::from_ref(p), path)).map(|(_, r)| r.clone())
    }

    fn cost_of<B>(&self, req: &Request<B>) -> u64 {
        if let Some(Cost(c)) = req.extensions().get::<Cost>() {
            return *c;
        }
        let path = req.uri().path();
        self.costs.iter().find(|(p, _)| under_any(std::slice::from_ref(p), path)).map_or(1, |(_, c)| *c)
    }
}

/// Whether `path` is one of `prefixes` or below one, by path segments.
fn under_any(prefixes: &[String], path: &str) -> bool {
    prefixes.iter().any(|p| {
        path.strip_prefix(p.as_str()).is_some_and(|rest| p.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
    })
}

impl<S> Layer<S> for AuthLayer {
    type Service = RequireAuth<S>;

    fn layer(&self, inner: S) -> RequireAuth<S> {
        RequireAuth { inner, layer: self.clone() }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone)]
pub struct RequireAuth<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B, ResBody> Service<Request<B>> for RequireAuth<S>
where
    S: Service<Request<B>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The service that was polled ready goes with this request; its clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let mut ratelimits = Vec::new();
            if !layer.is_public(req.uri().path()) {
                let required = layer.requirement_of(&req);
                let access = Access {
                    cost: layer.cost_of(&req),
                    require: required.as_deref(),
                    client_ip: req.extensions().get::<ClientIp>().map(|c| c.0),
                };
                match layer.auth.authorize(req.headers(), &access).await {
                    Ok(identity) => {
                        ratelimits.clone_from(&identity.ratelimits);
                        req.extensions_mut().insert(identity);
                    }
                    Err(e) => {
                        e.log("layer");
                        return Ok(layer.status_mode.apply(ApiError::from(e).into_response()));
                    }
                }
            }
            let res = inner.call(req).await?;
            let mut res = res.map(axum_core::body::Body::new);
            // The caller's rate limits, on the service's answer.
            crate::ratelimit::set_headers(&ratelimits, res.headers_mut());
            Ok(res)
        })
    }
}

/// The identity the Layer put on the request. On a route the Layer does not cover (or a public
/// path), the extractor answers 500: that is a wiring mistake, not the caller's; take
/// `Option<Identity>` where a request may come without one.
impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        parts.extensions.get::<Identity>().cloned().ok_or_else(|| {
            ApiError::Internal(
                "no keygate identity on the request: the route is not behind keygate_auth's layer".into(),
            )
            .into_response()
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<Identity>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_prefixes_by_segment() {
        let public = ["/public".to_owned(), "/static/".to_owned()];
        for p in ["/public", "/public/x", "/static/a.css"] {
            assert!(under_any(&public, p), "{p}");
        }
        for p in ["/publicity", "/", "/static", "/v1/public"] {
            assert!(!under_any(&public, p), "{p}");
        }
    }
}

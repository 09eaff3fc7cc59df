//! The reverse-proxy gateway: requests whose path matches a configured route (longest prefix
//! wins) are authenticated exactly like `/auth/verify` and forwarded to the route's upstream;
//! a refused request never reaches the upstream and gets the protocol's envelope.
//!
//! What the upstream receives: the request with hop-by-hop headers removed, the credential
//! removed (`strip_credentials`), every incoming `x-keygate-*` header removed and the caller's
//! identity set in `x-keygate-account-id`, `-uid`, `-client-id`, `-auth-method` (so a client
//! cannot forge them), `x-request-id`, and `X-Forwarded-For/-Proto/-Host`. Bodies stream both
//! ways without buffering; a WebSocket upgrade is passed through after authentication. The
//! upstream connection pool keeps connections alive. If the client goes away, the upstream
//! request is dropped with it.
//!
//! The gateway decides nothing itself: a request is authenticated by the same
//! [`Authenticator::authenticate`] as `/auth/verify` and the tower Layer, and a refusal is the same
//! envelope in the same status mode. Which paths reach it (not keygate's own) is the server's call.
#![forbid(unsafe_code)]

pub mod config;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use keygate_auth::identity::{IDENTITY_HEADER_PREFIX, credential_headers};
use keygate_auth::{ApiError, Authenticator, Identity, Resource, StatusMode};
use keygate_core::net::ClientAddr;

pub use crate::config::{GatewayConfig, Route, Upstream};
use crate::upstream::{UpstreamError, UpstreamPool};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub struct Gateway {
    config: GatewayConfig,
    auth: Arc<Authenticator>,
    /// How refusals and upstream failures are answered.
    status_mode: StatusMode,
    /// Per route (same order as `config.routes`): what is made once rather than per request.
    meta: Vec<RouteMeta>,
}

struct RouteMeta {
    label: RouteLabel,
    latency: metrics::Histogram,
    /// Shared by the routes to the same upstream.
    pool: Arc<UpstreamPool>,
    /// `Host` for the upstream when the client's is not preserved.
    host: HeaderValue,
}

/// Which route served a request, for the access log and metrics.
#[derive(Clone, Debug)]
pub struct RouteLabel(pub Arc<str>);

impl RouteLabel {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Gateway {
    /// A gateway whose requests `auth` decides; `workers` is the number of worker threads (one
    /// upstream pool each, see [`upstream`]).
    pub fn new(config: GatewayConfig, auth: Arc<Authenticator>, status_mode: StatusMode, workers: usize) -> Self {
        let mut pools: Vec<Arc<UpstreamPool>> = Vec::new();
        let meta = config
            .routes
            .iter()
            .map(|r| {
                let authority = &r.upstream.authority;
                let pool = match pools.iter().find(|p| p.authority() == authority) {
                    Some(p) => p.clone(),
                    None => {
                        let p = Arc::new(UpstreamPool::new(authority.clone(), config.connect_timeout, workers));
                        pools.push(p.clone());
                        p
                    }
                };
                RouteMeta {
                    label: RouteLabel(Arc::from(r.prefix.as_str())),
                    latency: metrics::histogram!("keygate_upstream_duration_seconds", "route" => r.prefix.clone()),
                    pool,
                    host: HeaderValue::from_str(authority.as_str()).expect("an authority is a valid header value"),
                }
            })
            .collect();
        Self { config, auth, status_mode, meta }
    }

    /// The routes, longest prefix first.
    pub fn routes(&self) -> &[Route] {
        &self.config.routes
    }

    fn route(&self, path: &str) -> Option<(&Route, &RouteMeta)> {
        let i = self.config.routes.iter().position(|r| r.matches(path))?;
        Some((&self.config.routes[i], &self.meta[i]))
    }
}

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1), plus the
/// proxy credentials.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHORIZATION,
        &header::PROXY_AUTHENTICATE,
    ]
    .contains(&name)
}

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages have none: one pass over the headers instead of a removal per name.
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [&KEEP_ALIVE, &PROXY_CONNECTION, &header::TE, &header::TRAILER, &header::TRANSFER_ENCODING] {
        headers.remove(name);
    }
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::PROXY_AUTHENTICATE);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

fn is_upgrade(req: &Request) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

fn upstream_uri(route: &Route, uri: &Uri) -> Result<Uri, ApiError> {
    let path = uri.path();
    let rest = if route.strip_prefix {
        let r = &path[route.prefix.len().min(path.len())..];
        if r.starts_with('/') { r.to_owned() } else { format!("/{r}") }
    } else {
        path.to_owned()
    };
    let mut pq = format!("{}{}", route.upstream.base_path, rest);
    if let Some(q) = uri.query() {
        pq.push('?');
        pq.push_str(q);
    }
    Uri::try_from(pq).map_err(|_| ApiError::BadRequest("request path cannot be forwarded".into()))
}

impl Gateway {
    /// Serves one request: authenticated (unless its route is public) and forwarded. The answer
    /// carries the route's [`RouteLabel`] (and the caller's [`Identity`]) in its extensions.
    pub async fn proxy(&self, mut req: Request) -> Response {
        let Some((route, meta)) = self.route(req.uri().path()) else {
            return ApiError::NotFound(Resource::Route).into_response();
        };
        let label = meta.label.clone();
        let identity = if route.public {
            None
        } else {
            let access = keygate_auth::Access {
                cost: route.cost,
                require: route.permissions.as_ref(),
                client_ip: req.extensions().get::<ClientAddr>().map(|c| c.ip),
            };
            match self.auth.authorize(req.headers(), &access).await {
                Ok(id) => Some(id),
                Err(e) => {
                    let mut res = self.status_mode.apply(ApiError::from(e).into_response());
                    res.extensions_mut().insert(label);
                    return res;
                }
            }
        };
        let mut res = match forward(&self.config, route, meta, identity.as_ref(), &mut req).await {
            Ok(res) => res,
            Err(e) => self.status_mode.apply(e.into_response()),
        };
        res.extensions_mut().insert(label);
        if let Some(id) = identity {
            // The caller's rate limits, as keygate counts them (an upstream's own are replaced).
            id.set_ratelimit_headers(res.headers_mut());
            res.extensions_mut().insert(id);
        }
        res
    }
}

async fn forward(
    cfg: &GatewayConfig,
    route: &Route,
    meta: &RouteMeta,
    identity: Option<&Identity>,
    req: &mut Request,
) -> Result<Response, ApiError> {
    let upgrade = is_upgrade(req);
    let client_version = req.version();
    let client_upgrade = if upgrade { req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() } else { None };
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_canonical());
    // Who the client is (the server works it out from the peer and the trusted proxies).
    let client = req.extensions().get::<ClientAddr>().copied();
    let via_proxy = client.is_some_and(|c| c.via_proxy);
    let original_host = req
        .headers()
        .get(header::HOST)
        .cloned()
        .or_else(|| req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let uri = upstream_uri(route, req.uri())?;

    let mut out = Request::new(std::mem::take(req.body_mut()));
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = uri;
    *out.version_mut() = Version::HTTP_11;
    let headers = out.headers_mut();
    *headers = std::mem::take(req.headers_mut());
    strip_hop_by_hop(headers, upgrade);
    if cfg.strip_credentials {
        for name in credential_headers() {
            headers.remove(name);
        }
    }
    // Identity headers come from keygate only.
    let forged: Vec<HeaderName> =
        headers.keys().filter(|k| k.as_str().starts_with(IDENTITY_HEADER_PREFIX)).cloned().collect();
    for name in forged {
        headers.remove(name);
    }
    if let Some(id) = identity {
        id.set_headers(headers);
    }
    // What a client says about forwarding is its own invention unless a trusted proxy said it:
    // from anyone else these go, and keygate writes its own.
    if !via_proxy {
        for name in [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST, &X_REAL_IP, &FORWARDED] {
            headers.remove(name);
        }
    }
    if let Some(c) = client
        && let Ok(v) = HeaderValue::from_str(&c.ip.to_string())
    {
        headers.insert(&X_REAL_IP, v);
    }
    if let Some(ip) = peer {
        use std::io::Write;
        let mut xff = Vec::with_capacity(48);
        if let Some(prior) = headers.get(&X_FORWARDED_FOR) {
            xff.extend_from_slice(prior.as_bytes());
            xff.extend_from_slice(b", ");
        }
        let _ = write!(xff, "{ip}");
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
            headers.insert(&X_FORWARDED_FOR, v);
        }
    }
    // A trusted proxy's scheme and host stand (it may have terminated TLS); else keygate's own.
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(host) = &original_host
        && !headers.contains_key(&X_FORWARDED_HOST)
    {
        headers.insert(&X_FORWARDED_HOST, host.clone());
    }
    match original_host {
        Some(host) if cfg.preserve_host => headers.insert(header::HOST, host),
        _ => headers.insert(header::HOST, meta.host.clone()),
    };

    let started = std::time::Instant::now();
    let result = tokio::time::timeout(cfg.response_timeout, meta.pool.send(out)).await;
    meta.latency.record(started.elapsed().as_secs_f64());
    let authority = &route.upstream.authority;
    let mut res = match result {
        Err(_) => {
            return Err(ApiError::GatewayTimeout(format!(
                "no response headers from {authority} within {:?}",
                cfg.response_timeout
            )));
        }
        Ok(Err(UpstreamError::ConnectTimeout)) => {
            return Err(ApiError::GatewayTimeout(format!(
                "connecting to {authority} took longer than {:?}",
                cfg.connect_timeout
            )));
        }
        Ok(Err(UpstreamError::Failed(cause))) => return Err(ApiError::BadGateway(format!("{authority}: {cause}"))),
        Ok(Err(UpstreamError::ClientBody { timeout: true, cause })) => return Err(ApiError::RequestTimeout(cause)),
        Ok(Err(UpstreamError::ClientBody { timeout: false, cause })) => return Err(ApiError::ClientClosed(cause)),
        Ok(Ok(res)) => res,
    };

    if upgrade && res.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut res);
        if let Some(client_upgrade) = client_upgrade {
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let (mut c, mut u) = (TokioIo::new(client), TokioIo::new(upstream));
                        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                            tracing::debug!(error = %e, "upgraded connection closed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "protocol upgrade failed"),
                }
            });
        }
        let (parts, _) = res.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    strip_hop_by_hop(res.headers_mut(), false);
    let (mut parts, body) = res.into_parts();
    // The client's protocol, whatever the upstream spoke (say HTTP/1.0).
    parts.version = client_version;
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, base: &str, strip: bool) -> Route {
        Route {
            prefix: prefix.into(),
            upstream: Upstream { authority: "u:1".parse().unwrap(), base_path: base.into() },
            public: false,
            strip_prefix: strip,
            cost: 1,
            permissions: None,
        }
    }

    #[test]
    fn upstream_uris() {
        let u = |r: &Route, s: &str| upstream_uri(r, &s.parse().unwrap()).unwrap().to_string();
        assert_eq!(u(&route("/", "", false), "/a/b?x=1"), "/a/b?x=1");
        assert_eq!(u(&route("/v1", "/base", false), "/v1/a"), "/base/v1/a");
        assert_eq!(u(&route("/v1", "/base", true), "/v1/a?q"), "/base/a?q");
        assert_eq!(u(&route("/v1", "", true), "/v1"), "/");
        assert_eq!(u(&route("/v1/", "", true), "/v1/x"), "/x");
    }

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-end-to-end", HeaderValue::from_static("1"));
        let mut plain = h.clone();
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(plain.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-end-to-end"]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }
}

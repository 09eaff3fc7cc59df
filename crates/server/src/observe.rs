//! Observability: one middleware gives every request an id (kept from the client's
//! `x-request-id` when sane, else generated), forwards it (the gateway sends it upstream),
//! returns it, counts the request in Prometheus metrics and writes one access-log line.
//! Neither ever holds a secret: the log has the path without its query string, the client id
//! and the business code, never a header value other than the request id.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keygate_auth::Identity;
use keygate_auth::identity::X_REQUEST_ID;
use keygate_core::BusinessCode;
use keygate_core::net::{ClientAddr, TrustedProxies};
use keygate_gateway::RouteLabel;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rand::RngCore;

use crate::access_log::{AccessLog, Entry};
use crate::app::AppState;

/// The process-wide Prometheus recorder (installed once, shared by every app in the process).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("duration_seconds".into()),
                    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist (an embedding application's): then ours only renders.
            let _ = metrics::set_global_recorder(recorder);
            // A recorder made by `build_recorder` folds histogram samples into their buckets only
            // when rendered: a node nobody scrapes would keep every upstream latency it measured
            // (8 bytes and more per proxied request, without end). Folded every 5 s here, as
            // `PrometheusBuilder::install` would do.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new().name("keygate-metrics".into()).spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            describe_metrics();
            handle
        })
        .clone()
}

/// `# HELP` and `# TYPE` for every metric keygate records, including those recorded in the auth
/// and gateway crates, so that `/metrics` explains itself. A new metric gets its line here.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "keygate_requests_total",
        "Requests answered, by route (keygate's endpoint, or the gateway route's prefix) and outcome (the business \
         code, or upstream_2xx.. for the upstream's own answers)"
    );
    describe_counter!(
        "keygate_auth_decisions_total",
        "Authentication decisions, by method (api_key, bearer, client_secret; - when no credential was presented) \
         and result (the business code: 1000 accepted, 1005 rate limited, 1006 insufficient credits, 1101 invalid, \
         1102 missing, 1200 banned, 1503 store unavailable)"
    );
    describe_counter!(
        "keygate_access_log_dropped_total",
        "Access-log lines dropped because the log's output (standard error) did not keep up; a request never waits \
         for it"
    );
    describe_counter!(
        "keygate_console_emails_total",
        "Mails the console sent or tried to send, by kind (signup_link, already_registered) and outcome (sent; \
         failed: the relay refused or could not be reached; throttled: the address had its share; dropped: too \
         many sends under way)"
    );
    describe_counter!(
        "keygate_ratelimit_refusals_total",
        "Requests refused with 1005, by the rate limit that refused them (a request refused by two counts for both)"
    );
    describe_counter!(
        "keygate_credit_refusals_total",
        "Requests refused with 1006: the credits left did not cover their cost (nothing was charged)"
    );
    describe_counter!(
        "keygate_credit_leases_total",
        "Slices of credits balances this node took from the database (one transaction each; a busy key takes one \
         per max_prefetch requests at most)"
    );
    describe_counter!(
        "keygate_ratelimit_shared_errors_total",
        "Round trips to the shared rate-limit counters (Redis) that failed or timed out; after one, the node leaves \
         Redis alone for 1 s and the fail mode (redis_failure) decides"
    );
    describe_gauge!(
        "keygate_ratelimit_shared_up",
        "1 while the shared rate-limit counters (Redis) answer this node's probes, 0 while the fail mode decides"
    );
    describe_gauge!(
        "keygate_ratelimit_scopes",
        "Credentials and accounts whose rate-limit buckets this node holds (in use, or not yet full)"
    );
    describe_histogram!(
        "keygate_upstream_duration_seconds",
        Unit::Seconds,
        "Time from sending a request to the upstream until its response headers (or the failure), by gateway route"
    );
    describe_counter!(
        "keygate_cache_hits_total",
        "Authentication lookups (credentials, accounts, verified tokens) answered from this node's in-memory cache"
    );
    describe_counter!(
        "keygate_cache_misses_total",
        "Authentication lookups that went to the database because this node's cache held no current entry"
    );
    describe_gauge!(
        "keygate_feed_age_seconds",
        Unit::Seconds,
        "Seconds since this node last read the change feed; staying well above keygate_feed_interval_seconds means \
         it cannot follow the database"
    );
    describe_gauge!(
        "keygate_feed_interval_seconds",
        Unit::Seconds,
        "How often the change feed is polled (feed_interval): the bound on how stale this node's cache can be"
    );
    describe_gauge!("keygate_feed_cursor", "The sequence number of the last change-feed entry this node applied");
}

/// The request's id: a trusted proxy's `X-Request-Id` (so one id follows the request through
/// both logs), else a new one; a client's own is never taken (it would choose keygate's log ids).
fn request_id(req: &Request, client: Option<ClientAddr>) -> HeaderValue {
    if client.is_some_and(|c| c.via_proxy)
        && let Some(v) = req.headers().get(&X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 128
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    let mut text = [0u8; 32];
    hex::encode_to_slice(b, &mut text).expect("32 bytes hold 16 in hex");
    HeaderValue::from_bytes(&text).expect("hex is a valid header value")
}

/// The router's middleware (keygate's own endpoints; the gateway's requests come through
/// [`Observer::observe`] directly, see [`crate::router::Dispatch`]).
pub async fn middleware(State(observer): State<Observer>, req: Request, next: Next) -> Response {
    observer.observe(req, None, |req| next.run(req)).await
}

/// Request ids, metrics and the access log; who the client is ([`ClientAddr`], in the
/// request's extensions for the gateway and the console).
#[derive(Debug, Clone)]
pub struct Observer {
    /// One log line per request (target `keygate::access`), if on.
    pub access_log: Option<Arc<AccessLog>>,
    /// Whose forwarding headers are believed.
    pub trusted_proxies: Arc<TrustedProxies>,
}

impl Observer {
    /// Request id, metrics and access log around `inner`. The route label is the gateway's
    /// route, else `route`, else the router's matched path.
    pub async fn observe<F, Fut>(self, req: Request, route: Option<&'static str>, inner: F) -> Response
    where
        F: FnOnce(Request) -> Fut,
        Fut: Future<Output = Response>,
    {
        observe(self, req, route, inner).await
    }
}

/// The client of `req` (from its TCP peer and, through trusted proxies, `X-Forwarded-For`).
fn client_addr(req: &Request, trusted: &TrustedProxies) -> Option<ClientAddr> {
    let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?.0.ip();
    if trusted.is_empty() {
        return Some(ClientAddr { ip: peer.to_canonical(), via_proxy: false });
    }
    let values = req.headers().get_all("x-forwarded-for").iter().map(|v| v.to_str().unwrap_or("?"));
    Some(trusted.client(peer, values))
}

async fn observe<F, Fut>(observer: Observer, mut req: Request, route: Option<&'static str>, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let started = observer.access_log.as_ref().map(|_| Instant::now());
    let client = client_addr(&req, &observer.trusted_proxies);
    if let Some(c) = client {
        req.extensions_mut().insert(c);
    }
    let id = request_id(&req, client);
    req.headers_mut().insert(&X_REQUEST_ID, id.clone());
    // Only what the access log needs is kept (the method and the URI are shared, not copied),
    // and only when it is on.
    let logged = observer.access_log.as_ref().map(|log| (log, req.method().clone(), req.uri().clone()));
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let mut res = inner(req).await;
    res.headers_mut().insert(&X_REQUEST_ID, id.clone());

    let proxied = res.extensions().get::<RouteLabel>();
    let route = match (proxied, route, &matched) {
        (Some(r), _, _) => r.as_str(),
        (None, Some(r), _) => r,
        (None, None, Some(m)) => m.as_str(),
        (None, None, None) => "unmatched",
    };
    let outcome: &'static str = match res.extensions().get::<BusinessCode>() {
        Some(c) => c.as_str(),
        None if proxied.is_some() => match res.status().as_u16() / 100 {
            1 => "upstream_1xx",
            2 => "upstream_2xx",
            3 => "upstream_3xx",
            4 => "upstream_4xx",
            _ => "upstream_5xx",
        },
        None => BusinessCode::Success.as_str(),
    };
    count_request(route, outcome);
    if let Some((log, method, uri)) = logged {
        let client_id = res.extensions().get::<Identity>().map(|i| i.client_id.hex_bytes());
        log.record(&Entry {
            request_id: id.to_str().unwrap_or_default(),
            method: method.as_str(),
            path: uri.path(),
            route,
            status: res.status().as_u16(),
            outcome,
            client_id: client_id.as_ref().map_or(&[][..], |c| &c[..]),
            latency_us: started.map_or(0, |t| t.elapsed().as_micros() as u64),
        });
    }
    res
}

/// Counts one request in `keygate_requests_total{route, outcome}`. The handles are kept per
/// thread (each worker its own table: no lock, no shared cache line), so that counting neither
/// allocates label strings nor looks the metric up in the registry.
fn count_request(route: &str, outcome: &'static str) {
    type Counters = HashMap<String, Vec<(&'static str, metrics::Counter)>, foldhash::fast::RandomState>;
    thread_local! {
        static COUNTERS: RefCell<Counters> = RefCell::default();
    }
    COUNTERS.with_borrow_mut(|counters| {
        if let Some((_, c)) = counters.get(route).and_then(|v| v.iter().find(|(o, _)| *o == outcome)) {
            c.increment(1);
            return;
        }
        let c = metrics::counter!("keygate_requests_total", "route" => route.to_owned(), "outcome" => outcome);
        c.increment(1);
        counters.entry(route.to_owned()).or_default().push((outcome, c));
    });
}

/// `GET /metrics` in the Prometheus text format.
pub async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    let auth = state.auth.authenticator();
    let stats = &auth.stats;
    metrics::counter!("keygate_cache_hits_total").absolute(stats.hits.load(std::sync::atomic::Ordering::Relaxed));
    metrics::counter!("keygate_cache_misses_total").absolute(stats.misses.load(std::sync::atomic::Ordering::Relaxed));
    metrics::gauge!("keygate_feed_age_seconds").set(auth.feed_age_ms() as f64 / 1000.0);
    metrics::gauge!("keygate_feed_interval_seconds").set(state.auth.feed_interval().as_secs_f64());
    metrics::gauge!("keygate_feed_cursor").set(state.auth.feed_cursor() as f64);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

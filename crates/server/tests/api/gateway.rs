//! The reverse-proxy gateway, end to end: a real keygate in front of a real HTTP upstream (a
//! small hyper server in this file, on its own port) that records what it was sent.
//!
//! What is checked: the identity and forwarding headers the upstream sees (and the credential
//! and forged `x-keygate-*` headers it does not), that refused requests never reach it, route
//! selection, streaming both ways in bounded memory, 502/504, WebSocket pass-through,
//! cancellation when the client goes away, and the metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, stream};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keygate_auth::StatusMode;
use keygate_gateway::Route as RouteLayer;
use keygate_server::Config;
use keygate_server::config::GatewaySettings;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, protocol::Role};

use crate::helpers::{Reply, TestApp, wait_until};

// ---- The test upstream ----------------------------------------------------------------------

type UpBody = BoxBody<Bytes, Infallible>;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query string.
    uri: String,
    headers: http::HeaderMap,
    body_len: u64,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("an ASCII header value"))
    }

    fn keygate_headers(&self) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("x-keygate-"))
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("<binary>").to_owned()))
            .collect();
        h.sort();
        h
    }
}

#[derive(Default)]
struct Shared {
    /// Requests received (WebSocket upgrades included).
    hits: AtomicUsize,
    /// Connections accepted.
    connections: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    slow_started: AtomicUsize,
    /// `/slow` handlers dropped before they answered (their connection was closed).
    slow_cancelled: AtomicUsize,
    /// Request bodies that ended in an error (cut off before their length) rather than complete.
    body_errors: AtomicUsize,
}

/// A real HTTP/1.1 server on 127.0.0.1:0. Behaviour by the last path segment:
/// `echo` (and anything else) answers JSON of what it saw; `slow` sleeps 5 s first; `stream-down?bytes=N`
/// streams N bytes; `upload` counts the request body's bytes and answers `{"bytes": n}`; `ws`
/// accepts a WebSocket upgrade and echoes messages.
struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
        let addr = listener.local_addr().expect("upstream address");
        let shared = Arc::<Shared>::default();
        let state = shared.clone();
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it (on drop) closes every connection.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                while conns.try_join_next().is_some() {}
                let Ok((stream, _)) = listener.accept().await else { continue };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).with_upgrades().await;
                });
            }
        });
        Upstream { addr, shared, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    fn last(&self) -> Seen {
        self.shared.seen.lock().unwrap().last().cloned().expect("the upstream saw a request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts a `/slow` handler that was dropped before it finished.
struct CancelGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.slow_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> UpBody {
    Full::new(bytes.into()).boxed()
}

fn json_response(v: Value) -> hyper::Response<UpBody> {
    hyper::Response::builder().header("content-type", "application/json").body(full(v.to_string())).unwrap()
}

const MIB: usize = 1 << 20;

async fn handle(state: Arc<Shared>, mut req: hyper::Request<Incoming>) -> Result<hyper::Response<UpBody>, Infallible> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let behaviour = req.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let mut seen = Seen {
        method: req.method().to_string(),
        uri: req.uri().path_and_query().map(|pq| pq.to_string()).unwrap_or_default(),
        headers: req.headers().clone(),
        body_len: 0,
    };

    if behaviour == "ws" {
        state.seen.lock().unwrap().push(seen);
        let key = req.headers().get("sec-websocket-key").map(|k| k.as_bytes().to_vec()).unwrap_or_default();
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else { return };
            let mut ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let res = hyper::Response::builder()
            .status(hyper::StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", tungstenite::handshake::derive_accept_key(&key))
            .body(full(Bytes::new()))
            .unwrap();
        return Ok(res);
    }

    // Every other behaviour reads the whole request body first, counting it.
    while let Some(frame) = req.body_mut().frame().await {
        match frame {
            Ok(f) => seen.body_len += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => {
                state.body_errors.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
    let body_len = seen.body_len;
    state.seen.lock().unwrap().push(seen.clone());

    Ok(match behaviour.as_str() {
        "slow" => {
            state.slow_started.fetch_add(1, Ordering::SeqCst);
            let mut guard = CancelGuard { shared: state.clone(), finished: false };
            tokio::time::sleep(Duration::from_secs(5)).await;
            guard.finished = true;
            json_response(json!({"slow": true}))
        }
        "upload" => json_response(json!({ "bytes": body_len })),
        // Answers after 400 ms.
        "pause" => {
            tokio::time::sleep(Duration::from_millis(400)).await;
            json_response(json!({"paused": true}))
        }
        // Answers, then closes its connection.
        "close" => {
            let mut res = json_response(json!({"closing": true}));
            res.headers_mut().insert("connection", http::HeaderValue::from_static("close"));
            res
        }
        "stream-down" => {
            let total: usize = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("bytes="))
                .and_then(|n| n.parse().ok())
                .expect("stream-down?bytes=N");
            let chunk = Bytes::from(vec![0x5Au8; MIB]);
            let chunks = stream::iter((0..total.div_ceil(MIB)).map(move |i| {
                let len = MIB.min(total - i * MIB);
                Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
            }));
            hyper::Response::new(BodyExt::boxed(StreamBody::new(chunks)))
        }
        _ => {
            let headers: serde_json::Map<String, Value> = seen
                .headers
                .keys()
                .map(|k| {
                    let values: Vec<&str> =
                        seen.headers.get_all(k).iter().map(|v| v.to_str().unwrap_or("<binary>")).collect();
                    (k.as_str().to_owned(), json!(values.join(", ")))
                })
                .collect();
            json_response(json!({
                "method": seen.method,
                "uri": seen.uri,
                "headers": headers,
                "bodyLen": body_len,
            }))
        }
    })
}

// ---- Configuration helpers ------------------------------------------------------------------

fn route(prefix: &str, upstream: String) -> RouteLayer {
    RouteLayer::new(prefix, upstream.parse().expect("an upstream URL"))
}

/// Gateway settings with a 1 s response timeout and the given routes.
fn gateway(routes: Vec<RouteLayer>) -> GatewaySettings {
    GatewaySettings { response_timeout: Duration::from_secs(1), routes, ..Default::default() }
}

/// keygate with `upstream` as its catch-all (the `--upstream` shortcut), changed by `more`.
async fn spawn_for(upstream: &Upstream, more: impl FnOnce(&mut Config)) -> TestApp {
    let url = upstream.url();
    TestApp::spawn_with(|l| {
        l.upstream = Some(url.parse().expect("an upstream URL"));
        l.gateway = gateway(vec![]);
        more(l);
    })
    .await
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Reply {
    app.verify_at(Method::GET, path, headers).await
}

fn is_generated_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---- 1. What the upstream sees --------------------------------------------------------------

#[tokio::test]
async fn upstream_sees_identity_and_forwarding_headers_but_not_the_credential() {
    let up = Upstream::start().await;
    let app = spawn_for(&up, |_| {}).await;
    let c = app.customer().await;
    let host = app.addr.to_string();

    // x-api-key, with a client-chosen request id and forwarding headers of its own invention
    // (hardening finding 7): none of them reaches the upstream, nor becomes keygate's request id.
    let forged = [
        ("x-api-key", c.api_key.as_str()),
        ("x-request-id", "req-abc.123"),
        ("x-real-ip", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6;proto=https"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
    ];
    let r = get(&app, "/v1/things/echo?a=1&b=two%20words", &forged).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.header("x-request-id").expect("a request id").to_owned();
    assert!(is_generated_request_id(&id), "the client chose keygate's request id: {id:?}");
    let seen = up.last();
    assert_eq!((seen.method.as_str(), seen.uri.as_str()), ("GET", "/v1/things/echo?a=1&b=two%20words"));
    assert_eq!(r.body["uri"], "/v1/things/echo?a=1&b=two%20words", "the echo body comes back to the client");
    assert_eq!(
        seen.keygate_headers(),
        [
            ("x-keygate-account-id".to_owned(), c.account_id.clone()),
            ("x-keygate-auth-method".to_owned(), "api_key".to_owned()),
            ("x-keygate-client-id".to_owned(), c.client_id.clone()),
            ("x-keygate-uid".to_owned(), c.uid.to_string()),
        ]
    );
    assert_eq!(seen.header("x-request-id"), Some(id.as_str()));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header("forwarded"), None);
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some(host.as_str()));
    assert_eq!(seen.header("host"), Some(up.addr.to_string().as_str()), "preserve_host is off by default");
    assert_eq!(seen.header("x-api-key"), None, "the credential is stripped");
    assert_eq!(seen.header("authorization"), None);

    // No request id, or an unusable one: keygate makes one, returns it and forwards the same.
    for headers in
        [vec![("x-api-key", c.api_key.as_str())], vec![("x-api-key", &c.api_key), ("x-request-id", "has space")]]
    {
        let r = get(&app, "/echo", &headers).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let id = r.header("x-request-id").expect("a request id").to_owned();
        assert!(is_generated_request_id(&id), "generated id {id:?}");
        assert_eq!(up.last().header("x-request-id"), Some(id.as_str()));
    }

    // A body and another method pass through.
    let r = app
        .send(app.client.post(app.url("/submit/echo?x=1")).header("x-api-key", &c.api_key).body("hello, upstream"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = up.last();
    assert_eq!((seen.method.as_str(), seen.uri.as_str(), seen.body_len), ("POST", "/submit/echo?x=1", 15));

    // Bearer: method `bearer`, no Authorization upstream.
    let token = app.token(&c).await;
    let r = get(&app, "/echo", &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = up.last();
    assert_eq!(seen.header("x-keygate-auth-method"), Some("bearer"));
    assert_eq!(seen.header("x-keygate-account-id"), Some(c.account_id.as_str()));
    assert_eq!(seen.header("x-keygate-client-id"), Some(c.client_id.as_str()));
    assert_eq!(seen.header("x-keygate-uid"), Some(c.uid.to_string().as_str()));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("x-api-key"), None);
    assert_eq!(up.hits(), 5);
}

#[tokio::test]
async fn credentials_are_forwarded_when_strip_credentials_is_off() {
    let up = Upstream::start().await;
    let app = spawn_for(&up, |l| {
        l.gateway.strip_credentials = false;
    })
    .await;
    let c = app.customer().await;
    let r = get(&app, "/echo", &[("x-api-key", &c.api_key)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = up.last();
    assert_eq!(seen.header("x-api-key"), Some(c.api_key.as_str()));
    assert_eq!(seen.header("x-keygate-auth-method"), Some("api_key"));

    let token = app.token(&c).await;
    let bearer = format!("Bearer {token}");
    let r = get(&app, "/echo", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = up.last();
    assert_eq!(seen.header("authorization"), Some(bearer.as_str()));
    assert_eq!(seen.header("x-keygate-auth-method"), Some("bearer"));
}

// ---- 2. Forged identity headers -------------------------------------------------------------

#[tokio::test]
async fn forged_identity_headers_are_replaced() {
    let up = Upstream::start().await;
    let app = spawn_for(&up, |l| {
        l.gateway.routes = vec![RouteLayer { public: true, ..route("/open", up.url()) }];
    })
    .await;
    let c = app.customer().await;
    // Written byte for byte, in mixed case, and twice for one name.
    let r = app
        .raw_request(&format!(
            "GET /echo HTTP/1.1\r\nx-api-key: {}\r\nX-Keygate-Account-Id: forged\r\nX-Keygate-Uid: 999\r\n\
             x-keygate-uid: 998\r\nx-keygate-anything: x\r\nX-KEYGATE-AUTH-METHOD: admin",
            c.api_key
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        up.last().keygate_headers(),
        [
            ("x-keygate-account-id".to_owned(), c.account_id.clone()),
            ("x-keygate-auth-method".to_owned(), "api_key".to_owned()),
            ("x-keygate-client-id".to_owned(), c.client_id.clone()),
            ("x-keygate-uid".to_owned(), c.uid.to_string()),
        ]
    );

    // On a public route there is no identity: the upstream sees no x-keygate-* at all.
    let r = get(&app, "/open/echo", &[("x-keygate-account-id", "forged"), ("x-keygate-uid", "999")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(up.last().keygate_headers(), []);
}

// ---- 3. Refused requests never reach the upstream -------------------------------------------

#[tokio::test]
async fn refused_requests_never_reach_the_upstream() {
    let up = Upstream::start().await;
    let app = spawn_for(&up, |_| {}).await;
    let revoked = app.customer().await;
    let banned = app.customer().await;
    let banned_token = app.token(&banned).await;
    // Both work before.
    for key in [&revoked.api_key, &banned.api_key] {
        assert_eq!(get(&app, "/echo", &[("x-api-key", key)]).await.status, 200);
    }
    assert_eq!(up.hits(), 2);
    app.revoke(&revoked.client_id).await;
    app.ban(&banned.account_id, "abuse").await;

    get(&app, "/echo", &[]).await.expect_missing();
    let mut wrong = revoked.api_key.clone();
    wrong.replace_range(10..11, if &wrong[10..11] == "A" { "B" } else { "A" });
    get(&app, "/echo", &[("x-api-key", &wrong)]).await.expect_invalid();
    get(&app, "/echo", &[("x-api-key", "not-a-key")]).await.expect_invalid();
    get(&app, "/echo", &[("authorization", "Bearer not.a.token")]).await.expect_invalid();
    get(&app, "/echo", &[("x-api-key", &revoked.api_key)]).await.expect_invalid();
    get(&app, "/echo", &[("x-api-key", &banned.api_key)]).await.expect_banned();
    get(&app, "/echo", &[("authorization", &format!("Bearer {banned_token}"))]).await.expect_banned();
    // A refused upload is not read into the upstream either.
    let r = app.send(app.client.post(app.url("/upload")).body(vec![7u8; 100_000])).await;
    r.expect_missing();
    assert_eq!(up.hits(), 2, "a refused request reached the upstream");

    // With http_status = always-200 only the code tells.
    let up200 = Upstream::start().await;
    let app200 = spawn_for(&up200, |l| l.http_status = StatusMode::Always200).await;
    let r = get(&app200, "/echo", &[("x-api-key", &wrong)]).await;
    r.expect(200, 1101);
    assert_eq!(r.header("www-authenticate"), None);
    get(&app200, "/echo", &[]).await.expect(200, 1102);
    assert_eq!(up200.hits(), 0);
}

// ---- 4. Routes ------------------------------------------------------------------------------

#[tokio::test]
async fn routes_longest_prefix_public_and_strip_prefix() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let app = TestApp::spawn_with(|l| {
        l.gateway = gateway(vec![
            route("/api", a.url()),
            route("/api/v2", format!("{}/b-base/", b.url())),
            RouteLayer { public: true, ..route("/public", a.url()) },
            RouteLayer { strip_prefix: true, ..route("/strip", format!("{}/inner", a.url())) },
        ]);
    })
    .await;
    let c = app.customer().await;
    let key = [("x-api-key", c.api_key.as_str())];

    // The longer prefix wins, whatever the order of the configuration.
    assert_eq!(get(&app, "/api/v2/items/echo?q=1", &key).await.status, 200);
    assert_eq!((a.hits(), b.hits()), (0, 1));
    assert_eq!(b.last().uri, "/b-base/api/v2/items/echo?q=1");
    // Segment-aware: /api/v20 is not under /api/v2.
    assert_eq!(get(&app, "/api/v20/echo", &key).await.status, 200);
    assert_eq!((a.hits(), b.hits()), (1, 1));
    assert_eq!(a.last().uri, "/api/v20/echo");
    assert_eq!(get(&app, "/api", &key).await.status, 200);
    assert_eq!(a.last().uri, "/api");

    // A public route needs no credential.
    let r = get(&app, "/public/echo?x=y", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(a.last().uri, "/public/echo?x=y");
    assert_eq!(a.last().keygate_headers(), []);

    // strip_prefix, with the upstream's base path.
    assert_eq!(get(&app, "/strip/deep/echo?z=9", &key).await.status, 200);
    assert_eq!(a.last().uri, "/inner/deep/echo?z=9");
    assert_eq!(get(&app, "/strip", &key).await.status, 200);
    assert_eq!(a.last().uri, "/inner/");
    // Non-public routes still need the credential.
    get(&app, "/strip/deep/echo", &[]).await.expect_missing();
    get(&app, "/api/v2/echo", &[]).await.expect_missing();

    // No route: keygate's own 404 envelope, with or without a credential.
    let hits = (a.hits(), b.hits());
    for path in ["/other", "/apis", "/", "/publicity/echo"] {
        get(&app, path, &key).await.expect(404, 1003);
        get(&app, path, &[]).await.expect(404, 1003);
    }
    assert_eq!((a.hits(), b.hits()), hits);
}

#[tokio::test]
async fn keygates_own_endpoints_are_never_proxied() {
    let up = Upstream::start().await;
    let app = spawn_for(&up, |_| {}).await;
    let c = app.customer().await;

    let r = get(&app, "/healthz", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body.get("bodyLen").is_none(), "/healthz was answered by the upstream: {}", r.text);
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    app.verify_at(Method::POST, "/auth/verify/some/original/path", &[("x-api-key", &c.api_key)])
        .await
        .expect_identity(&c, "api_key");
    get(&app, "/auth/verify", &[]).await.expect_missing();
    app.token(&c).await;
    // The wrong method on keygate's own paths is keygate's 405, not the upstream's business.
    let r = get(&app, "/api/open/v3/getToken", &[("x-api-key", &c.api_key)]).await;
    assert_eq!(r.status, 405, "{}", r.text);
    let r = app.verify_at(Method::POST, "/healthz", &[("x-api-key", &c.api_key)]).await;
    assert_eq!(r.status, 405, "{}", r.text);
    let r = get(&app, "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("keygate_requests_total"), "{}", r.text);
    let r = get(&app, "/readyz", &[]).await;
    assert!(r.body.get("bodyLen").is_none(), "/readyz was answered by the upstream: {}", r.text);
    // The admin API's namespace is keygate's too, unknown paths in it included.
    let r = app.admin_get("/accounts").await;
    assert_eq!(r.status, 200, "{}", r.text);
    for path in ["/admin/v1", "/admin/v1/", "/admin/v1/no-such-thing", "/admin/v1/accounts/x/y/z"] {
        get(&app, path, &[("x-api-key", &c.api_key)]).await.expect(404, 1003);
    }
    let r = app.verify_at(Method::DELETE, "/admin/v1/accounts", &[("x-api-key", &c.api_key)]).await;
    assert_eq!(r.status, 405, "{}", r.text);
    // The web console's too.
    for path in ["/console", "/console/login", "/console/no-such-page", "/console/static/app.css"] {
        let r = get(&app, path, &[("x-api-key", &c.api_key)]).await;
        assert!(r.body.get("bodyLen").is_none(), "{path} was answered by the upstream: {}", r.text);
    }
    assert_eq!(up.hits(), 0, "one of keygate's own endpoints was proxied");

    // While everything else goes upstream.
    assert_eq!(get(&app, "/healthz/echo", &[("x-api-key", &c.api_key)]).await.status, 200);
    assert_eq!(get(&app, "/metricsx", &[("x-api-key", &c.api_key)]).await.status, 200);
    assert_eq!(up.hits(), 2);
}

// ---- 5. Streaming in bounded memory ---------------------------------------------------------

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Samples the process's resident set size every 10 ms on a plain thread.
struct RssSampler {
    base: u64,
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let base = rss_bytes();
        let max = Arc::new(AtomicU64::new(base));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler { base, max, stop, thread }
    }

    /// The largest growth over the starting RSS seen, in bytes.
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler thread");
        self.max.load(Ordering::Relaxed).max(rss_bytes()).saturating_sub(self.base)
    }
}

/// Bytes moved each way by the streaming test.
const STREAM_BYTES: usize = 1 << 30;
/// The most the process may grow while moving them. The RSS is the whole test process's, other
/// tests included: alone the transfer grows it by about 5 MiB, but a test panicking meanwhile
/// with RUST_BACKTRACE set adds ~200 MiB (symbolizing the backtrace) and fails this one too.
const RSS_BUDGET: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_in_bounded_memory() {
    let up = Upstream::start().await;
    // The response timeout runs until the upstream's response headers, and the upload's
    // upstream answers only once it has read the whole body.
    let app = spawn_for(&up, |l| l.gateway.response_timeout = Duration::from_secs(120)).await;
    let c = app.customer().await;
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(120)).build().unwrap();

    // Over keygate's own body limit (64 KiB), with a Content-Length: the proxy does not apply it.
    let r = app.send(client.post(app.url("/upload")).header("x-api-key", &c.api_key).body(vec![1u8; 3 * MIB])).await;
    assert_eq!((r.status, r.body["bytes"].as_u64()), (200, Some(3 * MIB as u64)), "{}", r.text);
    // While keygate's own JSON endpoints keep it.
    app.get_token_raw(vec![b' '; 100_000]).await.expect(413, 1003);

    // Upload, chunked, generated as it is sent.
    let rss = RssSampler::start();
    let started = Instant::now();
    let chunk = Bytes::from(vec![0xA5u8; MIB]);
    let body = stream::iter((0..STREAM_BYTES / MIB).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = app
        .send(client.post(app.url("/upload")).header("x-api-key", &c.api_key).body(reqwest::Body::wrap_stream(body)))
        .await;
    let up_time = started.elapsed();
    let up_growth = rss.finish();
    assert_eq!((r.status, r.body["bytes"].as_u64()), (200, Some(STREAM_BYTES as u64)), "{}", r.text);
    assert_eq!(up.last().body_len, STREAM_BYTES as u64);

    // Download, read as it arrives.
    let rss = RssSampler::start();
    let started = Instant::now();
    let mut res = client
        .get(app.url(&format!("/stream-down?bytes={STREAM_BYTES}")))
        .header("x-api-key", &c.api_key)
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(res.status(), 200);
    let mut received = 0usize;
    while let Some(chunk) = res.chunk().await.expect("the body streams") {
        received += chunk.len();
    }
    let down_time = started.elapsed();
    let down_growth = rss.finish();
    assert_eq!(received, STREAM_BYTES);

    let mib = |b: u64| b as f64 / MIB as f64;
    eprintln!(
        "streamed {} MiB: upload {up_time:.2?} (RSS +{:.1} MiB), download {down_time:.2?} (RSS +{:.1} MiB)",
        STREAM_BYTES / MIB,
        mib(up_growth),
        mib(down_growth)
    );
    assert!(up_growth < RSS_BUDGET, "upload grew RSS by {:.1} MiB", mib(up_growth));
    assert!(down_growth < RSS_BUDGET, "download grew RSS by {:.1} MiB", mib(down_growth));
}

// ---- 6. Upstream down or slow ---------------------------------------------------------------

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let up = Upstream::start().await;
    let app = spawn_for(&up, |l| {
        l.gateway.routes = vec![route("/down", format!("http://{closed}"))];
    })
    .await;
    let c = app.customer().await;
    let key = [("x-api-key", c.api_key.as_str())];

    get(&app, "/down/echo", &key).await.expect(502, 1502);
    // Authentication still comes first.
    get(&app, "/down/echo", &[]).await.expect_missing();

    let started = Instant::now();
    get(&app, "/slow", &key).await.expect(504, 1504);
    let took = started.elapsed();
    eprintln!("504 after {took:.2?} (response_timeout 1s)");
    assert!(took >= Duration::from_millis(950) && took < Duration::from_millis(2500), "504 after {took:?}");
    assert_eq!(up.shared.slow_started.load(Ordering::SeqCst), 1);
    // The gateway stays usable.
    assert_eq!(get(&app, "/echo", &key).await.status, 200);
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_reused_and_replaced_when_closed() {
    let up = Upstream::start().await;
    let app = spawn_for(&up, |_| {}).await;
    let c = app.customer().await;
    let key = [("x-api-key", c.api_key.as_str())];
    let connections = || up.shared.connections.load(Ordering::SeqCst);

    // One client connection, one request at a time: one upstream connection serves them all.
    for _ in 0..30 {
        assert_eq!(get(&app, "/v1/echo", &key).await.status, 200);
    }
    assert_eq!(connections(), 1, "sequential requests reuse one upstream connection");

    // The upstream closes its connection after each answer: the next request, through the same
    // worker, gets a fresh connection instead of failing on the closed one.
    let before = connections();
    for _ in 0..5 {
        let r = get(&app, "/v1/close", &key).await;
        assert_eq!(r.status, 200, "{}", r.text);
        // Let the closed connection's task notice the close, as an idle connection would.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first went over a kept-alive connection; each later one needed a new connection.
    assert_eq!(connections() - before, 4, "each closed connection is replaced");
    assert_eq!(get(&app, "/v1/echo", &key).await.status, 200);
    assert_eq!(connections() - before, 5);

    // Eight clients at once: at most one upstream connection per request in flight.
    let clients: Vec<_> = (0..8).map(|_| reqwest::Client::builder().no_proxy().build().unwrap()).collect();
    let rounds = clients.iter().map(|client| {
        let url = app.url("/v1/echo");
        let key = c.api_key.clone();
        async move {
            for _ in 0..10 {
                let r = client.get(&url).header("x-api-key", &key).send().await.expect("request");
                assert_eq!(r.status(), 200);
                r.bytes().await.expect("body");
            }
        }
    });
    futures_util::future::join_all(rounds).await;
    assert_eq!(up.hits(), 30 + 6 + 80);
    assert!(connections() <= 1 + 5 + 8, "{} upstream connections for 8 concurrent clients", connections());
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_connections() {
    let up = Upstream::start().await;
    let app = spawn_for(&up, |_| {}).await;
    let c = app.customer().await;
    let (client, url, key) = (app.client.clone(), app.url("/v1/pause"), c.api_key.clone());
    let in_flight = tokio::spawn(async move {
        let r = client.get(&url).header("x-api-key", &key).send().await.expect("an answer, not a reset");
        (r.status().as_u16(), r.text().await.expect("the whole body"))
    });
    wait_until(Duration::from_secs(5), "the upstream gets the request", || async { up.hits() == 1 }).await;
    let addr = app.addr;
    let started = Instant::now();
    app.stop().await.expect("run_until returns Ok");
    let (status, body) = in_flight.await.expect("the request task");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("paused"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(3), "stopping took {:?}", started.elapsed());
    assert!(std::net::TcpStream::connect(addr).is_err(), "a stopped server still accepts connections");
}

#[tokio::test]
async fn an_upstream_named_by_host_name_is_resolved() {
    let up = Upstream::start().await;
    // localhost may resolve to ::1 first, where nothing listens: the next address is tried.
    let by_name = format!("http://localhost:{}", up.addr.port());
    let app = TestApp::spawn_with(|l| l.gateway = gateway(vec![route("/named", by_name)])).await;
    let c = app.customer().await;
    let r = get(&app, "/named/echo", &[("x-api-key", &c.api_key)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(up.last().header("host"), Some(format!("localhost:{}", up.addr.port()).as_str()));
}

// ---- 7. WebSocket ---------------------------------------------------------------------------

#[tokio::test]
async fn websocket_upgrades_pass_through_after_authentication() {
    let up = Upstream::start().await;
    let app = spawn_for(&up, |_| {}).await;
    let c = app.customer().await;
    let url = format!("ws://{}/chat/ws", app.addr);

    // Refused: no credential, or a wrong one. The upstream sees nothing.
    for key in [None, Some("kgk_wrong")] {
        let mut req = url.as_str().into_client_request().unwrap();
        if let Some(k) = key {
            req.headers_mut().insert("x-api-key", k.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Err(tungstenite::Error::Http(res)) => {
                assert_eq!(res.status(), 401);
                let body: Value = serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["code"], if key.is_none() { 1102 } else { 1101 });
            }
            other => panic!("the upgrade was not refused: {other:?}"),
        }
    }
    assert_eq!(up.hits(), 0);

    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("x-api-key", c.api_key.parse().unwrap());
    let (mut ws, res) =
        tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(req)).await.unwrap().unwrap();
    assert_eq!(res.status(), 101);
    let seen = up.last();
    assert_eq!(seen.uri, "/chat/ws");
    assert_eq!(seen.header("x-keygate-client-id"), Some(c.client_id.as_str()));
    assert_eq!(seen.header("x-api-key"), None);
    for i in 0..5 {
        let msg = if i % 2 == 0 { Message::text(format!("hello {i}")) } else { Message::binary(vec![i as u8; 70_000]) };
        ws.send(msg.clone()).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(back, msg);
    }
    ws.close(None).await.unwrap();
    assert_eq!(up.hits(), 1);
}

// ---- 8. A client that goes away -------------------------------------------------------------

#[tokio::test]
async fn a_client_disconnect_cancels_the_upstream_request() {
    let up = Upstream::start().await;
    let app = spawn_for(&up, |l| l.gateway.response_timeout = Duration::from_secs(10)).await;
    let c = app.customer().await;

    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!("GET /slow HTTP/1.1\r\nHost: {}\r\nx-api-key: {}\r\n\r\n", app.addr, c.api_key);
    conn.write_all(request.as_bytes()).await.unwrap();
    wait_until(Duration::from_secs(2), "the upstream starts the slow request", || async {
        up.shared.slow_started.load(Ordering::SeqCst) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(up.shared.slow_cancelled.load(Ordering::SeqCst), 0);
    drop(conn);
    let took = wait_until(Duration::from_secs(2), "the upstream request is cancelled", || async {
        up.shared.slow_cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    eprintln!("the upstream request was cancelled {took:.2?} after the client left");
    assert!(took < Duration::from_secs(1), "cancelled {took:?} after the client left");
}

// ---- 8b. Credits ----------------------------------------------------------------------------

#[tokio::test]
async fn a_routes_cost_is_charged_and_the_upstream_told_what_is_left() {
    let up = Upstream::start().await;
    let app = TestApp::spawn_with(|l| {
        l.gateway = gateway(vec![
            RouteLayer { cost: 4, ..route("/videos", up.url()) },
            RouteLayer { cost: 0, ..route("/status", up.url()) },
            route("/images", up.url()),
        ])
    })
    .await;
    let c = app.customer().await;
    app.patch(&format!("/credentials/{}", c.client_id), json!({"credits": {"remaining": 10}})).await.expect(200, 1000);
    let key = [("x-api-key", c.api_key.as_str())];
    assert_eq!(get(&app, "/videos/1", &key).await.status, 200);
    assert_eq!(up.last().header("x-keygate-credits-remaining"), Some("6"));
    assert_eq!(get(&app, "/images/1", &key).await.status, 200);
    assert_eq!(up.last().header("x-keygate-credits-remaining"), Some("5"));
    assert_eq!(get(&app, "/videos/2", &key).await.status, 200);
    assert_eq!(get(&app, "/status", &key).await.status, 200);
    assert_eq!(up.last().header("x-keygate-credits-remaining"), Some("1"), "cost 0 charges nothing");
    let hits = up.hits();
    get(&app, "/videos/3", &key).await.expect(402, 1006);
    assert_eq!(up.hits(), hits, "a refused request never reaches the upstream");
    assert_eq!(get(&app, "/images/2", &key).await.status, 200);
    get(&app, "/status", &key).await.expect(402, 1006);
}

// ---- 8c. Permissions and allowlists ---------------------------------------------------------

#[tokio::test]
async fn a_route_requires_its_permissions_and_the_upstream_sees_what_the_key_holds() {
    let up = Upstream::start().await;
    let app = TestApp::spawn_with(|l| {
        l.gateway = gateway(vec![
            RouteLayer {
                permissions: Some("videos.create AND (images.read OR admin)".parse().unwrap()),
                ..route("/videos", up.url())
            },
            route("/open", up.url()),
        ])
    })
    .await;
    let c = app.customer().await;
    let key = [("x-api-key", c.api_key.as_str())];
    let hits = up.hits();
    let r = get(&app, "/videos/1", &key).await;
    r.expect(403, 1009);
    assert_eq!(r.body["msg"], "Permission denied: requires videos.create AND (images.read OR admin)");
    assert_eq!(up.hits(), hits, "a refused request never reaches the upstream");
    // The route without a requirement lets the key through, and says what it holds (nothing).
    assert_eq!(get(&app, "/open/1", &key).await.status, 200);
    assert_eq!(up.last().header("x-keygate-permissions"), None);

    let patch = json!({"permissions": ["videos.*", "images.read"], "name": "render bot é", "meta": {"team": "render"}});
    app.patch(&format!("/credentials/{}", c.client_id), patch).await.expect(200, 1000);
    assert_eq!(get(&app, "/videos/1", &key).await.status, 200);
    let seen = up.last();
    assert_eq!(seen.header("x-keygate-permissions"), Some("images.read,videos.*"));
    assert_eq!(seen.header("x-keygate-key-name"), Some("render bot %C3%A9"));
    assert_eq!(seen.header("x-keygate-meta"), Some(r#"{"team":"render"}"#));
    // A client cannot send its own permissions upstream.
    assert_eq!(get(&app, "/open/1", &[key[0], ("x-keygate-permissions", "*")]).await.status, 200);
    assert_eq!(up.last().header("x-keygate-permissions"), Some("images.read,videos.*"));

    // Through a trusted proxy the allowlist sees the client, not the proxy.
    app.patch(&format!("/credentials/{}", c.client_id), json!({"ipAllowlist": ["203.0.113.0/24"]}))
        .await
        .expect(200, 1000);
    let r = get(&app, "/videos/1", &key).await;
    r.expect(403, 1009);
    assert!(r.body["msg"].as_str().unwrap().contains("address"), "{}", r.text);
    assert!(!r.text.contains("203.0.113"), "the allowlist is not shown: {}", r.text);
}

// ---- 9. Metrics -----------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_gateway_traffic_and_hold_no_secret() {
    let up = Upstream::start().await;
    let app = TestApp::spawn_with(|l| l.gateway = gateway(vec![route("/metered", up.url())])).await;
    let c = app.customer().await;
    let token = app.token(&c).await;
    let bearer = format!("Bearer {token}");
    let wrong = format!("{}x", c.api_key);
    for _ in 0..3 {
        assert_eq!(get(&app, "/metered/echo", &[("x-api-key", &c.api_key)]).await.status, 200);
    }
    assert_eq!(get(&app, "/metered/echo", &[("authorization", &bearer)]).await.status, 200);
    get(&app, "/metered/echo", &[("x-api-key", &wrong)]).await.expect_invalid();
    get(&app, "/metered/echo", &[]).await.expect_missing();
    // A secret in the path or query string is not a label either.
    let path = format!("/metered/{}/echo?key={}", c.api_key, token);
    assert_eq!(get(&app, &path, &[("x-api-key", &c.api_key)]).await.status, 200);
    // The verify endpoint, under the router's route labels.
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    get(&app, &format!("/auth/verify/{}", c.api_key), &[]).await.expect_missing();

    let r = get(&app, "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/plain")));
    let text = &r.text;
    let line = |parts: &[&str]| text.lines().any(|l| parts.iter().all(|p| l.contains(p)));
    assert!(line(&["keygate_requests_total{", r#"route="/metered""#, r#"outcome="upstream_2xx""#]), "{text}");
    assert!(line(&["keygate_requests_total{", r#"route="/metered""#, r#"outcome="1101""#]), "{text}");
    assert!(line(&["keygate_requests_total{", r#"route="/metered""#, r#"outcome="1102""#]), "{text}");
    assert!(line(&["keygate_upstream_duration_seconds_bucket{", r#"route="/metered""#]), "{text}");
    assert!(line(&["keygate_requests_total{", r#"route="/auth/verify""#, r#"outcome="1000""#]), "{text}");
    assert!(line(&["keygate_requests_total{", r#"route="/auth/verify/{*rest}""#, r#"outcome="1102""#]), "{text}");
    assert!(line(&["keygate_auth_decisions_total"]), "{text}");
    assert!(line(&["keygate_cache_hits_total"]), "{text}");
    // Every metric explains itself: one HELP and one TYPE line each.
    for (metric, kind) in [
        ("keygate_requests_total", "counter"),
        ("keygate_auth_decisions_total", "counter"),
        ("keygate_upstream_duration_seconds", "histogram"),
        ("keygate_cache_hits_total", "counter"),
        ("keygate_cache_misses_total", "counter"),
        ("keygate_feed_age_seconds", "gauge"),
        ("keygate_feed_interval_seconds", "gauge"),
        ("keygate_feed_cursor", "gauge"),
    ] {
        let help: Vec<&str> = text.lines().filter(|l| l.starts_with(&format!("# HELP {metric} "))).collect();
        assert_eq!(help.len(), 1, "{metric}: {help:?}\n{text}");
        assert!(help[0].len() > format!("# HELP {metric} ").len() + 20, "{metric}: {help:?}");
        assert!(text.lines().any(|l| l == format!("# TYPE {metric} {kind}")), "{metric} is no {kind}:\n{text}");
    }
    // And no metric goes undescribed.
    for l in text.lines().filter(|l| l.starts_with("keygate_")) {
        let name = l.split(['{', ' ']).next().unwrap();
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        assert!(text.contains(&format!("# HELP {base} ")), "{base} has no HELP line:\n{text}");
    }
    for secret in [c.api_key.as_str(), &token, &wrong, &token[token.len() - 20..]] {
        assert!(!text.contains(secret), "/metrics holds a secret");
    }
}

// ---- Uploads the client does not finish ------------------------------------------------------

/// keygate's `/metrics` lines for the catch-all route `/`.
async fn outcomes_of_root(app: &TestApp) -> Vec<String> {
    let text = get(app, "/metrics", &[]).await.text;
    text.lines()
        .filter(|l| l.starts_with("keygate_requests_total{") && l.contains(r#"route="/""#))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_stalled_upload_answers_408_and_is_not_an_upstream_failure() {
    let up = Upstream::start().await;
    let app = spawn_for(&up, |c| c.body_read_timeout = Duration::from_millis(300)).await;
    let c = app.customer().await;
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nx-api-key: {}\r\nContent-Length: 100\r\n\r\n{{",
        app.addr, c.api_key
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut got))
        .await
        .expect("answered and closed within 5 s")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains(r#""code":1408"#), "{got}");
    let outcomes = outcomes_of_root(&app).await;
    assert!(outcomes.iter().any(|l| l.contains(r#"outcome="1408""#)), "{outcomes:?}");
    assert!(!outcomes.iter().any(|l| l.contains(r#"outcome="1502""#)), "counted as an upstream failure: {outcomes:?}");
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_upload_is_not_an_upstream_failure() {
    let up = Upstream::start().await;
    let app = spawn_for(&up, |_| {}).await;
    let c = app.customer().await;
    for i in 0..5 {
        let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: {}\r\nx-api-key: {}\r\nContent-Length: 100000\r\n\r\n{}",
            app.addr,
            c.api_key,
            "x".repeat(1000)
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        // Once the upload is under way to the upstream, hang up.
        wait_until(Duration::from_secs(5), "the upload reaches the upstream", || async {
            up.shared.hits.load(Ordering::SeqCst) == i + 1
        })
        .await;
        drop(conn);
    }
    wait_until(Duration::from_secs(5), "the abandoned uploads are counted as 1499", || async {
        outcomes_of_root(&app).await.iter().any(|l| l.contains(r#"outcome="1499""#) && l.ends_with(" 5"))
    })
    .await;
    let outcomes = outcomes_of_root(&app).await;
    assert!(!outcomes.iter().any(|l| l.contains(r#"outcome="1502""#)), "counted as upstream failures: {outcomes:?}");
    // The upstream got what was sent so far, then its connection cut (as from nginx with
    // `proxy_request_buffering off`): each body ends in an error there, none looks complete.
    wait_until(Duration::from_secs(5), "the upstream sees each cut-off body end in an error", || async {
        up.shared.body_errors.load(Ordering::SeqCst) == 5
    })
    .await;
    let seen = up.shared.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|s| s.body_len < 100_000),
        "a cut-off upload reached the upstream whole: {:?}",
        seen.iter().map(|s| s.body_len).collect::<Vec<_>>()
    );
}

// ---- Rate limits ----------------------------------------------------------------------------

#[tokio::test]
async fn rate_limited_requests_never_reach_the_upstream_and_answers_carry_the_limits() {
    let up = Upstream::start().await;
    let app = spawn_for(&up, |_| {}).await;
    let c = app.customer().await;
    let limits = json!({"ratelimits": [{"name": "requests", "limit": 2, "duration": "1h"}]});
    let path = app.url(&format!("/admin/v1/credentials/{}", c.client_id));
    app.send(app.client.patch(path).bearer_auth(&app.admin_token).json(&limits)).await.expect(200, 1000);
    for remaining in [1, 0] {
        let r = get(&app, "/echo", &[("x-api-key", &c.api_key)]).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("ratelimit-policy"), Some(r#""requests";q=2;w=3600"#));
        assert!(r.header("ratelimit").unwrap().starts_with(&format!(r#""requests";r={remaining};"#)));
    }
    let r = get(&app, "/echo", &[("x-api-key", &c.api_key)]).await;
    r.expect(429, 1005);
    assert!(r.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 1700)), "{:?}", r.headers);
    assert_eq!(up.hits(), 2, "a rate-limited request reached the upstream");
}

/// Behind a trusted proxy (here the test itself, on 127.0.0.1) its forwarding headers stand:
/// the chain is kept and the peer appended, the client is the rightmost untrusted address, and
/// its request id follows the request.
#[tokio::test]
async fn a_trusted_proxys_forwarding_headers_are_kept() {
    let up = Upstream::start().await;
    let app = spawn_for(&up, |c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let c = app.customer().await;
    let r = get(
        &app,
        "/echo",
        &[
            ("x-api-key", &c.api_key),
            ("x-request-id", "req-abc.123"),
            ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.com"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-request-id"), Some("req-abc.123"));
    let seen = up.last();
    assert_eq!(seen.header("x-request-id"), Some("req-abc.123"));
    assert_eq!(seen.header("x-forwarded-for"), Some("6.6.6.6, 203.0.113.9, 127.0.0.1"));
    assert_eq!(seen.header("x-real-ip"), Some("203.0.113.9"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("api.example.com"));
}

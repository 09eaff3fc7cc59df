//! The tower Layer on a real SQLite database: around an axum router and around a plain tower
//! service, what passes, what is refused and how, the status mode, public paths, the extractor,
//! the change feed reaching the Layer, and usage written at shutdown.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use keygate_auth::{Auth, AuthSettings, Identity, MasterKeySource, StatusMode};
use keygate_core::audit::Audit;
use keygate_core::model::AccountStatus;
use keygate_core::{ApiKey, ClientId};
use keygate_store::{NewAccount, Store};
use serde_json::Value;
use tower::{Layer, ServiceExt};

struct Fixture {
    _dir: tempfile::TempDir,
    store: std::sync::Arc<dyn Store>,
    auth: Auth,
    account: keygate_core::AccountId,
    client_id: ClientId,
    key: String,
}

async fn fixture(mode: StatusMode) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/keygate.db", dir.path().display());
    let master = MasterKeySource::File { path: dir.path().join("keygate.key"), create: true };
    let settings = AuthSettings { feed_interval: Duration::from_millis(20), status_mode: mode, ..Default::default() };
    let auth = Auth::builder().migrate(true).settings(settings).open(&url, master.clone()).await.unwrap();
    // Keys are made as the CLI makes them: on another handle of the same database.
    let (store, master) = keygate_auth::secrets::open_store(&url, &master, false).await.unwrap();
    let new = NewAccount { email: "layer@example.com".into(), first_name: "L".into() };
    let account = store.create_account(&Audit::system(), &new).await.unwrap();
    let key = ApiKey::generate();
    let client_id = ClientId::generate(1);
    let hash = master.api_key_hasher().hash(key.expose());
    store
        .create_credential(&Audit::system(), account.id, client_id, &hash, &key.hint(), &Default::default())
        .await
        .unwrap();
    Fixture { _dir: dir, store, auth, account: account.id, client_id, key: key.expose().to_owned() }
}

fn app(auth: &Auth) -> Router {
    Router::new()
        .route("/hello", get(|id: Identity| async move { axum::Json(id) }))
        .route(
            "/public",
            get(|id: Option<Identity>| async move { if id.is_some() { "with identity" } else { "anonymous" } }),
        )
        .layer(auth.layer().public("/public"))
}

async fn call(app: &Router, path: &str, key: Option<&str>) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut req = Request::get(path);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let res = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = res.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

fn json(b: &Bytes) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(b)))
}

#[tokio::test]
async fn around_an_axum_router() {
    let f = fixture(StatusMode::Standard).await;
    let app = app(&f.auth);

    let (status, _, body) = call(&app, "/hello", Some(&f.key)).await;
    assert_eq!(status, 200);
    let id = json(&body);
    assert_eq!(id["accountId"], f.account.to_hex());
    assert_eq!(id["clientId"], f.client_id.to_hex());
    assert_eq!(id["method"], "api_key");

    let (status, headers, body) = call(&app, "/hello", None).await;
    assert_eq!((status, json(&body)["code"].as_i64()), (StatusCode::UNAUTHORIZED, Some(1102)));
    assert_eq!(headers[header::WWW_AUTHENTICATE], r#"Bearer realm="keygate""#);
    let (status, headers, body) = call(&app, "/hello", Some("kgk_0000000000000000000000000000")).await;
    assert_eq!((status, json(&body)["code"].as_i64()), (StatusCode::UNAUTHORIZED, Some(1101)));
    assert!(headers[header::WWW_AUTHENTICATE].to_str().unwrap().contains("invalid_token"));
    assert!(json(&body)["msg"].as_str().is_some_and(|m| !m.is_empty()));

    // A public path needs nothing and carries no identity, even with a key.
    let (status, _, body) = call(&app, "/public", None).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"anonymous"[..]));
    let (_, _, body) = call(&app, "/public", Some(&f.key)).await;
    assert_eq!(&body[..], b"anonymous");
    // By path segments: /publicity is not /public.
    let (status, _, _) = call(&app, "/publicity", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn always_200_keeps_the_code() {
    let f = fixture(StatusMode::Always200).await;
    let (status, headers, body) = call(&app(&f.auth), "/hello", None).await;
    assert_eq!((status, json(&body)["code"].as_i64()), (StatusCode::OK, Some(1102)));
    assert!(headers.get(header::WWW_AUTHENTICATE).is_none());
}

#[tokio::test]
async fn around_a_plain_tower_service() {
    let f = fixture(StatusMode::Standard).await;
    let inner = tower::service_fn(|req: Request<()>| async move {
        let who = req.extensions().get::<Identity>().map(|i| i.client_id.to_hex()).unwrap_or_default();
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(who))))
    });
    let svc = f.auth.layer().layer(inner);
    let req = Request::get("/any").header("x-api-key", &f.key).body(()).unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), f.client_id.to_hex());
    let res = svc.oneshot(Request::get("/any").body(()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn the_extractor_without_the_layer_is_a_wiring_error() {
    let app: Router = Router::new().route("/hello", get(|id: Identity| async move { id.uid.to_string() }));
    let (status, _, body) = call(&app, "/hello", None).await;
    assert_eq!((status, json(&body)["code"].as_i64()), (StatusCode::INTERNAL_SERVER_ERROR, Some(1500)));
}

#[tokio::test]
async fn a_ban_and_a_revoke_elsewhere_reach_the_layer_and_usage_is_written() {
    let f = fixture(StatusMode::Standard).await;
    let app = app(&f.auth);
    assert_eq!(call(&app, "/hello", Some(&f.key)).await.0, 200);

    // Written on the other handle (as the CLI would): the Layer learns of it from the feed.
    f.store.set_account_status(&Audit::system(), f.account, AccountStatus::Banned, Some("test")).await.unwrap();
    let started = Instant::now();
    loop {
        let (status, _, body) = call(&app, "/hello", Some(&f.key)).await;
        if status == StatusCode::FORBIDDEN {
            assert_eq!(json(&body)["code"], 1200);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "the ban did not reach the layer");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f.store.set_account_status(&Audit::system(), f.account, AccountStatus::Active, None).await.unwrap();
    f.store.revoke_credential(&Audit::system(), f.client_id).await.unwrap();
    let started = Instant::now();
    while call(&app, "/hello", Some(&f.key)).await.0 != StatusCode::UNAUTHORIZED {
        assert!(started.elapsed() < Duration::from_secs(2), "the revoke did not reach the layer");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The accepted request was counted; shutdown writes it.
    assert!(f.store.get_credential(f.client_id).await.unwrap().last_used_at.is_none());
    f.auth.shutdown().await;
    assert!(f.store.get_credential(f.client_id).await.unwrap().last_used_at.is_some());
}

#[tokio::test]
async fn rate_limits_apply_in_the_layer_with_their_headers() {
    let f = fixture(StatusMode::Standard).await;
    let app = app(&f.auth);
    let limits = [keygate_core::ratelimit::RateLimit::new("requests", 1, "1h".parse().unwrap())];
    f.store.set_credential_ratelimits(&Audit::system(), f.client_id, &limits).await.unwrap();
    // The change reaches the Layer through the feed.
    let start = Instant::now();
    loop {
        let (_, headers, _) = call(&app, "/hello", Some(&f.key)).await;
        if let Some(state) = headers.get("ratelimit") {
            assert_eq!(headers["ratelimit-policy"], r#""requests";q=1;w=3600"#);
            assert!(state.to_str().unwrap().starts_with(r#""requests";r=0;"#), "{state:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the limit never reached the layer");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, headers, body) = call(&app, "/hello", Some(&f.key)).await;
    assert_eq!((status, json(&body)["code"].as_i64()), (StatusCode::TOO_MANY_REQUESTS, Some(1005)));
    assert!(headers.contains_key(header::RETRY_AFTER));
    // A public path is not counted.
    let (status, _, _) = call(&app, "/public", Some(&f.key)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn permissions_and_allowlists_in_the_layer() {
    use keygate_auth::{ClientIp, Require};
    use keygate_core::model::CredentialChange;
    let f = fixture(StatusMode::Standard).await;
    let auth_layer = f
        .auth
        .layer()
        .require("/videos", "videos.create AND (images.read OR admin)".parse().unwrap())
        .require("/videos/list", "videos.read".parse().unwrap());
    let app: Router = Router::new()
        .route("/videos", get(|id: Identity| async move { axum::Json(id) }))
        .route("/videos/list", get(|| async { "listed" }))
        .route("/other", get(|| async { "other" }))
        .layer(auth_layer);
    // A route's own requirement, as an extension set before the Layer, overrides the prefix's.
    let routed: Router = Router::new()
        .route("/videos", get(|| async { "routed" }))
        .layer(f.auth.layer().require("/videos", "never.held".parse().unwrap()))
        .layer(axum::Extension(Require(std::sync::Arc::new("videos.read".parse().unwrap()))));

    let (status, _, body) = call(&app, "/videos", Some(&f.key)).await;
    assert_eq!((status, json(&body)["code"].as_i64()), (StatusCode::FORBIDDEN, Some(1009)));
    assert_eq!(json(&body)["msg"], "Permission denied: requires videos.create AND (images.read OR admin)");
    assert_eq!(call(&app, "/other", Some(&f.key)).await.0, 200, "no requirement outside the prefix");

    let grant = CredentialChange { permissions: Some(vec!["videos.*".into(), "admin".into()]), ..Default::default() };
    f.store.update_credential(&Audit::system(), f.client_id, &grant).await.unwrap();
    let start = Instant::now();
    while call(&app, "/videos", Some(&f.key)).await.0 != StatusCode::OK {
        assert!(start.elapsed() < Duration::from_secs(2), "the grant did not reach the layer");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, _, body) = call(&app, "/videos", Some(&f.key)).await;
    assert_eq!(json(&body)["permissions"], serde_json::json!(["admin", "videos.*"]));
    // The longest prefix wins.
    assert_eq!(call(&app, "/videos/list", Some(&f.key)).await.0, 200);
    assert_eq!(call(&routed, "/videos", Some(&f.key)).await.0, 200, "the extension's requirement, not never.held");

    // An allowlist: the address comes from a ClientIp extension; without one, refused.
    let only = CredentialChange { ip_allowlist: Some(vec!["10.0.0.0/8".parse().unwrap()]), ..Default::default() };
    f.store.update_credential(&Audit::system(), f.client_id, &only).await.unwrap();
    let start = Instant::now();
    while call(&app, "/other", Some(&f.key)).await.0 != StatusCode::FORBIDDEN {
        assert!(start.elapsed() < Duration::from_secs(2), "the allowlist did not reach the layer");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (ip, expected) in [("10.1.2.3", StatusCode::OK), ("192.0.2.1", StatusCode::FORBIDDEN)] {
        let with_ip = app.clone().layer(axum::Extension(ClientIp(ip.parse().unwrap())));
        assert_eq!(call(&with_ip, "/other", Some(&f.key)).await.0, expected, "{ip}");
    }
}

/// What every request's future carries (and moves, each time it is moved): the warm path only.
/// The store queries, credit leases and shared rate-limit round trips are boxed where they run
/// (a miss or a wait costs one allocation beside a round trip). Was 1,448 bytes before.
#[tokio::test]
async fn a_decision_future_is_small() {
    let f = fixture(StatusMode::Standard).await;
    let mut h = http::HeaderMap::new();
    h.insert(&keygate_auth::identity::X_API_KEY, http::HeaderValue::from_str(&f.key).unwrap());
    let auth = f.auth.authenticator();
    let key = auth.authenticate(&h);
    assert!(std::mem::size_of_val(&key) <= 512, "{} bytes", std::mem::size_of_val(&key));
    key.await.unwrap();
    h.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"));
    let token = auth.authenticate(&h);
    assert!(std::mem::size_of_val(&token) <= 512, "{} bytes", std::mem::size_of_val(&token));
    assert!(token.await.is_err());
}

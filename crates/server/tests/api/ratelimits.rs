//! Rate limits and plans over HTTP: the admin API that sets them, 1005 / 429 / Retry-After and the
//! RateLimit headers on `/auth/verify`, getToken and the gateway, limits shared by an account's
//! credentials, plans and their overrides, a limit changed mid-window, and the one-node accuracy
//! bound of the README (a limit L per D under a load of 5L per D for 10 D admits [0.95 x 10L, 11L]).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

impl TestApp {
    async fn put_plan(&self, name: &str, ratelimits: Value) -> Reply {
        self.admin_send(reqwest::Method::PUT, &format!("/plans/{name}"), Some(json!({ "ratelimits": ratelimits })))
            .await
    }

    async fn limit_credential(&self, client_id: &str, ratelimits: Value) {
        self.patch(&format!("/credentials/{client_id}"), json!({ "ratelimits": ratelimits })).await.expect(200, 1000);
    }
}

fn limit(name: &str, limit: u64, duration: &str) -> Value {
    json!({"name": name, "limit": limit, "duration": duration})
}

/// How many of `n` verify calls with `key` pass.
async fn passes(app: &TestApp, key: &str, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let r = app.verify_key(key).await;
        match r.status {
            200 => ok += 1,
            429 => {}
            s => panic!("unexpected HTTP {s}: {}", r.text),
        }
    }
    ok
}

#[tokio::test]
async fn a_limited_key_is_refused_with_1005_and_told_when_to_retry() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    app.limit_credential(&c.client_id, json!([limit("requests", 3, "1m"), limit("burst", 10, "1h")])).await;

    for remaining in [2, 1, 0] {
        let r = app.verify_key(&c.api_key).await;
        r.expect(200, 1000);
        assert_eq!(r.header("x-keygate-client-id"), Some(c.client_id.as_str()));
        assert_eq!(r.header("ratelimit-policy"), Some(r#""requests";q=3;w=60, "burst";q=10;w=3600"#));
        let state = r.header("ratelimit").unwrap().to_owned();
        assert!(state.starts_with(&format!(r#""requests";r={remaining};t="#)), "{state}");
        assert_eq!(r.data()["ratelimits"][0]["remaining"], remaining);
        assert_eq!(r.data()["ratelimits"][0]["limit"], 3);
        assert_eq!(r.data()["ratelimits"][0]["duration"], "1m");
        assert_eq!(r.data()["ratelimits"][1]["remaining"], remaining + 7);
    }
    let r = app.verify_key(&c.api_key).await;
    r.expect(429, 1005);
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((19..=20).contains(&retry), "one request more every 20 s: {retry}");
    assert!(r.body["msg"].as_str().unwrap().contains("\"requests\""), "{}", r.text);
    assert!(r.header("x-keygate-client-id").is_none());
    // The refused request took nothing from "burst".
    assert!(r.header("ratelimit").unwrap().contains(r#""burst";r=7;"#), "{:?}", r.header("ratelimit"));

    // getToken is a request of the same credential; a token's requests count the same.
    let t = app.get_token(&c.client_id, &c.api_key).await;
    t.expect(429, 1005);
    // The day's usage records the refusals as their own outcome (after the next flush).
    app.state.auth.authenticator().usage.flush(app.state.ops.store().as_ref()).await.unwrap();
    let usage = app.admin_get(&format!("/credentials/{}/usage?days=1", c.client_id)).await;
    usage.expect(200, 1000);
    assert_eq!(usage.data()[0]["requests"], json!({"1000": 3, "1005": 2}), "{}", usage.text);

    // Removing the limits lets it through at once, without headers.
    app.limit_credential(&c.client_id, json!([])).await;
    let r = app.verify_key(&c.api_key).await;
    r.expect_identity(&c, "api_key");
    assert!(r.header("ratelimit").is_none() && r.data().get("ratelimits").is_none(), "{}", r.text);
    let m = app.send(app.client.get(app.url("/metrics"))).await;
    // The recorder is the process's: other tests' refusals count too, so at least these two.
    let refusals = m
        .text
        .lines()
        .find_map(|l| l.strip_prefix(r#"keygate_ratelimit_refusals_total{limit="requests"} "#))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(refusals.is_some_and(|n| n >= 2.0), "{refusals:?} in {}", m.text);
}

#[tokio::test]
async fn a_limit_of_zero_blocks_and_bearer_tokens_count_too() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let token = app.token(&c).await;
    app.limit_credential(&c.client_id, json!([limit("requests", 2, "1h")])).await;
    assert_eq!(app.verify_bearer(&token).await.status, 200);
    assert_eq!(app.verify_key(&c.api_key).await.status, 200);
    app.verify_bearer(&token).await.expect(429, 1005);

    app.limit_credential(&c.client_id, json!([limit("requests", 0, "1s")])).await;
    let r = app.verify_key(&c.api_key).await;
    r.expect(429, 1005);
    assert!(r.header("retry-after").is_none(), "a limit of 0 never lets a request through");
    assert!(r.body["msg"].as_str().unwrap().contains("allows no requests"), "{}", r.text);
}

#[tokio::test]
async fn account_limits_are_shared_by_its_credentials() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let (_, second) = app.create_credential(&c.account_id).await;
    let r =
        app.patch(&format!("/accounts/{}", c.account_id), json!({"ratelimits": [limit("requests", 4, "1h")]})).await;
    r.expect(200, 1000);
    assert_eq!(r.data()["effectiveRatelimits"][0]["source"], "account");
    assert_eq!(passes(&app, &c.api_key, 3).await, 3);
    assert_eq!(passes(&app, &second, 3).await, 1, "the account's 4 are shared");
    // A credential's own limit of the same name applies as well, not instead.
    app.limit_credential(&c.client_id, json!([limit("requests", 100, "1h")])).await;
    assert_eq!(passes(&app, &c.api_key, 1).await, 0);
}

#[tokio::test]
async fn plans_apply_to_their_accounts_and_own_limits_override_them_by_name() {
    let app = TestApp::spawn().await;
    app.put_plan("free", json!([limit("requests", 2, "1h"), limit("daily", 100, "1d")])).await.expect(201, 1000);
    let again = app.put_plan("free", json!([limit("requests", 2, "1h"), limit("daily", 100, "1d")])).await;
    again.expect(200, 1000);
    let c = app.customer().await;
    let r = app.patch(&format!("/accounts/{}", c.account_id), json!({"plan": "free"})).await;
    r.expect(200, 1000);
    assert_eq!(r.data()["plan"], "free");
    assert_eq!(
        r.data()["effectiveRatelimits"][0],
        json!({"name":"requests","limit":2,"duration":"1h","source":"plan","plan":"free"})
    );
    assert_eq!(passes(&app, &c.api_key, 3).await, 2);

    // Raising the plan applies at once and keeps what was spent: 2 of 5.
    app.put_plan("free", json!([limit("requests", 5, "1h")])).await.expect(200, 1000);
    wait_until(Duration::from_secs(5), "the plan change applies", || async {
        app.verify_key(&c.api_key).await.header("ratelimit-policy") == Some(r#""requests";q=5;w=3600"#)
    })
    .await;
    assert_eq!(passes(&app, &c.api_key, 5).await, 2, "3 of 5 spent after the first of these");

    // The credential's own "requests" replaces the plan's for it.
    app.limit_credential(&c.client_id, json!([limit("requests", 50, "1h")])).await;
    let shown = app.admin_get(&format!("/credentials/{}", c.client_id)).await;
    shown.expect(200, 1000);
    assert_eq!(
        shown.data()["effectiveRatelimits"],
        json!([{"name":"requests","limit":50,"duration":"1h","source":"credential"}])
    );
    assert_eq!(passes(&app, &c.api_key, 3).await, 3);

    // A plan in use cannot be deleted; a missing plan cannot be assigned.
    let d = app.admin_send(reqwest::Method::DELETE, "/plans/free", None).await;
    d.expect(409, 1003);
    let g = app.admin_get("/plans/free").await;
    g.expect(200, 1000);
    assert_eq!(g.data()["accounts"], 1);
    app.patch(&format!("/accounts/{}", c.account_id), json!({"plan": "gold"})).await.expect(400, 1003);
    app.patch(&format!("/accounts/{}", c.account_id), json!({"plan": null})).await.expect(200, 1000);
    app.admin_send(reqwest::Method::DELETE, "/plans/free", None).await.expect(200, 1000);
    app.admin_get("/plans/free").await.expect(404, 1003);
    assert_eq!(app.admin_get("/plans").await.data(), &json!([]));
}

#[tokio::test]
async fn bad_limits_are_refused_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let path = format!("/credentials/{}", c.client_id);
    for bad in [
        json!({"ratelimits": [limit("requests", 1, "0s")]}),
        json!({"ratelimits": [limit("requests", 1, "31d")]}),
        json!({"ratelimits": [limit("requests", 1, "1.5s")]}),
        json!({"ratelimits": [limit("Requests", 1, "1s")]}),
        json!({"ratelimits": [limit("requests", 1, "1s"), limit("requests", 2, "1s")]}),
        json!({"ratelimits": [limit("requests", 1_000_000_001, "1s")]}),
        json!({"ratelimits": [{"name": "requests", "limit": -1, "duration": "1s"}]}),
        json!({"ratelimits": [{"name": "requests", "limit": 1}]}),
        json!({"ratelimits": "10/s"}),
        json!({"rateLimits": []}),
    ] {
        let r = app.patch(&path, bad.clone()).await;
        r.expect(400, 1003);
        assert!(!r.text.contains(&c.api_key));
    }
    app.put_plan("Bad Name", json!([])).await.expect(400, 1003);
    app.patch("/credentials/0123456789abcdef01234567", json!({"ratelimits": []})).await.expect(404, 1003);
    let shown = app.admin_get(&path).await;
    assert_eq!(shown.data()["ratelimits"], json!([]));
    assert_eq!(app.verify_key(&c.api_key).await.status, 200);
}

#[tokio::test]
async fn a_limit_changed_mid_window_keeps_what_was_spent() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    app.limit_credential(&c.client_id, json!([limit("requests", 10, "1h")])).await;
    assert_eq!(passes(&app, &c.api_key, 6).await, 6);
    // Raised to 20: 6 spent, this request the 7th.
    app.limit_credential(&c.client_id, json!([limit("requests", 20, "1h")])).await;
    let r = app.verify_key(&c.api_key).await;
    assert_eq!(r.data()["ratelimits"][0]["remaining"], 13, "{}", r.text);
    // Lowered to 5: 7 spent is past it.
    app.limit_credential(&c.client_id, json!([limit("requests", 5, "1h")])).await;
    app.verify_key(&c.api_key).await.expect(429, 1005);
}

/// The README's sentence: a limit of L per D admits at most L + L·t/D over any span t, and under
/// a sustained load L per D. Here L = 20 per 1 s, a load of ~5L per D for 10 D.
#[tokio::test]
async fn one_node_admits_the_limit_under_load() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let (l, d) = (20u64, Duration::from_secs(1));
    app.limit_credential(&c.client_id, json!([limit("requests", l, "1s")])).await;
    let client = reqwest::Client::new();
    let url = app.url("/auth/verify");
    let start = Instant::now();
    let span = d * 10;
    let mut sent = 0u64;
    let mut admitted = 0u64;
    let gap = d / (5 * l as u32);
    while start.elapsed() < span {
        let next = start + gap * sent as u32;
        tokio::time::sleep_until(next.into()).await;
        if start.elapsed() >= span {
            break;
        }
        let r = client.get(&url).header("x-api-key", &c.api_key).send().await.unwrap();
        sent += 1;
        match r.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            s => panic!("HTTP {s}"),
        }
    }
    assert!(sent >= 4 * 10 * l, "the load was too light to test: {sent} requests");
    let (low, high) = ((0.95 * 10.0 * l as f64) as u64, 10 * l + l);
    assert!((low..=high).contains(&admitted), "{admitted} of {sent} admitted, outside [{low}, {high}]");
}

#[tokio::test]
async fn always_200_keeps_gettoken_at_200_and_verify_at_429() {
    let app = TestApp::spawn_with(|c| c.http_status = keygate_auth::StatusMode::Always200).await;
    let c = app.customer().await;
    app.limit_credential(&c.client_id, json!([limit("requests", 1, "1h")])).await;
    app.get_token(&c.client_id, &c.api_key).await.expect(200, 1000);
    let t = app.get_token(&c.client_id, &c.api_key).await;
    t.expect(200, 1005);
    assert!(t.header("retry-after").is_some(), "the vendor's status, keygate's advice: {:?}", t.headers);
    app.verify_key(&c.api_key).await.expect(429, 1005);
}

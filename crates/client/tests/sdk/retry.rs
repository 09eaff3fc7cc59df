//! Retries with backoff: against a local server scripted to fail (standing in for a failing
//! upstream, proxy or overloaded node), and against a port nothing listens on.

use std::time::{Duration, Instant};

use keygate_client::{ApiKeyClient, ClientOptions, Code, Error, RetryPolicy, TokenClient};
use reqwest::Method;
use serde_json::Value;

use crate::support::{LocalServer, Reply, fast_retries};

const IDENTITY: &str = r#"{"code":1000,"msg":"OK","data":{"accountId":"64db241f6d9e5c4bd136c187","uid":1,"clientId":"64db241f6d9e5c4bd136c188","method":"api_key"}}"#;
const UNAVAILABLE: &str = r#"{"code":1503,"msg":"Service temporarily unavailable"}"#;

fn json(status: u16, body: &str) -> Reply {
    Reply::Json(status, vec![], body.to_owned())
}

/// Fails the first `failures` requests with `fail`, then answers 200 with `ok`.
async fn flaky(failures: usize, fail: fn() -> Reply, ok: &'static str) -> LocalServer {
    LocalServer::start(move |_, n| if n <= failures { fail() } else { json(200, ok) }).await
}

fn client(server: &LocalServer, attempts: u32) -> ApiKeyClient {
    ApiKeyClient::with_options(&server.url(), "kgk_test", fast_retries(attempts)).unwrap()
}

#[tokio::test]
async fn a_1503_twice_then_success_is_three_tries() {
    let server = flaky(2, || json(503, UNAVAILABLE), IDENTITY).await;
    let me = client(&server, 3).verify().await.expect("the third try succeeds");
    assert_eq!(me.uid, 1);
    assert_eq!(server.count(), 3);
    assert!(server.seen().iter().all(|r| r.header("x-api-key") == Some("kgk_test")), "every try is authenticated");

    // With fewer attempts than failures, the last failure comes back, typed.
    let server = flaky(5, || json(503, UNAVAILABLE), IDENTITY).await;
    let err = client(&server, 3).verify().await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::Unavailable, status: 503, .. }), "{err:?}");
    assert_eq!(server.count(), 3, "bounded attempts");
}

#[tokio::test]
async fn other_5xx_are_retried_for_idempotent_requests_only() {
    // GET: a 500 and a 502 (no envelope), then success.
    let server = LocalServer::start(|_, n| match n {
        1 => json(500, r#"{"code":1500,"msg":"Internal error"}"#),
        2 => Reply::Json(502, vec![], "<html>bad gateway</html>".into()),
        _ => json(200, r#"{"ok":true}"#),
    })
    .await;
    let got: Value = client(&server, 3).get("/v1/things").send_json().await.unwrap();
    assert_eq!((got["ok"].as_bool(), server.count()), (Some(true), 3));

    // POST: not repeated after a 5xx (the server may have acted on it)...
    let server = flaky(1, || json(500, r#"{"code":1500,"msg":"Internal error"}"#), "{}").await;
    let err = client(&server, 3).post("/v1/things").json(&1).send().await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::Internal, status: 500, .. }), "{err:?}");
    assert_eq!(server.count(), 1);
    // ...unless it is marked idempotent, or the policy says so.
    let server = flaky(1, || json(502, r#"{"code":1502,"msg":"Upstream unavailable"}"#), "{}").await;
    client(&server, 3).post("/v1/things").idempotent(true).send().await.unwrap();
    assert_eq!(server.count(), 2);
    let server = flaky(1, || json(504, r#"{"code":1504,"msg":"Upstream timed out"}"#), "{}").await;
    let options = fast_retries(3).retry(
        RetryPolicy::new(3)
            .base_delay(Duration::from_millis(5))
            .max_delay(Duration::from_millis(20))
            .retry_non_idempotent(true),
    );
    ApiKeyClient::with_options(&server.url(), "kgk_test", options).unwrap().post("/v1/things").send().await.unwrap();
    assert_eq!(server.count(), 2);
    // But a 1503 means keygate did nothing: a POST is retried too, and its body sent again.
    let server = flaky(2, || json(503, UNAVAILABLE), "{}").await;
    client(&server, 3).post("/v1/things").json(&serde_json::json!({"n": 1})).send().await.unwrap();
    assert_eq!(server.count(), 3);
    assert!(server.seen().iter().all(|r| r.body == br#"{"n":1}"#), "the same body each time");
}

#[tokio::test]
async fn four_hundreds_are_never_retried() {
    for (status, body, code) in [
        (429, r#"{"code":1005,"msg":"Operation too frequent"}"#, Code::TooFrequent),
        (400, r#"{"code":1003,"msg":"Parameter error"}"#, Code::ParamError),
        (402, r#"{"code":1006,"msg":"Insufficient quota"}"#, Code::QuotaExceeded),
        (403, r#"{"code":1009,"msg":"Permission denied"}"#, Code::PermissionDenied),
        (401, r#"{"code":1101,"msg":"Invalid authorization"}"#, Code::InvalidAuth),
    ] {
        let server = LocalServer::start(move |_, _| json(status, body)).await;
        let err = client(&server, 5).get("/v1/things").send().await.unwrap_err();
        assert_eq!((err.code(), err.status()), (Some(code), Some(status)), "{err:?}");
        assert_eq!(server.count(), 1, "HTTP {status} is not retried");
    }
}

#[tokio::test]
async fn a_rate_limit_is_never_retried_and_says_when_to_come_back() {
    const LIMITED: &str = r#"{"code":1005,"msg":"Operation too frequent: \"requests\" allows 10 per 1s"}"#;
    let limited = |status: u16| Reply::Json(status, vec![("retry-after", "7".into())], LIMITED.into());
    // Not even with a policy that repeats POSTs, nor for a GET, nor when a proxy made the 429 a
    // 500 (nginx's auth_request does): the error comes back at once, with the server's wait.
    let options =
        ClientOptions::default().retry(RetryPolicy::new(5).base_delay(Duration::ZERO).retry_non_idempotent(true));
    for (method, status) in [(Method::POST, 429), (Method::GET, 429), (Method::GET, 500), (Method::PUT, 500)] {
        let server = LocalServer::start(move |_, _| limited(status)).await;
        let c = ApiKeyClient::with_options(&server.url(), "kgk_test", options.clone()).unwrap();
        let err = c.request(method.clone(), "/v1/things").send().await.unwrap_err();
        assert!(
            matches!(err, Error::Api { code: Code::TooFrequent, status: s, ref msg, retry_after: Some(d) }
                if s == status && msg.contains("requests") && d == Duration::from_secs(7)),
            "{method} {status}: {err:?}"
        );
        assert_eq!(server.count(), 1, "{method} {status}: not retried");
    }
    // getToken (retried as safe to repeat) and /auth/verify the same; a 429 without Retry-After
    // (a limit of 0) has none.
    let server = LocalServer::start(|_, _| json(429, LIMITED)).await;
    let c = TokenClient::with_options(&server.url(), "64db241f6d9e5c4bd136c188", "kgk_test", fast_retries(5)).unwrap();
    let err = c.verify().await.unwrap_err();
    assert_eq!((err.code(), err.status(), err.retry_after()), (Some(Code::TooFrequent), Some(429), None));
    assert_eq!(server.count(), 1);
    // A 503's Retry-After is kept on the error too, once the attempts are spent.
    let server =
        LocalServer::start(|_, _| Reply::Json(503, vec![("retry-after", "0".into())], UNAVAILABLE.into())).await;
    let err = client(&server, 2).verify().await.unwrap_err();
    assert_eq!((err.code(), err.retry_after()), (Some(Code::Unavailable), Some(Duration::ZERO)));
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn connection_failures_are_retried() {
    // The connection closes before any answer, twice: a GET goes through on the third try.
    let server = LocalServer::start(|_, n| if n <= 2 { Reply::Hang } else { json(200, IDENTITY) }).await;
    assert_eq!(client(&server, 3).verify().await.unwrap().uid, 1);
    assert_eq!(server.count(), 3);
    // A POST that was sent and got no answer may have been acted on: not repeated.
    let server = LocalServer::start(|_, n| if n <= 1 { Reply::Hang } else { json(200, "{}") }).await;
    let err = client(&server, 3).post("/v1/things").send().await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_eq!(server.count(), 1);

    // Nothing listening: every attempt is made (nothing was sent, so POSTs too), with backoff.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let options = ClientOptions::default()
        .retry(RetryPolicy::new(4).base_delay(Duration::from_millis(40)).max_delay(Duration::from_millis(40)));
    let c = ApiKeyClient::with_options(&format!("http://127.0.0.1:{port}"), "kgk_test", options).unwrap();
    let start = Instant::now();
    let err = c.request(Method::POST, "/v1/things").send().await.unwrap_err();
    assert!(matches!(&err, Error::Transport(e) if e.is_connect()), "{err:?}");
    assert!(err.is_retryable(false));
    // Three waits of at most 40 ms each (full jitter: possibly much less).
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
}

#[tokio::test]
async fn get_token_is_retried_and_its_answers_are_checked() {
    let token = r#"{"code":1000,"msg":"OK","token":"opaque-token"}"#;
    let server = LocalServer::start(move |req, n| match (req.target.as_str(), n) {
        ("/api/open/v3/getToken", 1 | 2) => json(503, UNAVAILABLE),
        ("/api/open/v3/getToken", _) => json(200, token),
        (_, _) => {
            assert_eq!(req.header("authorization"), Some("Bearer opaque-token"));
            json(200, IDENTITY)
        }
    })
    .await;
    let c = TokenClient::with_options(&server.url(), "64db241f6d9e5c4bd136c188", "kgk_test", fast_retries(3)).unwrap();
    c.verify().await.expect("getToken succeeds on its third try");
    let seen = server.seen();
    assert_eq!(seen.len(), 4);
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body, serde_json::json!({"clientId": "64db241f6d9e5c4bd136c188", "clientSecret": "kgk_test"}));
    // An opaque (non-JWT) token is kept until the server refuses it.
    c.verify().await.unwrap();
    assert_eq!(server.count(), 5);

    // A getToken answer without a token is a decode error, not a panic or a loop.
    let server = LocalServer::start(|_, _| json(200, r#"{"code":1000,"msg":"OK"}"#)).await;
    let c = TokenClient::with_options(&server.url(), "x", "y", fast_retries(3)).unwrap();
    assert!(matches!(c.verify().await.unwrap_err(), Error::Decode { status: 200, .. }));
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_the_cap() {
    let server = LocalServer::start(|_, n| {
        if n == 1 {
            Reply::Json(503, vec![("retry-after", "1".into())], UNAVAILABLE.into())
        } else {
            json(200, IDENTITY)
        }
    })
    .await;
    let options = ClientOptions::default()
        .retry(RetryPolicy::new(2).base_delay(Duration::ZERO).max_delay(Duration::from_millis(300)));
    let c = ApiKeyClient::with_options(&server.url(), "kgk_test", options).unwrap();
    let start = Instant::now();
    c.verify().await.unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300), "waited the capped Retry-After: {took:?}");
    assert!(took < Duration::from_millis(900), "not the full second: {took:?}");
}

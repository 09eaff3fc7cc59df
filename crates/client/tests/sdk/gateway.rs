//! Requests to an API behind keygate (`upstream`), authenticated by the SDK's request builder.

use keygate_client::{Code, Error, RequestBuilder};
use keygate_core::audit::Audit;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Server, Tap, echo_upstream};

#[tokio::test]
async fn requests_reach_the_upstream_with_the_callers_identity() {
    let upstream = echo_upstream().await;
    let server = Server::start_with(|c| c.upstream = Some(upstream.url().parse().unwrap())).await;
    let c = server.customer().await;
    let keys = c.key_client(&server.url());
    let tokens = c.token_client(&server.url());

    let post = |b: RequestBuilder| b.query(&[("q", "cats & dogs")]).json(&json!({"prompt": "a cat"}));
    let cases = [("api_key", post(keys.post("/v1/videos"))), ("bearer", post(tokens.post("/v1/videos")))];
    for (method, request) in cases {
        let echoed: Value = request.send_json().await.expect("the upstream answers");
        assert_eq!(echoed["method"], "POST");
        assert_eq!(echoed["target"], "/v1/videos?q=cats+%26+dogs");
        assert_eq!(echoed["body"], r#"{"prompt":"a cat"}"#);
        let h = &echoed["headers"];
        assert_eq!(h["x-keygate-account-id"], c.account_id.as_str(), "{method}");
        assert_eq!(h["x-keygate-client-id"], c.client_id(), "{method}");
        assert_eq!(h["x-keygate-uid"], c.uid.to_string(), "{method}");
        assert_eq!(h["x-keygate-auth-method"], method);
        assert_eq!(h["content-type"], "application/json");
        // keygate strips the credential before forwarding.
        assert!(h.get("x-api-key").is_none() && h.get("authorization").is_none(), "{method}: {h}");
    }

    // Headers of the caller's own pass; a credential header set by hand is replaced by the
    // client's (a forged identity header is dropped by keygate).
    let echoed: Value = keys
        .request(Method::PUT, "/v1/videos/7")
        .header("x-trace", "abc")
        .header("x-api-key", "kgk_someone_else")
        .header("x-keygate-account-id", "000000000000000000000000")
        .body("raw bytes")
        .send_json()
        .await
        .unwrap();
    assert_eq!((echoed["method"].as_str(), echoed["target"].as_str()), (Some("PUT"), Some("/v1/videos/7")));
    assert_eq!(echoed["headers"]["x-trace"], "abc");
    assert_eq!(echoed["headers"]["x-keygate-account-id"], c.account_id.as_str());
    assert_eq!(echoed["body"], "raw bytes");

    // `send` gives the response unread.
    let res = tokens.get("/v1/ping").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let echoed: Value = res.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-keygate-auth-method"], "bearer");
}

#[tokio::test]
async fn refusals_and_upstream_errors_are_told_apart() {
    let upstream = echo_upstream().await;
    let server = Server::start_with(|c| c.upstream = Some(upstream.url().parse().unwrap())).await;
    let c = server.customer().await;
    let keys = c.key_client(&server.url());

    // The upstream's own 404 is not keygate's envelope.
    let err = keys.get("/missing").send().await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 404, ref body } if body.contains("no such thing")), "{err:?}");
    // A business failure in the vendor's envelope with HTTP 200: `send` passes it on, the JSON
    // readers turn it into the typed error.
    assert_eq!(keys.get("/quota").send().await.unwrap().status(), 200);
    let err = keys.get("/quota").send_json::<Value>().await.unwrap_err();
    assert!(matches!(err, Error::InsufficientCredits { status: 200, remaining: None, .. }), "{err:?}");
    assert_eq!(err.code(), Some(Code::QuotaExceeded));

    // keygate's refusal never reaches the upstream.
    let before = upstream.count();
    server.admin().ban(&c.account_id, "abuse").await.unwrap();
    let err = keys.get("/v1/videos").send().await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::Banned, status: 403, .. }), "{err:?}");
    assert_eq!(upstream.count(), before, "a refused request is not forwarded");
}

#[tokio::test]
async fn always_200_refusals_are_seen_in_the_body_and_a_dead_token_is_refreshed() {
    // keygate answering refusals with HTTP 200 (the vendor's observed behaviour): only the
    // envelope's code tells, and the token client still notices the 1101 and recovers.
    let upstream = echo_upstream().await;
    let server = Server::start_with(|c| {
        c.upstream = Some(upstream.url().parse().unwrap());
        c.http_status = "always-200".parse().unwrap();
    })
    .await;
    let tap = Tap::start(server.addr).await;
    let c = server.customer().await;
    let tokens = c.token_client(&tap.url());
    let echoed: Value = tokens.get("/v1/videos").send_json().await.unwrap();
    assert_eq!(echoed["headers"]["x-keygate-auth-method"], "bearer");

    let admin = server.admin();
    let old = admin.signing_keys().await.unwrap().remove(0).kid;
    admin.rotate_signing_key().await.unwrap();
    server.state.ops.retire_signing_key(&Audit::system(), &old).await.unwrap();
    let echoed: Value = tokens.get("/v1/videos").send_json().await.expect("refreshed after a 200-with-1101");
    assert_eq!(echoed["headers"]["x-keygate-client-id"], c.client_id());
    assert_eq!((tap.get_tokens(), tap.refusals_1101()), (2, 1));

    // A refusal with HTTP 200 is still a typed error.
    admin.revoke_credential(c.client_id()).await.unwrap();
    let err = c.key_client(&server.url()).get("/v1/videos").send_json::<Value>().await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::InvalidAuth, status: 200, .. }), "{err:?}");
    // getToken answers 200 with the code too: typed all the same.
    let err = tokens.get("/v1/videos").send_json::<Value>().await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::InvalidAuth, status: 200, .. }), "{err:?}");
}

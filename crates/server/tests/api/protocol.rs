//! The vendor's protocol: `x-api-key`, getToken, `Authorization: Bearer`, the business codes,
//! HTTP statuses and challenges, and getToken's handling of bad bodies.

use keygate_auth::StatusMode;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, jwt_json};

/// A client id that is well-formed but was never issued.
const UNKNOWN_CLIENT_ID: &str = "0123456789abcdef01234567";

#[tokio::test]
async fn x_api_key_verifies_with_identity_in_body_and_headers() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    // Twice: a cold cache, then a warm one.
    for _ in 0..2 {
        app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    }
    // Another customer is told apart.
    let d = app.customer().await;
    app.verify_key(&d.api_key).await.expect_identity(&d, "api_key");
    assert_ne!(c.uid, d.uid);
}

#[tokio::test]
async fn header_names_are_case_insensitive_on_the_wire() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    for name in ["x-api-key", "X-API-KEY", "X-Api-Key", "x-API-key"] {
        app.raw_request(&format!("GET /auth/verify HTTP/1.1\r\n{name}: {}", c.api_key))
            .await
            .expect_identity(&c, "api_key");
    }
    let token = app.token(&c).await;
    for name in ["authorization", "AUTHORIZATION", "Authorization"] {
        app.raw_request(&format!("GET /auth/verify HTTP/1.1\r\n{name}: Bearer {token}"))
            .await
            .expect_identity(&c, "bearer");
    }
    // A refusal over the raw connection is the same envelope.
    app.raw_request("GET /auth/verify HTTP/1.1\r\nX-Api-Key: kgk_nope").await.expect_invalid();
    // Header values that are not visible ASCII cannot be keys keygate issued.
    app.raw_request("GET /auth/verify HTTP/1.1\r\nx-api-key: kgk_\u{e9}t\u{e9}").await.expect_invalid();
    app.raw_request(&format!("GET /auth/verify HTTP/1.1\r\nAuthorization: Bearer \u{e9}\r\nx-api-key: {}", c.api_key))
        .await
        .expect_invalid();
}

#[tokio::test]
async fn verify_answers_any_method_and_any_path_suffix() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let token = app.token(&c).await;
    for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        for path in ["/auth/verify", "/auth/verify/any/suffix", "/auth/verify/api/open/v3/content/video/createbytext"] {
            app.verify_at(method.clone(), path, &[("x-api-key", &c.api_key)]).await.expect_identity(&c, "api_key");
            app.verify_at(method.clone(), path, &[("authorization", &format!("Bearer {token}"))])
                .await
                .expect_identity(&c, "bearer");
            app.verify_at(method.clone(), path, &[]).await.expect_missing();
            app.verify_at(method.clone(), path, &[("x-api-key", "kgk_nope")]).await.expect_invalid();
        }
    }
}

#[tokio::test]
async fn get_token_then_bearer_in_any_scheme_case() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let token = app.token(&c).await;

    let (header, claims) = jwt_json(&token);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["typ"], "JWT");
    assert!(header["kid"].is_string(), "{header}");
    assert_eq!(claims["id"], c.account_id.as_str());
    assert_eq!(claims["uid"], c.uid);
    assert_eq!(claims["type"], "user");
    assert_eq!(claims["from"], "keygate");
    assert_eq!(claims["email"], c.email.as_str());
    assert_eq!(claims["cid"], c.client_id.as_str());
    assert_eq!(claims["code"], &c.client_id[20..]);
    let (iat, exp) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert_eq!(exp - iat, 366 * 86_400, "the default lifetime is 366 days");
    let now = keygate_store::now_ms() / 1000;
    assert!((now - 5..=now).contains(&iat), "iat {iat} vs now {now}");
    assert!(!token.contains(&c.api_key[4..]), "the token never carries the secret");

    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        app.verify_with(&[("authorization", &format!("{scheme} {token}"))]).await.expect_identity(&c, "bearer");
    }
    // Extra spaces around the token are tolerated.
    app.verify_with(&[("authorization", &format!("Bearer   {token}  "))]).await.expect_identity(&c, "bearer");

    // Each getToken issues a new token; all of them work.
    let second = app.token(&c).await;
    assert_ne!(second, token);
    app.verify_bearer(&second).await.expect_identity(&c, "bearer");
    app.verify_bearer(&token).await.expect_identity(&c, "bearer");

    // The API key itself as a Bearer value is taken as an API key.
    app.verify_bearer(&c.api_key).await.expect_identity(&c, "api_key");
}

#[tokio::test]
async fn authorization_wins_over_x_api_key() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let token = app.token(&c).await;

    // A valid key does not rescue an invalid Authorization.
    app.verify_with(&[("x-api-key", &c.api_key), ("authorization", "Bearer not.a.token")]).await.expect_invalid();
    app.verify_with(&[("x-api-key", &c.api_key), ("authorization", "Basic dXNlcjpwYXNz")]).await.expect_invalid();
    // An invalid key is ignored when Authorization is valid.
    app.verify_with(&[("x-api-key", "kgk_definitely-not-a-key"), ("authorization", &format!("Bearer {token}"))])
        .await
        .expect_identity(&c, "bearer");
    // Another customer's valid key is ignored too: the identity is the Bearer's.
    let d = app.customer().await;
    app.verify_with(&[("x-api-key", &d.api_key), ("authorization", &format!("Bearer {token}"))])
        .await
        .expect_identity(&c, "bearer");
    // An empty Authorization counts as absent: the key is used.
    app.verify_with(&[("x-api-key", &c.api_key), ("authorization", "")]).await.expect_identity(&c, "api_key");
}

#[tokio::test]
async fn missing_credentials_are_1102_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    app.customer().await;
    for headers in [
        vec![],
        vec![("x-api-key", "")],
        vec![("x-api-key", "   ")],
        vec![("authorization", "")],
        vec![("authorization", "Bearer ")],
        vec![("authorization", "Bearer")],
        vec![("authorization", "bearer    ")],
        vec![("authorization", ""), ("x-api-key", "")],
        vec![("x-client-id", UNKNOWN_CLIENT_ID)],
    ] {
        let r = app.verify_with(&headers).await;
        assert_eq!(r.code(), Some(1102), "{headers:?}: {}", r.text);
        r.expect_missing();
    }
}

#[tokio::test]
async fn invalid_credentials_are_1101_with_an_invalid_token_challenge() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    // A well-formed key this server never issued (it comes from another server).
    let other = TestApp::spawn().await;
    let foreign = other.customer().await;
    // One character of a real key changed: the checksum catches it.
    let mut typo = c.api_key.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();

    for key in [
        foreign.api_key.as_str(),
        typo.as_str(),
        "kgk_nope",
        "hello",
        &c.api_key[..31],
        &format!("{}x", c.api_key),
        &c.client_id,
    ] {
        let r = app.verify_key(key).await;
        assert_eq!(r.code(), Some(1101), "key {key:?}: {}", r.text);
        r.expect_invalid();
    }
    for auth in [
        "Bearer not.a.token".to_owned(),
        "Bearer garbage".to_owned(),
        format!("Bearer {}", foreign.api_key),
        "Basic dXNlcjpwYXNz".to_owned(),
        format!("Token {}", c.api_key),
        c.api_key.clone(),
    ] {
        let r = app.verify_with(&[("authorization", &auth)]).await;
        assert_eq!(r.code(), Some(1101), "authorization {auth:?}: {}", r.text);
        r.expect_invalid();
    }
    // The refusal says nothing about which check failed: one message for all 1101s.
    let a = app.verify_key(&foreign.api_key).await;
    let b = app.verify_key("kgk_nope").await;
    assert_eq!(a.text, b.text);
}

#[tokio::test]
async fn client_id_and_secret_headers() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let d = app.customer().await;
    app.verify_with(&[("x-client-id", &c.client_id), ("x-client-secret", &c.api_key)])
        .await
        .expect_identity(&c, "client_secret");
    app.verify_with(&[("x-client-id", &d.client_id), ("x-client-secret", &c.api_key)]).await.expect_invalid();
    app.verify_with(&[("x-client-id", UNKNOWN_CLIENT_ID), ("x-client-secret", &c.api_key)]).await.expect_invalid();
    app.verify_with(&[("x-client-secret", &c.api_key)]).await.expect_missing();
}

#[tokio::test]
async fn get_token_refuses_wrong_credentials_with_1101() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let d = app.customer().await;
    for (client_id, secret) in [
        // Wrong secret: another credential's key.
        (c.client_id.as_str(), d.api_key.as_str()),
        // Right secret, another credential's clientId.
        (d.client_id.as_str(), c.api_key.as_str()),
        // Right secret, unknown or malformed clientId.
        (UNKNOWN_CLIENT_ID, c.api_key.as_str()),
        ("not-a-client-id", c.api_key.as_str()),
        (&c.client_id.to_uppercase(), c.api_key.as_str()),
        // Malformed secrets.
        (c.client_id.as_str(), "kgk_short"),
        (c.client_id.as_str(), "not-a-key"),
        (c.client_id.as_str(), &c.api_key[..31]),
    ] {
        let r = app.get_token(client_id, secret).await;
        assert_eq!(r.code(), Some(1101), "clientId {client_id:?}, secret {secret:?}: {}", r.text);
        r.expect_invalid();
        assert!(r.body.get("token").is_none());
    }
    // Surrounding whitespace in the JSON values is tolerated.
    let r = app.get_token(&format!(" {} ", c.client_id), &format!(" {} ", c.api_key)).await;
    r.expect(200, 1000);
}

#[tokio::test]
async fn get_token_missing_fields_are_1102() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    for body in [
        json!({}),
        json!({"clientId": c.client_id}),
        json!({"clientSecret": c.api_key}),
        json!({"clientId": "", "clientSecret": c.api_key}),
        json!({"clientId": c.client_id, "clientSecret": ""}),
        json!({"clientId": c.client_id, "clientSecret": "   "}),
        json!({"clientId": null, "clientSecret": c.api_key}),
        json!({"clientId": c.client_id, "clientSecret": null}),
        json!({"clientid": c.client_id, "client_secret": c.api_key}),
    ] {
        let r = app.get_token_raw(body.to_string()).await;
        assert_eq!(r.code(), Some(1102), "{body}: {}", r.text);
        r.expect_missing();
        assert!(r.body.get("token").is_none());
    }
}

#[tokio::test]
async fn get_token_bad_bodies_are_1003_and_never_echo_the_secret() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let (cid, key) = (c.client_id.as_str(), c.api_key.as_str());
    let bodies = [
        // Malformed JSON.
        format!(r#"{{"clientId":"{cid}","clientSecret":"{key}""#),
        format!(r#"{{"clientId":"{cid}","clientSecret":{key}}}"#),
        format!(r#"{{"clientId":"{cid}","clientSecret":"{key}",}}"#),
        format!(r#"{{'clientId':'{cid}','clientSecret':'{key}'}}"#),
        format!("clientId={cid}&clientSecret={key}"),
        format!(r#"{{"clientId":"{cid}","clientSecret":"{key}"}} trailing"#),
        String::new(),
        "   ".into(),
        // Not an object.
        format!(r#""{key}""#),
        "42".into(),
        "null".into(),
        "true".into(),
        format!(r#"[{{"clientId":"{cid}","clientSecret":"{key}"}}]"#),
        // Wrong types.
        format!(r#"{{"clientId":123,"clientSecret":"{key}"}}"#),
        format!(r#"{{"clientId":"{cid}","clientSecret":["{key}"]}}"#),
        format!(r#"{{"clientId":"{cid}","clientSecret":{{"value":"{key}"}}}}"#),
        format!(r#"{{"clientId":["{cid}"],"clientSecret":"{key}"}}"#),
        format!(r#"{{"clientId":"{cid}","clientSecret":true}}"#),
        // A field given twice.
        format!(r#"{{"clientId":"{cid}","clientSecret":"{key}","clientSecret":"{key}"}}"#),
    ];
    for body in bodies {
        let r = app.get_token_raw(body.clone()).await;
        assert_eq!((r.status, r.code()), (400, Some(1003)), "{body}: {}", r.text);
        r.expect(400, 1003);
        assert!(r.body.get("token").is_none());
        assert!(!r.text.contains(&key[4..]) && !r.text.contains(cid), "the answer echoes the input: {}", r.text);
    }
}

/// A JSON array is not an object, even one whose elements line up with the request's fields.
#[tokio::test]
async fn get_token_refuses_an_array_shaped_like_the_request() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let body = json!([c.client_id, c.api_key]).to_string();
    let r = app.get_token_raw(body).await;
    r.expect(400, 1003);
    assert!(r.body.get("token").is_none(), "{}", r.text);
    assert!(!r.text.contains(&c.api_key[4..]));
}

#[tokio::test]
async fn get_token_body_over_64_kib_is_413() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let padded = |len: usize| {
        let mut body = json!({"clientId": c.client_id, "clientSecret": c.api_key, "pad": ""}).to_string();
        let missing = len - body.len();
        body.insert_str(body.len() - 2, &"x".repeat(missing));
        assert_eq!(body.len(), len);
        body
    };
    // Exactly at the limit: accepted (unknown fields are ignored).
    app.get_token_raw(padded(64 * 1024)).await.expect(200, 1000);
    // One byte over, and far over.
    for len in [64 * 1024 + 1, 1024 * 1024] {
        let r = app.get_token_raw(padded(len)).await;
        r.expect(413, 1003);
        assert!(!r.text.contains(&c.api_key[4..]));
    }
}

#[tokio::test]
async fn always_200_mode_answers_get_token_refusals_with_http_200() {
    let app = TestApp::spawn_with(|l| l.http_status = StatusMode::Always200).await;
    let c = app.customer().await;
    let d = app.customer().await;

    let r = app.get_token(&c.client_id, &d.api_key).await;
    r.expect(200, 1101);
    assert!(r.header("www-authenticate").is_none());
    assert!(r.body.get("token").is_none());
    app.get_token_raw(json!({"clientId": c.client_id}).to_string()).await.expect(200, 1102);
    app.get_token_raw("{not json").await.expect(200, 1003);
    app.get_token_raw(format!(r#"{{"clientId":1,"clientSecret":"{}"}}"#, c.api_key)).await.expect(200, 1003);
    app.get_token_raw("x".repeat(65 * 1024)).await.expect(200, 1003);
    let token = app.token(&c).await;

    app.ban(&d.account_id, "always-200 check").await;
    app.get_token(&d.client_id, &d.api_key).await.expect(200, 1200);

    // /auth/verify keeps real statuses: proxies act on them.
    app.verify_with(&[]).await.expect_missing();
    app.verify_key("kgk_nope").await.expect_invalid();
    app.verify_key(&d.api_key).await.expect_banned();
    app.verify_bearer(&token).await.expect_identity(&c, "bearer");
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let r = app.send(app.client.get(app.url("/healthz"))).await;
    r.expect(200, 1000);
    let r = app.send(app.client.get(app.url("/readyz"))).await;
    r.expect(200, 1000);
    assert_eq!(r.data()["backend"], "sqlite");
    assert!(r.data()["feedCursor"].is_i64(), "{}", r.text);
}

#[tokio::test]
async fn unknown_routes_answer_the_envelope() {
    let app = TestApp::spawn().await;
    let r = app.send(app.client.get(app.url("/no/such/route"))).await;
    r.expect(404, 1003);
    let r = app.send(app.client.get(app.url("/auth"))).await;
    assert_eq!(r.status, 404);
    // getToken is POST only.
    let r = app.send(app.client.get(app.url("/api/open/v3/getToken"))).await;
    r.expect(405, 1003);
    assert_eq!(r.header("allow"), Some("POST"));
}

#[tokio::test]
async fn the_server_stops_on_shutdown() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    app.verify_key(&c.api_key).await.expect_identity(&c, "api_key");
    let (client, url) = (app.client.clone(), app.url("/healthz"));
    app.stop().await.expect("run_until returns Ok");
    assert!(client.get(&url).send().await.is_err(), "a stopped server still answers");
}

#[tokio::test]
async fn a_client_slow_to_send_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(|l| l.header_read_timeout = std::time::Duration::from_millis(300)).await;
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    // Headers that never end.
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: keygate\r\n").await.expect("write");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is still open after 5 s");
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(250), "closed after {took:?}, before the timeout");
    // Whoever sends whole requests is served as usual.
    let r = app.send(app.client.get(app.url("/healthz"))).await;
    assert_eq!(r.status, 200);
}

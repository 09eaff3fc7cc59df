//! Tokens keygate did not issue as they are: tampered, signed by another keygate, `alg: none`,
//! other algorithms; and rotation of the signing key.

use serde_json::{Value, json};

use crate::helpers::{TestApp, b64url_decode, b64url_encode, jwt_json, jwt_parts};

fn encode_json(v: &Value) -> String {
    b64url_encode(v.to_string().as_bytes())
}

#[tokio::test]
async fn tampered_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let d = app.customer().await;
    let token = app.token(&c).await;
    let other = app.token(&d).await;
    let [header, payload, signature] = jwt_parts(&token);
    let (_, claims) = jwt_json(&token);

    let mut forged = Vec::new();
    // One character of the payload flipped.
    let mut flipped = payload.clone().into_bytes();
    let i = flipped.len() / 2;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    forged.push(format!("{header}.{}.{signature}", String::from_utf8(flipped).unwrap()));
    // Claims changed and re-encoded, signature kept: another uid, account, generation, expiry.
    for (field, value) in [
        ("uid", json!(claims["uid"].as_i64().unwrap() + 1)),
        ("id", json!(d.account_id)),
        ("cid", json!(d.client_id)),
        ("gen", json!(2)),
        ("exp", json!(claims["exp"].as_i64().unwrap() + 86_400)),
    ] {
        let mut changed = claims.clone();
        changed[field] = value;
        forged.push(format!("{header}.{}.{signature}", encode_json(&changed)));
    }
    // One character of the signature flipped.
    let mut sig = signature.clone().into_bytes();
    sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
    forged.push(format!("{header}.{payload}.{}", String::from_utf8(sig).unwrap()));
    // Another token's signature on this payload, and the signature removed.
    forged.push(format!("{header}.{payload}.{}", jwt_parts(&other)[2]));
    forged.push(format!("{header}.{payload}."));
    forged.push(format!("{header}.{payload}"));
    // Truncated, padded, extra segment.
    forged.push(token[..token.len() - 1].to_owned());
    forged.push(format!("{token}="));
    forged.push(format!("{token}.{signature}"));

    for t in &forged {
        let r = app.verify_bearer(t).await;
        assert_eq!(r.code(), Some(1101), "forged token {t}: {}", r.text);
        r.expect_invalid();
    }
    // The genuine ones still work.
    app.verify_bearer(&token).await.expect_identity(&c, "bearer");
    app.verify_bearer(&other).await.expect_identity(&d, "bearer");
}

#[tokio::test]
async fn tokens_of_another_keygate_are_refused() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let foreign = TestApp::spawn().await;
    let f = foreign.customer().await;
    let foreign_token = foreign.token(&f).await;
    foreign.verify_bearer(&foreign_token).await.expect_identity(&f, "bearer");
    app.verify_bearer(&foreign_token).await.expect_invalid();

    // Even carrying this server's kid and one of its customers' claims, a foreign signature fails.
    let token = app.token(&c).await;
    let (header, claims) = jwt_json(&token);
    let [_, _, foreign_sig] = jwt_parts(&foreign_token);
    let spliced = format!("{}.{}.{foreign_sig}", encode_json(&header), encode_json(&claims));
    app.verify_bearer(&spliced).await.expect_invalid();
    // And the other way round.
    foreign.verify_bearer(&token).await.expect_invalid();
}

#[tokio::test]
async fn alg_none_and_other_algorithms_are_refused() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let token = app.token(&c).await;
    let [_, payload, signature] = jwt_parts(&token);
    let (header, _) = jwt_json(&token);
    let kid = header["kid"].clone();

    let mut forged = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let h = encode_json(&json!({"alg": alg, "typ": "JWT", "kid": kid}));
        forged.push(format!("{h}.{payload}."));
        forged.push(format!("{h}.{payload}.{signature}"));
    }
    let h = encode_json(&json!({"typ": "JWT", "kid": kid}));
    forged.push(format!("{h}.{payload}."));
    for alg in ["HS384", "HS512", "RS256", "ES256", "PS256", "EdDSA"] {
        let h = encode_json(&json!({"alg": alg, "typ": "JWT", "kid": kid}));
        forged.push(format!("{h}.{payload}.{signature}"));
    }
    // HS256 without a kid, with an unknown kid, with an empty one.
    for kid in [json!(null), json!("k000000000000"), json!("")] {
        let mut h = header.clone();
        h["kid"] = kid;
        forged.push(format!("{}.{payload}.{signature}", encode_json(&h)));
    }
    for t in &forged {
        let (h, _) = t.split_once('.').unwrap();
        let r = app.verify_bearer(t).await;
        assert_eq!(r.code(), Some(1101), "header {}: {}", String::from_utf8_lossy(&b64url_decode(h)), r.text);
        r.expect_invalid();
    }
}

#[tokio::test]
async fn signing_key_rotation_keeps_old_tokens_and_signs_new_ones_with_the_new_kid() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let old_token = app.token(&c).await;
    let old_kid = jwt_json(&old_token).0["kid"].as_str().unwrap().to_owned();

    let r = app.admin_get("/signing-keys").await;
    r.expect(200, 1000);
    let keys = r.data().as_array().unwrap();
    assert_eq!(keys.len(), 1, "{}", r.text);
    assert_eq!(keys[0]["kid"], old_kid.as_str());

    let r = app.admin_post("/signing-keys/rotate", None).await;
    r.expect(200, 1000);
    let new_kid = r.data()["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    assert!(!r.text.contains("secret"), "the key id only, never a secret: {}", r.text);

    let r = app.admin_get("/signing-keys").await;
    let kids: Vec<&str> = r.data().as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids.len(), 2, "{}", r.text);
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()));

    app.verify_bearer(&old_token).await.expect_identity(&c, "bearer");
    let new_token = app.token(&c).await;
    assert_eq!(jwt_json(&new_token).0["kid"], new_kid.as_str());
    app.verify_bearer(&new_token).await.expect_identity(&c, "bearer");
    // A token re-labelled with the other kid does not verify: the kids have different secrets.
    let [_, payload, signature] = jwt_parts(&old_token);
    let mut header = jwt_json(&old_token).0;
    header["kid"] = json!(new_kid);
    app.verify_bearer(&format!("{}.{payload}.{signature}", encode_json(&header))).await.expect_invalid();

    // Retiring the old kid through the admin API kills its tokens at once; the last live kid
    // cannot be retired, and an unknown one is not found.
    let r = app.admin_post(&format!("/signing-keys/{old_kid}/retire"), None).await;
    r.expect(200, 1000);
    assert!(r.data()["retiredAt"].is_i64(), "{}", r.text);
    app.verify_bearer(&old_token).await.expect_invalid();
    app.verify_bearer(&new_token).await.expect_identity(&c, "bearer");
    app.admin_post(&format!("/signing-keys/{new_kid}/retire"), None).await.expect(409, 1003);
    app.admin_post("/signing-keys/k000000000000/retire", None).await.expect(404, 1003);
    app.verify_bearer(&new_token).await.expect_identity(&c, "bearer");
}

//! The vendor's own documented examples (cURL and Python `requests`), run for real against
//! keygate with only the host changed. The x-api-key example's placeholder path
//! `/api/your-endpoint` becomes keygate's verify endpoint, `/auth/verify`.
//!
//! The snippets below are copied verbatim from the vendor's usage page (minus the page's
//! two-space code-block indentation); placeholders are substituted with [`fill`].

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{Sandbox, require, scrub_env, sh, text};

const VENDOR_HOST: &str = "https://openapi.akool.com";
const VENDOR_CLIENT_ID: &str = "64db241f6d9e5c4bd136c187";
const VENDOR_SECRET: &str = "openapi.akool.com";
const VENDOR_API_KEY: &str = "{{API Key}}";
const VENDOR_PLACEHOLDER_PATH: &str = "/api/your-endpoint";

const CURL_GET_TOKEN: &str = r#"curl --location 'https://openapi.akool.com/api/open/v3/getToken' \
--header 'Content-Type: application/json' \
--data '{
  "clientId": "64db241f6d9e5c4bd136c187",
  "clientSecret": "openapi.akool.com"
}'"#;

const CURL_X_API_KEY: &str = r#"curl --location 'https://openapi.akool.com/api/your-endpoint' \
--header 'x-api-key: {{API Key}}' \
--header 'Content-Type: application/json' \
--data '{}'"#;

const PYTHON_GET_TOKEN: &str = r#"import requests
import json

url = "https://openapi.akool.com/api/open/v3/getToken"

payload = json.dumps({
  "clientId": "64db241f6d9e5c4bd136c187",
  "clientSecret": "openapi.akool.com"
})
headers = {
  'Content-Type': 'application/json'
}

response = requests.request("POST", url, headers=headers, data=payload)

print(response.text)
"#;

const PYTHON_X_API_KEY: &str = r#"import requests
import json

url = "https://openapi.akool.com/api/your-endpoint"

payload = json.dumps({})
headers = {
  'x-api-key':'{{API Key}}',
  'Content-Type': 'application/json'
}

response = requests.request("POST", url, headers=headers, data=payload)
print(response.text)
"#;

/// Substitutes our host, the verify path and the given credentials into a vendor snippet.
/// `None` keeps the vendor's own example value.
fn fill(snippet: &str, host: &str, client_id: Option<&str>, secret: Option<&str>) -> String {
    let mut s = snippet.replace(VENDOR_HOST, host).replace(VENDOR_PLACEHOLDER_PATH, "/auth/verify");
    if let Some(id) = client_id {
        s = s.replace(VENDOR_CLIENT_ID, id);
    }
    if let Some(secret) = secret {
        s = s.replace(&format!("\"{VENDOR_SECRET}\""), &format!("\"{secret}\"")).replace(VENDOR_API_KEY, secret);
    }
    s
}

/// The x-api-key cURL example with the header swapped for `Authorization: Bearer`, the way the
/// vendor's page says a token is sent.
fn curl_bearer(host: &str, token: &str) -> String {
    fill(CURL_X_API_KEY, host, None, None)
        .replace("--header 'x-api-key: {{API Key}}'", &format!("--header 'Authorization: Bearer {token}'"))
}

fn python_bearer(host: &str, token: &str) -> String {
    fill(PYTHON_X_API_KEY, host, None, None)
        .replace("'x-api-key':'{{API Key}}'", &format!("'Authorization':'Bearer {token}'"))
}

fn body_of(what: &str, out: &Output) -> Value {
    assert!(out.status.success(), "{what} failed ({}):\n{}\n{}", out.status, text(&out.stdout), text(&out.stderr));
    serde_json::from_str(text(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("{what} printed no JSON ({e}):\n{}\n{}", text(&out.stdout), text(&out.stderr)))
}

fn python(script: &str) -> Output {
    let mut c = Command::new("python3");
    c.args(["-c", script]);
    scrub_env(&mut c);
    c.output().expect("running python3")
}

fn assert_token(what: &str, body: &Value) -> String {
    assert_eq!(body["code"], 1000, "{what}: {body}");
    let token = body["token"].as_str().unwrap_or_else(|| panic!("{what}: no token in {body}"));
    assert_eq!(token.split('.').count(), 3, "{what}: not a JWT: {token}");
    token.to_owned()
}

fn assert_verified(what: &str, body: &Value, client_id: &str, method: &str) {
    assert_eq!(body["code"], 1000, "{what}: {body}");
    assert_eq!(body["data"]["clientId"], client_id, "{what}: {body}");
    assert_eq!(body["data"]["method"], method, "{what}: {body}");
}

#[tokio::test]
async fn vendor_examples_curl_and_python() {
    let sb = Sandbox::with_database();
    let account = sb.create_account("vendor@example.com");
    let (client_id, api_key) = sb.create_credential(&account);
    let server = sb.start(&[], &[]).await;
    let host = format!("http://127.0.0.1:{}", server.port);

    if !require("curl", Command::new("curl").arg("--version")) {
        return;
    }

    // getToken, exactly as the vendor's cURL example.
    let cmd = fill(CURL_GET_TOKEN, &host, Some(&client_id), Some(&api_key));
    assert!(cmd.contains(&format!("{host}/api/open/v3/getToken")));
    let token = assert_token("curl getToken", &body_of("curl getToken", &sh(&cmd)));

    // x-api-key, exactly as the vendor's cURL example.
    let cmd = fill(CURL_X_API_KEY, &host, None, Some(&api_key));
    assert!(cmd.contains(&format!("x-api-key: {api_key}")));
    let body = body_of("curl x-api-key", &sh(&cmd));
    assert_verified("curl x-api-key", &body, &client_id, "api_key");
    assert_eq!(body["data"]["accountId"], account.as_str());

    // The token from getToken as `Authorization: Bearer`.
    let body = body_of("curl bearer", &sh(&curl_bearer(&host, &token)));
    assert_verified("curl bearer", &body, &client_id, "bearer");

    // The vendor's example credentials are refused with the vendor's code for it.
    let body = body_of("curl getToken (vendor's sample credentials)", &sh(&fill(CURL_GET_TOKEN, &host, None, None)));
    assert_eq!(body["code"], 1101, "{body}");
    assert!(body.get("token").is_none(), "{body}");

    if !require("python3 with the `requests` package", Command::new("python3").args(["-c", "import requests"])) {
        return;
    }

    // The same with the vendor's Python examples.
    let script = fill(PYTHON_GET_TOKEN, &host, Some(&client_id), Some(&api_key));
    let py_token = assert_token("python getToken", &body_of("python getToken", &python(&script)));

    let script = fill(PYTHON_X_API_KEY, &host, None, Some(&api_key));
    let body = body_of("python x-api-key", &python(&script));
    assert_verified("python x-api-key", &body, &client_id, "api_key");

    for t in [&py_token, &token] {
        let body = body_of("python bearer", &python(&python_bearer(&host, t)));
        assert_verified("python bearer", &body, &client_id, "bearer");
    }
    let body = body_of("curl bearer (python's token)", &sh(&curl_bearer(&host, &py_token)));
    assert_verified("curl bearer (python's token)", &body, &client_id, "bearer");
}

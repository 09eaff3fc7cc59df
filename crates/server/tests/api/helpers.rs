//! A real keygate server per test (its own temporary directory, SQLite file and master key),
//! reached over a real port with reqwest, plus small helpers to read its answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keygate_auth::{MasterKeySource, secrets};
use keygate_core::Secret;
use keygate_ops::Ops;
use keygate_server::app::AppState;
use keygate_server::{Application, Config};
use keygate_store::Store;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// The operator-chosen admin token every test server is configured with.
pub const ADMIN_TOKEN: &str = "kga_integration-test-admin-token-0123456789";

/// The change feed poll interval of test servers.
pub const FEED_INTERVAL: Duration = Duration::from_millis(50);

static EMAILS: AtomicUsize = AtomicUsize::new(0);

/// A unique email address for a test account.
pub fn unique_email() -> String {
    format!("user{}@example.com", EMAILS.fetch_add(1, Ordering::Relaxed))
}

/// One answer of the server, with its body parsed as JSON when it is JSON (`Value::Null` else).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    fn new(status: u16, headers: HeaderMap, text: String) -> Self {
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self { status, headers, text, body }
    }

    pub fn code(&self) -> Option<i64> {
        self.body["code"].as_i64()
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the HTTP status, the business `code` and that a non-empty `msg` is present.
    #[track_caller]
    pub fn expect(&self, status: u16, code: i64) -> &Self {
        assert_eq!(
            (self.status, self.code()),
            (status, Some(code)),
            "unexpected answer: HTTP {} {}",
            self.status,
            self.text
        );
        assert!(self.body["msg"].as_str().is_some_and(|m| !m.is_empty()), "no msg in {}", self.text);
        self
    }

    /// 401, code 1101, with an RFC 6750 `invalid_token` challenge and no identity headers.
    #[track_caller]
    pub fn expect_invalid(&self) -> &Self {
        self.expect(401, 1101);
        let challenge = self.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains(r#"error="invalid_token""#),
            "1101 challenge: {challenge:?}"
        );
        self.expect_no_identity()
    }

    /// 401, code 1102, with the plain Bearer challenge.
    #[track_caller]
    pub fn expect_missing(&self) -> &Self {
        self.expect(401, 1102);
        assert_eq!(self.header("www-authenticate"), Some(r#"Bearer realm="keygate""#));
        self.expect_no_identity()
    }

    /// 403, code 1200.
    #[track_caller]
    pub fn expect_banned(&self) -> &Self {
        self.expect(403, 1200);
        self.expect_no_identity()
    }

    /// A refusal must not carry identity headers (a proxy could forward them upstream).
    #[track_caller]
    pub fn expect_no_identity(&self) -> &Self {
        for h in ["x-keygate-account-id", "x-keygate-uid", "x-keygate-client-id", "x-keygate-auth-method"] {
            assert!(self.headers.get(h).is_none(), "refusal carries {h}");
        }
        assert!(self.body.get("data").is_none(), "refusal carries data");
        self
    }

    /// 200, code 1000, and the identity of `customer` (authenticated by `method`) both in the
    /// body's `data` and in the `x-keygate-*` headers.
    #[track_caller]
    pub fn expect_identity(&self, customer: &Customer, method: &str) -> &Self {
        self.expect(200, 1000);
        assert_eq!(
            self.data(),
            &json!({
                "accountId": customer.account_id,
                "uid": customer.uid,
                "clientId": customer.client_id,
                "method": method,
            }),
            "identity in {}",
            self.text
        );
        assert_eq!(self.header("x-keygate-account-id"), Some(customer.account_id.as_str()));
        assert_eq!(self.header("x-keygate-uid"), Some(customer.uid.to_string().as_str()));
        assert_eq!(self.header("x-keygate-client-id"), Some(customer.client_id.as_str()));
        assert_eq!(self.header("x-keygate-auth-method"), Some(method));
        self
    }
}

/// An account with one credential, as the admin API created them.
#[derive(Debug, Clone)]
pub struct Customer {
    pub account_id: String,
    pub uid: i64,
    pub email: String,
    pub client_id: String,
    pub api_key: String,
}

impl Customer {
    /// The same account and credential with another secret (after a rotation).
    pub fn with_key(&self, api_key: &str) -> Customer {
        Customer { api_key: api_key.to_owned(), ..self.clone() }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub admin_token: String,
    pub database_url: String,
    pub dir: TempDir,
    /// The running server's state (its store, operations, console), for white-box checks.
    pub state: AppState,
    /// Dropping it (with the TestApp) stops the server.
    shutdown: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// A server with the test defaults.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// A server with the test defaults changed by `configure`: one worker thread (tests run in
    /// parallel on a small machine), a fast change feed, a known admin token.
    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> TestApp {
        crate::log::init();
        let dir = tempfile::tempdir().expect("temporary directory");
        let database_url = format!("sqlite://{}/keygate.db", dir.path().display());
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: database_url.clone(),
            feed_interval: FEED_INTERVAL,
            admin_token: Some(Secret::new(ADMIN_TOKEN)),
            workers: 1,
            ..Config::default()
        };
        configure(&mut config);
        let app = Application::build_with_access_log(config, Box::new(keygate_testkit::CapturedStderr))
            .await
            .expect("the application builds");
        let addr = app.local_addr();
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        let client =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("reqwest client");
        TestApp { addr, client, admin_token: ADMIN_TOKEN.into(), database_url, dir, state, shutdown: tx, server }
    }

    /// Stops the server the way a signal does and waits for `run_until` to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        let TestApp { shutdown, server, .. } = self;
        drop(shutdown);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops within 5 s")
            .expect("the server task does not panic")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.expect("the server answers");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("a readable body");
        Reply::new(status, headers, text)
    }

    // ---- The protocol ----------------------------------------------------------------------

    /// `/auth/verify` with the given headers (GET).
    pub async fn verify_with(&self, headers: &[(&str, &str)]) -> Reply {
        self.verify_at(reqwest::Method::GET, "/auth/verify", headers).await
    }

    pub async fn verify_at(&self, method: reqwest::Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req).await
    }

    pub async fn verify_key(&self, api_key: &str) -> Reply {
        self.verify_with(&[("x-api-key", api_key)]).await
    }

    pub async fn verify_bearer(&self, token: &str) -> Reply {
        self.verify_with(&[("authorization", &format!("Bearer {token}"))]).await
    }

    /// getToken with any body.
    pub async fn get_token_raw(&self, body: impl Into<reqwest::Body>) -> Reply {
        self.send(
            self.client.post(self.url("/api/open/v3/getToken")).header("content-type", "application/json").body(body),
        )
        .await
    }

    pub async fn get_token(&self, client_id: &str, client_secret: &str) -> Reply {
        self.get_token_raw(json!({"clientId": client_id, "clientSecret": client_secret}).to_string()).await
    }

    /// A token for the customer's current secret (asserting success).
    pub async fn token(&self, customer: &Customer) -> String {
        let r = self.get_token(&customer.client_id, &customer.api_key).await;
        r.expect(200, 1000);
        assert!(r.body.get("data").is_none(), "getToken answers without data");
        r.body["token"].as_str().unwrap_or_else(|| panic!("no token in {}", r.text)).to_owned()
    }

    /// Sends `head` (request line and headers, without the blank line) over a fresh connection,
    /// byte for byte, so header names keep the case they are written in.
    pub async fn raw_request(&self, head: &str) -> Reply {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.expect("connect");
        let request = format!("{head}\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        let raw = String::from_utf8(raw).expect("a UTF-8 answer");
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        let mut lines = head.split("\r\n");
        let status =
            lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("a status line");
        let mut headers = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(':').expect("a header line");
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes()).expect("header name"),
                HeaderValue::from_str(value.trim()).expect("header value"),
            );
        }
        Reply::new(status, headers, body.to_owned())
    }

    // ---- The admin API ---------------------------------------------------------------------

    pub async fn admin_send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.client.request(method, self.url(&format!("/admin/v1{path}"))).bearer_auth(&self.admin_token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.admin_send(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(&format!("/admin/v1{path}"))).bearer_auth(&self.admin_token)).await
    }

    /// POST to the admin API; `body` None sends an empty body.
    pub async fn admin_post(&self, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.client.post(self.url(&format!("/admin/v1{path}"))).bearer_auth(&self.admin_token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    pub async fn create_account_as(&self, email: &str) -> Reply {
        self.admin_post("/accounts", Some(json!({"email": email, "firstName": "Test"}))).await
    }

    /// A new account (asserting success); returns its `data`.
    pub async fn create_account(&self) -> Value {
        let r = self.create_account_as(&unique_email()).await;
        r.expect(201, 1000);
        r.data().clone()
    }

    /// A new credential of the account: (clientId, apiKey).
    pub async fn create_credential(&self, account_id: &str) -> (String, String) {
        let r = self.admin_post(&format!("/accounts/{account_id}/credentials"), None).await;
        r.expect(201, 1000);
        let client_id = r.data()["clientId"].as_str().expect("clientId").to_owned();
        let api_key = r.data()["apiKey"].as_str().expect("apiKey").to_owned();
        assert_eq!(r.data()["credential"]["clientId"], client_id.as_str());
        assert_eq!(r.data()["credential"]["accountId"], account_id);
        (client_id, api_key)
    }

    /// An account with one credential.
    pub async fn customer(&self) -> Customer {
        let account = self.create_account().await;
        let account_id = account["id"].as_str().expect("account id").to_owned();
        let (client_id, api_key) = self.create_credential(&account_id).await;
        Customer {
            account_id,
            uid: account["uid"].as_i64().expect("uid"),
            email: account["email"].as_str().expect("email").to_owned(),
            client_id,
            api_key,
        }
    }

    pub async fn ban(&self, account_id: &str, reason: &str) -> Reply {
        let r = self.admin_post(&format!("/accounts/{account_id}/ban"), Some(json!({ "reason": reason }))).await;
        r.expect(200, 1000);
        r
    }

    pub async fn unban(&self, account_id: &str) -> Reply {
        let r = self.admin_post(&format!("/accounts/{account_id}/unban"), None).await;
        r.expect(200, 1000);
        r
    }

    pub async fn revoke(&self, client_id: &str) -> Reply {
        let r = self.admin_post(&format!("/credentials/{client_id}/revoke"), None).await;
        r.expect(200, 1000);
        r
    }

    /// Rotates the credential's secret (`grace` like "2s"); returns the new API key.
    pub async fn rotate(&self, client_id: &str, grace: Option<&str>) -> String {
        let r =
            self.admin_post(&format!("/credentials/{client_id}/rotate"), grace.map(|g| json!({ "grace": g }))).await;
        r.expect(200, 1000);
        assert_eq!(r.data()["clientId"], client_id);
        r.data()["apiKey"].as_str().expect("apiKey").to_owned()
    }

    // ---- Writing behind the server's back, as the CLI does ---------------------------------

    /// A second handle on the same database, not connected to this server's cache.
    pub async fn external_store(&self) -> Arc<dyn Store> {
        keygate_store::connect(&self.database_url, false).await.expect("a second handle on the database")
    }

    /// The admin operations as the CLI runs them: on the same database and master key, with no
    /// authenticator to tell (the server must learn of the writes through the change feed).
    pub async fn external_ops(&self) -> Ops {
        let master = secrets::load_master_key(&MasterKeySource::File {
            path: self.dir.path().join("keygate.key"),
            create: false,
        })
        .expect("the master key file beside the database");
        Ops::new(self.external_store().await, &master, None)
    }
}

/// Polls `check` every 10 ms until it is true; returns how long that took. Panics after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?} (the feed interval is {FEED_INTERVAL:?})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sleeps until just after the start of a wall-clock second (token times are whole seconds).
pub async fn align_to_second() {
    let ms = keygate_store::now_ms() % 1000;
    tokio::time::sleep(Duration::from_millis((1000 - ms as u64) + 20)).await;
}

// ---- JWT pieces (base64url without padding, RFC 7515) ---------------------------------------

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn b64url_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(B64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

pub fn b64url_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64URL.iter().position(|&x| x == c).unwrap_or_else(|| panic!("{c:?} is not base64url")) as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

/// The three parts of a compact JWT.
pub fn jwt_parts(token: &str) -> [String; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWT: {token}");
    [parts[0].into(), parts[1].into(), parts[2].into()]
}

/// The decoded JSON of a token's header and claims.
pub fn jwt_json(token: &str) -> (Value, Value) {
    let [h, p, _] = jwt_parts(token);
    (
        serde_json::from_slice(&b64url_decode(&h)).expect("JWT header JSON"),
        serde_json::from_slice(&b64url_decode(&p)).expect("JWT claims JSON"),
    )
}

#[test]
fn base64url_round_trip() {
    for s in ["", "a", "ab", "abc", "abcd", r#"{"alg":"HS256","typ":"JWT"}"#] {
        let e = b64url_encode(s.as_bytes());
        assert!(!e.contains('='));
        assert_eq!(b64url_decode(&e), s.as_bytes());
    }
    assert_eq!(b64url_encode(b"\xfb\xff"), "-_8");
    assert_eq!(b64url_encode(b"hello"), "aGVsbG8");
}

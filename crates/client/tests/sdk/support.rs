//! Test support: a real keygate server per test (its own temporary SQLite database and master
//! key, port 0, started in-process as `keygate serve` starts it), a transparent TCP tap that
//! counts what passes through it, and tiny local HTTP servers that stand in for an upstream API
//! (or for a failing one, to exercise retries).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_client::{AdminClient, ApiKeyClient, ClientOptions, IssuedCredential, RetryPolicy, TokenClient};
use keygate_core::Secret;
use keygate_server::app::AppState;
use keygate_server::{Application, Config};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The admin token every test server is configured with.
pub const ADMIN_TOKEN: &str = "kga_sdk-integration-test-admin-token-0123456789";

static EMAILS: AtomicUsize = AtomicUsize::new(0);

/// A unique email address for a test account.
pub fn unique_email() -> String {
    format!("sdk{}@example.com", EMAILS.fetch_add(1, Ordering::Relaxed))
}

/// Options for tests: quick retries.
pub fn fast_retries(attempts: u32) -> ClientOptions {
    ClientOptions::default()
        .retry(RetryPolicy::new(attempts).base_delay(Duration::from_millis(10)).max_delay(Duration::from_millis(50)))
        .timeout(Duration::from_secs(10))
}

/// A running keygate server; dropping it stops the server.
pub struct Server {
    pub addr: SocketAddr,
    /// The server's state, for what the admin API cannot do (retiring a signing key).
    pub state: AppState,
    _dir: TempDir,
    _shutdown: oneshot::Sender<()>,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(|_| {}).await
    }

    /// A server with the test defaults changed by `configure`: one worker thread, a fast
    /// change feed, a known admin token.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: format!("sqlite://{}/keygate.db", dir.path().display()),
            admin_token: Some(Secret::new(ADMIN_TOKEN)),
            workers: 1,
            feed_interval: Duration::from_millis(50),
            access_log: false,
            ..Config::default()
        };
        configure(&mut config);
        let app = Application::build(config).await.expect("the application builds");
        let addr = app.local_addr();
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        Server { addr, state, _dir: dir, _shutdown: tx }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn admin(&self) -> AdminClient {
        AdminClient::with_options(&self.url(), ADMIN_TOKEN, fast_retries(3)).expect("an admin client")
    }

    /// A new account with one credential.
    pub async fn customer(&self) -> Customer {
        let admin = self.admin();
        let account = admin.create_account(&unique_email(), "Test").await.expect("an account");
        let issued = admin.create_credential(&account.id).await.expect("a credential");
        Customer { account_id: account.id, uid: account.uid, issued }
    }
}

/// An account and its credential.
pub struct Customer {
    pub account_id: String,
    pub uid: i64,
    pub issued: IssuedCredential,
}

impl Customer {
    pub fn client_id(&self) -> &str {
        &self.issued.client_id
    }

    pub fn api_key(&self) -> &str {
        self.issued.api_key.expose()
    }

    pub fn key_client(&self, base: &str) -> ApiKeyClient {
        ApiKeyClient::with_options(base, self.api_key(), fast_retries(3)).unwrap()
    }

    pub fn token_client(&self, base: &str) -> TokenClient {
        TokenClient::with_options(base, self.client_id(), self.api_key(), fast_retries(3)).unwrap()
    }
}

// ---- A transparent TCP tap -------------------------------------------------------------------

/// Counts occurrences of byte patterns in one direction of a stream, across reads.
struct Counter {
    patterns: Vec<&'static [u8]>,
    counts: Vec<AtomicUsize>,
}

impl Counter {
    fn new(patterns: &[&'static str]) -> Self {
        Self {
            patterns: patterns.iter().map(|p| p.as_bytes()).collect(),
            counts: patterns.iter().map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Counts the matches that end in `chunk`, given the `tail` kept from earlier reads (whose
    /// own matches were counted then); updates the tail.
    fn feed(&self, tail: &mut Vec<u8>, chunk: &[u8]) {
        let old = tail.len();
        let mut window = std::mem::take(tail);
        window.extend_from_slice(chunk);
        for (p, count) in self.patterns.iter().zip(&self.counts) {
            let n = window.windows(p.len()).enumerate().filter(|(start, w)| start + p.len() > old && w == p).count();
            count.fetch_add(n, Ordering::SeqCst);
        }
        let keep = self.patterns.iter().map(|p| p.len() - 1).max().unwrap_or(0).min(window.len());
        *tail = window[window.len() - keep..].to_vec();
    }

    fn get(&self, pattern: &str) -> usize {
        let i = self.patterns.iter().position(|p| *p == pattern.as_bytes()).expect("a counted pattern");
        self.counts[i].load(Ordering::SeqCst)
    }
}

/// A TCP relay in front of a real server that counts patterns in what the client sends (`up`)
/// and in what the server answers (`down`). Bytes are counted before they are passed on, so a
/// count is complete by the time the other side has read them.
pub struct Tap {
    pub addr: SocketAddr,
    up: Arc<Counter>,
    down: Arc<Counter>,
}

/// getToken requests sent.
pub const GET_TOKEN: &str = "POST /api/open/v3/getToken ";
/// `/auth/verify` requests sent.
pub const VERIFY: &str = "GET /auth/verify ";
/// Answers with code 1101.
pub const CODE_1101: &str = r#""code":1101"#;

impl Tap {
    pub async fn start(target: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(Counter::new(&[GET_TOKEN, VERIFY]));
        let down = Arc::new(Counter::new(&[CODE_1101]));
        let (u, d) = (up.clone(), down.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (u, d) = (u.clone(), d.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(relay(cr, sw, u), relay(sr, cw, d));
                });
            }
        });
        Tap { addr, up, down }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// getToken requests that went through.
    pub fn get_tokens(&self) -> usize {
        self.up.get(GET_TOKEN)
    }

    /// `/auth/verify` requests that went through.
    pub fn verifies(&self) -> usize {
        self.up.get(VERIFY)
    }

    /// Answers with code 1101 that came back.
    pub fn refusals_1101(&self) -> usize {
        self.down.get(CODE_1101)
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: Arc<Counter>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut tail = Vec::new();
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                counter.feed(&mut tail, &buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

#[test]
fn counter_counts_across_reads() {
    let c = Counter::new(&["abc", "b"]);
    let mut tail = Vec::new();
    for chunk in [&b"xxab"[..], b"cxa", b"b", b"c", b"abcabc"] {
        c.feed(&mut tail, chunk);
    }
    assert_eq!(c.get("abc"), 4);
    assert_eq!(c.get("b"), 4);
}

// ---- Tiny local HTTP servers ----------------------------------------------------------------

/// One request as a local server read it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What a local server does with a request.
pub enum Reply {
    /// Answer with this status, extra headers and JSON body, then close the connection.
    Json(u16, Vec<(&'static str, String)>, String),
    /// Close the connection without answering.
    Hang,
}

type Script = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// A local HTTP/1.1 server answering each request with `script(request, n)`, `n` counting the
/// requests so far (from 1), one request per connection. It records what it saw.
pub struct LocalServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl LocalServer {
    pub async fn start(script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> LocalServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, script) = (s.clone(), script.clone());
                tokio::spawn(async move {
                    let _ = serve_one(stream, &s, script.as_ref()).await;
                });
            }
        });
        LocalServer { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn serve_one(mut stream: TcpStream, seen: &Mutex<Vec<Seen>>, script: &Script) -> std::io::Result<()> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (request_line.next().unwrap_or_default(), request_line.next().unwrap_or_default());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let req = Seen { method: method.to_owned(), target: target.to_owned(), headers, body };
    let n = {
        let mut s = seen.lock().unwrap();
        s.push(req.clone());
        s.len()
    };
    match script(&req, n) {
        Reply::Hang => Ok(()),
        Reply::Json(status, extra, body) => {
            let mut res = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (name, value) in extra {
                res.push_str(&format!("{name}: {value}\r\n"));
            }
            res.push_str("\r\n");
            res.push_str(&body);
            stream.write_all(res.as_bytes()).await?;
            stream.shutdown().await
        }
    }
}

/// An upstream API that answers every request with what it received: method, path and query,
/// headers, body. `/missing` answers its own 404 (not keygate's envelope); `/quota` answers
/// HTTP 200 with a business failure in the vendor's envelope.
pub async fn echo_upstream() -> LocalServer {
    LocalServer::start(|req, _| {
        if req.target.starts_with("/missing") {
            return Reply::Json(404, vec![], r#"{"error":"no such thing"}"#.into());
        }
        if req.target.starts_with("/quota") {
            return Reply::Json(200, vec![], r#"{"code":1006,"msg":"Insufficient quota balance"}"#.into());
        }
        let headers: serde_json::Map<String, serde_json::Value> =
            req.headers.iter().map(|(n, v)| (n.clone(), serde_json::Value::String(v.clone()))).collect();
        let body = serde_json::json!({
            "method": req.method,
            "target": req.target,
            "headers": headers,
            "body": String::from_utf8_lossy(&req.body),
        });
        Reply::Json(200, vec![], body.to_string())
    })
    .await
}

/// Polls `check` every 20 ms until it holds; panics after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

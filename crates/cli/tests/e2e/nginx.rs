//! nginx `auth_request` in front of keygate, for real: Debian's nginx runs the shipped example
//! `examples/nginx/keygate-auth-request.conf` (only its three marked addresses substituted) in
//! front of `keygate serve` and a recording API server inside this test: identities, refusals,
//! rate limits, and credits charged at the example's per-path prices (402 answered by nginx
//! itself, never charged twice).
//!
//! Needs an nginx with `http_auth_request_module` (`scripts/test.sh` installs Debian's); without
//! one the test prints a loud SKIP, or fails when `KEYGATE_TEST_REQUIRE_ALL=1`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Sandbox, Server, admin_token, assert_no_secrets, client, free_port, require, text};

/// The shipped example, compiled in so that the test always runs the file as it is.
const EXAMPLE: &str = include_str!("../../../../examples/nginx/keygate-auth-request.conf");
/// The example's three addresses, each replaced by a test address (and required exactly once).
const EXAMPLE_KEYGATE: &str = "server 127.0.0.1:8080;";
const EXAMPLE_BACKEND: &str = "server 127.0.0.1:3000;";
const EXAMPLE_LISTEN: &str = "listen 80;";
/// The example's per-path price the test relies on (not substituted: required as it is).
pub(crate) const EXAMPLE_VIDEO_COST: &str = "~^/api/videos/   10;";
/// The keygate flags of the proxy tests: spent credits and usage reported quickly, so that the
/// admin API shows them within a few tenths of a second.
pub(crate) const KEYGATE_FLUSH_ARGS: [&str; 4] = ["--credits-flush", "100ms", "--usage-flush", "100ms"];

/// The API's path that answers its own 401, to show that nginx passes it through untouched.
pub(crate) const BACKEND_OWN_401: &str = "/api/own-401";
/// The API's path that answers its own 500 (`{"upstream":"failed"}`): nginx must pass it
/// through, not take it for a failed auth subrequest.
pub(crate) const BACKEND_OWN_500: &str = "/api/own-500";

/// The example with the test's addresses.
fn site_config(keygate: u16, backend: u16, listen: u16) -> String {
    let mut conf = EXAMPLE.to_owned();
    for (marker, with) in [
        (EXAMPLE_KEYGATE, format!("server 127.0.0.1:{keygate};")),
        (EXAMPLE_BACKEND, format!("server 127.0.0.1:{backend};")),
        (EXAMPLE_LISTEN, format!("listen 127.0.0.1:{listen};")),
    ] {
        assert_eq!(
            conf.matches(marker).count(),
            1,
            "examples/nginx/keygate-auth-request.conf must contain `{marker}` exactly once (the test substitutes it)"
        );
        conf = conf.replace(marker, &with);
    }
    assert_eq!(
        conf.matches(EXAMPLE_VIDEO_COST).count(),
        1,
        "examples/nginx/keygate-auth-request.conf must price /api/videos/ with `{EXAMPLE_VIDEO_COST}` (the test spends it)"
    );
    conf
}

/// The nginx binary, if one with `auth_request` is installed.
fn nginx_bin() -> Option<PathBuf> {
    let sbin = Path::new("/usr/sbin/nginx");
    let bin = if sbin.exists() { sbin.to_path_buf() } else { PathBuf::from("nginx") };
    // `nginx -V` prints its configure arguments on stderr.
    let probe = format!("'{}' -V 2>&1 | grep -q -- --with-http_auth_request_module", bin.display());
    require("nginx (with http_auth_request_module)", Command::new("sh").args(["-c", &probe])).then_some(bin)
}

// --- the API behind nginx ---

/// One request as the API received it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) target: String,
    /// Lower-cased names, in arrival order; repeated headers stay repeated.
    pub(crate) headers: Vec<(String, String)>,
    /// Request line and headers as received.
    pub(crate) head: Vec<u8>,
    pub(crate) body: Vec<u8>,
}

impl Seen {
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The value of a header that must be there exactly once.
    pub(crate) fn one(&self, name: &str) -> &str {
        match self.all(name)[..] {
            [v] => v,
            ref other => panic!("the API should have received `{name}` once, got {other:?}: {self:#?}"),
        }
    }
}

/// A tiny HTTP/1.x server that records every request and answers 200 `{"upstream":true}`
/// (401 on [`BACKEND_OWN_401`], 500 on [`BACKEND_OWN_500`]), one connection at a time,
/// `Connection: close`.
pub(crate) struct Backend {
    pub(crate) port: u16,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the API's port");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let Some(req) = Self::read_request(&mut stream) else { continue };
                let target = req.target.clone();
                // Recorded before answering: the client may look as soon as it has the answer.
                seen2.lock().unwrap().push(req);
                Self::respond(&mut stream, &target);
            }
        });
        Self { port, seen, stop, thread: Some(thread) }
    }

    fn read_request(stream: &mut TcpStream) -> Option<Seen> {
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let mut head = Vec::new();
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        head.extend_from_slice(line.as_bytes());
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
        let mut headers = Vec::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            head.extend_from_slice(line.as_bytes());
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                break;
            }
            let (name, value) = l.split_once(':')?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let len = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap_or(0));
        let mut body = vec![0; len];
        reader.read_exact(&mut body).ok()?;
        Some(Seen { method, target, headers, head, body })
    }

    fn respond(stream: &mut TcpStream, target: &str) {
        let (status, extra, reply) = if target.starts_with(BACKEND_OWN_401) {
            ("401 Unauthorized", "WWW-Authenticate: Basic realm=\"backend\"\r\n", r#"{"upstream":"refused"}"#)
        } else if target.starts_with(BACKEND_OWN_500) {
            ("500 Internal Server Error", "", r#"{"upstream":"failed"}"#)
        } else {
            ("200 OK", "", r#"{"upstream":true}"#)
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{reply}",
            reply.len()
        );
        let _ = stream.write_all(response.as_bytes());
    }

    pub(crate) fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub(crate) fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("the API received no request")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop up so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// --- nginx ---

/// nginx as a non-daemon child process with everything (config, pid, logs, temp files) in its
/// own temporary directory. Dropping it stops the process.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    /// Starts nginx on a free port in front of keygate and the API and waits until it accepts
    /// connections.
    fn start(bin: &Path, keygate: u16, backend: u16) -> Self {
        let dir = tempfile::Builder::new().prefix("keygate-nginx-").tempdir().expect("tempdir");
        // As root, nginx's workers run as `nobody`: they must be able to enter the directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let d = dir.path().display();
        let main = format!(
            "worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/client_body_temp;\n\
             \x20   proxy_temp_path {d}/proxy_temp;\n\
             \x20   fastcgi_temp_path {d}/fastcgi_temp;\n\
             \x20   uwsgi_temp_path {d}/uwsgi_temp;\n\
             \x20   scgi_temp_path {d}/scgi_temp;\n\
             \x20   include {d}/keygate-auth-request.conf;\n\
             }}\n"
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, main).expect("writing nginx.conf");
        let mut last = String::new();
        for attempt in 0..3 {
            let port = free_port();
            std::fs::write(dir.path().join("keygate-auth-request.conf"), site_config(keygate, backend, port))
                .expect("writing the site config");
            let stderr = dir.path().join(format!("nginx-{attempt}.stderr"));
            let mut child = Command::new(bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&stderr).expect("log file"))
                .spawn()
                .expect("spawning nginx");
            match wait_listening(&mut child, port, "nginx", || logs(dir.path())) {
                Ok(()) => return Self { child, dir, port },
                Err(e) => {
                    stop(&mut child);
                    // Another test took the port between our probe and nginx's bind.
                    if !e.contains("Address already in use") {
                        panic!("{e}");
                    }
                    last = e;
                }
            }
        }
        panic!("nginx did not start: {last}")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn logs(&self) -> String {
        logs(self.dir.path())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Waits until the proxy `child` (`what`: "nginx", "caddy") listens on `port`; on failure, its
/// exit or the timeout with `logs()` for the message.
pub(crate) fn wait_listening(
    child: &mut Child,
    port: u16,
    what: &str,
    logs: impl Fn() -> String,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Err(format!("{what} exited with {status}:\n{}", logs()));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what} not listening on {port} after 10 s:\n{}", logs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx's stderr and error log, for failure messages.
fn logs(dir: &Path) -> String {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    let mut out = String::new();
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "stderr" || e == "log")) {
        out += &format!("--- {} ---\n{}\n", f.display(), std::fs::read_to_string(f).unwrap_or_default());
    }
    out
}

/// SIGTERM to the master, which stops its worker (a SIGKILLed master would leave the worker
/// running); SIGKILL if it has not exited within 5 s.
pub(crate) fn stop(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

// --- HTTP ---

/// What the client got: status, the headers that matter here, and the body (JSON, or the raw
/// text as a JSON string).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) www_authenticate: Vec<String>,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

impl Answer {
    /// Every value of the header `name`, in order.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("<not ascii>")).collect()
    }

    /// The value of a header that must be there exactly once.
    pub(crate) fn one(&self, name: &str) -> &str {
        match self.all(name)[..] {
            [v] => v,
            ref other => panic!("the client should have received `{name}` once, got {other:?}: {self:#?}"),
        }
    }
}

pub(crate) async fn ask(req: reqwest::RequestBuilder) -> Answer {
    let res = req.send().await.expect("HTTP request");
    let status = res.status().as_u16();
    let header = |name: &str| -> Vec<String> {
        res.headers().get_all(name).iter().map(|v| v.to_str().unwrap_or("<not ascii>").to_owned()).collect()
    };
    let content_type = header("content-type").join(", ");
    let www_authenticate = header("www-authenticate");
    let headers = res.headers().clone();
    let bytes = res.bytes().await.expect("HTTP body");
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text(&bytes)));
    Answer { status, content_type, www_authenticate, headers, body }
}

pub(crate) fn with_headers(mut req: reqwest::RequestBuilder, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req
}

/// A customer made through the admin API.
pub(crate) struct Customer {
    pub(crate) account: String,
    pub(crate) uid: i64,
    pub(crate) client_id: String,
    pub(crate) key: String,
}

pub(crate) async fn customer(keygate: &Server, admin: &str, email: &str) -> Customer {
    let r = keygate.admin(admin, "POST", "/accounts", Some(json!({"email": email, "firstName": "Nginx"}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let account = r.body["data"]["id"].as_str().expect("account id").to_owned();
    let uid = r.body["data"]["uid"].as_i64().expect("uid");
    let r = keygate.admin(admin, "POST", &format!("/accounts/{account}/credentials"), None).await;
    assert_eq!(r.status, 201, "{r:?}");
    let client_id = r.body["data"]["clientId"].as_str().expect("clientId").to_owned();
    let key = r.body["data"]["apiKey"].as_str().expect("apiKey").to_owned();
    Customer { account, uid, client_id, key }
}

/// Waits until the admin API shows `expected` credits left for the credential (what a node
/// spends is reported every `--credits-flush`), then checks that it stays there over a few more
/// reports: nothing was charged late either.
pub(crate) async fn balance_settles(keygate: &Server, admin: &str, client_id: &str, expected: i64) {
    let path = format!("/credentials/{client_id}/credits");
    let remaining = async || {
        let r = keygate.admin(admin, "GET", &path, None).await;
        assert_eq!(r.status, 200, "the balance of {client_id}: {r:?}");
        (r.body["data"]["remaining"].as_i64(), r)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (left, r) = remaining().await;
        if left == Some(expected) {
            break;
        }
        assert!(Instant::now() < deadline, "{client_id} should have {expected} credits left: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (left, r) = remaining().await;
    assert_eq!(left, Some(expected), "{client_id}'s balance moved after settling at {expected}: {r:?}");
}

/// Waits until the credential's usage (summed over its days) is exactly `requests` (outcome,
/// count) with `credits` spent: keygate counts every decision it makes, so this is also the
/// number of times it was asked, second calls included.
pub(crate) async fn usage_is(keygate: &Server, admin: &str, client_id: &str, requests: &[(&str, i64)], credits: i64) {
    let want: std::collections::BTreeMap<String, i64> = requests.iter().map(|(o, n)| ((*o).to_owned(), *n)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = keygate.admin(admin, "GET", &format!("/credentials/{client_id}/usage?granularity=day"), None).await;
        assert_eq!(r.status, 200, "usage of {client_id}: {r:?}");
        let mut got = std::collections::BTreeMap::new();
        let mut spent = 0;
        for day in r.body["data"].as_array().expect("usage days") {
            for (outcome, n) in day["requests"].as_object().expect("requests by outcome") {
                *got.entry(outcome.clone()).or_insert(0) += n.as_i64().expect("a count");
            }
            spent += day["credits"].as_i64().unwrap_or(0);
        }
        if (&got, spent) == (&want, credits) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "usage of {client_id}: {got:?} with {spent} credits, expected {want:?} with {credits}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_keygate() {
    let Some(bin) = nginx_bin() else { return };
    let sb = Sandbox::new();
    let admin = admin_token();
    let mut keygate = sb.start(&[&["--admin-token", &admin][..], &KEYGATE_FLUSH_ARGS].concat(), &[]).await;
    let backend = Backend::start();
    let nginx = Nginx::start(&bin, keygate.port, backend.port);
    let http = client();

    let alice = customer(&keygate, &admin, "alice@example.com").await;
    let mallory = customer(&keygate, &admin, "mallory@example.com").await;
    // Requests keygate let through, which are exactly the ones the API may see.
    let mut accepted = 0;

    // The API must see the identity, never the credential, never a client's own x-keygate-*.
    let expect_identity = |seen: &Seen, who: &Customer, method: &str, secrets: &[(&str, String)]| {
        assert_eq!(seen.one("x-keygate-account-id"), who.account, "{seen:#?}");
        assert_eq!(seen.one("x-keygate-uid"), who.uid.to_string(), "{seen:#?}");
        assert_eq!(seen.one("x-keygate-client-id"), who.client_id, "{seen:#?}");
        assert_eq!(seen.one("x-keygate-auth-method"), method, "{seen:#?}");
        for credential_header in ["x-api-key", "authorization", "x-client-id", "x-client-secret"] {
            assert_eq!(seen.all(credential_header), Vec::<&str>::new(), "`{credential_header}` reached the API");
        }
        assert!(
            !text(&seen.head).to_ascii_lowercase().contains("forged"),
            "a forged header reached the API: {seen:#?}"
        );
        assert_no_secrets("the request head the API received", &seen.head, secrets);
    };
    let forged = [
        ("X-Keygate-Account-Id", "forged-account"),
        ("x-keygate-account-id", "forged-again"),
        ("X-Keygate-Uid", "forged-0"),
        ("X-Keygate-Client-Id", "forged-client"),
        ("X-Keygate-Auth-Method", "forged-method"),
    ];

    // 1. x-api-key, with forged identity headers and a body: to the API, body and query intact.
    let req = http
        .post(nginx.url("/api/things?page=2"))
        .header("x-api-key", &alice.key)
        .header("content-type", "application/json")
        .body(r#"{"hello":"world"}"#);
    let a = ask(with_headers(req, &forged)).await;
    assert_eq!((a.status, &a.body), (200, &json!({"upstream": true})), "x-api-key: {a:?}\n{}", nginx.logs());
    // No limits on alice's credential: no RateLimit headers (add_header skips empty values).
    assert_eq!((a.all("ratelimit-policy"), a.all("ratelimit")), (vec![], vec![]), "{a:?}");
    accepted += 1;
    assert_eq!(backend.count(), accepted);
    let seen = backend.last();
    assert_eq!((seen.method.as_str(), seen.target.as_str()), ("POST", "/api/things?page=2"));
    assert_eq!(text(&seen.body), r#"{"hello":"world"}"#);
    expect_identity(&seen, &alice, "api_key", &[("API key", alice.key.clone())]);

    // 2. getToken through nginx (not behind auth_request, and not the API's business), then Bearer.
    let a = ask(http
        .post(nginx.url("/api/open/v3/getToken"))
        .json(&json!({"clientId": alice.client_id, "clientSecret": alice.key})))
    .await;
    assert_eq!((a.status, a.body["code"].as_i64()), (200, Some(1000)), "getToken through nginx: {a:?}");
    let token = a.body["token"].as_str().expect("token").to_owned();
    assert_eq!(backend.count(), accepted, "getToken must not reach the API");
    let a = ask(with_headers(http.get(nginx.url("/api/me")).bearer_auth(&token), &forged)).await;
    assert_eq!((a.status, &a.body), (200, &json!({"upstream": true})), "Bearer: {a:?}");
    accepted += 1;
    assert_eq!(backend.count(), accepted);
    let seen = backend.last();
    assert_eq!((seen.method.as_str(), seen.target.as_str()), ("GET", "/api/me"));
    expect_identity(&seen, &alice, "bearer", &[("token", token.clone())]);

    // 3. x-client-id + x-client-secret.
    let a = ask(http
        .get(nginx.url("/api/pair"))
        .header("x-client-id", &alice.client_id)
        .header("x-client-secret", &alice.key))
    .await;
    assert_eq!((a.status, &a.body), (200, &json!({"upstream": true})), "client pair: {a:?}");
    accepted += 1;
    assert_eq!(backend.count(), accepted);
    expect_identity(&backend.last(), &alice, "client_secret", &[("API key", alice.key.clone())]);

    // 4. Refusals: the client gets keygate's own status, envelope and challenge, exactly what
    // keygate answers directly to the same headers, and the API is not called.
    let expect_refused = async |what: &str, headers: &[(&str, &str)], status: u16, code: i64| {
        let before = backend.count();
        // A POST with a body, which nginx must discard along with the request.
        let req = http.post(nginx.url("/api/things?page=3")).header("content-type", "application/json");
        let a = ask(with_headers(req.body(r#"{"would":"write"}"#), headers)).await;
        let direct = ask(with_headers(http.get(keygate.url("/auth/verify")), headers)).await;
        assert_eq!(
            (direct.status, direct.body["code"].as_i64()),
            (status, Some(code)),
            "{what}, keygate directly: {direct:?}"
        );
        assert_eq!(a.status, status, "{what}: {a:?}\n{}", nginx.logs());
        assert_eq!(a.body, direct.body, "{what}: nginx must pass keygate's envelope: {a:?}");
        assert!(a.body["msg"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {a:?}");
        assert!(a.content_type.starts_with("application/json"), "{what}: {a:?}");
        assert_eq!(a.www_authenticate, direct.www_authenticate, "{what}: the challenge, once: {a:?}");
        assert_eq!(a.www_authenticate.len(), usize::from(status == 401), "{what}: {a:?}");
        assert_eq!(backend.count(), before, "{what}: the API was called for a refused request");
    };
    expect_refused("no credential", &[], 401, 1102).await;
    expect_refused("empty Bearer", &[("authorization", "Bearer ")], 401, 1102).await;
    expect_refused("wrong key", &[("x-api-key", "kgk_thisIsNotAKeyAtAll00000000")], 401, 1101).await;
    let pair = [("x-client-id", alice.client_id.as_str()), ("x-client-secret", "wrong-secret")];
    expect_refused("wrong secret", &pair, 401, 1101).await;
    let forged_token = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJpZCI6ImZvcmdlZCJ9.c2lnbmF0dXJl";
    expect_refused("forged token", &[("authorization", forged_token)], 401, 1101).await;

    // 5. The API's own 401 is its business: passed through, not replaced by keygate's envelope.
    let a = ask(http.get(nginx.url(BACKEND_OWN_401)).header("x-api-key", &alice.key)).await;
    assert_eq!((a.status, &a.body), (401, &json!({"upstream": "refused"})), "{a:?}");
    assert_eq!(a.www_authenticate, ["Basic realm=\"backend\""], "{a:?}");
    accepted += 1;
    assert_eq!(backend.count(), accepted);

    // 6. A banned account: 403 with code 1200 for its key and its token; others unaffected.
    let mallory_token = keygate.token(&mallory.client_id, &mallory.key).await;
    let a = ask(http.get(nginx.url("/api/before-ban")).header("x-api-key", &mallory.key)).await;
    assert_eq!(a.status, 200, "{a:?}");
    accepted += 1;
    assert_eq!(backend.count(), accepted);
    expect_identity(&backend.last(), &mallory, "api_key", &[("API key", mallory.key.clone())]);
    let r = keygate
        .admin(&admin, "POST", &format!("/accounts/{}/ban", mallory.account), Some(json!({"reason": "nginx test"})))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let bearer = format!("Bearer {mallory_token}");
    expect_refused("banned, key", &[("x-api-key", &mallory.key)], 403, 1200).await;
    expect_refused("banned, token", &[("authorization", &bearer)], 403, 1200).await;
    let a = ask(http.get(nginx.url("/api/after-ban")).header("x-api-key", &alice.key)).await;
    assert_eq!(a.status, 200, "{a:?}");
    accepted += 1;

    // 7. Rate limits, 2 per hour: two requests pass with keygate's RateLimit headers, the third
    // gets keygate's 429 (code 1005, Retry-After, RateLimit headers) and never reaches the API.
    let limit = async |who: &Customer| {
        let limits = json!({"ratelimits": [{"name": "requests", "limit": 2, "duration": "1h"}]});
        let r = keygate.admin(&admin, "PATCH", &format!("/credentials/{}", who.client_id), Some(limits)).await;
        assert_eq!(r.status, 200, "{r:?}");
    };
    let policy = r#""requests";q=2;w=3600"#;
    let carol = customer(&keygate, &admin, "carol@example.com").await;
    limit(&carol).await;
    for remaining in [1, 0] {
        let a = ask(http.get(nginx.url("/api/limited")).header("x-api-key", &carol.key)).await;
        assert_eq!((a.status, &a.body), (200, &json!({"upstream": true})), "limited, {remaining} left: {a:?}");
        assert_eq!(a.one("ratelimit-policy"), policy, "{a:?}");
        let state = a.one("ratelimit");
        assert!(state.starts_with(&format!(r#""requests";r={remaining};t="#)), "{a:?}");
        accepted += 1;
        assert_eq!(backend.count(), accepted);
        expect_identity(&backend.last(), &carol, "api_key", &[("API key", carol.key.clone())]);
    }
    let req = http.post(nginx.url("/api/limited?page=5")).header("content-type", "application/json");
    let a = ask(req.header("x-api-key", &carol.key).body(r#"{"would":"write"}"#)).await;
    assert_eq!(a.status, 429, "limited, none left: {a:?}\n{}", nginx.logs());
    assert_eq!(a.body["code"].as_i64(), Some(1005), "{a:?}");
    assert!(a.content_type.starts_with("application/json"), "{a:?}");
    let retry_after: u64 = a.one("retry-after").parse().expect("Retry-After in seconds");
    assert!((1..=1800).contains(&retry_after), "the next of 2 per hour is due within 30 min: {a:?}");
    let msg = format!(r#"Operation too frequent: rate limit "requests" (retry after {retry_after} s)"#);
    assert_eq!(a.body, json!({"code": 1005, "msg": msg}), "keygate's own envelope: {a:?}");
    assert_eq!(a.one("ratelimit-policy"), policy, "{a:?}");
    assert!(a.one("ratelimit").starts_with(r#""requests";r=0;t="#), "{a:?}");
    assert_eq!(a.www_authenticate, Vec::<String>::new(), "{a:?}");
    assert_eq!(a.all("x-keygate-client-id"), Vec::<&str>::new(), "{a:?}");
    assert_eq!(backend.count(), accepted, "the API was called for a rate-limited request");
    // What keygate answers directly (refused, so asking takes nothing): the same refusal.
    let direct = ask(http.get(keygate.url("/auth/verify")).header("x-api-key", &carol.key)).await;
    assert_eq!((direct.status, direct.body["code"].as_i64()), (429, Some(1005)), "{direct:?}");

    // 8. The API's own 500, for a limited credential: passed through with the RateLimit headers,
    // not taken for a failed subrequest (no second call to keygate, which would take a unit).
    let dave = customer(&keygate, &admin, "dave@example.com").await;
    limit(&dave).await;
    let a = ask(http.get(nginx.url(BACKEND_OWN_500)).header("x-api-key", &dave.key)).await;
    assert_eq!((a.status, &a.body), (500, &json!({"upstream": "failed"})), "the API's own 500: {a:?}");
    assert_eq!(a.one("ratelimit-policy"), policy, "{a:?}");
    assert!(a.one("ratelimit").starts_with(r#""requests";r=1;t="#), "{a:?}");
    accepted += 1;
    assert_eq!(backend.count(), accepted);
    let direct = ask(http.get(keygate.url("/auth/verify")).header("x-api-key", &dave.key)).await;
    assert_eq!(direct.status, 200, "keygate was asked more than once for the API's 500: {direct:?}");
    assert!(direct.one("ratelimit").starts_with(r#""requests";r=0;t="#), "{direct:?}");

    // 9. Credits. erin has 13; /api/things costs the default 1 and /api/videos/ 10 (the
    // example's map, by the normalized path). Whatever x-keygate-cost the client sends is
    // replaced, and it cannot forge what is left either.
    let erin = customer(&keygate, &admin, "erin@example.com").await;
    let r = keygate
        .admin(
            &admin,
            "PATCH",
            &format!("/credentials/{}", erin.client_id),
            Some(json!({"credits": {"remaining": 13}})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // A request let in: 200 from the API, which (like the client) gets what is left, `left` if
    // given; returns it.
    let charged = async |path: &str, left: Option<i64>| -> i64 {
        let before = backend.count();
        let req = http.get(nginx.url(path)).header("x-api-key", &erin.key);
        let a = ask(with_headers(req, &[("x-keygate-cost", "0"), ("x-keygate-credits-remaining", "forged-999")])).await;
        assert_eq!((a.status, &a.body), (200, &json!({"upstream": true})), "{path}: {a:?}\n{}", nginx.logs());
        let got: i64 = a.one("x-keygate-credits-remaining").parse().expect("credits left, a number");
        if let Some(left) = left {
            assert_eq!(got, left, "{path}: the client's balance: {a:?}");
        }
        assert_eq!(backend.count(), before + 1, "{path}");
        let seen = backend.last();
        assert_eq!(seen.target, path);
        assert_eq!(seen.one("x-keygate-credits-remaining"), got.to_string(), "{path}: the API's: {seen:#?}");
        assert_eq!(seen.all("x-keygate-cost"), Vec::<&str>::new(), "{path}: the price is not the API's business");
        expect_identity(&seen, &erin, "api_key", &[("API key", erin.key.clone())]);
        got
    };
    // 402: nginx's own answer, word for word keygate's (which, asked directly at the same cost,
    // refuses too and so charges nothing), with what is left; the API is not called.
    let no_credits = async |path: &str, left: i64| {
        let before = backend.count();
        let req = http.post(nginx.url(path)).header("x-api-key", &erin.key).header("content-type", "application/json");
        let a = ask(req.header("x-keygate-cost", "1").body(r#"{"would":"write"}"#)).await;
        assert_eq!(a.status, 402, "{path}, {left} left: {a:?}\n{}", nginx.logs());
        let msg = format!("Insufficient quota balance: the request costs 10 and {left} credits are left");
        assert_eq!(a.body, json!({"code": 1006, "msg": msg}), "{path}: keygate's envelope: {a:?}");
        assert!(a.content_type.starts_with("application/json"), "{path}: {a:?}");
        assert_eq!(a.one("x-keygate-credits-remaining"), left.to_string(), "{path}: {a:?}");
        for header in ["x-keygate-client-id", "x-keygate-account-id", "www-authenticate", "ratelimit", "retry-after"] {
            assert_eq!(a.all(header), Vec::<&str>::new(), "{path}: `{header}` on a 402: {a:?}");
        }
        assert_eq!(backend.count(), before, "{path}: the API was called for a request the balance did not cover");
        a
    };
    charged("/api/things", Some(12)).await;
    charged("/api/videos/1", Some(2)).await;
    accepted += 2;
    // The same price however the path is spelled (nginx's $uri, not the raw request line).
    let a = no_credits("/api/%76ideos/clip.html", 2).await;
    let direct =
        ask(http.get(keygate.url("/auth/verify")).header("x-api-key", &erin.key).header("x-keygate-cost", "10")).await;
    assert_eq!((direct.status, &direct.body), (402, &a.body), "keygate's own 402: {direct:?}");
    assert_eq!(direct.one("x-keygate-credits-remaining"), "2", "{direct:?}");
    no_credits("/api//videos/2", 2).await;
    // Nothing charged for the refusals, by nginx's one call or a second one (there is none).
    balance_settles(&keygate, &admin, &erin.client_id, 2).await;
    // A top-up of 5: the next request passes, and the balance is exactly 2 + 5 - 1. (Not
    // checked: the count on that request, which is what keygate knew when it last leased
    // credits, and may not include the top-up yet.)
    let r = keygate
        .admin(&admin, "POST", &format!("/credentials/{}/credits", erin.client_id), Some(json!({"add": 5})))
        .await;
    assert_eq!((r.status, r.body["data"]["remaining"].as_i64()), (200, Some(7)), "{r:?}");
    charged("/api/things", None).await;
    accepted += 1;
    balance_settles(&keygate, &admin, &erin.client_id, 6).await;
    // keygate was asked once per request: 3 let in (1 + 10 + 1 credits), 2 refused through
    // nginx and 1 directly.
    usage_is(&keygate, &admin, &erin.client_id, &[("1000", 3), ("1006", 3)], 12).await;

    // A credential without a balance is not charged and gets no X-Keygate-Credits-Remaining;
    // a client's own goes nowhere.
    let req = http.get(nginx.url("/api/videos/free")).header("x-api-key", &alice.key);
    let a = ask(req.header("x-keygate-credits-remaining", "forged-999")).await;
    assert_eq!((a.status, a.all("x-keygate-credits-remaining")), (200, vec![]), "{a:?}");
    accepted += 1;
    assert_eq!(backend.count(), accepted);
    let seen = backend.last();
    assert_eq!((seen.all("x-keygate-credits-remaining"), seen.all("x-keygate-cost")), (vec![], vec![]), "{seen:#?}");
    expect_identity(&seen, &alice, "api_key", &[("API key", alice.key.clone())]);

    // Credits and a rate limit of 2 per hour: the 429 (two calls to keygate, the second at cost 0)
    // charges nothing, and the 429 path is unchanged.
    let frank = customer(&keygate, &admin, "frank@example.com").await;
    limit(&frank).await;
    let r = keygate
        .admin(
            &admin,
            "PATCH",
            &format!("/credentials/{}", frank.client_id),
            Some(json!({"credits": {"remaining": 5}})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    for left in [4, 3] {
        let a = ask(http.get(nginx.url("/api/limited-and-charged")).header("x-api-key", &frank.key)).await;
        assert_eq!((a.status, a.one("x-keygate-credits-remaining")), (200, left.to_string().as_str()), "{a:?}");
        accepted += 1;
        assert_eq!(backend.last().one("x-keygate-credits-remaining"), left.to_string());
    }
    let a = ask(http.get(nginx.url("/api/limited-and-charged")).header("x-api-key", &frank.key)).await;
    assert_eq!((a.status, a.body["code"].as_i64()), (429, Some(1005)), "{a:?}\n{}", nginx.logs());
    assert!(a.one("ratelimit").starts_with(r#""requests";r=0;t="#), "{a:?}");
    assert_eq!(backend.count(), accepted, "the API was called for a rate-limited request");
    balance_settles(&keygate, &admin, &frank.client_id, 3).await;
    usage_is(&keygate, &admin, &frank.client_id, &[("1000", 2), ("1005", 2)], 2).await;

    // Only what keygate accepted ever reached the API.
    assert_eq!(backend.count(), accepted, "{:#?}", backend.seen.lock().unwrap());

    // 10. keygate down: the subrequest's 502 is nginx's 500, which @keygate_limited keeps (it
    // asks again only after a 429; a second call would answer 502). The API is not called.
    keygate.stop();
    let a = ask(http.get(nginx.url("/api/keygate-down")).header("x-api-key", &alice.key)).await;
    assert_eq!(a.status, 500, "keygate down: {a:?}\n{}", nginx.logs());
    assert_eq!(backend.count(), accepted, "the API was called while keygate was down");
}

/// The path's requirement (the example's map: /api/reports/ needs `reports.read OR admin`) and
/// IP allowlists through nginx: 1009 with keygate's envelope naming what was required, the API
/// never called; what the key holds reaches the API, a client's own x-keygate-require and
/// x-keygate-permissions never do; the allowlist sees the client behind nginx (keygate trusts
/// nginx's address).
#[tokio::test]
async fn nginx_requires_the_paths_permissions_and_the_clients_address() {
    let Some(bin) = nginx_bin() else { return };
    let sb = Sandbox::new();
    let admin = admin_token();
    let keygate = sb.start(&["--admin-token", &admin, "--trusted-proxies", "127.0.0.1"], &[]).await;
    let backend = Backend::start();
    let nginx = Nginx::start(&bin, keygate.port, backend.port);
    let http = client();
    let grace = customer(&keygate, &admin, "grace@example.com").await;
    let path = format!("/credentials/{}", grace.client_id);
    let patch = |body: serde_json::Value| keygate.admin(&admin, "PATCH", &path, Some(body));

    // No permission: refused with keygate's own words, under 403; a forged requirement or
    // grant from the client changes nothing.
    let req = http.get(nginx.url("/api/reports/1")).header("x-api-key", &grace.key);
    let a = ask(with_headers(req, &[("x-keygate-require", ""), ("x-keygate-permissions", "*")])).await;
    assert_eq!((a.status, a.body["code"].as_i64()), (403, Some(1009)), "{a:?}\n{}", nginx.logs());
    assert_eq!(a.body["msg"], "Permission denied: requires reports.read OR admin", "{a:?}");
    assert_eq!(backend.count(), 0, "the API was called for a refused request");
    // A path without a requirement lets the key in.
    let a = ask(http.get(nginx.url("/api/things")).header("x-api-key", &grace.key)).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(backend.last().all("x-keygate-permissions"), Vec::<&str>::new());

    // Granted (with a wildcard), named, with metadata: in, and the API sees all three.
    let r = patch(json!({"permissions": ["reports.*"], "name": "grace's reporter", "meta": {"team": "bi"}})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let req = http.get(nginx.url("/api/reports/1")).header("x-api-key", &grace.key);
    let a = ask(with_headers(req, &[("x-keygate-permissions", "forged"), ("x-keygate-key-name", "forged")])).await;
    assert_eq!(a.status, 200, "{a:?}\n{}", nginx.logs());
    let seen = backend.last();
    assert_eq!(seen.one("x-keygate-permissions"), "reports.*", "{seen:#?}");
    assert_eq!(seen.one("x-keygate-key-name"), "grace's reporter");
    assert_eq!(seen.one("x-keygate-meta"), r#"{"team":"bi"}"#);
    assert_eq!(seen.all("x-keygate-require"), Vec::<&str>::new(), "the requirement is not the API's business");

    // An allowlist without the client's address (127.0.0.1, behind nginx): 1009, the address
    // not shown; with it: in. What the client writes in X-Forwarded-For counts for nothing.
    let r = patch(json!({"ipAllowlist": ["203.0.113.0/24"]})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let req = http.get(nginx.url("/api/reports/2")).header("x-api-key", &grace.key);
    let a = ask(req.header("x-forwarded-for", "203.0.113.9")).await;
    assert_eq!((a.status, a.body["code"].as_i64()), (403, Some(1009)), "{a:?}");
    assert_eq!(a.body["msg"], "Permission denied: this key may not be used from this address");
    let r = patch(json!({"ipAllowlist": ["127.0.0.1", "::1"]})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let a = ask(http.get(nginx.url("/api/reports/3")).header("x-api-key", &grace.key)).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(backend.count(), 3, "only what keygate accepted reached the API");
}

//! Test support: a sandbox (a fresh temporary directory used as the working directory, so the
//! default `keygate.db` and `keygate.key` land there), the `keygate` binary run as a real
//! process, servers started as child processes (killed when dropped) and a small HTTP client.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_keygate");

/// How long a server may take to answer `/healthz` after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Removes whatever in the test runner's environment could change the binary's behaviour:
/// every `KEYGATE_*` variable, log and backtrace settings, proxies.
pub fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("KEYGATE_")
            || k.starts_with("RUST_LOG")
            || k == "RUST_BACKTRACE"
            || k == "RUST_LIB_BACKTRACE"
            || k.to_ascii_lowercase().ends_with("_proxy")
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost").env("no_proxy", "127.0.0.1,localhost");
}

/// A port nothing listens on right now (bound and released; a tiny race is possible, which
/// [`Sandbox::start`] absorbs by retrying).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("binding an ephemeral port").port()
}

/// A string unique to this test run, usable as a secret that must not show up anywhere.
/// The wall clock in Unix milliseconds, as the server stamps times.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("a clock after 1970").as_millis() as i64
}

pub fn unique(prefix: &str, len: usize) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let mut s = format!("{prefix}{:x}q{:x}q{:x}", N.fetch_add(1, Ordering::Relaxed), std::process::id(), nanos,);
    while s.len() < len {
        s.push('z');
    }
    s.truncate(len);
    s
}

/// Decodes a base64url (no padding) string, for reading a JWT's claims.
pub fn base64url(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {s}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// One part of a JWT (0 header, 1 claims) as JSON.
pub fn jwt_part(token: &str, part: usize) -> Value {
    let b64 = token.split('.').nth(part).expect("a JWT has three parts");
    serde_json::from_slice(&base64url(b64)).expect("JWT part is JSON")
}

/// A 32-character admin token for `serve --admin-token`.
pub fn admin_token() -> String {
    unique("e2e-admin-", 32)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "`keygate {}` -> {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

pub struct Sandbox {
    work: tempfile::TempDir,
    logs: tempfile::TempDir,
    servers: AtomicUsize,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            work: tempfile::Builder::new().prefix("keygate-e2e-").tempdir().expect("tempdir"),
            logs: tempfile::Builder::new().prefix("keygate-e2e-logs-").tempdir().expect("tempdir"),
            servers: AtomicUsize::new(0),
        }
    }

    /// A sandbox with a database (`keygate migrate`), for tests that use the admin CLI before
    /// any server ran: only `serve` and `migrate` create one.
    pub fn with_database() -> Self {
        let sb = Self::new();
        let out = sb.run(&["migrate"]);
        assert!(out.status.success(), "{}", describe(&["migrate"], &out));
        sb
    }

    /// The working directory of every process started from this sandbox.
    pub fn dir(&self) -> &Path {
        self.work.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// `keygate` with this sandbox as its working directory and a clean environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(self.dir()).stdin(Stdio::null());
        scrub_env(&mut c);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running keygate")
    }

    /// Runs `keygate --json ARGS`, asserts success and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.run(&full);
        assert!(out.status.success(), "{}", describe(&full, &out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", describe(&full, &out)))
    }

    /// Runs `keygate ARGS`, asserts a non-zero exit and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "expected failure: {}", describe(args, &out));
        assert_ne!(out.status.code(), None, "killed by a signal: {}", describe(args, &out));
        text(&out.stderr)
    }

    /// `account create`; returns the account id.
    pub fn create_account(&self, email: &str) -> String {
        let a = self.json(&["account", "create", "--email", email]);
        a["id"].as_str().expect("account id").to_owned()
    }

    /// `credential create`; returns (clientId, apiKey).
    pub fn create_credential(&self, account: &str) -> (String, String) {
        let c = self.json(&["credential", "create", "--account", account]);
        (c["clientId"].as_str().expect("clientId").to_owned(), c["apiKey"].as_str().expect("apiKey").to_owned())
    }

    /// Spawns `keygate ARGS` as a server that should end up listening on `port`, with stdout and
    /// stderr going to files. Does not wait for readiness.
    pub fn spawn(&self, args: &[&str], envs: &[(&str, &str)], port: u16) -> Server {
        self.spawn_cmd(self.cmd(), args, envs, port)
    }

    /// [`Sandbox::spawn`] with the open-file limit (soft and hard) set to `nofile`, as a
    /// constrained host would have it.
    pub fn spawn_with_fd_limit(&self, nofile: u32, args: &[&str], envs: &[(&str, &str)], port: u16) -> Server {
        let mut cmd = Command::new("bash");
        cmd.current_dir(self.dir()).stdin(Stdio::null());
        scrub_env(&mut cmd);
        // `exec` keeps the pid: signals and kills reach keygate itself.
        cmd.args(["-c", &format!("ulimit -n {nofile} && exec \"$0\" \"$@\""), BIN]);
        self.spawn_cmd(cmd, args, envs, port)
    }

    fn spawn_cmd(&self, mut cmd: Command, args: &[&str], envs: &[(&str, &str)], port: u16) -> Server {
        let n = self.servers.fetch_add(1, Ordering::Relaxed);
        let stdout = self.logs.path().join(format!("server-{n}.stdout"));
        let stderr = self.logs.path().join(format!("server-{n}.stderr"));
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdout(File::create(&stdout).expect("log file"))
            .stderr(File::create(&stderr).expect("log file"));
        let child = cmd.spawn().expect("spawning keygate serve");
        Server { child, port, stdout, stderr, args: args.iter().map(|s| s.to_string()).collect(), http: client() }
    }

    /// Starts `keygate serve ARGS --listen 127.0.0.1:<free port>` and waits until it is ready.
    pub async fn start(&self, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let mut full = vec!["serve"];
            full.extend_from_slice(args);
            full.extend_from_slice(&["--listen", &listen]);
            let mut server = self.spawn(&full, envs, port);
            match server.wait_ready().await {
                Ok(()) => return server,
                // Another test took the port between our probe and the server's bind.
                Err(e) if e.contains("binding") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("server did not start: {last}")
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("http client")
}

/// An HTTP answer: status and body (JSON, or the raw text as a JSON string).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> i64 {
        self.body["code"].as_i64().unwrap_or(-1)
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let res = req.send().await.expect("HTTP request");
    let status = res.status().as_u16();
    let bytes = res.bytes().await.expect("HTTP body");
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text(&bytes)));
    Reply { status, body }
}

/// A `keygate serve` child process. Dropping it kills the process.
pub struct Server {
    child: Child,
    pub port: u16,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    args: Vec<String>,
    pub http: reqwest::Client,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Everything the process printed, stdout then stderr.
    pub fn output_text(&self) -> String {
        format!("{}{}", std::fs::read_to_string(&self.stdout).unwrap_or_default(), self.stderr_text())
    }

    fn describe(&self) -> String {
        format!("`keygate {}` (port {})\n--- output ---\n{}", self.args.join(" "), self.port, self.output_text())
    }

    /// Polls `GET /healthz` until it answers 200; an error names why not (exit, timeout).
    pub async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let probe = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(1)).build().expect("http client");
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(format!("server exited with {status}: {}", self.describe()));
            }
            if let Ok(res) = probe.get(self.url("/healthz")).send().await
                && res.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("server not ready after 20s: {}", self.describe()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (with the `kill` utility) and waits up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        self.wait_timeout(timeout)
    }

    /// Terminates and asserts a clean exit.
    pub fn stop(&mut self) {
        match self.terminate(Duration::from_secs(10)) {
            Some(s) if s.success() => {}
            other => panic!("server did not exit cleanly: {other:?}: {}", self.describe()),
        }
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // --- protocol calls ---

    /// `POST /auth/verify` with `x-api-key`.
    pub async fn verify_key(&self, key: &str) -> Reply {
        send(
            self.http
                .post(self.url("/auth/verify"))
                .header("x-api-key", key)
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await
    }

    /// `POST /auth/verify` with `Authorization: Bearer`.
    pub async fn verify_bearer(&self, token: &str) -> Reply {
        send(
            self.http
                .post(self.url("/auth/verify"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await
    }

    /// `POST /api/open/v3/getToken`.
    pub async fn get_token(&self, client_id: &str, secret: &str) -> Reply {
        send(
            self.http
                .post(self.url("/api/open/v3/getToken"))
                .json(&json!({"clientId": client_id, "clientSecret": secret})),
        )
        .await
    }

    /// getToken that must succeed; returns the token.
    pub async fn token(&self, client_id: &str, secret: &str) -> String {
        let r = self.get_token(client_id, secret).await;
        assert_eq!(r.code(), 1000, "getToken failed: {r:?}");
        r.body["token"].as_str().expect("token").to_owned()
    }

    /// An admin API call (`/admin/v1` + `path`) with `Authorization: Bearer <admin token>`.
    pub async fn admin(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, self.url(&format!("/admin/v1{path}"))).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        send(req).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs a shell command line (as a user would paste it), with a clean environment.
pub fn sh(line: &str) -> Output {
    let mut c = Command::new("sh");
    c.args(["-c", line]).stdin(Stdio::null());
    scrub_env(&mut c);
    c.output().expect("running sh")
}

/// Whether an external tool needed by a test is available. When it is not, the test is skipped
/// loudly, or fails when `KEYGATE_TEST_REQUIRE_ALL=1`.
pub fn require(tool: &str, probe: &mut Command) -> bool {
    let ok = probe.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("KEYGATE_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{tool} is required (KEYGATE_TEST_REQUIRE_ALL=1) but is not available");
    }
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIP: {tool} is not available; this part of the test did not run.\n\
         !!! Set KEYGATE_TEST_REQUIRE_ALL=1 to make this a failure.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    false
}

/// Asserts that none of `secrets` occurs in `haystack`; `what` names where we looked.
pub fn assert_no_secrets(what: &str, haystack: &[u8], secrets: &[(&str, String)]) {
    let mut found = Vec::new();
    for (label, secret) in secrets {
        assert!(secret.len() >= 16, "{label} is too short to search for");
        if let Some(pos) = find(haystack, secret.as_bytes()) {
            let from = pos.saturating_sub(300);
            let to = (pos + secret.len() + 300).min(haystack.len());
            found.push(format!("{label} ({secret}) at byte {pos}:\n...{}...", text(&haystack[from..to])));
        }
    }
    assert!(found.is_empty(), "secrets found in {what}:\n{}", found.join("\n\n"));
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

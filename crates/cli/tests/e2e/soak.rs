//! Soak: the real `keygate serve` (default settings, plus `--upstream`: the gateway in front of a
//! small keep-alive upstream in this file, and `--trusted-proxies 127.0.0.1` for the guesser below)
//! under a steady mixed load for a bounded time, its memory and open files read from /proc while
//! it runs.
//!
//! The load, each kind paced at a fixed rate (a slow machine sends less, never a burst):
//! `/auth/verify` with valid keys and with Bearer tokens; gateway GETs and POSTs (the upstream
//! counts them, and any without keygate's identity headers); getToken; admin writes (an account,
//! its credential, the key used, revoked, refused); console sessions (the login form, the POST with
//! its pre-session CSRF token, the credentials page, logout with the session's token); a password
//! guesser from another address behind a trusted proxy (401, then the throttle's 429); refused keys
//! (random malformed, unknown well-formed, revoked; by verify and by the gateway: 1101); a
//! credential limited to 5 per second, asked 10 at a time (1000 and 1005).
//!
//! Every answer must be one the load asked for. After a warm-up (the first third), the resident
//! memory (VmRSS) may grow by at most the larger of [`RSS_GROWTH_FRACTION`] and
//! [`RSS_GROWTH_FLOOR_KB`] (why: at those constants), and the open files by at most [`FD_GROWTH`].
//!
//! The server runs with `MIMALLOC_PURGE_DELAY=0`: mimalloc then gives freed pages back to the
//! system at once, instead of after 1 s and lazily (at a later allocation), so that VmRSS follows
//! what the process holds. Without it a console login's Argon2 buffer (19 MiB, freed when the
//! verification ends) stays resident for seconds, and single samples jumped by 20 or 40 MB and
//! came back down at the next. The sampler also waits for any login in flight to end.
//!
//! The load's working set of secrets is bounded on purpose: every cache of the authenticator
//! holds up to `cache_capacity` entries (1,000,000 by default) by design, so a load that verified
//! a new token or a new unknown well-formed key on every request would show that designed growth,
//! not a leak. Here a fresh token is verified about once a second (clients use a token for a long
//! time), the unknown well-formed keys are a fixed set, random keys are malformed (refused before
//! any cache), and the admin writes add a credential about twice a second.
//!
//! `KEYGATE_SOAK_SECS` sets the load's duration (default 30; samples every max(2, secs/20) s).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::RwLock;
use tokio::time::MissedTickBehavior;

use crate::support::{Sandbox, Server, admin_token};

/// The load's duration when `KEYGATE_SOAK_SECS` is not set (CI).
const DEFAULT_SECS: u64 = 30;

/// Resident memory may grow after the warm-up by this fraction of what it was then, or by
/// [`RSS_GROWTH_FLOOR_KB`], whichever is larger. Memory that legitimately grows during the load
/// after a warm-up, all bounded: SQLite's page cache (2 MiB per connection by default, 8 pooled
/// connections: up to 16 MiB, filling as the database grows with the admin writes and sessions);
/// the caches' entries for the credentials the admin writes add (a few hundred bytes each, ~2 a
/// second) and for the fresh tokens (~1 a second); hash tables that double when they fill; and
/// what the allocator keeps of freed memory (mimalloc keeps pages per thread, tokio's blocking
/// threads, where Argon2 runs, come and go). A leak of 100 bytes per request at this load's
/// ~500 requests a second is ~3 MB a minute: past the bound within ten minutes.
const RSS_GROWTH_FRACTION: f64 = 0.20;
const RSS_GROWTH_FLOOR_KB: u64 = 16 * 1024;
/// Open files may grow after the warm-up by this much (beyond the most seen during the warm-up):
/// the client connections, pooled upstream connections and SQLite connections (3 files each)
/// open and close with the load's timing; a leak per request or per connection grows without end.
const FD_GROWTH: i64 = 10;

const CONSOLE_EMAIL: &str = "soak-console@example.com";
const PASSWORD: &str = "a long soak console password";
/// The guesser's address, as a trusted proxy (127.0.0.1) reports it in X-Forwarded-For.
const GUESSER_IP: &str = "127.0.0.2";
/// The limited credential's limit, per second.
const LIMIT: u64 = 5;
/// Failed logins per account and address before the console's throttle answers 429.
const THROTTLE_AFTER: u64 = 5;

// ---- the upstream ---------------------------------------------------------------------------

/// An HTTP/1.1 upstream with keep-alive on its own thread and runtime: answers every request
/// 200 `{"upstream":true}` and counts them, and those without keygate's identity header.
struct Upstream {
    port: u16,
    hits: Arc<AtomicU64>,
    anonymous: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the upstream's port");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let port = listener.local_addr().unwrap().port();
        let (hits, anonymous) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (h, a) = (hits.clone(), anonymous.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("upstream runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let (h, a) = (h.clone(), a.clone());
                            tokio::spawn(async move {
                                let _ = Self::connection(stream, &h, &a).await;
                            });
                        }
                    }
                }
            });
        });
        Self { port, hits, anonymous, stop: Some(stop), thread: Some(thread) }
    }

    async fn connection(stream: tokio::net::TcpStream, hits: &AtomicU64, anonymous: &AtomicU64) -> std::io::Result<()> {
        const BODY: &[u8] = br#"{"upstream":true}"#;
        stream.set_nodelay(true)?;
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let (mut length, mut chunked, mut identified) = (0u64, false, false);
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((name, value)) = l.split_once(':') {
                    match name.trim().to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
                        "x-keygate-client-id" => identified = true,
                        _ => {}
                    }
                }
            }
            if chunked {
                loop {
                    line.clear();
                    r.read_line(&mut line).await?;
                    let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
                    if size == 0 {
                        // Trailers, then the empty line.
                        loop {
                            line.clear();
                            if r.read_line(&mut line).await? == 0 || line.trim_end().is_empty() {
                                break;
                            }
                        }
                        break;
                    }
                    tokio::io::copy(&mut (&mut r).take(size + 2), &mut tokio::io::sink()).await?;
                }
            } else {
                tokio::io::copy(&mut (&mut r).take(length), &mut tokio::io::sink()).await?;
            }
            hits.fetch_add(1, Ordering::Relaxed);
            if !identified {
                anonymous.fetch_add(1, Ordering::Relaxed);
            }
            // One write: a head and a body in two segments would meet Nagle and delayed ACKs.
            let mut answer =
                format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", BODY.len())
                    .into_bytes();
            answer.extend_from_slice(BODY);
            w.write_all(&answer).await?;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- answers and their tally ------------------------------------------------------------------

/// An answer: status, the headers that matter here, and the body.
struct Answer {
    status: u16,
    cookies: Vec<String>,
    body: String,
}

impl Answer {
    fn code(&self) -> i64 {
        serde_json::from_str::<Value>(&self.body).ok().and_then(|v| v["code"].as_i64()).unwrap_or(-1)
    }

    /// The value of the cookie `name` this answer sets.
    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.iter().find_map(|c| {
            let (n, rest) = c.split_once('=')?;
            (n == name).then(|| rest.split(';').next().unwrap_or_default().to_owned())
        })
    }

    /// The hidden CSRF field of a console page.
    fn csrf(&self) -> Option<String> {
        const FIELD: &str = r#"name="csrf" value=""#;
        let start = self.body.find(FIELD)? + FIELD.len();
        let len = self.body[start..].find('"')?;
        Some(self.body[start..start + len].to_owned())
    }
}

async fn call(req: reqwest::RequestBuilder) -> Result<Answer, String> {
    let res = req.send().await.map_err(|e| format!("request failed: {e:#}"))?;
    let status = res.status().as_u16();
    let cookies = res
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let body = res.text().await.map_err(|e| format!("reading the body of a {status} failed: {e:#}"))?;
    Ok(Answer { status, cookies, body })
}

/// Any business code (console pages are HTML).
const ANY: i64 = i64::MIN;

#[derive(Default)]
struct Tally {
    /// Requests by kind, and by `kind/outcome`.
    counts: Mutex<BTreeMap<String, u64>>,
    unexpected: AtomicU64,
    /// The first unexpected answers, described.
    examples: Mutex<Vec<String>>,
}

impl Tally {
    fn count(&self, kind: &str, outcome: &str) {
        let mut c = self.counts.lock().unwrap();
        *c.entry(kind.to_owned()).or_default() += 1;
        *c.entry(format!("{kind}/{outcome}")).or_default() += 1;
    }

    fn get(&self, key: &str) -> u64 {
        self.counts.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.counts.lock().unwrap().iter().filter(|(k, _)| !k.contains('/')).map(|(_, v)| v).sum()
    }

    fn unexpected(&self, kind: &str, what: String) {
        let n = self.unexpected.fetch_add(1, Ordering::Relaxed);
        *self.counts.lock().unwrap().entry(kind.to_owned()).or_default() += 1;
        if n < 20 {
            self.examples.lock().unwrap().push(format!("{kind}: {what}"));
        }
    }

    /// Counts `res` as `kind/outcome` when its status and code are one of `expected` (`ANY`: any
    /// code), else as unexpected; returns the answer when it was expected.
    fn expect(&self, kind: &str, res: Result<Answer, String>, expected: &[(u16, i64, &str)]) -> Option<Answer> {
        match res {
            Ok(a) => {
                let code = a.code();
                match expected.iter().find(|(s, c, _)| *s == a.status && (*c == ANY || *c == code)) {
                    Some((_, _, outcome)) => {
                        self.count(kind, outcome);
                        Some(a)
                    }
                    None => {
                        let body: String = a.body.chars().take(300).collect();
                        self.unexpected(kind, format!("{} (code {code}), expected {expected:?}: {body}", a.status));
                        None
                    }
                }
            }
            Err(e) => {
                self.unexpected(kind, e);
                None
            }
        }
    }
}

// ---- the load -------------------------------------------------------------------------------

#[derive(Clone)]
struct Customer {
    client_id: String,
    key: String,
}

struct Ctx {
    base: String,
    admin: String,
    http: reqwest::Client,
    end: Instant,
    steady: Vec<Customer>,
    limited: Customer,
    /// Well-formed keys that no credential has.
    unknown: Vec<String>,
    /// The first keys the admin writes revoked (a few: a fixed set).
    revoked: Mutex<Vec<String>>,
    /// Tokens the Bearer load uses; getToken replaces one about once a second.
    tokens: Mutex<Vec<String>>,
    tally: Tally,
    /// Held (read) while a console login runs: the sampler (write) does not read the memory of
    /// an Argon2 verification in flight (19 MiB for a moment, 4 at most at once, by design).
    argon2: RwLock<()>,
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn verify(&self, header: &str, value: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.url("/auth/verify"))
            .header(header, value)
            .header("content-type", "application/json")
            .body("{}")
    }

    fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(&format!("/admin/v1{path}"))).bearer_auth(&self.admin)
    }
}

/// A fixed-rate ticker until the end of the load; a late tick is not made up for.
struct Pacer {
    tick: tokio::time::Interval,
    end: Instant,
}

impl Pacer {
    fn new(end: Instant, per_sec: f64) -> Self {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { tick, end }
    }

    async fn next(&mut self) -> bool {
        self.tick.tick().await;
        Instant::now() < self.end
    }
}

const OK: &[(u16, i64, &str)] = &[(200, 1000, "ok")];
const CREATED: &[(u16, i64, &str)] = &[(201, 1000, "created")];
const REFUSED: &[(u16, i64, &str)] = &[(401, 1101, "refused")];

async fn verify_load(ctx: Arc<Ctx>, lane: usize, per_sec: f64) {
    let mut p = Pacer::new(ctx.end, per_sec);
    let mut n = lane;
    while p.next().await {
        let c = &ctx.steady[n % ctx.steady.len()];
        ctx.tally.expect("verify", call(ctx.verify("x-api-key", &c.key)).await, OK);
        n += 1;
    }
}

async fn bearer_load(ctx: Arc<Ctx>, per_sec: f64) {
    let mut p = Pacer::new(ctx.end, per_sec);
    let mut n = 0;
    while p.next().await {
        let token = {
            let t = ctx.tokens.lock().unwrap();
            t[n % t.len()].clone()
        };
        ctx.tally.expect("bearer", call(ctx.verify("authorization", &format!("Bearer {token}"))).await, OK);
        n += 1;
    }
}

async fn token_load(ctx: Arc<Ctx>, per_sec: f64) {
    let mut p = Pacer::new(ctx.end, per_sec);
    let mut n = 0;
    while p.next().await {
        let c = &ctx.steady[n % ctx.steady.len()];
        let req = ctx
            .http
            .post(ctx.url("/api/open/v3/getToken"))
            .json(&json!({"clientId": c.client_id, "clientSecret": c.key}));
        if let Some(a) = ctx.tally.expect("getToken", call(req).await, OK)
            && n % per_sec as usize == 0
        {
            let token: Value = serde_json::from_str(&a.body).unwrap_or_default();
            if let Some(token) = token["token"].as_str() {
                let mut t = ctx.tokens.lock().unwrap();
                let slot = (n / per_sec as usize) % t.len();
                t[slot] = token.to_owned();
            }
        }
        n += 1;
    }
}

async fn gateway_load(ctx: Arc<Ctx>, lane: usize, per_sec: f64) {
    let mut p = Pacer::new(ctx.end, per_sec);
    let mut n = lane;
    while p.next().await {
        let c = &ctx.steady[n % ctx.steady.len()];
        let req = if n.is_multiple_of(2) {
            ctx.http.get(ctx.url(&format!("/soak/items/{n}?page=2")))
        } else {
            ctx.http.post(ctx.url("/soak/orders")).json(&json!({"n": n, "note": "soak"}))
        };
        if let Some(a) = ctx.tally.expect("gateway", call(req.header("x-api-key", &c.key)).await, &[(200, ANY, "ok")])
            && a.body != r#"{"upstream":true}"#
        {
            ctx.tally.unexpected("gateway", format!("a 200 that is not the upstream's: {}", a.body));
        }
        n += 1;
    }
}

async fn refused_load(ctx: Arc<Ctx>, per_sec: f64) {
    let mut p = Pacer::new(ctx.end, per_sec);
    let mut n = 0;
    while p.next().await {
        let unknown = &ctx.unknown[n % ctx.unknown.len()];
        let res = match n % 4 {
            // A random key: its checksum (the last character changed) does not match.
            0 => {
                let mut key = keygate_core::ApiKey::generate().expose().to_owned();
                let last = key.pop().unwrap();
                key.push(if last == 'A' { 'B' } else { 'A' });
                call(ctx.verify("x-api-key", &key)).await
            }
            1 => call(ctx.verify("x-api-key", unknown)).await,
            2 => {
                let revoked = ctx.revoked.lock().unwrap().get(n / 4 % 8).cloned();
                call(ctx.verify("x-api-key", revoked.as_deref().unwrap_or(unknown))).await
            }
            // Through the gateway: refused by keygate, never seen by the upstream.
            _ => call(ctx.http.get(ctx.url("/soak/refused")).header("x-api-key", unknown)).await,
        };
        ctx.tally.expect("refused", res, REFUSED);
        n += 1;
    }
}

/// Bursts of 10 on a credential limited to [`LIMIT`] per second.
async fn limited_load(ctx: Arc<Ctx>) {
    let mut p = Pacer::new(ctx.end, 1.0);
    while p.next().await {
        for _ in 0..10 {
            let res = call(ctx.verify("x-api-key", &ctx.limited.key)).await;
            ctx.tally.expect("limited", res, &[(200, 1000, "allowed"), (429, 1005, "limited")]);
        }
    }
}

/// Account, credential, its key used, revoked, refused.
async fn admin_load(ctx: Arc<Ctx>, per_sec: f64) {
    use reqwest::Method;
    let mut p = Pacer::new(ctx.end, per_sec);
    let mut n = 0;
    while p.next().await {
        let body = json!({"email": format!("soak-{n}@example.com"), "firstName": "Soak"});
        let Some(a) = ctx.tally.expect("admin", call(ctx.admin(Method::POST, "/accounts").json(&body)).await, CREATED)
        else {
            continue;
        };
        let account: Value = serde_json::from_str(&a.body).unwrap_or_default();
        let account = account["data"]["id"].as_str().unwrap_or_default().to_owned();
        let req = ctx.admin(Method::POST, &format!("/accounts/{account}/credentials"));
        let Some(a) = ctx.tally.expect("admin", call(req).await, CREATED) else { continue };
        let cred: Value = serde_json::from_str(&a.body).unwrap_or_default();
        let (cid, key) = (
            cred["data"]["clientId"].as_str().unwrap_or_default(),
            cred["data"]["apiKey"].as_str().unwrap_or_default(),
        );
        ctx.tally.expect("admin", call(ctx.verify("x-api-key", key)).await, OK);
        ctx.tally.expect("admin", call(ctx.admin(Method::POST, &format!("/credentials/{cid}/revoke"))).await, OK);
        // A process's own write drops its cache entries at once.
        ctx.tally.expect("admin", call(ctx.verify("x-api-key", key)).await, REFUSED);
        let mut revoked = ctx.revoked.lock().unwrap();
        if revoked.len() < 8 {
            revoked.push(key.to_owned());
        }
        n += 1;
    }
}

fn form(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// The login form: its pre-session cookie and CSRF token.
async fn login_form(ctx: &Ctx, kind: &str) -> Option<(String, String)> {
    let a = ctx.tally.expect(kind, call(ctx.http.get(ctx.url("/console/login"))).await, &[(200, ANY, "form")])?;
    match (a.cookie("kg_csrf"), a.csrf()) {
        (Some(cookie), Some(csrf)) => Some((cookie, csrf)),
        _ => {
            ctx.tally.unexpected(kind, format!("a login form without kg_csrf or its token: {:?}", a.cookies));
            None
        }
    }
}

fn login_post(ctx: &Ctx, cookie: &str, csrf: &str, password: &str) -> reqwest::RequestBuilder {
    ctx.http
        .post(ctx.url("/console/login"))
        .header("cookie", format!("kg_csrf={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", csrf), ("email", CONSOLE_EMAIL), ("password", password)]))
}

/// A console session: login form, login, the credentials page, logout.
async fn console_load(ctx: Arc<Ctx>, per_sec: f64) {
    let mut p = Pacer::new(ctx.end, per_sec);
    while p.next().await {
        let Some((cookie, csrf)) = login_form(&ctx, "console").await else { continue };
        let res = {
            let _argon2 = ctx.argon2.read().await;
            call(login_post(&ctx, &cookie, &csrf, PASSWORD)).await
        };
        let Some(a) = ctx.tally.expect("console", res, &[(303, ANY, "login")]) else { continue };
        let Some(session) = a.cookie("kg_session") else {
            ctx.tally.unexpected("console", format!("a login without kg_session: {:?}", a.cookies));
            continue;
        };
        let req = ctx.http.get(ctx.url("/console/credentials")).header("cookie", format!("kg_session={session}"));
        let Some(page) = ctx.tally.expect("console", call(req).await, &[(200, ANY, "page")]) else { continue };
        let Some(csrf) = page.csrf() else {
            ctx.tally.unexpected("console", "the credentials page has no CSRF token".into());
            continue;
        };
        let req = ctx
            .http
            .post(ctx.url("/console/logout"))
            .header("cookie", format!("kg_session={session}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("csrf", &csrf)]));
        ctx.tally.expect("console", call(req).await, &[(303, ANY, "logout")]);
    }
}

/// Wrong passwords for the console account from [`GUESSER_IP`]: 401 until the throttle answers
/// 429 (the owner, from 127.0.0.1, keeps logging in meanwhile).
async fn guesser_load(ctx: Arc<Ctx>, per_sec: f64) {
    let Some((cookie, csrf)) = login_form(&ctx, "guesser").await else { return };
    let mut p = Pacer::new(ctx.end, per_sec);
    let mut n = 0;
    while p.next().await {
        let res = {
            let _argon2 = ctx.argon2.read().await;
            call(
                login_post(&ctx, &cookie, &csrf, &format!("not the password {n}"))
                    .header("x-forwarded-for", GUESSER_IP),
            )
            .await
        };
        ctx.tally.expect("guesser", res, &[(401, ANY, "wrong"), (429, ANY, "throttled")]);
        n += 1;
    }
}

// ---- sampling ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Sample {
    t: f64,
    rss_kb: u64,
    anon_kb: u64,
    fds: i64,
    requests: u64,
}

/// A `kB` field of /proc/PID/status.
fn status_kb(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/PID/status:\n{status}"))
}

fn sample(pid: u32, started: Instant, requests: u64) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/PID/status");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("reading /proc/PID/fd").count() as i64;
    Sample {
        t: started.elapsed().as_secs_f64(),
        rss_kb: status_kb(&status, "VmRSS:"),
        anon_kb: status_kb(&status, "RssAnon:"),
        fds,
        requests,
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn print_sample(s: &Sample) {
    eprintln!(
        "soak sample t={:>6.1}s  VmRSS {:>6.1} MB (anon {:>6.1} MB)  open files {:>4}  requests {:>8}",
        s.t,
        mb(s.rss_kb),
        mb(s.anon_kb),
        s.fds,
        s.requests
    );
}

// ---- the test ---------------------------------------------------------------------------------

async fn customer(server: &Server, admin: &str, email: &str) -> Customer {
    let r = server.admin(admin, "POST", "/accounts", Some(json!({"email": email}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let account = r.body["data"]["id"].as_str().expect("account id").to_owned();
    let r = server.admin(admin, "POST", &format!("/accounts/{account}/credentials"), None).await;
    assert_eq!(r.status, 201, "{r:?}");
    Customer {
        client_id: r.body["data"]["clientId"].as_str().expect("clientId").to_owned(),
        key: r.body["data"]["apiKey"].as_str().expect("apiKey").to_owned(),
    }
}

/// The last `n` lines of the server's stderr, and how many lines it has with `ERROR` or a panic.
fn log_report(server: &Server, n: usize) -> (String, usize) {
    use std::io::BufRead;
    let file = std::fs::File::open(&server.stderr).expect("the server's log");
    let mut tail = std::collections::VecDeque::new();
    let mut bad = 0;
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if line.contains("ERROR") || line.contains("panicked") {
            bad += 1;
        }
        tail.push_back(line);
        if tail.len() > n {
            tail.pop_front();
        }
    }
    (Vec::from(tail).join("\n"), bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_load() {
    let secs: u64 = std::env::var("KEYGATE_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SECS);
    assert!(secs >= 3, "KEYGATE_SOAK_SECS must be at least 3");
    let every = Duration::from_secs((secs / 20).max(2));

    let sb = Sandbox::with_database();
    // The console account, its password on standard input.
    let mut cli = sb
        .cmd()
        .args(["--json", "account", "create", "--email", CONSOLE_EMAIL, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keygate account create");
    writeln!(cli.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let upstream = Upstream::start();
    let admin = admin_token();
    let up = format!("http://127.0.0.1:{}", upstream.port);
    let mut server = sb
        .start(
            &["--admin-token", &admin, "--upstream", &up, "--trusted-proxies", "127.0.0.1"],
            &[("MIMALLOC_PURGE_DELAY", "0")],
        )
        .await;
    let pid = server.pid();

    let mut steady = Vec::new();
    for i in 0..4 {
        steady.push(customer(&server, &admin, &format!("soak-steady-{i}@example.com")).await);
    }
    let limited = customer(&server, &admin, "soak-limited@example.com").await;
    let limits = json!({"ratelimits": [{"name": "requests", "limit": LIMIT, "duration": "1s"}]});
    let r = server.admin(&admin, "PATCH", &format!("/credentials/{}", limited.client_id), Some(limits)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut tokens = Vec::new();
    for c in &steady {
        tokens.push(server.token(&c.client_id, &c.key).await);
    }

    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let ctx = Arc::new(Ctx {
        base: server.url(""),
        admin: admin.clone(),
        http,
        end,
        steady,
        limited,
        unknown: (0..8).map(|_| keygate_core::ApiKey::generate().expose().to_owned()).collect(),
        revoked: Mutex::new(Vec::new()),
        tokens: Mutex::new(tokens),
        tally: Tally::default(),
        argon2: RwLock::new(()),
    });

    // Requests a second, about 500 in all.
    let mut load = tokio::task::JoinSet::new();
    for lane in 0..2 {
        load.spawn(verify_load(ctx.clone(), lane, 100.0));
        load.spawn(gateway_load(ctx.clone(), lane, 75.0));
    }
    load.spawn(bearer_load(ctx.clone(), 100.0));
    load.spawn(token_load(ctx.clone(), 10.0));
    load.spawn(refused_load(ctx.clone(), 40.0));
    load.spawn(limited_load(ctx.clone()));
    load.spawn(admin_load(ctx.clone(), 2.0));
    load.spawn(console_load(ctx.clone(), 1.0));
    load.spawn(guesser_load(ctx.clone(), 0.5));

    eprintln!("soak: {secs} s of mixed load on keygate (pid {pid}), a sample every {} s", every.as_secs());
    let mut samples = Vec::new();
    let mut next = started;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        let s = {
            let _quiet = ctx.argon2.write().await;
            sample(pid, started, ctx.tally.total())
        };
        print_sample(&s);
        samples.push(s);
        next += every;
    }
    while let Some(r) = load.join_next().await {
        r.expect("a load task panicked");
    }
    let last = {
        let _quiet = ctx.argon2.write().await;
        sample(pid, started, ctx.tally.total())
    };
    print_sample(&last);
    samples.push(last);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kb = status_kb(&status, "VmHWM:");

    // The end of the warm-up: the first sample in the last two thirds.
    let warm_at = samples.iter().position(|s| s.t >= secs as f64 / 3.0).expect("a sample after the warm-up");
    let (warm, end) = (samples[warm_at], last);
    let fd_baseline = samples[..=warm_at].iter().map(|s| s.fds).max().unwrap();
    let fd_max = samples[warm_at..].iter().map(|s| s.fds).max().unwrap();
    let rss_bound_kb = ((warm.rss_kb as f64 * RSS_GROWTH_FRACTION) as u64).max(RSS_GROWTH_FLOOR_KB);
    let rss_growth_kb = end.rss_kb as i64 - warm.rss_kb as i64;
    let rss_after_max = samples[warm_at..].iter().map(|s| s.rss_kb).max().unwrap();

    let counts = ctx.tally.counts.lock().unwrap().clone();
    let by_kind: Vec<String> =
        counts.iter().filter(|(k, _)| !k.contains('/')).map(|(k, v)| format!("{k} {v}")).collect();
    let outcomes: Vec<String> =
        counts.iter().filter(|(k, _)| k.contains('/')).map(|(k, v)| format!("{k} {v}")).collect();
    let unexpected = ctx.tally.unexpected.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("soak outcomes: {}", outcomes.join(", "));
    eprintln!(
        "soak summary: {secs} s, {} requests ({:.0}/s: {}), {unexpected} unexpected; upstream saw {}; \
         VmRSS {:.1} MB at the warm-up's end (t={:.0}s) -> {:.1} MB at the end \
         (t={:.0}s): {:+.1} MB, bound +{:.1} MB; highest sample after the warm-up {:.1} MB, peak (VmHWM) {:.1} MB; \
         anon {:.1} -> {:.1} MB; open files {} (most in the warm-up) -> {} at the end (most after {fd_max}, bound +{FD_GROWTH})",
        ctx.tally.total(),
        ctx.tally.total() as f64 / elapsed,
        by_kind.join(", "),
        upstream.hits.load(Ordering::Relaxed),
        mb(warm.rss_kb),
        warm.t,
        mb(end.rss_kb),
        end.t,
        rss_growth_kb as f64 / 1024.0,
        mb(rss_bound_kb),
        mb(rss_after_max),
        mb(peak_kb),
        mb(warm.anon_kb),
        mb(end.anon_kb),
        fd_baseline,
        last.fds,
    );

    let (tail, bad_lines) = log_report(&server, 40);
    let context = format!("--- the server's last log lines ---\n{tail}");
    assert_eq!(
        unexpected,
        0,
        "unexpected answers (first {}):\n{}\n{context}",
        ctx.tally.examples.lock().unwrap().len(),
        ctx.tally.examples.lock().unwrap().join("\n")
    );
    for kind in ["verify", "bearer", "getToken", "gateway", "refused", "limited", "admin", "console", "guesser"] {
        assert!(ctx.tally.get(kind) > 0, "no {kind} request was made: {counts:?}");
    }
    // Only what keygate let in reached the upstream, always with an identity.
    assert_eq!(upstream.hits.load(Ordering::Relaxed), ctx.tally.get("gateway/ok"), "upstream hits vs gateway 200s");
    assert_eq!(upstream.anonymous.load(Ordering::Relaxed), 0, "requests reached the upstream without an identity");
    // The limit held: GCRA admits the burst (LIMIT) plus LIMIT a second.
    let allowed = ctx.tally.get("limited/allowed");
    assert!(allowed <= LIMIT * (elapsed.ceil() as u64 + 2), "{allowed} let in at {LIMIT}/s in {elapsed:.0} s");
    assert!(allowed > 0 && ctx.tally.get("limited/limited") > 0, "{counts:?}");
    // The guesser got its few tries, then the throttle; the owner was never locked out.
    assert!(ctx.tally.get("guesser/wrong") <= THROTTLE_AFTER, "{counts:?}");
    assert!(ctx.tally.get("console/login") > 0, "{counts:?}");
    assert_eq!(bad_lines, 0, "the server logged errors or panicked\n{context}");
    assert!(
        rss_growth_kb <= rss_bound_kb as i64,
        "VmRSS grew by {:.1} MB after the warm-up (bound {:.1} MB): {samples:#?}",
        rss_growth_kb as f64 / 1024.0,
        mb(rss_bound_kb)
    );
    assert!(
        last.fds <= fd_baseline + FD_GROWTH,
        "open files grew from {fd_baseline} to {} after the warm-up: {samples:#?}",
        last.fds
    );
    server.stop();
}

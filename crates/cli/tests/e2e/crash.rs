//! Crash consistency: hundreds of cycles of concurrent writes cut at a random moment, then a
//! restart and a check that every acknowledged write is there with the acknowledged state and
//! that nothing is half-written.
//!
//! Each cycle runs, at once: a creator (accounts and their credentials over the admin API), two
//! rotators (rotate or revoke a credential), a banner (ban / unban an account) and the CLI on
//! the same database (`keygate account create`, then `credential create` in a loop). After a
//! random 0-150 ms the server is killed with SIGKILL (and the CLI process of the moment too),
//! writes in flight. The model records what each 2xx answer (or a CLI exit 0) acknowledged; a
//! write whose answer never came may or may not have happened, and either outcome is accepted
//! (and adopted), nothing else. After the restart the admin API must show every acknowledged
//! account, credential, status, generation and ban/unban history, `/auth/verify` must accept the
//! current key (1000, or 1200 for a banned account) and refuse a revoked or rotated-out one
//! (1101), and the database must pass its own checks (`PRAGMA integrity_check`,
//! `foreign_key_check`, through the `sqlite3` tool) and keygate's invariants: an active
//! credential has its current secret, a revoked one none, every credential write and every ban
//! or unban has its change-feed entry, an account's status is its last ban/unban.
//!
//! The PostgreSQL test does the same on a private PostgreSQL that is itself crashed (immediate
//! shutdown) mid-writes and started again; keygate is killed too in about half the cycles and
//! otherwise has to recover by itself. Skips loudly without PostgreSQL's server binaries (fails
//! under KEYGATE_TEST_REQUIRE_ALL=1).
//!
//! What `kill -9` can and cannot show: the page cache survives it, so these tests catch a write
//! acknowledged before it was committed (or committed only in part), and a recovery (WAL replay
//! of SQLite or PostgreSQL) that leaves an inconsistent database; not a disk that loses what was
//! not flushed (power loss; the private PostgreSQL even runs with `fsync=off`).
//!
//! The random choices (kill delays, operations, which process dies first) come from a seed
//! printed at the start; `KEYGATE_CRASH_SEED=N` replays them (not the exact interleaving,
//! which the machine decides).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{BIN, Sandbox, Server, admin_token, client, require, scrub_env, text};

/// Kill cycles on SQLite (the task asks for at least 200).
const SQLITE_CYCLES: usize = 200;
/// Crash cycles on PostgreSQL (each restarts the database).
const PG_CYCLES: usize = 30;
/// The kill comes 0 to this many milliseconds after the writers start.
const MAX_KILL_DELAY_MS: u64 = 150;
/// Every this many cycles, and at the end, everything is checked, not only what the last cycle
/// touched.
const FULL_CHECK_EVERY: usize = 50;
const PG_MASTER_KEY: &str = "c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5c4a5";

// --- randomness: a seeded SplitMix64 (the e2e tests do not depend on `rand`) ---

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An independent stream for one writer.
    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

/// `KEYGATE_CRASH_SEED`, else a fresh one.
fn seed() -> u64 {
    match std::env::var("KEYGATE_CRASH_SEED") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("KEYGATE_CRASH_SEED={s:?} is not a number")),
        Err(_) => {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            Rng((nanos as u64) ^ (u64::from(std::process::id()) << 32)).next()
        }
    }
}

// --- the model: what was acknowledged ---

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// One credential; the account is banned and unbanned.
    Ban,
    /// Its credentials are rotated and revoked; the account is never banned.
    Rotate,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Rotate,
    Revoke,
}

#[derive(Debug)]
struct Account {
    id: String,
    email: String,
    kind: Kind,
    banned: bool,
    /// Ban and unban events acknowledged (or found after a write whose answer was lost).
    events: usize,
    /// A ban or unban was in flight at the kill.
    toggle_pending: bool,
    /// Its credentials known to exist.
    clients: Vec<String>,
    /// A credential creation was in flight at the kill.
    create_pending: bool,
    /// [`Kind::Ban`]: the API key of its credential.
    key: Option<String>,
    /// Acknowledged writes not checked yet.
    acks: usize,
    touched: bool,
}

impl Account {
    fn new(id: String, email: String, kind: Kind, acks: usize) -> Self {
        Account {
            id,
            email,
            kind,
            banned: false,
            events: 0,
            toggle_pending: false,
            clients: Vec::new(),
            create_pending: false,
            key: None,
            acks,
            touched: true,
        }
    }
}

#[derive(Debug)]
struct Cred {
    client: String,
    account: String,
    /// The current API key; `None` after a rotation whose answer was lost (or a creation found
    /// after the kill).
    key: Option<String>,
    /// The key before the last rotation: refused since (rotations here have no grace).
    old_key: Option<String>,
    revoked: bool,
    generation: u64,
    pending: Option<Op>,
    acks: usize,
    touched: bool,
}

impl Cred {
    fn new(client: String, account: String, key: Option<String>, acks: usize) -> Self {
        Cred { client, account, key, old_key: None, revoked: false, generation: 1, pending: None, acks, touched: true }
    }
}

#[derive(Default)]
struct Stats {
    /// Acknowledged writes by kind.
    acked: BTreeMap<&'static str, usize>,
    checked: usize,
    /// Writes in flight at a kill, and how many of them turned out to have happened.
    in_flight: usize,
    in_flight_applied: usize,
    /// Acknowledged writes missing or wrong, and anything half-written.
    failures: Vec<String>,
    /// Non-2xx answers (or CLI failures) before any kill: writes that should have worked.
    refused: Vec<String>,
    /// `/auth/verify` answers that needed the change feed to catch up (a write whose answer was
    /// lost, on a keygate that survived the database's crash).
    settled: usize,
}

#[derive(Default)]
struct World {
    accounts: BTreeMap<String, Account>,
    creds: BTreeMap<String, Cred>,
    /// Account creations in flight at a kill (by email: the id was never answered).
    pending_emails: Vec<String>,
    /// Credentials free to rotate or revoke; a rotator takes one out while it works on it.
    rotate_pool: Vec<String>,
    /// Accounts free to ban or unban.
    ban_pool: Vec<String>,
    stats: Stats,
}

impl World {
    fn ack(&mut self, what: &'static str) {
        *self.stats.acked.entry(what).or_default() += 1;
    }

    fn acked(&self) -> usize {
        self.stats.acked.values().sum()
    }

    /// The pools for the next cycle: whatever is in a known state with a known key.
    fn refill_pools(&mut self) {
        self.rotate_pool = (self.creds.values())
            .filter(|c| !c.revoked && c.key.is_some() && c.pending.is_none())
            .map(|c| c.client.clone())
            .collect();
        self.ban_pool = (self.accounts.values())
            .filter(|a| a.kind == Kind::Ban && a.key.is_some() && !a.toggle_pending)
            .map(|a| a.id.clone())
            .collect();
    }

    /// A credential acknowledged as created.
    fn add_credential(&mut self, account: &str, client: String, key: String, what: &'static str) {
        self.ack(what);
        let a = self.accounts.get_mut(account).expect("the account is known");
        a.create_pending = false;
        a.clients.push(client.clone());
        a.touched = true;
        match a.kind {
            Kind::Ban => {
                a.key = Some(key);
                a.acks += 1;
                self.ban_pool.push(account.to_owned());
            }
            Kind::Rotate => {
                self.creds.insert(client.clone(), Cred::new(client.clone(), account.to_owned(), Some(key), 1));
                self.rotate_pool.push(client);
            }
        }
    }

    fn summary(&self) -> String {
        let by_kind: Vec<String> = self.stats.acked.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(
            "acknowledged writes {} ({}), checked {}, unanswered at a kill {} (of which had happened {}), lost or \
             half-written {}, refused before a kill {}, accounts {}, credentials {}",
            self.acked(),
            by_kind.join(", "),
            self.stats.checked,
            self.stats.in_flight,
            self.stats.in_flight_applied,
            self.stats.failures.len(),
            self.stats.refused.len(),
            self.accounts.len(),
            self.accounts.values().map(|a| a.clients.len()).sum::<usize>(),
        )
    }
}

fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|e| e.into_inner())
}

// --- HTTP ---

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(server: &Server, token: &str) -> Self {
        Api { http: client(), base: server.url(""), token: token.to_owned() }
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Result<(u16, Value), String> {
        let mut req = self.http.request(method, format!("{}/admin/v1{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        finish(req).await
    }

    async fn verify(&self, key: &str) -> Result<(u16, Value), String> {
        let req = (self.http.post(format!("{}/auth/verify", self.base)))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body("{}");
        finish(req).await
    }

    /// A read that must get an answer: retried while the server or its database is not back
    /// yet (connection errors, 503), up to 30 s.
    async fn read(&self, path: &str) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = self.admin(Method::GET, path, None).await;
            match last {
                Ok((status, body)) if status != 503 => return (status, body),
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                other => panic!("GET {path}: no answer within 30 s: {other:?}"),
            }
        }
    }

    /// `/auth/verify`, retried like [`Api::read`].
    async fn verify_answered(&self, key: &str) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.verify(key).await {
                Ok((status, body)) if status != 503 => return (status, body),
                other if Instant::now() >= deadline => panic!("/auth/verify: no answer within 30 s: {other:?}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

async fn finish(req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
    let res = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = res.status().as_u16();
    let bytes = res.bytes().await.map_err(|e| format!("{e:?}"))?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text(&bytes)))))
}

// --- the writers ---

/// The moment of the kill: set just before the first process is killed. Writers start nothing
/// after it.
#[derive(Default)]
struct Cut(AtomicBool);

impl Cut {
    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

struct Writer {
    api: Api,
    world: Arc<Mutex<World>>,
    cut: Arc<Cut>,
    rng: Rng,
    tag: String,
}

impl Writer {
    /// Sends one write; its `data` when acknowledged with `want`, `None` when its outcome is
    /// unknown (cut by the kill; anything else before the kill is recorded as refused).
    async fn write(&self, what: &str, path: &str, body: Option<Value>, want: u16) -> Option<Value> {
        match self.api.admin(Method::POST, path, body).await {
            Ok((status, body)) if status == want => Some(body["data"].clone()),
            other => {
                if !self.cut.is_set() {
                    lock(&self.world).stats.refused.push(format!("{what} POST {path}: {other:?}"));
                }
                None
            }
        }
    }

    /// Accounts, each with its credentials (one for an account to ban, one or two else).
    async fn creator(mut self) {
        let mut n = 0;
        while !self.cut.is_set() {
            n += 1;
            let email = format!("{}-{n}@crash.example", self.tag);
            let kind = if self.rng.chance(30) { Kind::Ban } else { Kind::Rotate };
            lock(&self.world).pending_emails.push(email.clone());
            let Some(data) = self.write("account", "/accounts", Some(json!({"email": email})), 201).await else {
                return;
            };
            let id = data["id"].as_str().expect("account id").to_owned();
            {
                let mut w = lock(&self.world);
                w.pending_emails.retain(|e| *e != email);
                w.accounts.insert(id.clone(), Account::new(id.clone(), email, kind, 1));
                w.ack("account");
            }
            let count = if kind == Kind::Ban { 1 } else { 1 + self.rng.below(2) };
            for _ in 0..count {
                if self.cut.is_set() {
                    return;
                }
                lock(&self.world).accounts.get_mut(&id).unwrap().create_pending = true;
                let path = format!("/accounts/{id}/credentials");
                let Some(data) = self.write("credential", &path, None, 201).await else { return };
                let client = data["clientId"].as_str().expect("clientId").to_owned();
                let key = data["apiKey"].as_str().expect("apiKey").to_owned();
                lock(&self.world).add_credential(&id, client, key, "credential");
            }
        }
    }

    /// Rotates (no grace) or revokes credentials, one at a time.
    async fn rotator(mut self) {
        while !self.cut.is_set() {
            let picked = {
                let mut w = lock(&self.world);
                let len = w.rotate_pool.len() as u64;
                (len > 0).then(|| w.rotate_pool.swap_remove(self.rng.below(len) as usize))
            };
            let Some(client) = picked else {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            };
            let op = if self.rng.chance(25) { Op::Revoke } else { Op::Rotate };
            {
                let mut w = lock(&self.world);
                let c = w.creds.get_mut(&client).unwrap();
                c.pending = Some(op);
                c.touched = true;
            }
            let path = match op {
                Op::Rotate => format!("/credentials/{client}/rotate"),
                Op::Revoke => format!("/credentials/{client}/revoke"),
            };
            let Some(data) = self.write("credential", &path, None, 200).await else { return };
            let mut w = lock(&self.world);
            let c = w.creds.get_mut(&client).unwrap();
            c.pending = None;
            c.acks += 1;
            match op {
                Op::Revoke => {
                    assert_eq!(data["status"], "revoked", "revoke answered {data}");
                    c.revoked = true;
                    w.ack("revoke");
                }
                Op::Rotate => {
                    let key = data["apiKey"].as_str().expect("apiKey").to_owned();
                    c.generation += 1;
                    assert_eq!(data["credential"]["generation"], c.generation, "rotate answered {data}");
                    c.old_key = c.key.replace(key);
                    w.rotate_pool.push(client);
                    w.ack("rotate");
                }
            }
        }
    }

    /// Bans and unbans accounts, one at a time.
    async fn banner(mut self) {
        while !self.cut.is_set() {
            let picked = {
                let mut w = lock(&self.world);
                let len = w.ban_pool.len() as u64;
                (len > 0).then(|| w.ban_pool.swap_remove(self.rng.below(len) as usize))
            };
            let Some(id) = picked else {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            };
            let ban = {
                let mut w = lock(&self.world);
                let a = w.accounts.get_mut(&id).unwrap();
                a.toggle_pending = true;
                a.touched = true;
                !a.banned
            };
            let path = format!("/accounts/{id}/{}", if ban { "ban" } else { "unban" });
            let body = ban.then(|| json!({"reason": format!("{} cycle", self.tag)}));
            let Some(data) = self.write("account", &path, body, 200).await else { return };
            assert_eq!(data["status"], if ban { "banned" } else { "active" }, "{path} answered {data}");
            let mut w = lock(&self.world);
            let a = w.accounts.get_mut(&id).unwrap();
            a.toggle_pending = false;
            a.banned = ban;
            a.events += 1;
            a.acks += 1;
            w.ban_pool.push(id);
            w.ack(if ban { "ban" } else { "unban" });
        }
    }
}

/// The CLI on the same database: an account, then credentials on it until the cut. Each
/// command is a process of its own, killed (SIGKILL) at the cut if it is still running.
fn cli_writer(dir: PathBuf, envs: Vec<(String, String)>, world: Arc<Mutex<World>>, cut: Arc<Cut>, tag: String) {
    let email = format!("{tag}@crash.example");
    lock(&world).pending_emails.push(email.clone());
    let Some(account) = cli(&dir, &envs, &world, &cut, &["account", "create", "--email", &email]) else { return };
    let id = account["id"].as_str().expect("account id").to_owned();
    {
        let mut w = lock(&world);
        w.pending_emails.retain(|e| *e != email);
        w.accounts.insert(id.clone(), Account::new(id.clone(), email, Kind::Rotate, 1));
        w.ack("account (CLI)");
    }
    while !cut.is_set() {
        lock(&world).accounts.get_mut(&id).unwrap().create_pending = true;
        let Some(c) = cli(&dir, &envs, &world, &cut, &["credential", "create", "--account", &id]) else { return };
        let client = c["clientId"].as_str().expect("clientId").to_owned();
        let key = c["apiKey"].as_str().expect("apiKey").to_owned();
        lock(&world).add_credential(&id, client, key, "credential (CLI)");
    }
}

/// `keygate --json ARGS`: its output when it exited 0, `None` when it was killed at the cut
/// (or failed: recorded as refused unless the cut came first).
fn cli(dir: &Path, envs: &[(String, String)], world: &Mutex<World>, cut: &Cut, args: &[&str]) -> Option<Value> {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    scrub_env(&mut cmd);
    cmd.envs(envs.iter().map(|(k, v)| (k, v))).arg("--json").args(args);
    let mut child = cmd.spawn().expect("spawning keygate");
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if cut.is_set() {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let out = child.wait_with_output().expect("the CLI's output");
    if status.success() {
        return Some(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("`keygate --json {}` printed no JSON ({e}): {}", args.join(" "), text(&out.stdout))
        }));
    }
    if !cut.is_set() {
        lock(world).stats.refused.push(format!("`keygate {}` -> {status}: {}", args.join(" "), text(&out.stderr)));
    }
    None
}

/// The writers of one cycle, started.
struct Writers {
    cut: Arc<Cut>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_writers(
    api: &Api,
    world: &Arc<Mutex<World>>,
    rng: &mut Rng,
    tag: &str,
    cli_in: Option<(&Path, Vec<(String, String)>)>,
) -> Writers {
    lock(world).refill_pools();
    let cut = Arc::new(Cut::default());
    let writer = |rng: Rng, name: &str| Writer {
        api: api.clone(),
        world: world.clone(),
        cut: cut.clone(),
        rng,
        tag: format!("{tag}-{name}"),
    };
    let mut tasks = vec![
        tokio::spawn(writer(rng.fork(), "http").creator()),
        tokio::spawn(writer(rng.fork(), "r1").rotator()),
        tokio::spawn(writer(rng.fork(), "r2").rotator()),
        tokio::spawn(writer(rng.fork(), "ban").banner()),
    ];
    if let Some((dir, envs)) = cli_in {
        let (dir, world, cut, tag) = (dir.to_owned(), world.clone(), cut.clone(), format!("{tag}-cli"));
        tasks.push(tokio::task::spawn_blocking(move || cli_writer(dir, envs, world, cut, tag)));
    }
    Writers { cut, tasks }
}

impl Writers {
    fn cut(&self) {
        self.cut.0.store(true, Ordering::SeqCst);
    }

    async fn join(self) {
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("a writer still running 60 s after the kill")
                .expect("a writer panicked");
        }
    }
}

// --- the checks ---

/// What checking one account or credential found.
#[derive(Default)]
struct Found {
    fails: Vec<String>,
    /// Writes whose answer was lost, resolved; how many of them had happened.
    in_flight: usize,
    applied: usize,
    /// Acknowledged writes checked.
    checked: usize,
    /// Verify answers that had to wait for the change feed.
    settled: usize,
    /// Credentials of an account to rotate, created by a write whose answer was lost.
    creds: Vec<Cred>,
}

impl Found {
    fn add_to(self, w: &mut World) {
        w.stats.failures.extend(self.fails);
        w.stats.in_flight += self.in_flight;
        w.stats.in_flight_applied += self.applied;
        w.stats.checked += self.checked;
        w.stats.settled += self.settled;
        for c in self.creds {
            w.creds.insert(c.client.clone(), c);
        }
    }
}

/// Checks the accounts and credentials touched since the last check (all of them with `all`)
/// against the model, resolving writes whose answer was lost. `settle`: keygate kept running
/// through the database's crash, so its cache may learn of such a write through the change feed
/// only (within a second); a verify answer about one may take that long to agree.
async fn check(api: &Api, world: &Arc<Mutex<World>>, all: bool, settle: bool) {
    let mut w = std::mem::take(&mut *lock(world));
    let mut found = Found::default();

    // Account creations in flight at the kill: there now, or not at all.
    for email in std::mem::take(&mut w.pending_emails) {
        found.in_flight += 1;
        let (status, body) = api.read(&format!("/accounts?q={}&limit=10", email.replace('@', "%40"))).await;
        assert_eq!(status, 200, "listing accounts: {body}");
        let hits: Vec<&Value> = body["data"].as_array().unwrap().iter().filter(|a| a["email"] == *email).collect();
        match hits.as_slice() {
            [] => {}
            [a] => {
                found.applied += 1;
                let id = a["id"].as_str().unwrap().to_owned();
                // Not known to any writer: it has no credentials, never was banned.
                w.accounts.insert(id.clone(), Account::new(id, email, Kind::Rotate, 0));
            }
            many => {
                found.fails.push(format!("account {email} created in flight, found {} times: {many:?}", many.len()))
            }
        }
    }
    found.add_to(&mut w);

    let ids: Vec<String> = w.accounts.values().filter(|a| all || a.touched).map(|a| a.id.clone()).collect();
    let jobs = ids.iter().map(|id| {
        let a = w.accounts.remove(id).unwrap();
        // Only a write whose answer was lost may take the feed's time to show.
        let ck = Checker { api: api.clone(), settle: settle && a.toggle_pending, found: Found::default() };
        ck.account(a)
    });
    for (a, found) in run_all(jobs.collect()).await {
        w.accounts.insert(a.id.clone(), a);
        found.add_to(&mut w);
    }
    let clients: Vec<String> = w.creds.values().filter(|c| all || c.touched).map(|c| c.client.clone()).collect();
    let jobs = clients.iter().map(|client| {
        let c = w.creds.remove(client).unwrap();
        let ck = Checker { api: api.clone(), settle: settle && c.pending.is_some(), found: Found::default() };
        ck.credential(c)
    });
    for (c, found) in run_all(jobs.collect()).await {
        w.creds.insert(c.client.clone(), c);
        found.add_to(&mut w);
    }
    *lock(world) = w;
}

/// Runs `jobs`, a few at a time.
async fn run_all<T: Send + 'static>(jobs: Vec<impl Future<Output = T> + Send + 'static>) -> Vec<T> {
    let mut set = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    for job in jobs {
        if set.len() >= 6 {
            out.push(set.join_next().await.unwrap().expect("a check panicked"));
        }
        set.spawn(job);
    }
    while let Some(done) = set.join_next().await {
        out.push(done.expect("a check panicked"));
    }
    out
}

struct Checker {
    api: Api,
    settle: bool,
    found: Found,
}

impl Checker {
    /// `/auth/verify` with `key` must answer `code` (and, for 1000, name `client`); with
    /// `settle`, it may take up to 5 s to.
    async fn verify(&mut self, key: &str, code: i64, client: &str, what: &str) {
        let start = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (status, body) = self.api.verify_answered(key).await;
            if body["code"] == code && (code != 1000 || (status == 200 && body["data"]["clientId"] == client)) {
                if attempts > 1 {
                    self.found.settled += 1;
                }
                return;
            }
            if !self.settle || start.elapsed() > Duration::from_secs(5) {
                self.found.fails.push(format!("{what}: /auth/verify answered {status} {body}, expected code {code}"));
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn account(mut self, mut a: Account) -> (Account, Found) {
        let id = a.id.clone();
        let what = format!("account {id} ({}, {:?})", a.email, a.kind);
        let (status, body) = self.api.read(&format!("/accounts/{id}")).await;
        if status != 200 {
            self.found.fails.push(format!("{what}: acknowledged, but GET answers {status} {body}"));
            return (a, self.found);
        }
        let data = &body["data"];
        let banned = data["status"] == "banned";
        let kinds: Vec<&str> = (data["events"].as_array().unwrap().iter())
            .filter_map(|e| e["kind"].as_str())
            .filter(|k| *k == "banned" || *k == "unbanned")
            .collect();
        // Bans and unbans alternate, starting with a ban.
        let alternate = kinds.iter().enumerate().all(|(i, k)| *k == if i % 2 == 0 { "banned" } else { "unbanned" });
        let as_acked = banned == a.banned && kinds.len() == a.events;
        let as_in_flight = a.toggle_pending && banned != a.banned && kinds.len() == a.events + 1;
        if !alternate || banned != (kinds.len() % 2 == 1) || !(as_acked || as_in_flight) {
            self.found.fails.push(format!(
                "{what}: acknowledged banned={} after {} ban/unban (one more in flight: {}), found status {} \
                 and history {kinds:?}",
                a.banned, a.events, a.toggle_pending, data["status"]
            ));
        }
        if a.toggle_pending {
            self.found.in_flight += 1;
            if as_in_flight {
                self.found.applied += 1;
                a.banned = banned;
                a.events += 1;
            }
            a.toggle_pending = false;
        }

        // Its credentials: every acknowledged one, plus at most the one in flight.
        let (status, body) = self.api.read(&format!("/accounts/{id}/credentials?limit=1000")).await;
        if status != 200 {
            self.found.fails.push(format!("{what}: listing its credentials answers {status} {body}"));
            return (a, self.found);
        }
        let listed: BTreeMap<String, &Value> = (body["data"].as_array().unwrap().iter())
            .map(|c| (c["clientId"].as_str().unwrap().to_owned(), c))
            .collect();
        for client in &a.clients {
            if !listed.contains_key(client) {
                self.found.fails.push(format!("{what}: its acknowledged credential {client} is missing"));
            }
        }
        let known: BTreeSet<&String> = a.clients.iter().collect();
        let extra: Vec<(String, &Value)> =
            listed.iter().filter(|(c, _)| !known.contains(c)).map(|(c, v)| (c.clone(), *v)).collect();
        if a.create_pending {
            self.found.in_flight += 1;
        }
        if extra.len() > usize::from(a.create_pending) {
            let pending = a.create_pending;
            self.found.fails.push(format!("{what}: credentials nobody created: {extra:?} (one in flight: {pending})"));
        }
        a.create_pending = false;
        for (client, c) in extra {
            if c["status"] != "active" || c["generation"] != 1 {
                self.found.fails.push(format!("{what}: credential {client} created in flight is not a fresh one: {c}"));
            }
            self.found.applied += 1;
            a.clients.push(client.clone());
            if a.kind == Kind::Rotate {
                self.found.creds.push(Cred::new(client, id.clone(), None, 0));
            }
        }

        if let (Some(key), Kind::Ban) = (a.key.clone(), a.kind) {
            let client = a.clients[0].clone();
            self.verify(&key, if a.banned { 1200 } else { 1000 }, &client, &what).await;
        }
        self.found.checked += std::mem::take(&mut a.acks);
        a.touched = false;
        (a, self.found)
    }

    async fn credential(mut self, mut c: Cred) -> (Cred, Found) {
        let client = c.client.clone();
        let what = format!("credential {client} of account {}", c.account);
        let (status, body) = self.api.read(&format!("/credentials/{client}")).await;
        if status != 200 {
            self.found.fails.push(format!("{what}: acknowledged, but GET answers {status} {body}"));
            return (c, self.found);
        }
        let data = &body["data"];
        let revoked = data["status"] == "revoked";
        let generation = data["generation"].as_u64().unwrap_or(0);
        let as_acked = revoked == c.revoked && generation == c.generation;
        let as_in_flight = match c.pending {
            Some(Op::Revoke) => revoked && generation == c.generation,
            Some(Op::Rotate) => !revoked && generation == c.generation + 1,
            None => false,
        };
        if !(as_acked || as_in_flight) || data["accountId"] != c.account {
            self.found.fails.push(format!(
                "{what}: acknowledged revoked={} generation {} (in flight: {:?}), found {data}",
                c.revoked, c.generation, c.pending
            ));
        }
        if let Some(op) = c.pending.take() {
            self.found.in_flight += 1;
            if as_in_flight {
                self.found.applied += 1;
                match op {
                    Op::Revoke => c.revoked = true,
                    Op::Rotate => {
                        // Its new key was never answered.
                        c.generation += 1;
                        c.old_key = c.key.take();
                    }
                }
            }
        }
        if c.revoked {
            for k in [c.key.clone(), c.old_key.clone()].into_iter().flatten() {
                self.verify(&k, 1101, &client, &format!("{what} (revoked)")).await;
            }
        } else {
            if let Some(k) = c.key.clone() {
                self.verify(&k, 1000, &client, &format!("{what} (current key)")).await;
            }
            if let Some(k) = c.old_key.clone() {
                self.verify(&k, 1101, &client, &format!("{what} (rotated-out key)")).await;
            }
        }
        self.found.checked += std::mem::take(&mut c.acks);
        c.touched = false;
        (c, self.found)
    }
}

/// keygate's invariants as queries that must return no rows (both dialects).
const INVARIANTS: &[(&str, &str)] = &[
    (
        "an active credential without the secret of its current generation",
        "SELECT c.client_id FROM credentials c WHERE c.status = 'active' AND NOT EXISTS \
         (SELECT 1 FROM credential_secrets s WHERE s.client_id = c.client_id AND s.generation = c.generation)",
    ),
    (
        "a revoked credential that kept a secret",
        "SELECT DISTINCT c.client_id FROM credentials c JOIN credential_secrets s ON s.client_id = c.client_id \
         WHERE c.status = 'revoked'",
    ),
    (
        "a secret of a generation its credential has not reached",
        "SELECT s.client_id FROM credential_secrets s JOIN credentials c ON c.client_id = s.client_id \
         WHERE s.generation > c.generation",
    ),
    (
        "a credential write without its change-feed entry",
        "SELECT 'credential', client_id, updated_at FROM credentials \
         EXCEPT SELECT entity, entity_id, at FROM changes",
    ),
    (
        "a ban or unban without its change-feed entry",
        "SELECT 'account', account_id, at FROM account_events WHERE kind IN ('banned', 'unbanned') \
         EXCEPT SELECT entity, entity_id, at FROM changes",
    ),
    (
        "an account whose status is not its last ban/unban",
        "SELECT a.id FROM accounts a WHERE a.status <> COALESCE((SELECT CASE e.kind WHEN 'banned' THEN \
         'banned' ELSE 'active' END FROM account_events e WHERE e.account_id = a.id AND e.kind IN \
         ('banned', 'unbanned') ORDER BY e.id DESC LIMIT 1), 'active')",
    ),
];

/// A script printing `#name` before each check's rows, and the rows each check expects.
fn check_script(database_checks: &[(&str, &str, &[&str])]) -> (String, Vec<(String, Vec<String>)>) {
    let mut script = String::new();
    let mut expected = Vec::new();
    for (name, sql, rows) in database_checks {
        script.push_str(&format!("SELECT '#{name}';\n{sql};\n"));
        expected.push((name.to_string(), rows.iter().map(|r| r.to_string()).collect()));
    }
    for (name, sql) in INVARIANTS {
        script.push_str(&format!("SELECT '#{name}';\n{sql};\n"));
        expected.push((name.to_string(), Vec::new()));
    }
    (script, expected)
}

/// Runs `tool` with the script on stdin and compares each section with what it expects.
fn run_checks(what: &str, mut tool: Command, script: &str, expected: &[(String, Vec<String>)]) -> Vec<String> {
    use std::io::Write;
    let mut child = (tool.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()))
        .spawn()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    child.stdin.take().unwrap().write_all(script.as_bytes()).expect("writing the checks");
    let out = child.wait_with_output().expect("the checks' output");
    if !out.status.success() {
        return vec![format!("{what} failed ({}): {}{}", out.status, text(&out.stdout), text(&out.stderr))];
    }
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text(&out.stdout).lines() {
        if let Some(name) = line.strip_prefix('#') {
            current = Some(name.to_owned());
            sections.entry(name.to_owned()).or_default();
        } else if let Some(name) = &current {
            sections.get_mut(name).unwrap().push(line.to_owned());
        } else {
            return vec![format!("{what}: unexpected output {line:?}")];
        }
    }
    let mut fails = Vec::new();
    for (name, rows) in expected {
        match sections.get(name) {
            Some(found) if found == rows => {}
            found => fails.push(format!("{what}: {name}: expected {rows:?}, found {found:?}")),
        }
    }
    fails
}

/// `PRAGMA integrity_check`, `foreign_key_check` and the invariants on the SQLite file, with
/// the `sqlite3` tool, while the server that recovered it runs (so the tool is never the last
/// connection and checkpoints nothing).
fn sqlite_checks(db: &Path) -> Vec<String> {
    let (body, expected) = check_script(&[
        ("integrity_check", "PRAGMA integrity_check", &["ok"]),
        ("foreign_key_check", "PRAGMA foreign_key_check", &[]),
    ]);
    let mut tool = Command::new("sqlite3");
    tool.arg("-bail").arg(db);
    run_checks("sqlite3", tool, &format!(".timeout 10000\n{body}"), &expected)
}

/// The directory of the PostgreSQL binaries `scripts/private-postgres.sh` uses.
fn pg_bindir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("psql").exists())
        .collect();
    dirs.sort_by_key(|d| {
        let v = d.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        v.split('.').map(|p| p.parse::<u64>().unwrap_or(0)).collect::<Vec<_>>()
    });
    dirs.pop()
}

fn pg_tool(name: &str) -> Command {
    let mut cmd = Command::new(pg_bindir().map_or_else(|| PathBuf::from(name), |d| d.join(name)));
    scrub_env(&mut cmd);
    for var in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE", "PGOPTIONS"] {
        cmd.env_remove(var);
    }
    cmd
}

/// The invariants on the PostgreSQL database, with `psql`.
fn pg_checks(url: &str) -> Vec<String> {
    let (script, expected) = check_script(&[]);
    let mut tool = pg_tool("psql");
    tool.args([url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
    run_checks("psql", tool, &script, &expected)
}

/// `pg_amcheck` (heap and B-tree structure of every relation), installing amcheck if missing.
fn pg_amcheck(url: &str) -> Result<(), String> {
    let out = pg_tool("pg_amcheck").args(["--install-missing", "--heapallindexed", url]).output();
    match out {
        Ok(out) if out.status.success() && out.stdout.is_empty() => Ok(()),
        Ok(out) => Err(format!("pg_amcheck: {}: {}{}", out.status, text(&out.stdout), text(&out.stderr))),
        Err(e) => Err(format!("pg_amcheck: {e}")),
    }
}

/// On a failure: keeps the database files and the server's log, prints everything, panics.
fn fail(seed: u64, world: &Mutex<World>, keep: &[&Path], extra: &str) -> ! {
    let w = lock(world);
    let dir = std::env::temp_dir().join(format!("keygate-crash-{seed}-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    for path in keep {
        if let Some(name) = path.file_name() {
            let _ = std::fs::copy(path, dir.join(name));
        }
    }
    let mut shown = w.stats.failures.clone();
    shown.extend(w.stats.refused.iter().map(|r| format!("refused before any kill: {r}")));
    let total = shown.len();
    shown.truncate(40);
    panic!(
        "crash consistency failed (KEYGATE_CRASH_SEED={seed}): {total} problem(s){extra}\n{}\n{}\nkept in {}",
        shown.join("\n"),
        w.summary(),
        dir.display()
    );
}

/// Where a test's time went.
#[derive(Default)]
struct Phases {
    write: Duration,
    restart: Duration,
    check: Duration,
    database: Duration,
}

impl Phases {
    fn show(&self) -> String {
        let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        format!(
            "writing until the kill {}, restarts {}, checks over HTTP {}, database checks {}",
            s(self.write),
            s(self.restart),
            s(self.check),
            s(self.database)
        )
    }
}

fn healthy(world: &Mutex<World>) -> bool {
    let w = lock(world);
    w.stats.failures.is_empty() && w.stats.refused.is_empty()
}

// --- the tests ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_at_random_moments_sqlite() {
    let seed = seed();
    eprintln!("crash (SQLite): seed {seed} (KEYGATE_CRASH_SEED={seed} replays the random choices)");
    let with_sqlite3 = require("sqlite3 (PRAGMA integrity_check)", Command::new("sqlite3").arg("-version"));
    let started = Instant::now();
    let mut rng = Rng(seed);
    let sb = Sandbox::with_database();
    let db = sb.path("keygate.db");
    let admin = admin_token();
    let args = ["--admin-token", admin.as_str()];
    let world = Arc::new(Mutex::new(World::default()));
    let mut server = sb.start(&args, &[]).await;
    let mut sql_checks = 0;
    let mut t = Phases::default();
    for cycle in 0..=SQLITE_CYCLES {
        let api = Api::new(&server, &admin);
        // What the last cycle acknowledged, on the restarted server.
        let all = cycle == SQLITE_CYCLES || (cycle > 0 && cycle % FULL_CHECK_EVERY == 0);
        let at = Instant::now();
        check(&api, &world, all, false).await;
        t.check += at.elapsed();
        if with_sqlite3 {
            let at = Instant::now();
            lock(&world).stats.failures.extend(sqlite_checks(&db));
            t.database += at.elapsed();
            sql_checks += 1;
        }
        if !healthy(&world) {
            let (wal, shm) = (sb.path("keygate.db-wal"), sb.path("keygate.db-shm"));
            fail(seed, &world, &[&db, &wal, &shm, &server.stderr], &format!(" after cycle {cycle}"));
        }
        if cycle == SQLITE_CYCLES {
            break;
        }

        let at = Instant::now();
        let writers = start_writers(&api, &world, &mut rng, &format!("s{cycle}"), Some((sb.dir(), Vec::new())));
        tokio::time::sleep(Duration::from_millis(rng.below(MAX_KILL_DELAY_MS + 1))).await;
        writers.cut();
        server.kill9();
        writers.join().await;
        drop(server);
        t.write += at.elapsed();
        let at = Instant::now();
        server = sb.start(&args, &[]).await;
        t.restart += at.elapsed();
    }
    let took = started.elapsed();
    let w = lock(&world);
    eprintln!(
        "crash (SQLite): {SQLITE_CYCLES} kill -9 cycles in {:.1} s ({}), seed {seed}: {}; database \
         checks {sql_checks} (integrity_check ok, foreign_key_check empty, invariants hold)",
        took.as_secs_f64(),
        t.show(),
        w.summary()
    );
    assert_eq!(w.stats.checked, w.acked(), "every acknowledged write was checked");
    assert!(w.acked() >= SQLITE_CYCLES, "too few writes were acknowledged to mean anything: {}", w.summary());
    assert!(w.stats.in_flight > 0, "no write was ever in flight at a kill: {}", w.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_postgres_crashes() {
    let seed = seed();
    eprintln!("crash (PostgreSQL): seed {seed} (KEYGATE_CRASH_SEED={seed} replays the random choices)");
    // A PostgreSQL of this test's own, which it crashes: never the machine's.
    let pg = match keygate_testkit::PrivatePostgres::start() {
        Ok(pg) => Arc::new(pg),
        Err(why) => keygate_testkit::skip_or_fail!("a private PostgreSQL to crash: {why}"),
    };
    let started = Instant::now();
    let mut rng = Rng(seed ^ 0x5057_4743_5241_5348);
    let sb = Sandbox::new();
    let admin = admin_token();
    let args = ["--admin-token", admin.as_str()];
    let env_owned = vec![
        ("KEYGATE_DATABASE_URL".to_owned(), pg.url.clone()),
        ("KEYGATE_MASTER_KEY".to_owned(), PG_MASTER_KEY.into()),
    ];
    let envs: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let world = Arc::new(Mutex::new(World::default()));
    let mut server: Option<Server> = None;
    let mut survived = false;
    let (mut keygate_kills, mut keygate_survivals) = (0, 0);
    let mut t = Phases::default();
    for cycle in 0..=PG_CYCLES {
        let at = Instant::now();
        let srv = match server.take() {
            Some(s) => s,
            None => sb.start(&args, &envs).await,
        };
        t.restart += at.elapsed();
        let api = Api::new(&srv, &admin);
        let all = cycle == PG_CYCLES || (cycle > 0 && cycle % 10 == 0);
        let at = Instant::now();
        check(&api, &world, all, survived).await;
        t.check += at.elapsed();
        let at = Instant::now();
        lock(&world).stats.failures.extend(pg_checks(&pg.url));
        t.database += at.elapsed();
        if !healthy(&world) {
            fail(seed, &world, &[&srv.stderr], &format!(" after cycle {cycle}"));
        }
        if cycle == PG_CYCLES {
            server = Some(srv);
            break;
        }

        let at = Instant::now();
        let writers = start_writers(&api, &world, &mut rng, &format!("p{cycle}"), Some((sb.dir(), env_owned.clone())));
        tokio::time::sleep(Duration::from_millis(rng.below(MAX_KILL_DELAY_MS + 1))).await;
        let kill_keygate = rng.chance(50);
        let keygate_first = rng.chance(50);
        writers.cut();
        let mut srv = Some(srv);
        if kill_keygate && keygate_first {
            srv.take().unwrap().kill9();
        }
        let p = pg.clone();
        tokio::task::spawn_blocking(move || p.kill()).await.unwrap();
        if kill_keygate && !keygate_first {
            srv.take().unwrap().kill9();
        }
        writers.join().await;
        t.write += at.elapsed();
        let at = Instant::now();
        let p = pg.clone();
        tokio::task::spawn_blocking(move || p.resume()).await.unwrap();
        t.restart += at.elapsed();
        survived = srv.is_some();
        if survived {
            keygate_survivals += 1;
        } else {
            keygate_kills += 1;
        }
        server = srv;
    }
    let amcheck = pg_amcheck(&pg.url);
    if let Err(e) = &amcheck {
        lock(&world).stats.failures.push(e.clone());
        fail(seed, &world, &[&server.as_ref().unwrap().stderr], " (pg_amcheck)");
    }
    let took = started.elapsed();
    let w = lock(&world);
    eprintln!(
        "crash (PostgreSQL): {PG_CYCLES} database crashes in {:.1} s ({}; keygate killed too {keygate_kills} times, \
         kept running {keygate_survivals} times), seed {seed}: {}; verify answers that waited for the \
         feed {}; pg_amcheck clean, invariants hold",
        took.as_secs_f64(),
        t.show(),
        w.summary(),
        w.stats.settled
    );
    assert_eq!(w.stats.checked, w.acked(), "every acknowledged write was checked");
    assert!(w.acked() >= PG_CYCLES, "too few writes were acknowledged to mean anything: {}", w.summary());
}

//! Several keygate nodes on one PostgreSQL: a revoke, rotate or ban on one node is refused on
//! the others within the propagation bound (and a disable, expiry, permission, allowlist or
//! role change, `keys`), also when notifications are lost and when
//! PostgreSQL restarts. Needs PostgreSQL (skips loudly without it, fails under
//! KEYGATE_TEST_REQUIRE_ALL=1).
//!
//! The tests here share the one PostgreSQL server, and one of them restarts it: they run one at
//! a time (a process-wide lock).

mod credits;
mod keys;
mod ratelimits;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keygate_core::Secret;
use keygate_server::{Application, Config};
use keygate_testkit::TestDb;
use serde_json::{Value, json};
use tokio::sync::{Mutex, oneshot};

static SERIAL: Mutex<()> = Mutex::const_new(());
const ADMIN: &str = "kga_cluster-test-admin-token-000000000000";
const MASTER: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
/// The documented bound with the default feed interval (250 ms): one interval plus a query.
const BOUND: Duration = Duration::from_millis(1000);

struct Node {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start_node(url: &str, store_timeout: Option<Duration>) -> Node {
    start_node_with(url, |config| {
        if let Some(t) = store_timeout {
            config.store_timeout = t;
        }
    })
    .await
}

/// A node on `url` with the cluster's master key and admin token, changed by `configure`.
async fn start_node_with(url: &str, configure: impl FnOnce(&mut Config)) -> Node {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: url.into(),
        master_key: Some(Secret::new(MASTER)),
        admin_token: Some(Secret::new(ADMIN)),
        workers: 1,
        ..Config::default()
    };
    configure(&mut config);
    let app = Application::build_with_access_log(config, Box::new(keygate_testkit::CapturedStderr)).await.unwrap();
    let addr = app.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    Node { addr, _stop: tx }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn admin(c: &reqwest::Client, node: &Node, path: &str, body: Value) -> Value {
    let res =
        c.post(format!("http://{}/admin/v1{path}", node.addr)).bearer_auth(ADMIN).json(&body).send().await.unwrap();
    let status = res.status();
    let v: Value = res.json().await.unwrap();
    assert!(status.is_success(), "admin {path}: {status} {v}");
    v["data"].clone()
}

async fn verify(c: &reqwest::Client, node: &Node, header: (&str, &str)) -> (u16, i64) {
    match c.get(format!("http://{}/auth/verify", node.addr)).header(header.0, header.1).send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            let v: Value = res.json().await.unwrap_or(Value::Null);
            (status, v["code"].as_i64().unwrap_or(-1))
        }
        Err(_) => (0, -1),
    }
}

/// An account with one credential, made through `node`; returns (account id, clientId, key).
async fn customer(c: &reqwest::Client, node: &Node, n: usize) -> (String, String, String) {
    let email = format!("c{n}-{}@example.com", rand_suffix());
    let account = admin(c, node, "/accounts", json!({ "email": email })).await;
    let id = account["id"].as_str().unwrap().to_owned();
    let cred = admin(c, node, &format!("/accounts/{id}/credentials"), json!({})).await;
    (id, cred["clientId"].as_str().unwrap().to_owned(), cred["apiKey"].as_str().unwrap().to_owned())
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// Polls `node` until the answer's code is `code`; returns how long it took.
async fn time_until(c: &reqwest::Client, node: &Node, header: (&str, &str), code: i64, since: Instant) -> Duration {
    loop {
        if verify(c, node, header).await.1 == code {
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(10), "node {} never answered {code}", node.addr);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let (p50, p99, max) = (percentile(&samples, 0.5), percentile(&samples, 0.99), *samples.last().unwrap());
    eprintln!("propagation [{what}] n={} p50={p50:?} p99={p99:?} max={max:?}", samples.len());
    assert!(max < BOUND, "{what}: a change took {max:?} to reach another node (bound {BOUND:?})");
}

async fn db() -> Option<TestDb> {
    match TestDb::create().await {
        Ok(db) => Some(db),
        Err(why) => {
            if keygate_testkit::require_all() {
                panic!("KEYGATE_TEST_REQUIRE_ALL=1 and PostgreSQL is missing: {why}");
            }
            eprintln!("\n!!! SKIPPED cluster test: {why}\n");
            None
        }
    }
}

/// One change on `nodes[0]`, measured until both other nodes refuse.
async fn trial(c: &reqwest::Client, nodes: &[Node], n: usize, kind: &str) -> Vec<Duration> {
    let (account, client_id, key) = customer(c, &nodes[0], n).await;
    let header = ("x-api-key", key.as_str());
    // Warm every node's cache, so the change must reach them through the feed.
    for node in nodes {
        assert_eq!(verify(c, node, header).await, (200, 1000));
    }
    let start = Instant::now();
    let expected = match kind {
        "revoke" => {
            admin(c, &nodes[0], &format!("/credentials/{client_id}/revoke"), json!({})).await;
            1101
        }
        "rotate" => {
            admin(c, &nodes[0], &format!("/credentials/{client_id}/rotate"), json!({})).await;
            1101
        }
        "ban" => {
            admin(c, &nodes[0], &format!("/accounts/{account}/ban"), json!({"reason": "test"})).await;
            1200
        }
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    for node in &nodes[1..] {
        out.push(time_until(c, node, header, expected, start).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_reach_every_node_within_the_bound() {
    let _serial = SERIAL.lock().await;
    let Some(db) = db().await else { return };
    let c = client();
    let nodes = vec![start_node(&db.url, None).await, start_node(&db.url, None).await, start_node(&db.url, None).await];
    let mut samples = Vec::new();
    for i in 0..45 {
        let kind = ["revoke", "rotate", "ban"][i % 3];
        samples.extend(trial(&c, &nodes, i, kind).await);
    }
    report("notify", samples);

    // Kill the LISTEN connections: polling alone must keep the bound, and listeners come back.
    let pg = sqlx::PgPool::connect(&db.url).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&pg)
    .await
    .unwrap();
    assert_eq!(killed, 3, "each node holds one LISTEN connection");
    let mut samples = Vec::new();
    for i in 0..15 {
        samples.extend(trial(&c, &nodes, 100 + i, ["revoke", "ban", "rotate"][i % 3]).await);
    }
    report("after pg_terminate_backend of listeners", samples);
    let since = Instant::now();
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(&pg)
        .await
        .unwrap();
        if listening == 3 {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(10), "listeners were not re-established: {listening} of 3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A change whose notification never comes (written straight into the tables, no NOTIFY):
    // the periodic reconciliation poll alone must apply it within the bound.
    let mut samples = Vec::new();
    for i in 0..10 {
        let (_, client_id, key) = customer(&c, &nodes[0], 200 + i).await;
        for node in &nodes {
            assert_eq!(verify(&c, node, ("x-api-key", &key)).await, (200, 1000));
        }
        let start = Instant::now();
        let mut tx = pg.begin().await.unwrap();
        sqlx::query("UPDATE credentials SET status = 'revoked' WHERE client_id = $1")
            .bind(&client_id)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("INSERT INTO changes (entity, entity_id, at) VALUES ('credential', $1, 0)")
            .bind(&client_id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        for node in &nodes {
            samples.push(time_until(&c, node, ("x-api-key", &key), 1101, start).await);
        }
    }
    report("notification lost, polling only", samples);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_survive_a_postgres_restart() {
    let _serial = SERIAL.lock().await;
    // A PostgreSQL of this test's own, which it may stop and start: never the machine's.
    let pg = match keygate_testkit::PrivatePostgres::start() {
        Ok(pg) => pg,
        Err(why) => keygate_testkit::skip_or_fail!("a private PostgreSQL to restart: {why}"),
    };
    let db = pg.url.clone();
    let c = client();
    let fail_static = Some(Duration::from_millis(500));
    let nodes = vec![
        start_node(&db, fail_static).await,
        start_node(&db, fail_static).await,
        start_node(&db, fail_static).await,
    ];
    let (_, _, warm_key) = customer(&c, &nodes[0], 1).await;
    let (_, _, cold_key) = customer(&c, &nodes[0], 2).await;
    let (account, client_id, key) = customer(&c, &nodes[0], 3).await;
    // Every node knows these credentials (and caches them).
    for node in &nodes {
        time_until(&c, node, ("x-api-key", &warm_key), 1000, Instant::now()).await;
        time_until(&c, node, ("x-api-key", &key), 1000, Instant::now()).await;
    }

    // Stop PostgreSQL as a crash would: cached credentials keep working (fail-static), an
    // uncached one is refused quickly with 1503 (no hang, no 500).
    pg.kill();
    let outage = async {
        for node in &nodes {
            // Once the node's store connections have noticed the outage, the uncached key gets 1503.
            time_until(&c, node, ("x-api-key", &cold_key), 1503, Instant::now()).await;
            assert_eq!(verify(&c, node, ("x-api-key", &warm_key)).await, (200, 1000), "fail-static");
            let t = Instant::now();
            assert_eq!(verify(&c, node, ("x-api-key", &cold_key)).await, (503, 1503));
            assert!(t.elapsed() < Duration::from_secs(3), "an unverifiable request must not hang");
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(30), outage).await;
    pg.resume();
    result.expect("checks during the outage finished");

    // After the restart the nodes recover by themselves: new credentials verify everywhere and
    // changes propagate within the bound again.
    let start = Instant::now();
    for node in &nodes {
        time_until(&c, node, ("x-api-key", &cold_key), 1000, start).await;
    }
    let start = Instant::now();
    admin(&c, &nodes[0], &format!("/credentials/{client_id}/revoke"), json!({})).await;
    let mut samples = Vec::new();
    for node in &nodes[1..] {
        samples.push(time_until(&c, node, ("x-api-key", &key), 1101, start).await);
    }
    report("after PostgreSQL restart", samples);
    admin(&c, &nodes[1], &format!("/accounts/{account}/ban"), json!({})).await;
}

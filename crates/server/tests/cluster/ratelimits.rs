//! Rate limits shared by three nodes on one PostgreSQL through one Redis (a private
//! `redis-server`, scripts/private-redis.sh): the README's cluster bound under a load spread over
//! the nodes, and what happens while Redis is down (fail-open: every node goes on counting on its
//! own; fail-closed: limited requests answer 1503) and after it is back.

use std::time::{Duration, Instant};

use keygate_core::Secret;
use keygate_testkit::PrivateRedis;
use serde_json::{Value, json};

use crate::{ADMIN, Node, SERIAL, client, customer, db, start_node_with};

async fn start_shared_node(url: &str, redis: &str, closed: bool) -> Node {
    start_node_with(url, |config| {
        config.access_log = false;
        config.limits.redis_url = Some(Secret::new(redis));
        if closed {
            config.limits.redis_failure = keygate_auth::ratelimit::FailMode::Closed;
        }
    })
    .await
}

/// Three nodes sharing counters through `redis` (fail-open).
async fn three_shared_nodes(url: &str, redis: &str) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_shared_node(url, redis, false).await);
    }
    nodes
}

fn redis() -> Option<PrivateRedis> {
    match PrivateRedis::start() {
        Ok(r) => Some(r),
        Err(why) => {
            if keygate_testkit::require_all() {
                panic!("KEYGATE_TEST_REQUIRE_ALL=1 and redis-server is missing: {why}");
            }
            eprintln!("\n!!! SKIPPED shared rate-limit test: {why}\n");
            None
        }
    }
}

async fn limit(c: &reqwest::Client, node: &Node, client_id: &str, limit: u64, duration: &str) {
    let body = json!({"ratelimits": [{"name": "requests", "limit": limit, "duration": duration}]});
    let res = c
        .patch(format!("http://{}/admin/v1/credentials/{client_id}", node.addr))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
}

/// Waits until every node applies the limit (its answers carry RateLimit-Policy), then for the
/// bucket to be full again.
async fn wait_limited(c: &reqwest::Client, nodes: &[Node], key: &str, window: Duration) {
    let start = Instant::now();
    for node in nodes {
        loop {
            let res = c.get(format!("http://{}/auth/verify", node.addr)).header("x-api-key", key).send().await.unwrap();
            if res.headers().contains_key("ratelimit-policy") {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "node {} never applied the limit", node.addr);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(window + Duration::from_millis(200)).await;
}

/// Outcomes of a load of `rate` requests per second spread evenly over `nodes` for `span`, from
/// one task per node: (admitted, refused with 1005, anything else), and `during` is called
/// with the elapsed time on every request of node 0 (to inject faults).
async fn load(nodes: &[Node], key: &str, rate: u32, span: Duration) -> (u64, u64, Vec<String>) {
    let per_node = rate / nodes.len() as u32;
    let gap = Duration::from_secs(1) / per_node;
    let mut tasks = Vec::new();
    for node in nodes {
        let (url, key) = (format!("http://{}/auth/verify", node.addr), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let start = Instant::now();
            let (mut ok, mut limited, mut other) = (0u64, 0u64, Vec::new());
            let mut n = 0u32;
            while start.elapsed() < span {
                tokio::time::sleep_until((start + gap * n).into()).await;
                n += 1;
                match c.get(&url).header("x-api-key", &key).send().await {
                    Ok(res) => match res.status().as_u16() {
                        200 => ok += 1,
                        429 => limited += 1,
                        s => other.push(format!("HTTP {s}: {}", res.text().await.unwrap_or_default())),
                    },
                    Err(e) => other.push(e.to_string()),
                }
            }
            (ok, limited, other)
        }));
    }
    let mut total = (0, 0, Vec::new());
    for t in tasks {
        let (ok, limited, other) = t.await.unwrap();
        total.0 += ok;
        total.1 += limited;
        total.2.extend(other);
    }
    total
}

async fn readiness(c: &reqwest::Client, node: &Node) -> Value {
    let res = c.get(format!("http://{}/readyz", node.addr)).send().await.unwrap();
    res.json().await.unwrap()
}

/// The README's cluster bound: a limit L per D, 5L per D spread over three nodes for 10 D, admits
/// between 0.9 x 10L and 1.1 x 10L + L.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_a_limit_through_redis() {
    let _serial = SERIAL.lock().await;
    let Some(db) = db().await else { return };
    let Some(redis) = redis() else { return };
    let nodes = three_shared_nodes(&db.url, &redis.url).await;
    let c = client();
    let (_, client_id, key) = customer(&c, &nodes[0], 900).await;
    let l = 40u64;
    limit(&c, &nodes[0], &client_id, l, "1s").await;
    wait_limited(&c, &nodes, &key, Duration::from_secs(1)).await;
    assert_eq!(readiness(&c, &nodes[1]).await["data"]["ratelimits"], "shared");

    let (admitted, limited, other) = load(&nodes, &key, 5 * l as u32, Duration::from_secs(10)).await;
    eprintln!(
        "shared limit {l}/1s over 3 nodes for 10 s: {admitted} admitted, {limited} refused, {} other",
        other.len()
    );
    assert!(other.is_empty(), "{other:?}");
    let (low, high) = ((0.9 * 10.0 * l as f64) as u64, (1.1 * 10.0 * l as f64) as u64 + l);
    assert!((low..=high).contains(&admitted), "{admitted} admitted, outside [{low}, {high}] ({limited} refused)");
}

/// Fail-open: with Redis killed mid-run no node errs, each counts on its own (so at most three
/// times the limit pass meanwhile), and sharing resumes by itself when Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_fails_open_and_sharing_recovers() {
    let _serial = SERIAL.lock().await;
    let Some(db) = db().await else { return };
    let Some(redis) = redis() else { return };
    let nodes = three_shared_nodes(&db.url, &redis.url).await;
    let c = client();
    let (_, client_id, key) = customer(&c, &nodes[0], 901).await;
    let l = 30u64;
    limit(&c, &nodes[0], &client_id, l, "1s").await;
    wait_limited(&c, &nodes, &key, Duration::from_secs(1)).await;

    redis.kill();
    let (admitted, _, other) = load(&nodes, &key, 5 * l as u32, Duration::from_secs(3)).await;
    assert!(other.is_empty(), "a node erred while Redis was down: {other:?}");
    // Each node on its own: at most its burst and its rate, three times over.
    assert!(admitted <= 3 * (l + 3 * l) + 3, "{admitted} admitted in 3 s with Redis down");
    assert!(admitted >= 3 * l, "fail-open still admits: {admitted}");
    assert_eq!(readiness(&c, &nodes[0]).await["data"]["ratelimits"], "shared, redis unreachable");

    redis.resume();
    // Every node's probe finds Redis back within a second or so.
    let start = Instant::now();
    for node in &nodes {
        while readiness(&c, node).await["data"]["ratelimits"] != "shared" {
            assert!(start.elapsed() < Duration::from_secs(10), "node {} never shared again", node.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!("sharing resumed {:?} after Redis came back", start.elapsed());
    // The buckets were lost with Redis (it keeps nothing on disk): a full one to start again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (admitted, _, other) = load(&nodes, &key, 5 * l as u32, Duration::from_secs(4)).await;
    assert!(other.is_empty(), "{other:?}");
    // Shared again: one limit for the three, not three.
    let high = (1.1 * 4.0 * l as f64) as u64 + l;
    assert!(admitted <= high, "{admitted} admitted in 4 s after Redis came back (at most {high} shared)");
    assert_eq!(readiness(&c, &nodes[0]).await["data"]["ratelimits"], "shared");
}

/// Fail-closed: while Redis is down, requests of limited credentials answer 1503 (others pass),
/// and they pass again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_fails_closed_when_configured() {
    let _serial = SERIAL.lock().await;
    let Some(db) = db().await else { return };
    let Some(redis) = redis() else { return };
    let node = start_shared_node(&db.url, &redis.url, true).await;
    let c = client();
    let (_, limited_id, limited_key) = customer(&c, &node, 902).await;
    let (_, _, free_key) = customer(&c, &node, 903).await;
    limit(&c, &node, &limited_id, 1000, "1s").await;
    wait_limited(&c, std::slice::from_ref(&node), &limited_key, Duration::from_millis(10)).await;

    redis.kill();
    let verify = |key: String| {
        let c = c.clone();
        let url = format!("http://{}/auth/verify", node.addr);
        async move {
            let res = c.get(url).header("x-api-key", key).send().await.unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (status, body["code"].as_i64().unwrap())
        }
    };
    // Units leased before may still pass for a moment; then 1503.
    let start = Instant::now();
    loop {
        let answer = verify(limited_key.clone()).await;
        if answer == (503, 1503) {
            break;
        }
        assert_eq!(answer, (200, 1000));
        assert!(start.elapsed() < Duration::from_secs(5), "fail-closed never refused");
    }
    assert_eq!(verify(free_key.clone()).await, (200, 1000), "an unlimited key does not need Redis");

    redis.resume();
    let start = Instant::now();
    while verify(limited_key.clone()).await != (200, 1000) {
        assert!(start.elapsed() < Duration::from_secs(10), "never recovered after Redis came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! A credits balance spent by three nodes on one PostgreSQL at full speed: never overspent (each
//! node spends only what it leased), nothing stranded once the load stops and the leases go back
//! (admitted + what is left == the balance, exactly), and a top-up made on one node usable on the
//! others within the change-feed bound. (A node killed with `kill -9` mid-run: the e2e test
//! `credits::a_node_killed_mid_run_loses_no_credit_beyond_one_flush`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{ADMIN, BOUND, Node, SERIAL, client, customer, db, start_node_with};

async fn start_credit_node(url: &str) -> Node {
    start_node_with(url, |config| {
        config.access_log = false;
        config.credits.flush = Duration::from_millis(100);
        config.credits.idle_return = Duration::from_secs(2);
        config.credits.lease_ttl = Duration::from_secs(3);
    })
    .await
}

async fn admin_call(
    c: &reqwest::Client,
    method: reqwest::Method,
    node: &Node,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut req = c.request(method, format!("http://{}/admin/v1{path}", node.addr)).bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let v: Value = res.json().await.unwrap();
    assert!(status.is_success(), "admin {path}: {status} {v}");
    v["data"].clone()
}

/// Spends from `key` on every node with `per_node` concurrent clients until each client has been
/// refused `refusals_to_stop` times in a row; returns what was admitted on each node.
async fn spend_until_refused(nodes: &[Node], key: &str, per_node: usize) -> Vec<u64> {
    let counts: Vec<Arc<AtomicU64>> = nodes.iter().map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for _ in 0..per_node {
            let (url, key, count) = (format!("http://{}/auth/verify", node.addr), key.to_owned(), counts[i].clone());
            tasks.push(tokio::spawn(async move {
                let c = client();
                loop {
                    let res = c.get(&url).header("x-api-key", &key).send().await.unwrap();
                    match res.status().as_u16() {
                        200 => count.fetch_add(1, Ordering::Relaxed),
                        402 => return,
                        s => panic!("unexpected HTTP {s}: {}", res.text().await.unwrap()),
                    };
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

#[tokio::test]
async fn three_nodes_spend_one_balance_exactly() {
    let _serial = SERIAL.lock().await;
    let Some(db) = db().await else { return };
    let nodes = [start_credit_node(&db.url).await, start_credit_node(&db.url).await, start_credit_node(&db.url).await];
    let c = client();
    let (_, client_id, key) = customer(&c, &nodes[0], 0).await;
    let path = format!("/credentials/{client_id}");
    let balance = 10_000_u64;
    admin_call(&c, reqwest::Method::PATCH, &nodes[0], &path, Some(json!({"credits": {"remaining": balance}}))).await;

    let started = Instant::now();
    let first = spend_until_refused(&nodes, &key, 8).await;
    let admitted: u64 = first.iter().sum();
    eprintln!(
        "credits: {admitted} of {balance} admitted by the first refusal on every client ({first:?}), {:?}",
        started.elapsed()
    );
    assert!(admitted <= balance, "overspent: {admitted} > {balance}");

    // Once the load stops, the leases go back (idle for 2 s; the top-up below must come through the feed, well before that): what was not spent is in the
    // balance, to the credit.
    let mut left = 0;
    let wait = Instant::now();
    while wait.elapsed() < Duration::from_secs(10) {
        let b = admin_call(&c, reqwest::Method::GET, &nodes[1], &format!("{path}/credits"), None).await;
        left = b["remaining"].as_u64().unwrap();
        if b["leased"] == 0 && admitted + left == balance {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("credits: {left} left in the balance after the leases went back");
    assert_eq!(admitted + left, balance, "admitted + left must be the balance: nothing lost, nothing stranded");
    // Whatever a node could not use because others held it is spendable now, on any node.
    let second: u64 = spend_until_refused(&nodes, &key, 2).await.iter().sum();
    assert_eq!(admitted + second, balance, "every credit is spent in the end, exactly once");

    // A top-up on one node is usable on the others within the feed bound.
    let topped = Instant::now();
    admin_call(&c, reqwest::Method::POST, &nodes[0], &format!("{path}/credits"), Some(json!({"add": 2}))).await;
    for node in &nodes[1..] {
        loop {
            let (status, _) = crate::verify(&c, node, ("x-api-key", &key)).await;
            if status == 200 {
                break;
            }
            assert!(topped.elapsed() < BOUND, "a top-up took over {BOUND:?} to reach node {}", node.addr);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!("credits: a top-up reached both other nodes in {:?}", topped.elapsed());
}

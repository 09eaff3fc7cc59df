//! Credits across real processes: three `keygate serve` on one PostgreSQL spend one balance at
//! full speed; one is killed with `kill -9` mid-run and started again. What the README promises:
//! nothing overspent beyond what the killed node spent since its last report (one `flush`), no
//! credit vanishing (its leases expire and go back), and after the load every credit is spent
//! exactly once but for that bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Sandbox, Server, admin_token, client, now_ms};

const MASTER: &str = "6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d";
const FLUSH_MS: u64 = 200;
const LEASE_TTL_MS: u64 = 2000;

async fn node(sb: &Sandbox, url: &str, token: &str) -> Server {
    let envs = [("KEYGATE_DATABASE_URL", url), ("KEYGATE_MASTER_KEY", MASTER), ("KEYGATE_ADMIN_TOKEN", token)];
    let (flush, ttl) = (format!("{FLUSH_MS}ms"), format!("{LEASE_TTL_MS}ms"));
    sb.start(
        &[
            "--access-log",
            "false",
            "--credits-flush",
            &flush,
            "--credits-lease-ttl",
            &ttl,
            "--credits-idle-return",
            "1s",
        ],
        &envs,
    )
    .await
}

/// Clients spending from `key` on `server` until `stop` (or, with `until_refused`, until each
/// is refused): returns when each request was admitted (Unix ms, when its answer came), and
/// counts them in `count` meanwhile.
fn spend(
    server: &Server,
    key: &str,
    clients: usize,
    stop: Arc<AtomicBool>,
    until_refused: bool,
    count: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<i64>> {
    let (url, key) = (server.url("/auth/verify"), key.to_owned());
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (url, key, stop, count) = (url.clone(), key.clone(), stop.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                let http = client();
                let mut admitted = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match http.get(&url).header("x-api-key", &key).send().await {
                        Ok(r) if r.status() == 200 => {
                            admitted.push(now_ms());
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) if r.status() == 402 && until_refused => break,
                        Ok(r) if r.status() == 402 => tokio::time::sleep(Duration::from_millis(20)).await,
                        Ok(r) => panic!("unexpected HTTP {}", r.status()),
                        // The node was killed under it.
                        Err(_) => break,
                    }
                }
                admitted
            }));
        }
        let mut admitted = Vec::new();
        for t in tasks {
            admitted.extend(t.await.unwrap_or_default());
        }
        admitted
    })
}

#[tokio::test]
async fn a_node_killed_mid_run_loses_no_credit_beyond_one_flush() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    let sb = Sandbox::new();
    let token = admin_token();
    let mut nodes =
        vec![node(&sb, &db.url, &token).await, node(&sb, &db.url, &token).await, node(&sb, &db.url, &token).await];
    let account = nodes[0].admin(&token, "POST", "/accounts", Some(json!({"email": "kill9@example.com"}))).await;
    let id = account.body["data"]["id"].as_str().unwrap().to_owned();
    let cred = nodes[0].admin(&token, "POST", &format!("/accounts/{id}/credentials"), None).await;
    let (client_id, key) = (
        cred.body["data"]["clientId"].as_str().unwrap().to_owned(),
        cred.body["data"]["apiKey"].as_str().unwrap().to_owned(),
    );
    let balance = 10_000_u64;
    let path = format!("/credentials/{client_id}");
    let r = nodes[0].admin(&token, "PATCH", &path, Some(json!({"credits": {"remaining": balance}}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Load on all three; node 2 is killed in the middle of it: once the three have spent a
    // quarter of the balance (or after 1.5 s, on a slow machine), while every node still spends.
    let stop = Arc::new(AtomicBool::new(false));
    let killed_stop = Arc::new(AtomicBool::new(false));
    let spent = Arc::new(AtomicU64::new(0));
    let survivors = [
        spend(&nodes[0], &key, 6, stop.clone(), false, spent.clone()),
        spend(&nodes[1], &key, 6, stop.clone(), false, spent.clone()),
    ];
    let victim = spend(&nodes[2], &key, 6, killed_stop.clone(), false, spent.clone());
    let load_started = Instant::now();
    while spent.load(Ordering::Relaxed) < balance / 4 && load_started.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let victim_pid = nodes[2].pid();
    nodes[2].kill9();
    let killed_at = now_ms();
    killed_stop.store(true, Ordering::Relaxed);
    let victim_times = victim.await.unwrap();
    let victim_admitted = victim_times.len() as u64;
    let victim_log = nodes[2].stderr_text();
    // What the database holds of the killed node (its holder names its pid): the credits it was
    // granted, what it reported spent, and when it last wrote (a report, or a grant) before the kill.
    let rows = db
        .rows_i64(&format!(
            "SELECT granted, spent, expires_at - {LEASE_TTL_MS} FROM credit_leases WHERE holder LIKE '%-{victim_pid}-%'"
        ))
        .await
        .expect("reading credit_leases");
    assert_eq!(rows.len(), 1, "the killed node (pid {victim_pid}) held one lease: {rows:?}");
    let (granted, reported, last_write) = (rows[0][0], rows[0][1], rows[0][2]);
    let since_report = killed_at - last_write;
    // It comes back (a new process, new leases) and joins the spending.
    nodes[2] = node(&sb, &db.url, &token).await;
    let back = spend(&nodes[2], &key, 6, stop.clone(), false, Arc::default());
    let started = Instant::now();
    // Until the balance is spent as far as the nodes can tell: every node refuses (a probe that
    // passes spent a credit too, and counts).
    let mut probes = 0;
    loop {
        let mut refused = 0;
        for n in &nodes {
            match n.verify_key(&key).await.status {
                402 => refused += 1,
                200 => probes += 1,
                s => panic!("unexpected HTTP {s}"),
            }
        }
        if refused == nodes.len() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the balance was never spent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut admitted = victim_admitted + probes;
    for t in survivors {
        admitted += t.await.unwrap().len() as u64;
    }
    admitted += back.await.unwrap().len() as u64;

    // The killed node's leases expire (2 s) and are reclaimed: what it had not reported spending
    // comes back; every node's idle leases go back too (1 s). Spend what is left, again after the
    // next give-backs while some is left (a node refuses while others hold what is left).
    let mut left = i64::MAX;
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(if round == 0 { 3000 } else { 1500 })).await;
        let b = nodes[0].admin(&token, "GET", &format!("{path}/credits"), None).await;
        eprintln!("credits kill -9: before drain {round}: {}", b.body["data"]);
        left = b.body["data"]["remaining"].as_i64().unwrap();
        if left == 0 {
            break;
        }
        let drain: Vec<_> = nodes.iter().map(|n| spend(n, &key, 2, Arc::default(), true, Arc::default())).collect();
        for t in drain {
            admitted += t.await.unwrap().len() as u64;
        }
    }
    let over = admitted as i64 + left - balance as i64;
    let unreported = victim_admitted as i64 - reported;
    let last_flush = victim_times.iter().filter(|t| **t > killed_at - FLUSH_MS as i64).count();
    eprintln!(
        "credits kill -9: balance {balance}, admitted {admitted}, left {left}: {over} admitted beyond the balance; \
         killed node: {victim_admitted} admitted before the kill ({last_flush} in its last {FLUSH_MS} ms), granted \
         {granted}, reported spent {reported} ({unreported} unreported), last written {since_report} ms before the kill"
    );
    for line in victim_log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")) {
        eprintln!("credits kill -9: killed node's log: {line}");
    }
    // The killed node reported at least every flush (plus the report's own time: a loaded
    // machine's PostgreSQL commit), so what it spent unreported is about one flush of its traffic.
    assert!(
        since_report <= FLUSH_MS as i64 + 500,
        "the killed node last reported {since_report} ms before its kill (flush {FLUSH_MS} ms)"
    );
    // So what came back is at most that traffic (answers of requests charged before the last
    // report may arrive after it: counted in the window, which can only widen it).
    let window = victim_times.iter().filter(|t| **t > killed_at - FLUSH_MS as i64 - 500).count() as i64;
    assert!(
        unreported <= window + 6,
        "{unreported} unreported, more than the {window} admitted in the last flush + 500 ms"
    );
    // What came back is exactly what the database had not been told was spent: nothing more
    // appears (a request the killed node charged but could not answer is not counted as
    // admitted, yet was spent: at most one per client it had, and it vanishes only if reported).
    assert!(over <= unreported, "{over} credits beyond the balance, more than the {unreported} unreported");
    assert!(over >= -6, "{} credits vanished", -over);
    assert_eq!(left, 0, "everything was spendable again once the leases went back");
    for n in &mut nodes {
        n.stop();
    }
}

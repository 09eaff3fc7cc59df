//! What a key may do, changed on one node, is applied by the others within the propagation
//! bound: disable, expiry, a removed permission, an allowlist, a role's change (which reloads
//! every credential holding it).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{ADMIN, Node, SERIAL, client, customer, db, report, start_node};

async fn send(c: &reqwest::Client, node: &Node, method: reqwest::Method, path: &str, body: Value) {
    let res = c.request(method, format!("http://{}/admin/v1{path}", node.addr)).bearer_auth(ADMIN).json(&body);
    let res = res.send().await.unwrap();
    let status = res.status();
    assert!(status.is_success(), "{path}: {status} {}", res.text().await.unwrap_or_default());
}

async fn code(c: &reqwest::Client, node: &Node, key: &str, require: &str) -> i64 {
    let res = c
        .get(format!("http://{}/auth/verify", node.addr))
        .header("x-api-key", key)
        .header("x-keygate-require", require)
        .send()
        .await
        .unwrap();
    res.json::<Value>().await.unwrap()["code"].as_i64().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_changes_reach_every_node_within_the_bound() {
    let _serial = SERIAL.lock().await;
    let Some(db) = db().await else { return };
    let c = client();
    let nodes = vec![start_node(&db.url, None).await, start_node(&db.url, None).await, start_node(&db.url, None).await];
    send(&c, &nodes[0], reqwest::Method::PUT, "/roles/cluster-reader", json!({"permissions": ["reports.read"]})).await;
    let mut samples = Vec::new();
    for i in 0..25 {
        let kind = ["disable", "expire", "permission", "allowlist", "role"][i % 5];
        let (_, client_id, key) = customer(&c, &nodes[0], 300 + i).await;
        let path = format!("/credentials/{client_id}");
        let grant = json!({"permissions": ["reports.read"], "roles": ["cluster-reader"]});
        send(&c, &nodes[0], reqwest::Method::PATCH, &path, grant).await;
        for node in &nodes {
            assert_eq!(code(&c, node, &key, "reports.read").await, 1000, "{kind}: before the change");
        }
        let start = Instant::now();
        let (method, target, body, expected) = match kind {
            "disable" => (reqwest::Method::PATCH, path.clone(), json!({"enabled": false}), 1101),
            "expire" => {
                let now = keygate_store::now_ms();
                (reqwest::Method::PATCH, path.clone(), json!({"expiresAt": now + 50}), 1101)
            }
            // The key keeps the permission through its role: remove both.
            "permission" => (reqwest::Method::PATCH, path.clone(), json!({"permissions": [], "roles": []}), 1009),
            "allowlist" => (reqwest::Method::PATCH, path.clone(), json!({"ipAllowlist": ["203.0.113.0/24"]}), 1009),
            // The role loses the permission; the key's own goes first.
            "role" => {
                send(&c, &nodes[0], reqwest::Method::PATCH, &path, json!({"permissions": []})).await;
                for node in &nodes {
                    assert_eq!(code(&c, node, &key, "reports.read").await, 1000, "the role still grants it");
                }
                (
                    reqwest::Method::PUT,
                    "/roles/cluster-reader".to_owned(),
                    json!({"permissions": ["reports.list"]}),
                    1009,
                )
            }
            _ => unreachable!(),
        };
        let start = if kind == "role" { Instant::now() } else { start };
        send(&c, &nodes[0], method, &target, body).await;
        for node in &nodes[1..] {
            loop {
                if code(&c, node, &key, "reports.read").await == expected {
                    samples.push(start.elapsed());
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{kind}: node {} never answered {expected}",
                    node.addr
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        if kind == "role" {
            send(
                &c,
                &nodes[0],
                reqwest::Method::PUT,
                "/roles/cluster-reader",
                json!({"permissions": ["reports.read"]}),
            )
            .await;
        }
    }
    report("disable, expire, permission, allowlist, role", samples);

    // Every change made on node 0 is in the one audit log, read from any node (PostgreSQL).
    let res =
        c.get(format!("http://{}/admin/v1/audit?action=role.update&limit=1000", nodes[2].addr)).bearer_auth(ADMIN);
    let page: Value = res.send().await.unwrap().json().await.unwrap();
    let entries = page["data"].as_array().expect("entries");
    // Five rounds of the role case, each changing the role and changing it back.
    assert_eq!(entries.len(), 10, "{page}");
    for e in entries {
        assert_eq!(
            (e["actorKind"].as_str(), e["target"].as_str()),
            (Some("admin_token"), Some("cluster-reader")),
            "{e}"
        );
        assert!(e["requestId"].as_str().is_some_and(|id| !id.is_empty()), "{e}");
    }
    assert_eq!(entries[0]["after"], json!({"permissions": ["reports.read"]}));
    assert_eq!(entries[1]["after"], json!({"permissions": ["reports.list"]}));
    let res = c.get(format!("http://{}/admin/v1/audit?action=credential.update&limit=1000", nodes[1].addr));
    let page: Value = res.bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    // Per customer: the grant, then the change (for the role case, the key's own permission
    // removal: its change is the role's).
    assert_eq!(page["data"].as_array().map(Vec::len), Some(25 * 2), "{page}");
}

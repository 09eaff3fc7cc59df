//! Usage for billing over HTTP: traffic through `/auth/verify` (let in, and refused by a rate
//! limit set with PATCH), flushed by the server, then read back from
//! `GET /admin/v1/credentials/{clientId}/usage` and `GET /admin/v1/accounts/{id}/usage` by day
//! and by hour, as JSON in the envelope and as CSV; the older `days=N` query; bad queries.

use std::collections::BTreeMap;
use std::time::Duration;

use keygate_core::ClientId;
use keygate_store::{DAY_MS, HOUR_MS, now_ms};
use serde_json::{Value, json};

use crate::helpers::*;

impl TestApp {
    async fn admin_patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.client.patch(self.url(&format!("/admin/v1{path}"))).bearer_auth(&self.admin_token).json(&body))
            .await
    }

    /// Counts an outcome the way the authenticator does (for codes this server's traffic does
    /// not produce here: insufficient credits, a refused credential, credits spent).
    fn record(&self, client_id: &str, code: u32, credits: u64) {
        let cid: ClientId = client_id.parse().unwrap();
        self.state.auth.authenticator().usage.record_outcome(cid, now_ms(), code, credits);
    }
}

/// The outcomes of a JSON usage answer summed over its buckets, with the credits and totals:
/// robust to a day or an hour ending during the test.
fn summed(r: &Reply) -> (BTreeMap<String, u64>, u64, u64) {
    let (mut requests, mut credits, mut total) = (BTreeMap::new(), 0, 0);
    for b in r.data().as_array().unwrap_or_else(|| panic!("no list in {}", r.text)) {
        for (code, n) in b["requests"].as_object().unwrap() {
            *requests.entry(code.clone()).or_default() += n.as_u64().unwrap();
        }
        credits += b["credits"].as_u64().unwrap();
        total += b["total"].as_u64().unwrap();
        let in_bucket: u64 = b["requests"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(in_bucket, b["total"].as_u64().unwrap(), "total is the sum of the outcomes: {b}");
    }
    (requests, credits, total)
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// The CSV lines after the header, as (client_id, outcome, requests, credits) summed over starts,
/// checking each line's shape.
fn csv_rows(r: &Reply, granularity_ms: i64) -> BTreeMap<(String, u32), (u64, u64)> {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(r.header("content-disposition").is_some_and(|d| d.starts_with("attachment; filename=")));
    let mut lines = r.text.lines();
    assert_eq!(lines.next(), Some("start,client_id,outcome,requests,credits"), "{}", r.text);
    let mut rows = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 5, "{line}");
        let start = keygate_ops::usage::parse_time("start", f[0]).unwrap();
        assert!(f[0].ends_with('Z') && start % granularity_ms == 0, "{line}");
        assert!((now_ms() - start).abs() < 2 * DAY_MS, "{line}");
        let e: &mut (u64, u64) = rows.entry((f[1].to_owned(), f[2].parse().unwrap())).or_default();
        e.0 += f[3].parse::<u64>().unwrap();
        e.1 += f[4].parse::<u64>().unwrap();
    }
    assert!(r.text.ends_with('\n'));
    rows
}

#[tokio::test]
async fn usage_by_outcome_for_a_credential_and_its_account() {
    let app = TestApp::spawn_with(|c| c.usage_flush = Duration::from_millis(50)).await;
    let c = app.customer().await;
    let (c2, key2) = app.create_credential(&c.account_id).await;
    let other = app.customer().await;
    // 3 requests a minute for the first credential: 5 requests, 2 refused with 1005.
    app.admin_patch(
        &format!("/credentials/{}", c.client_id),
        json!({"ratelimits": [{"name": "requests", "limit": 3, "duration": "1m"}]}),
    )
    .await
    .expect(200, 1000);
    let mut refused = 0;
    for _ in 0..5 {
        let r = app.verify_key(&c.api_key).await;
        match r.status {
            200 => r.expect(200, 1000),
            _ => {
                refused += 1;
                r.expect(429, 1005)
            }
        };
    }
    assert_eq!(refused, 2);
    for _ in 0..2 {
        app.verify_key(&key2).await.expect(200, 1000);
    }
    app.verify_key(&other.api_key).await.expect(200, 1000);
    // What credits and other refusals add, counted as the authenticator counts them.
    app.record(&c.client_id, 1000, 7);
    app.record(&c2, 1006, 0);
    app.record(&c2, 1101, 0);

    let credential = format!("/credentials/{}/usage", c.client_id);
    let account = format!("/accounts/{}/usage", c.account_id);
    wait_until(Duration::from_secs(5), "the usage is flushed", || async {
        let (_, _, total) = summed(&app.admin_get(&account).await);
        total == 10
    })
    .await;

    // A credential, by day (the default: the last 30 days) and by hour (the last 24 hours).
    let r = app.admin_get(&credential).await;
    r.expect(200, 1000);
    assert_eq!(summed(&r), (counts(&[("1000", 4), ("1005", 2)]), 7, 6), "{}", r.text);
    let today = now_ms().div_euclid(DAY_MS) * DAY_MS;
    let starts: Vec<i64> = r.data().as_array().unwrap().iter().map(|b| b["start"].as_i64().unwrap()).collect();
    assert!(starts.iter().all(|s| *s % DAY_MS == 0 && (*s == today || *s == today - DAY_MS)), "{starts:?}");
    let hourly = app.admin_get(&format!("{credential}?granularity=hour")).await;
    hourly.expect(200, 1000);
    assert_eq!(summed(&hourly), summed(&r));
    assert!(hourly.data()[0]["start"].as_i64().unwrap() % HOUR_MS == 0, "{}", hourly.text);
    // The same period in RFC 3339 or in Unix ms; one that ends before today's traffic is empty.
    let from =
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis((today - DAY_MS) as u64));
    let by_text = app.admin_get(&format!("{credential}?from={from}&to={}", today + DAY_MS)).await;
    assert_eq!(summed(&by_text), summed(&r), "{}", by_text.text);
    let before = app.admin_get(&format!("{credential}?from=2020-01-01&to=2020-02-01")).await;
    before.expect(200, 1000);
    assert_eq!(before.data(), &json!([]));
    // The first form of the query, days=N, still answers (in the new shape).
    let days = app.admin_get(&format!("{credential}?days=2")).await;
    days.expect(200, 1000);
    assert_eq!(summed(&days), summed(&r));

    // The account: its two credentials summed; the other account's traffic is not in it.
    let r = app.admin_get(&account).await;
    r.expect(200, 1000);
    assert_eq!(summed(&r), (counts(&[("1000", 6), ("1005", 2), ("1006", 1), ("1101", 1)]), 7, 10), "{}", r.text);
    let hourly = app.admin_get(&format!("{account}?granularity=hour&format=json")).await;
    assert_eq!(summed(&hourly), summed(&r));
    let r = app.admin_get(&format!("/accounts/{}/usage", other.account_id)).await;
    assert_eq!(summed(&r), (counts(&[("1000", 1)]), 0, 1));

    // CSV: one line per day (or hour), credential and outcome; an account's lines name each
    // credential.
    let (a, b) = (c.client_id.clone(), c2.clone());
    let rows = csv_rows(&app.admin_get(&format!("{credential}?format=csv")).await, DAY_MS);
    assert_eq!(rows, BTreeMap::from([((a.clone(), 1000), (4, 7)), ((a.clone(), 1005), (2, 0))]));
    let rows = csv_rows(&app.admin_get(&format!("{account}?format=csv&granularity=hour")).await, HOUR_MS);
    assert_eq!(
        rows,
        BTreeMap::from([
            ((a.clone(), 1000), (4, 7)),
            ((a, 1005), (2, 0)),
            ((b.clone(), 1000), (2, 0)),
            ((b.clone(), 1006), (1, 0)),
            ((b, 1101), (1, 0))
        ])
    );
    let empty = app.admin_get(&format!("{account}?format=csv&from=2020-01-01&to=2020-01-02")).await;
    assert_eq!((empty.status, empty.text.as_str()), (200, "start,client_id,outcome,requests,credits\n"));
    // A revoked credential's usage stays in its account's.
    app.revoke(&c2).await;
    assert_eq!(summed(&app.admin_get(&account).await).2, 10);
}

#[tokio::test]
async fn bad_usage_queries_are_1003() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let eight_days_ago = format!("from={}&granularity=hour", now_ms() - 8 * DAY_MS);
    for base in [format!("/credentials/{}/usage", c.client_id), format!("/accounts/{}/usage", c.account_id)] {
        for (query, needle) in [
            ("from=yesterday", "from must be an RFC 3339 time"),
            ("to=2025-02-30", "to must be an RFC 3339 time"),
            ("from=2025-02-01&to=2025-01-01", "from must be before to"),
            ("from=2025-02-01&to=2025-02-01", "from must be before to"),
            ("from=2024-01-01&to=2025-02-01", "at most 366 days"),
            (eight_days_ago.as_str(), "hourly usage is kept for the last 7 days"),
            ("from=2025-01-01&to=2025-01-02&granularity=hour", "hourly usage is kept for the last 7 days"),
            ("days=0", "days must be between 1 and 366"),
            ("days=367", "days must be between 1 and 366"),
            ("days=3&from=2025-01-01", "days cannot be combined"),
            ("days=3&granularity=hour", "days counts whole days"),
            ("granularity=week", "query must be from=TIME&to=TIME"),
            ("format=xml", "query must be from=TIME&to=TIME"),
            ("days=-1", "query must be"),
            // Errors are the envelope, whatever the format asked.
            ("format=csv&from=later", "from must be an RFC 3339 time"),
        ] {
            let r = app.admin_get(&format!("{base}?{query}")).await;
            r.expect(400, 1003);
            assert!(r.body["msg"].as_str().unwrap().contains(needle), "{base}?{query}: {}", r.text);
            assert!(r.header("content-type").unwrap().starts_with("application/json"), "{query}");
        }
    }
    // Unknown and malformed ids, as the neighbouring endpoints answer them.
    app.admin_get("/credentials/0123456789abcdef01234567/usage").await.expect(404, 1003);
    app.admin_get("/accounts/0123456789abcdef01234567/usage?format=csv").await.expect(404, 1109);
    app.admin_get("/credentials/nope/usage").await.expect(400, 1003);
    app.admin_get("/accounts/nope/usage").await.expect(400, 1003);
    // The admin token is required.
    let r = app.send(app.client.get(app.url(&format!("/admin/v1/accounts/{}/usage", c.account_id)))).await;
    r.expect(401, 1102);
}

/// The console's chart of a credential with every kind of outcome and credits: today's bar is
/// stacked (rate limited, insufficient credits, refused over the let-in part), the credits line is
/// drawn, and the words say it all for screen readers (the bar's title, the key, the table).
#[tokio::test]
async fn the_console_chart_stacks_outcomes_and_shows_credits() {
    let app = TestApp::spawn_with(|c| c.usage_flush = Duration::from_millis(50)).await;
    let b = crate::browser::Browser::new(&app);
    b.signup(&unique_email()).await;
    let (client_id, key, _) = b.generate().await;
    app.verify_key(&key).await.expect(200, 1000);
    app.record(&client_id, 1000, 5);
    app.record(&client_id, 1005, 0);
    app.record(&client_id, 1006, 0);
    app.record(&client_id, 1101, 0);
    app.record(&client_id, 1200, 0);
    let detail = format!("/console/credentials/{client_id}");
    wait_until(Duration::from_secs(5), "usage shows on the credential page", || async {
        b.get(&detail).await.text.contains(r#"<strong id="usage-total">6</strong>"#)
    })
    .await;
    let page = b.get(&detail).await;
    let text = &page.text;
    assert_eq!(text.matches(r#"<rect class="bar""#).count(), 30, "one bar per day");
    assert!(text.contains(r#"data-requests="6""#), "{text}");
    for part in ["seg seg-limited", "seg seg-credits", "seg seg-refused"] {
        assert_eq!(text.matches(part).count(), 1, "{part}");
    }
    assert!(text.contains(r#"<polyline class="credits-line""#));
    assert!(
        text.contains(
            ": 6 requests (2 let in, 1 rate limited, 1 insufficient credits, 2 refused); 5 credits spent</title>"
        ),
        "{text}"
    );
    for (id, n) in [
        ("usage-let-in", 2),
        ("usage-rate-limited", 1),
        ("usage-insufficient-credits", 1),
        ("usage-refused", 2),
        ("usage-credits", 5),
    ] {
        assert!(text.contains(&format!(r#"<strong id="{id}">{n}</strong>"#)), "{id}: {text}");
    }
    assert!(text.contains("<td>6</td><td>2</td><td>1</td><td>1</td><td>2</td><td>5</td>"), "the table row");
    assert!(text.contains(r#"<desc id="chart-desc">6 requests (2 let in"#), "{text}");
}

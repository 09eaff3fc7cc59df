//! Credits over HTTP: balances set with PATCH, spent by `/auth/verify` at the cost
//! `x-keygate-cost` names, 1006 / 402 when they do not cover it, exactly floor(B / c) admitted
//! under concurrent load, top-ups and refunds applied once per idempotency key, account balances
//! shared by their credentials, plans that refill, and nothing charged for a refused request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::helpers::*;

impl TestApp {
    async fn set_credits(&self, path: &str, credits: Value) -> Reply {
        self.patch(path, json!({ "credits": credits })).await
    }

    async fn change_credits(&self, path: &str, body: Value) -> Reply {
        self.admin_send(reqwest::Method::POST, &format!("{path}/credits"), Some(body)).await
    }

    /// The balance as the database holds it once this node has reported what it spent.
    async fn balance(&self, path: &str) -> Value {
        self.state.auth.authenticator().credits.settle(self.state.ops.store().as_ref(), false).await.unwrap();
        let r = self.admin_get(&format!("{path}/credits")).await;
        r.expect(200, 1000);
        r.data().clone()
    }

    async fn verify_cost(&self, api_key: &str, cost: &str) -> Reply {
        self.verify_with(&[("x-api-key", api_key), ("x-keygate-cost", cost)]).await
    }
}

#[tokio::test]
async fn a_balance_is_spent_at_the_requests_cost_and_then_refused_with_1006() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let path = format!("/credentials/{}", c.client_id);
    let r = app.set_credits(&path, json!({"remaining": 10})).await;
    r.expect(200, 1000);
    assert_eq!(
        (r.data()["credits"]["remaining"].as_i64(), r.data()["credits"]["source"].as_str()),
        (Some(10), Some("own"))
    );

    let r = app.verify_cost(&c.api_key, "3").await;
    r.expect(200, 1000);
    assert_eq!(r.header("x-keygate-client-id"), Some(c.client_id.as_str()));
    assert_eq!(r.header("x-keygate-credits-remaining"), Some("7"));
    assert_eq!(r.data()["creditsRemaining"], 7);
    // The default cost is 1; 0 checks the balance and charges nothing.
    assert_eq!(app.verify_key(&c.api_key).await.header("x-keygate-credits-remaining"), Some("6"));
    assert_eq!(app.verify_cost(&c.api_key, "0").await.header("x-keygate-credits-remaining"), Some("6"));
    assert_eq!(app.verify_cost(&c.api_key, "6").await.header("x-keygate-credits-remaining"), Some("0"));

    let r = app.verify_cost(&c.api_key, "1").await;
    r.expect(402, 1006);
    assert!(r.body["msg"].as_str().unwrap().contains("costs 1 and 0 credits are left"), "{}", r.text);
    assert_eq!(r.header("x-keygate-credits-remaining"), Some("0"));
    assert!(r.header("x-keygate-client-id").is_none(), "a refusal carries no identity");
    app.verify_cost(&c.api_key, "0").await.expect(402, 1006);
    // A Bearer token spends the same balance.
    let token = app.token(&c).await;
    app.verify_bearer(&token).await.expect(402, 1006);

    // A top-up is usable at once; a retried one (same idempotency key) is applied once.
    let top_up = json!({"add": 5, "idempotencyKey": "payment-1"});
    let r = app.change_credits(&path, top_up.clone()).await;
    r.expect(200, 1000);
    assert_eq!((r.data()["remaining"].as_i64(), r.data()["replayed"].as_bool()), (Some(5), Some(false)));
    let r = app.change_credits(&path, top_up).await;
    r.expect(200, 1000);
    assert_eq!((r.data()["remaining"].as_i64(), r.data()["replayed"].as_bool()), (Some(5), Some(true)));
    app.change_credits(&path, json!({"add": 6, "idempotencyKey": "payment-1"})).await.expect(409, 1003);
    assert_eq!(app.verify_bearer(&token).await.header("x-keygate-credits-remaining"), Some("4"));
    // A refund may take the balance below zero; `set` puts it where the operator says.
    app.change_credits(&path, json!({"add": -10})).await.expect(200, 1000);
    assert_eq!(app.balance(&path).await["remaining"], -6);
    app.verify_key(&c.api_key).await.expect(402, 1006);
    let r = app.change_credits(&path, json!({"set": 2})).await;
    assert_eq!(r.data()["remaining"], 2);
    assert_eq!(app.verify_key(&c.api_key).await.header("x-keygate-credits-remaining"), Some("1"));

    // Removing the quota: not charged any more.
    let r = app.set_credits(&path, Value::Null).await;
    r.expect(200, 1000);
    assert!(r.data().get("credits").is_none(), "{}", r.text);
    let r = app.verify_key(&c.api_key).await;
    r.expect(200, 1000);
    assert!(r.header("x-keygate-credits-remaining").is_none() && r.data().get("creditsRemaining").is_none());

    // The usage a platform bills from: the refusals as 1006, the credits spent (3 + 1 + 0 + 6 + 1
    // + 1) with the requests let in.
    app.state.auth.authenticator().usage.flush(app.state.ops.store().as_ref()).await.unwrap();
    let u = app.admin_get(&format!("{path}/usage?granularity=hour")).await;
    u.expect(200, 1000);
    let hours = u.data().as_array().unwrap();
    let sum = |f: &dyn Fn(&Value) -> i64| hours.iter().map(f).sum::<i64>();
    assert_eq!(sum(&|h| h["requests"]["1006"].as_i64().unwrap_or(0)), 4, "{}", u.text);
    assert_eq!(sum(&|h| h["credits"].as_i64().unwrap()), 12, "{}", u.text);
}

#[tokio::test]
async fn concurrent_clients_spend_exactly_floor_of_balance_over_cost() {
    let app = Arc::new(TestApp::spawn().await);
    let c = app.customer().await;
    let path = format!("/credentials/{}", c.client_id);
    let (balance, cost) = (1_000, 7);
    app.set_credits(&path, json!({"remaining": balance})).await.expect(200, 1000);
    let admitted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (app, key, admitted) = (app.clone(), c.api_key.clone(), admitted.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let r = app.verify_cost(&key, &cost.to_string()).await;
                match r.status {
                    200 => admitted.fetch_add(1, Ordering::Relaxed),
                    402 => return,
                    s => panic!("unexpected HTTP {s}: {}", r.text),
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), balance / cost, "exactly floor(B / c) admitted");
    assert_eq!(app.balance(&path).await["remaining"], (balance % cost) as i64, "nothing lost, nothing overspent");
}

#[tokio::test]
async fn an_account_balance_is_shared_and_every_balance_must_cover_the_cost() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let (_, second) = app.create_credential(&c.account_id).await;
    let account = format!("/accounts/{}", c.account_id);
    let credential = format!("/credentials/{}", c.client_id);
    let r = app.set_credits(&account, json!({"remaining": 5})).await;
    r.expect(200, 1000);
    assert_eq!(r.data()["credits"]["remaining"], 5);
    app.set_credits(&credential, json!({"remaining": 100})).await.expect(200, 1000);

    for _ in 0..3 {
        app.verify_key(&c.api_key).await.expect(200, 1000);
    }
    let r = app.verify_key(&second).await;
    assert_eq!(r.header("x-keygate-credits-remaining"), Some("1"), "the account's balance is the smaller");
    app.verify_key(&second).await.expect(200, 1000);
    app.verify_key(&second).await.expect(402, 1006);
    // The credential's own balance would cover it; the account's does not: refused, and the
    // credential is not charged for it.
    app.verify_key(&c.api_key).await.expect(402, 1006);
    assert_eq!(app.balance(&credential).await["remaining"], 97);
    assert_eq!(app.balance(&account).await["remaining"], 0);
}

#[tokio::test]
async fn a_request_refused_by_a_rate_limit_is_not_charged() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let path = format!("/credentials/{}", c.client_id);
    app.patch(
        &path,
        json!({"credits": {"remaining": 10}, "ratelimits": [{"name": "requests", "limit": 2, "duration": "1h"}]}),
    )
    .await
    .expect(200, 1000);
    let codes: Vec<u16> = futures_statuses(&app, &c.api_key, 5).await;
    assert_eq!(codes, [200, 200, 429, 429, 429]);
    assert_eq!(app.balance(&path).await["remaining"], 8);
    // And a request refused for its credits takes nothing from the rate limit.
    app.patch(
        &path,
        json!({"ratelimits": [{"name": "hourly", "limit": 1, "duration": "1h"}], "credits": {"remaining": 0}}),
    )
    .await
    .expect(200, 1000);
    app.verify_key(&c.api_key).await.expect(402, 1006);
    app.change_credits(&path, json!({"add": 1})).await.expect(200, 1000);
    app.verify_key(&c.api_key).await.expect(200, 1000);
}

async fn futures_statuses(app: &TestApp, key: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(app.verify_key(key).await.status);
    }
    out
}

#[tokio::test]
async fn a_plans_refill_gives_its_accounts_a_balance() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let r = app
        .admin_send(
            reqwest::Method::PUT,
            "/plans/starter",
            Some(json!({"ratelimits": [], "credits": {"interval": "daily", "amount": 3}})),
        )
        .await;
    r.expect(201, 1000);
    assert_eq!(r.data()["credits"]["amount"], 3);
    let account = format!("/accounts/{}", c.account_id);
    let r = app.patch(&account, json!({"plan": "starter"})).await;
    r.expect(200, 1000);
    assert_eq!(r.data()["credits"]["source"], "plan");
    assert_eq!(r.data()["credits"]["remaining"], 3);
    let next = r.data()["credits"]["nextRefillAt"].as_i64().unwrap();
    let day = 86_400_000;
    assert_eq!(next % day, 0, "refills at midnight UTC");
    assert!(next > keygate_store::now_ms() && next <= keygate_store::now_ms() + day);
    for _ in 0..3 {
        app.verify_key(&c.api_key).await.expect(200, 1000);
    }
    app.verify_key(&c.api_key).await.expect(402, 1006);
    // The account's own quota overrides the plan's.
    app.set_credits(
        &account,
        json!({"remaining": 50, "refill": {"interval": "monthly", "amount": 50, "refillDay": 31}}),
    )
    .await
    .expect(200, 1000);
    let r = app.verify_key(&c.api_key).await;
    assert_eq!(r.header("x-keygate-credits-remaining"), Some("49"));
    let b = app.balance(&account).await;
    assert_eq!((b["source"].as_str(), b["refill"]["refillDay"].as_i64()), (Some("own"), Some(31)));
}

#[tokio::test]
async fn bad_credits_input_gets_1003_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let path = format!("/credentials/{}", c.client_id);
    for bad in [
        json!({"remaining": -1}),
        json!({"remaining": 1_000_000_000_000_001_i64}),
        json!({"remaining": 1, "refill": {"interval": "monthly", "amount": 5, "refillDay": 32}}),
        json!({"remaining": 1, "refill": {"interval": "daily", "amount": 5, "refillDay": 1}}),
        json!({"remaining": 1, "refill": {"interval": "weekly", "amount": 5}}),
        json!({"remaining": 1, "extra": true}),
        json!("10"),
    ] {
        // With a valid rate-limit set beside it: nothing of the request is written.
        let r = app
            .patch(&path, json!({"credits": bad, "ratelimits": [{"name": "r", "limit": 1, "duration": "1s"}]}))
            .await;
        r.expect(400, 1003);
    }
    let r = app.admin_get(&path).await;
    assert!(r.data().get("credits").is_none() && r.data()["ratelimits"] == json!([]), "{}", r.text);
    // No quota to top up; not exactly one of add and set; out of range; a bad key.
    app.change_credits(&path, json!({"add": 5})).await.expect(409, 1003);
    app.set_credits(&path, json!({"remaining": 1})).await.expect(200, 1000);
    for bad in [
        json!({}),
        json!({"add": 1, "set": 1}),
        json!({"set": -1}),
        json!({"add": 1_000_000_000_000_001_i64}),
        json!({"add": 1, "idempotencyKey": ""}),
        json!({"add": 1, "idempotencyKey": "x".repeat(256)}),
    ] {
        app.change_credits(&path, bad).await.expect(400, 1003);
    }
    assert_eq!(app.balance(&path).await["remaining"], 1);
    app.change_credits("/credentials/000000000000000000000000", json!({"add": 1})).await.expect(404, 1003);
    app.change_credits("/accounts/000000000000000000000000", json!({"add": 1})).await.expect(404, 1109);
    for cost in ["-1", "1.5", "x", "1000000000000001"] {
        app.verify_cost(&c.api_key, cost).await.expect(400, 1003);
    }
    assert_eq!(app.balance(&path).await["remaining"], 1, "a refused request is charged nothing");
}

#[tokio::test]
async fn a_refused_large_cost_does_not_refuse_a_smaller_one() {
    let app = TestApp::spawn().await;
    let c = app.customer().await;
    let path = format!("/credentials/{}", c.client_id);
    app.set_credits(&path, json!({"remaining": 3})).await.expect(200, 1000);
    app.verify_cost(&c.api_key, "2").await.expect(200, 1000);
    app.verify_cost(&c.api_key, "2").await.expect(402, 1006);
    // One is left: a request costing 1 gets it, at once.
    let r = app.verify_cost(&c.api_key, "1").await;
    r.expect(200, 1000);
    assert_eq!(r.header("x-keygate-credits-remaining"), Some("0"));
    app.verify_cost(&c.api_key, "1").await.expect(402, 1006);
}

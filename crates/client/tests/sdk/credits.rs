//! Credits through `AdminClient` and as the SDK's customers meet them: balances set on
//! credentials and accounts, spent by `/auth/verify` at the cost `verify_with_cost` names (and by
//! the gateway), `1006` as `Error::InsufficientCredits` with what is left (never retried), top-ups
//! applied once per idempotency key, corrections, a plan's refill, and bad settings as typed
//! `1003`s.

use std::time::Duration;

use keygate_client::{
    AdminClient, ApiKeyClient, Code, CreditAdjustment, CreditBalance, CreditSource, CreditsConfig, Error, Refill,
    RefillInterval,
};
use serde_json::Value;

use crate::support::{Server, Tap, echo_upstream, fast_retries, wait_until};

const DAY_MS: i64 = 86_400_000;

/// A server whose node reports what it spent every 50 ms, so that a balance read with the admin
/// API soon shows what was spent.
async fn server() -> Server {
    Server::start_with(|c| c.credits.flush = Duration::from_millis(50)).await
}

/// Polls a balance read with the admin API every 20 ms until it is `remaining` (what a node
/// spent is reported every flush); panics after 5 s.
async fn balance_is<F, Fut>(what: &str, remaining: i64, mut read: F) -> CreditBalance
where
    F: FnMut() -> Fut,
    Fut: Future<Output = keygate_client::Result<Option<CreditBalance>>>,
{
    let start = std::time::Instant::now();
    loop {
        let balance = read().await.unwrap();
        match balance {
            Some(b) if b.remaining == remaining => return b,
            _ if start.elapsed() > Duration::from_secs(5) => panic!("{what}: {balance:?}, not {remaining}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits until the credential's own balance read with the admin API is `remaining`.
async fn credential_balance_is(admin: &AdminClient, client_id: &str, remaining: i64) -> CreditBalance {
    balance_is("the credential's balance", remaining, || admin.credential_credits(client_id)).await
}

/// Waits until the account's balance read with the admin API is `remaining`.
async fn account_balance_is(admin: &AdminClient, account_id: &str, remaining: i64) -> CreditBalance {
    balance_is("the account's balance", remaining, || admin.account_credits(account_id)).await
}

/// The refusal for credits `result` must be: its HTTP status and the credits left it says.
fn insufficient<T: std::fmt::Debug>(result: Result<T, Error>) -> (u16, Option<i64>) {
    match result {
        Err(Error::InsufficientCredits { status, msg, remaining }) => {
            assert!(msg.contains("Insufficient quota balance"), "{msg}");
            (status, remaining)
        }
        other => panic!("not a refusal for credits: {other:?}"),
    }
}

#[tokio::test]
async fn a_balance_is_spent_at_the_cost_then_refused_with_1006_and_topped_up_once() {
    let server = server().await;
    let admin = server.admin();
    let c = server.customer().await;

    let detail = admin.set_credential_credits(c.client_id(), Some(&CreditsConfig::new(10))).await.unwrap();
    assert_eq!(detail.credential.client_id, c.client_id());
    let credits = detail.credits.clone().expect("a balance of its own");
    assert_eq!(
        (credits.remaining, credits.source, credits.refill, credits.next_refill_at),
        (10, CreditSource::Own, None, None)
    );
    assert_eq!(admin.credential(c.client_id()).await.unwrap(), detail, "GET shows what PATCH answered");
    assert_eq!(admin.credential_credits(c.client_id()).await.unwrap().map(|b| b.remaining), Some(10));
    assert_eq!(admin.account(&c.account_id).await.unwrap().credits, None, "the account has none");
    assert_eq!(admin.account_credits(&c.account_id).await.unwrap(), None);

    // Through a tap that counts requests, with five attempts allowed: a retry would show.
    let tap = Tap::start(server.addr).await;
    let client = ApiKeyClient::with_options(&tap.url(), c.api_key(), fast_retries(5)).unwrap();
    let me = client.verify_with_cost(3).await.unwrap();
    assert_eq!((me.client_id.as_str(), me.credits_remaining), (c.client_id(), Some(7)));
    // The default cost is 1; 0 checks the balance and charges nothing.
    assert_eq!(client.verify().await.unwrap().credits_remaining, Some(6));
    assert_eq!(client.verify_with_cost(0).await.unwrap().credits_remaining, Some(6));
    assert_eq!(client.verify_with_cost(6).await.unwrap().credits_remaining, Some(0));

    // Spent: 1006 / 402 with what is left, not retried.
    let err = client.verify_with_cost(1).await.unwrap_err();
    assert_eq!((err.code(), err.status(), err.credits_remaining()), (Some(Code::QuotaExceeded), Some(402), Some(0)));
    assert!(!err.is_retryable(true));
    assert!(err.to_string().contains("costs 1 and 0 credits are left"), "{err}");
    assert_eq!(insufficient(client.verify_with_cost(0).await), (402, Some(0)), "a check needs a positive balance");
    assert_eq!(tap.verifies(), 6, "the 1006s were not retried");
    // A token spends the same balance; getToken itself is not charged.
    let tokens =
        keygate_client::TokenClient::with_options(&tap.url(), c.client_id(), c.api_key(), fast_retries(5)).unwrap();
    assert_eq!(insufficient(tokens.verify().await), (402, Some(0)));
    assert_eq!((tap.get_tokens(), tap.verifies()), (1, 7));

    // A top-up with an idempotency key is applied once, however often it is sent.
    let top_up = CreditAdjustment::Add(5);
    let changed = admin.adjust_credential_credits(c.client_id(), top_up, Some("payment-1")).await.unwrap();
    assert_eq!((changed.balance.remaining, changed.balance.source, changed.replayed), (5, CreditSource::Own, false));
    let again = admin.adjust_credential_credits(c.client_id(), top_up, Some("payment-1")).await.unwrap();
    assert_eq!((again.balance.remaining, again.replayed), (5, true), "replayed, not added twice");
    // The same key for another change is refused.
    let err = admin.adjust_credential_credits(c.client_id(), CreditAdjustment::Add(6), Some("payment-1")).await;
    let err = err.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::ParamError, status: 409, .. }), "{err:?}");
    assert_eq!(tokens.verify().await.unwrap().credits_remaining, Some(4), "usable at once");

    // A refund may take the balance below zero: refused with 0 left.
    let refund = admin.adjust_credential_credits(c.client_id(), CreditAdjustment::Add(-10), None).await.unwrap();
    assert!(!refund.replayed);
    credential_balance_is(&admin, c.client_id(), -6).await;
    assert_eq!(insufficient(client.verify().await), (402, Some(0)));
    // A correction sets it where the operator says.
    let set = admin.adjust_credential_credits(c.client_id(), CreditAdjustment::Set(2), None).await.unwrap();
    assert_eq!((set.balance.remaining, set.replayed), (2, false));
    assert_eq!(client.verify().await.unwrap().credits_remaining, Some(1));
    let b = credential_balance_is(&admin, c.client_id(), 1).await;
    assert!((0..=b.remaining).contains(&b.leased), "what nodes hold is part of what is left: {b:?}");
    // A request that costs more than is left is refused, saying what is left, and charged nothing.
    assert_eq!(insufficient(client.verify_with_cost(5).await), (402, Some(1)));
    credential_balance_is(&admin, c.client_id(), 1).await;

    // Removed: not charged any more, nothing to read or adjust.
    let detail = admin.set_credential_credits(c.client_id(), None).await.unwrap();
    assert_eq!(detail.credits, None);
    assert_eq!(admin.credential_credits(c.client_id()).await.unwrap(), None);
    assert_eq!(client.verify_with_cost(1_000).await.unwrap().credits_remaining, None);
    let err = admin.adjust_credential_credits(c.client_id(), CreditAdjustment::Add(1), Some("payment-2")).await;
    let err = err.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::ParamError, status: 409, .. }), "no quota: {err:?}");
}

#[tokio::test]
async fn an_account_balance_is_shared_by_its_credentials() {
    let server = server().await;
    let admin = server.admin();
    let c = server.customer().await;
    let second = admin.create_credential(&c.account_id).await.unwrap();
    let first = c.key_client(&server.url());
    let second = ApiKeyClient::with_options(&server.url(), second.api_key.expose(), fast_retries(3)).unwrap();

    let monthly = CreditsConfig::new(5).with_refill(Refill::monthly(5).on_day(31));
    let detail = admin.set_account_credits(&c.account_id, Some(&monthly)).await.unwrap();
    assert_eq!(detail.account.id, c.account_id);
    let credits = detail.credits.clone().expect("a balance");
    assert_eq!((credits.remaining, credits.source, credits.refill), (5, CreditSource::Own, monthly.refill));
    let next = credits.next_refill_at.expect("a refill is planned");
    assert!(next % DAY_MS == 0 && next > 1_700_000_000_000, "at midnight UTC: {next}");
    assert_eq!(admin.account(&c.account_id).await.unwrap(), detail, "GET shows what PATCH answered");
    // The credential has none of its own.
    assert_eq!(admin.credential(c.client_id()).await.unwrap().credits, None);
    assert_eq!(admin.credential_credits(c.client_id()).await.unwrap(), None);

    for left in [4, 3, 2] {
        assert_eq!(first.verify().await.unwrap().credits_remaining, Some(left));
    }
    assert_eq!(second.verify().await.unwrap().credits_remaining, Some(1), "the same balance");
    assert_eq!(first.verify().await.unwrap().credits_remaining, Some(0));
    assert_eq!(insufficient(second.verify().await), (402, Some(0)));
    let b = account_balance_is(&admin, &c.account_id, 0).await;
    assert_eq!((b.source, b.refill), (CreditSource::Own, monthly.refill));

    // A keyed correction is applied once.
    let set = admin.adjust_account_credits(&c.account_id, CreditAdjustment::Set(10), Some("fix-1")).await.unwrap();
    assert_eq!((set.balance.remaining, set.replayed), (10, false));
    let again = admin.adjust_account_credits(&c.account_id, CreditAdjustment::Set(10), Some("fix-1")).await.unwrap();
    assert!(again.replayed);
    assert_eq!(second.verify().await.unwrap().credits_remaining, Some(9));

    // Removed: the account's requests are not charged.
    let detail = admin.set_account_credits(&c.account_id, None).await.unwrap();
    assert_eq!(detail.credits, None);
    assert_eq!(admin.account_credits(&c.account_id).await.unwrap(), None);
    assert_eq!(first.verify().await.unwrap().credits_remaining, None);
}

#[tokio::test]
async fn a_plans_refill_gives_its_accounts_a_balance() {
    let server = server().await;
    let admin = server.admin();
    let c = server.customer().await;

    let (plan, created) = admin.put_plan_with_credits("starter", &[], Some(&Refill::daily(3))).await.unwrap();
    assert!(created);
    assert_eq!((plan.name.as_str(), plan.credits), ("starter", Some(Refill::daily(3))));
    assert_eq!(admin.plan("starter").await.unwrap().plan, plan);
    assert_eq!(admin.plans().await.unwrap(), std::slice::from_ref(&plan));
    let monthly = Refill::monthly(1000).on_day(15);
    let (plan, created) = admin.put_plan_with_credits("pro", &[], Some(&monthly)).await.unwrap();
    assert!(created);
    assert_eq!(
        plan.credits.map(|r| (r.interval, r.amount, r.refill_day)),
        Some((RefillInterval::Monthly, 1000, Some(15)))
    );

    // An account on the plan gets its refill's balance.
    let detail = admin.set_account_plan(&c.account_id, Some("starter")).await.unwrap();
    let credits = detail.credits.expect("the plan's balance");
    assert_eq!((credits.remaining, credits.source, credits.refill), (3, CreditSource::Plan, Some(Refill::daily(3))));
    let next = credits.next_refill_at.expect("a refill is planned");
    assert_eq!(next % DAY_MS, 0, "refills at midnight UTC");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(next > now && next <= now + DAY_MS, "{next} vs {now}");
    assert_eq!(admin.account_credits(&c.account_id).await.unwrap().map(|b| b.source), Some(CreditSource::Plan));

    let client = c.key_client(&server.url());
    for left in [2, 1, 0] {
        assert_eq!(client.verify().await.unwrap().credits_remaining, Some(left));
    }
    assert_eq!(insufficient(client.verify().await), (402, Some(0)));
    // A top-up of a plan's balance.
    let top_up = admin.adjust_account_credits(&c.account_id, CreditAdjustment::Add(2), Some("gift-1")).await.unwrap();
    assert_eq!((top_up.balance.remaining, top_up.balance.source), (2, CreditSource::Plan));
    assert_eq!(client.verify().await.unwrap().credits_remaining, Some(1));

    // The account's own balance overrides the plan's.
    let own = admin.set_account_credits(&c.account_id, Some(&CreditsConfig::new(50))).await.unwrap();
    assert_eq!(own.credits.map(|b| (b.remaining, b.source)), Some((50, CreditSource::Own)));
    assert_eq!(client.verify().await.unwrap().credits_remaining, Some(49));
    admin.set_account_credits(&c.account_id, None).await.unwrap();

    // `put_plan` replaces the whole plan: its refill goes with it, and its accounts are no
    // longer charged (within the change-feed bound).
    let (plan, created) = admin.put_plan("starter", &[]).await.unwrap();
    assert!(!created);
    assert_eq!(plan.credits, None);
    assert_eq!(admin.plan("starter").await.unwrap().plan.credits, None);
    wait_until(Duration::from_secs(5), "the plan's quota is gone", || async {
        admin.account_credits(&c.account_id).await.unwrap().is_none()
            && client.verify().await.unwrap().credits_remaining.is_none()
    })
    .await;
}

#[tokio::test]
async fn the_gateway_charges_its_requests_and_refuses_them_with_1006() {
    let upstream = echo_upstream().await;
    for always_200 in [false, true] {
        let server = Server::start_with(|c| {
            c.upstream = Some(upstream.url().parse().unwrap());
            if always_200 {
                c.http_status = "always-200".parse().unwrap();
            }
        })
        .await;
        let c = server.customer().await;
        server.admin().set_credential_credits(c.client_id(), Some(&CreditsConfig::new(2))).await.unwrap();
        let client = c.key_client(&server.url());
        for left in ["1", "0"] {
            let echoed: Value = client.get("/v1/videos").send_json().await.unwrap();
            assert_eq!(echoed["headers"]["x-keygate-credits-remaining"], left, "the upstream is told what is left");
        }
        let before = upstream.count();
        if always_200 {
            // HTTP 200: `send` passes the answer on, the JSON readers see the refusal in it.
            let res = client.get("/v1/videos").send().await.unwrap();
            assert_eq!(
                (res.status().as_u16(), res.headers()["x-keygate-credits-remaining"].to_str().unwrap()),
                (200, "0")
            );
            assert_eq!(insufficient(client.post("/v1/videos").send_json::<Value>().await), (200, Some(0)));
        } else {
            assert_eq!(insufficient(client.get("/v1/videos").send().await), (402, Some(0)));
            assert_eq!(insufficient(client.post("/v1/videos").send_json::<Value>().await), (402, Some(0)));
        }
        assert_eq!(upstream.count(), before, "a refused request is not forwarded");
    }
    // The API behind the gateway may answer 1006 itself: the same error, without a balance.
    let server = Server::start_with(|c| c.upstream = Some(upstream.url().parse().unwrap())).await;
    let c = server.customer().await;
    assert_eq!(insufficient(c.key_client(&server.url()).get("/quota").send_json::<Value>().await), (200, None));
}

#[tokio::test]
async fn bad_credits_settings_are_typed_400s_and_change_nothing() {
    let server = server().await;
    let admin = server.admin();
    let c = server.customer().await;
    let bad_400 = |err: Error, what: &str| {
        assert!(matches!(err, Error::Api { code: Code::ParamError, status: 400, .. }), "{what}: {err:?}");
    };

    let weekly: Refill = serde_json::from_str(r#"{"interval":"weekly","amount":5}"#).unwrap();
    assert_eq!(weekly.interval, RefillInterval::Other);
    let bad_refills = [
        Refill::monthly(5).on_day(32),
        Refill::monthly(5).on_day(0),
        Refill::daily(5).on_day(1),
        Refill::daily(-1),
        Refill::daily(1_000_000_000_000_001),
        weekly,
    ];
    let mut bad_configs = vec![CreditsConfig::new(-1), CreditsConfig::new(1_000_000_000_000_001)];
    bad_configs.extend(bad_refills.iter().map(|r| CreditsConfig::new(1).with_refill(*r)));
    for bad in &bad_configs {
        bad_400(admin.set_credential_credits(c.client_id(), Some(bad)).await.unwrap_err(), &format!("{bad:?}"));
        bad_400(admin.set_account_credits(&c.account_id, Some(bad)).await.unwrap_err(), &format!("{bad:?}"));
    }
    for bad in &bad_refills {
        bad_400(admin.put_plan_with_credits("bad", &[], Some(bad)).await.unwrap_err(), &format!("{bad:?}"));
    }
    assert_eq!(admin.credential(c.client_id()).await.unwrap().credits, None, "nothing was set");
    assert_eq!(admin.account(&c.account_id).await.unwrap().credits, None, "nothing was set");
    assert!(admin.plans().await.unwrap().is_empty(), "no plan was created");

    // Adjustments out of range, bad idempotency keys.
    admin.set_credential_credits(c.client_id(), Some(&CreditsConfig::new(1))).await.unwrap();
    let long_key = "x".repeat(256);
    for (adjustment, key) in [
        (CreditAdjustment::Set(-1), None),
        (CreditAdjustment::Add(1_000_000_000_000_001), None),
        (CreditAdjustment::Add(-1_000_000_000_000_001), None),
        (CreditAdjustment::Add(1), Some("")),
        (CreditAdjustment::Add(1), Some(long_key.as_str())),
        (CreditAdjustment::Add(1), Some("line\nbreak")),
    ] {
        let err = admin.adjust_credential_credits(c.client_id(), adjustment, key).await.unwrap_err();
        bad_400(err, &format!("{adjustment:?} {key:?}"));
    }
    // A cost out of range.
    let client = c.key_client(&server.url());
    bad_400(client.verify_with_cost(1_000_000_000_000_001).await.unwrap_err(), "cost");
    assert_eq!(credential_balance_is(&admin, c.client_id(), 1).await.remaining, 1, "nothing was charged or changed");

    // Unknown credentials and accounts.
    let unknown = "0123456789abcdef01234567";
    let config = CreditsConfig::new(1);
    let not_found = |err: Error, code: Code| {
        assert_eq!((err.code(), err.status()), (Some(code), Some(404)), "{err:?}");
    };
    not_found(admin.set_credential_credits(unknown, Some(&config)).await.unwrap_err(), Code::ParamError);
    not_found(admin.credential_credits(unknown).await.unwrap_err(), Code::ParamError);
    not_found(
        admin.adjust_credential_credits(unknown, CreditAdjustment::Add(1), None).await.unwrap_err(),
        Code::ParamError,
    );
    not_found(admin.set_account_credits(unknown, Some(&config)).await.unwrap_err(), Code::AccountNotFound);
    not_found(admin.account_credits(unknown).await.unwrap_err(), Code::AccountNotFound);
    not_found(
        admin.adjust_account_credits(unknown, CreditAdjustment::Set(1), None).await.unwrap_err(),
        Code::AccountNotFound,
    );
    // An id that would leave the resource is refused before anything is sent.
    assert!(matches!(admin.credential_credits("..").await, Err(Error::Invalid(_))));
    assert!(matches!(admin.adjust_account_credits("", CreditAdjustment::Add(1), None).await, Err(Error::Invalid(_))));
}

//! Rate limits and plans through `AdminClient`, and their refusals as the SDK's customers see
//! them: `1005` / HTTP 429 with `Retry-After` as a typed error that is never retried, where each
//! limit stands in `Identity::ratelimits`, refusals counted as `limited` in the day's usage.

use std::time::Duration;

use keygate_client::{AdminClient, ApiKeyClient, Code, EffectiveLimit, Error, LimitSource, RateLimit, TokenClient};

use crate::support::{Server, Tap, fast_retries, wait_until};

/// `(name, limit, duration, source, plan)` of each limit, in the server's order.
fn effective(limits: &[EffectiveLimit]) -> Vec<(&str, u64, &str, LimitSource, Option<&str>)> {
    limits.iter().map(|l| (l.name.as_str(), l.limit, l.duration.as_str(), l.source, l.plan.as_deref())).collect()
}

/// Verifies with `client` until a refusal comes back (at most `max` tries): how many passed, and
/// the refusal.
async fn verify_until_refused(client: &ApiKeyClient, max: usize) -> (usize, Error) {
    for passed in 0..max {
        if let Err(e) = client.verify().await {
            return (passed, e);
        }
    }
    panic!("{max} verifies passed");
}

#[tokio::test]
async fn a_limited_key_gets_1005_with_retry_after_and_no_retry() {
    let server = Server::start_with(|c| c.usage_flush = Duration::from_millis(100)).await;
    let admin = server.admin();
    let c = server.customer().await;

    let set = [RateLimit::new("requests", 3, "1m"), RateLimit::new("burst", 10, "1h")];
    let detail = admin.set_credential_ratelimits(c.client_id(), &set).await.unwrap();
    assert_eq!(detail.credential.client_id, c.client_id());
    assert_eq!(detail.credential.ratelimits, set);
    let expected =
        [("requests", 3, "1m", LimitSource::Credential, None), ("burst", 10, "1h", LimitSource::Credential, None)];
    assert_eq!(effective(&detail.effective_ratelimits), expected);
    assert_eq!(detail.effective_ratelimits[0].rate_limit(), set[0]);
    let read = admin.credential(c.client_id()).await.unwrap();
    assert_eq!(read, detail, "GET shows what PATCH answered");

    // Through a tap that counts requests: five attempts allowed, so a retry would show.
    let tap = Tap::start(server.addr).await;
    let client = ApiKeyClient::with_options(&tap.url(), c.api_key(), fast_retries(5)).unwrap();
    for remaining in [2, 1, 0] {
        let me = client.verify().await.unwrap();
        assert_eq!(me.client_id, c.client_id());
        let statuses: Vec<(&str, u64, &str, u64)> =
            me.ratelimits.iter().map(|s| (s.name.as_str(), s.limit, s.duration.as_str(), s.remaining)).collect();
        assert_eq!(statuses, [("requests", 3, "1m", remaining), ("burst", 10, "1h", remaining + 7)]);
        assert!(me.ratelimits[0].reset <= 60, "{:?}", me.ratelimits[0]);
    }
    let err = client.verify().await.unwrap_err();
    let Error::Api { code: Code::TooFrequent, status: 429, ref msg, retry_after: Some(wait) } = err else {
        panic!("not a 1005 with Retry-After: {err:?}");
    };
    assert!(msg.contains("requests"), "the message names the limit: {msg}");
    // One more request every 20 s.
    assert!((Duration::from_secs(19)..=Duration::from_secs(20)).contains(&wait), "{wait:?}");
    assert_eq!((err.code(), err.status(), err.retry_after()), (Some(Code::TooFrequent), Some(429), Some(wait)));
    assert!(!err.is_retryable(true));
    assert_eq!(tap.verifies(), 4, "the 1005 was not retried");

    // getToken is a request of the same credential: refused the same way, and not retried either
    // (getToken is otherwise retried as safe to repeat).
    let tokens = TokenClient::with_options(&tap.url(), c.client_id(), c.api_key(), fast_retries(5)).unwrap();
    let err = tokens.verify().await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::TooFrequent), Some(429)), "{err:?}");
    assert!(err.retry_after().is_some_and(|d| d <= Duration::from_secs(20)), "{err:?}");
    assert_eq!((tap.get_tokens(), tap.verifies()), (1, 4));

    // The day's usage counts the refusals beside the requests.
    wait_until(Duration::from_secs(5), "the refusals are written", || async {
        let usage = admin.usage(c.client_id(), Some(1)).await.unwrap();
        usage.iter().map(|d| (d.requests, d.limited)).eq([(3, 2)])
    })
    .await;

    // A limit of 0 blocks everything and gives no Retry-After: waiting would not help.
    let zero = admin.set_credential_ratelimits(c.client_id(), &[RateLimit::new("requests", 0, "1s")]).await.unwrap();
    assert_eq!(effective(&zero.effective_ratelimits), [("requests", 0, "1s", LimitSource::Credential, None)]);
    let err = client.verify().await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::TooFrequent, status: 429, retry_after: None, .. }), "{err:?}");

    // `[]` removes them: the key passes at once, with no limit to report.
    let none = admin.set_credential_ratelimits(c.client_id(), &[]).await.unwrap();
    assert!(none.credential.ratelimits.is_empty() && none.effective_ratelimits.is_empty(), "{none:?}");
    assert!(client.verify().await.unwrap().ratelimits.is_empty());
}

#[tokio::test]
async fn a_rate_limited_get_token_under_always_200_keeps_retry_after() {
    let server = Server::start_with(|c| c.http_status = "always-200".parse().unwrap()).await;
    let c = server.customer().await;
    server.admin().set_credential_ratelimits(c.client_id(), &[RateLimit::new("requests", 1, "1h")]).await.unwrap();
    let tokens = c.token_client(&server.url());
    tokens.token().await.expect("the first getToken passes");
    tokens.clear_token().await;
    let err = tokens.token().await.unwrap_err();
    // HTTP 200, the refusal in the envelope, the wait in the header.
    assert_eq!((err.code(), err.status()), (Some(Code::TooFrequent), Some(200)), "{err:?}");
    assert!(err.retry_after().is_some_and(|d| d > Duration::from_secs(3000)), "about an hour: {err:?}");
}

#[tokio::test]
async fn limits_that_are_invalid_or_for_nothing_are_typed_errors() {
    let server = Server::start().await;
    let admin = server.admin();
    let c = server.customer().await;
    let ok = RateLimit::new("requests", 1, "1s");
    for bad in [
        vec![RateLimit::new("Not A Name", 1, "1s")],
        vec![RateLimit::new("requests", 1, "1w")],
        vec![RateLimit::new("requests", 1, "31d")],
        vec![RateLimit::new("requests", 1_000_000_001, "1s")],
        vec![ok.clone(), ok.clone()],
        vec![ok.clone(); 17],
    ] {
        let err = admin.set_credential_ratelimits(c.client_id(), &bad).await.unwrap_err();
        assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(400)), "{bad:?}: {err:?}");
        let err = admin.set_account_ratelimits(&c.account_id, &bad).await.unwrap_err();
        assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(400)), "{bad:?}: {err:?}");
        let err = admin.put_plan("bad", &bad).await.unwrap_err();
        assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(400)), "{bad:?}: {err:?}");
    }
    assert!(admin.credential(c.client_id()).await.unwrap().credential.ratelimits.is_empty(), "nothing was set");

    let unknown = "0123456789abcdef01234567";
    let err = admin.set_credential_ratelimits(unknown, std::slice::from_ref(&ok)).await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(404)), "{err:?}");
    let err = admin.set_account_ratelimits(unknown, std::slice::from_ref(&ok)).await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::AccountNotFound), Some(404)), "{err:?}");
    let err = admin.set_account_plan(unknown, None).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::AccountNotFound), "{err:?}");
    let err = admin.set_account_plan(&c.account_id, Some("no-such-plan")).await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(400)), "{err:?}");
    assert_eq!(admin.account(&c.account_id).await.unwrap().account.plan, None);

    // Plan names: a bad one is the server's 400; one that would leave the resource is refused
    // before anything is sent.
    let err = admin.put_plan("Not A Name", &[]).await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(400)), "{err:?}");
    for name in ["", ".", ".."] {
        assert!(matches!(admin.put_plan(name, &[]).await, Err(Error::Invalid(_))), "{name:?}");
        assert!(matches!(admin.delete_plan(name).await, Err(Error::Invalid(_))), "{name:?}");
    }
    // Percent-encoded: a name, not a path to another resource.
    let err = admin.plan("../signing-keys").await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(404)), "{err:?}");
}

#[tokio::test]
async fn plans_round_trip_and_cannot_be_deleted_while_in_use() {
    let server = Server::start().await;
    let admin = server.admin();
    assert!(admin.plans().await.unwrap().is_empty());

    // Created, then replaced.
    let (free, created) = admin.put_plan("free", &[RateLimit::new("requests", 10, "1s")]).await.unwrap();
    assert!(created);
    assert_eq!((free.name.as_str(), free.ratelimits.as_slice()), ("free", &[RateLimit::new("requests", 10, "1s")][..]));
    assert!(free.created_at > 1_700_000_000_000, "milliseconds: {}", free.created_at);
    // The server writes a duration with the largest unit that divides it.
    let limits = [RateLimit::new("requests", 20, "1s"), RateLimit::new("daily", 10_000, "86400s")];
    let (free, created) = admin.put_plan("free", &limits).await.unwrap();
    assert!(!created, "replaced");
    assert_eq!(free.ratelimits, [RateLimit::new("requests", 20, "1s"), RateLimit::new("daily", 10_000, "1d")]);
    assert!(free.updated_at >= free.created_at);
    let (pro, _) = admin.put_plan("pro", &[]).await.unwrap();
    assert!(pro.ratelimits.is_empty());

    // Listed by name; read with its number of accounts.
    let names: Vec<String> = admin.plans().await.unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["free", "pro"]);
    let detail = admin.plan("free").await.unwrap();
    assert_eq!((&detail.plan, detail.accounts), (&free, 0));

    // Assigned to an account: its limits apply to the account and to its credentials.
    let c = server.customer().await;
    let account = admin.set_account_plan(&c.account_id, Some("free")).await.unwrap();
    assert_eq!(account.account.id, c.account_id);
    assert_eq!(account.account.plan.as_deref(), Some("free"));
    let from_plan = [
        ("requests", 20, "1s", LimitSource::Plan, Some("free")),
        ("daily", 10_000, "1d", LimitSource::Plan, Some("free")),
    ];
    assert_eq!(effective(&account.effective_ratelimits), from_plan);
    assert_eq!(admin.account(&c.account_id).await.unwrap(), account, "GET shows what PATCH answered");
    assert_eq!(effective(&admin.credential(c.client_id()).await.unwrap().effective_ratelimits), from_plan);
    assert_eq!(admin.plan("free").await.unwrap().accounts, 1);

    // The account's own limit replaces the plan's of that name; the plan stays.
    let own = [RateLimit::new("requests", 1000, "1s")];
    let account = admin.set_account_ratelimits(&c.account_id, &own).await.unwrap();
    assert_eq!((account.account.plan.as_deref(), account.account.ratelimits.as_slice()), (Some("free"), &own[..]));
    assert_eq!(
        effective(&account.effective_ratelimits),
        [
            ("daily", 10_000, "1d", LimitSource::Plan, Some("free")),
            ("requests", 1000, "1s", LimitSource::Account, None)
        ]
    );
    let me = c.key_client(&server.url()).verify().await.unwrap();
    let mut names: Vec<&str> = me.ratelimits.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["daily", "requests"]);

    // In use: the delete is refused, and the plan is still there.
    let err = admin.delete_plan("free").await.unwrap_err();
    assert!(matches!(err, Error::Api { code: Code::ParamError, status: 409, .. }), "{err:?}");
    assert_eq!(admin.plan("free").await.unwrap().accounts, 1);

    // Off the plan (its own limits stay), then deleted.
    let account = admin.set_account_plan(&c.account_id, None).await.unwrap();
    assert_eq!((account.account.plan, account.account.ratelimits), (None, own.to_vec()));
    assert_eq!(effective(&account.effective_ratelimits), [("requests", 1000, "1s", LimitSource::Account, None)]);
    admin.delete_plan("free").await.unwrap();
    let err = admin.plan("free").await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(404)), "{err:?}");
    let err = admin.delete_plan("free").await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(404)), "{err:?}");
    let names: Vec<String> = admin.plans().await.unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["pro"]);
}

#[tokio::test]
async fn a_plans_limit_is_shared_by_the_accounts_credentials() {
    let server = Server::start().await;
    let admin: AdminClient = server.admin();
    let c = server.customer().await;
    admin.put_plan("tiny", &[RateLimit::new("requests", 2, "1h")]).await.unwrap();
    admin.set_account_plan(&c.account_id, Some("tiny")).await.unwrap();

    let first = c.key_client(&server.url());
    let (passed, err) = verify_until_refused(&first, 10).await;
    assert_eq!(passed, 2, "the plan's limit of 2 per hour");
    assert_eq!((err.code(), err.status()), (Some(Code::TooFrequent), Some(429)), "{err:?}");
    assert!(err.retry_after().is_some_and(|d| d > Duration::from_secs(60)), "{err:?}");

    // Another credential of the account counts in the same bucket: refused from its first request.
    let issued = admin.create_credential(&c.account_id).await.unwrap();
    let second = ApiKeyClient::with_options(&server.url(), issued.api_key.expose(), fast_retries(3)).unwrap();
    let err = second.verify().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::TooFrequent), "{err:?}");

    // A bigger plan applies (within the change-feed bound), keeping what was spent: 2 of 5
    // spent, so this request leaves 2. A refusal meanwhile takes nothing.
    admin.put_plan("tiny", &[RateLimit::new("requests", 5, "1h")]).await.unwrap();
    let start = std::time::Instant::now();
    let me = loop {
        match second.verify().await {
            Ok(me) => break me,
            Err(e) if e.code() == Some(Code::TooFrequent) && start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the new plan did not apply: {e:?}"),
        }
    };
    let statuses: Vec<(&str, u64, u64)> =
        me.ratelimits.iter().map(|s| (s.name.as_str(), s.limit, s.remaining)).collect();
    assert_eq!(statuses, [("requests", 5, 2)]);
}

//! Usage through `AdminClient`: a credential's and an account's buckets by day and hour, with
//! every outcome and the credits, the CSV exports, the older `usage(days)` form, and a period
//! the server refuses as a typed `1003`.

use std::time::Duration;

use keygate_client::{Code, Granularity, UsageQuery};

use crate::support::{Server, wait_until};

#[tokio::test]
async fn usage_by_outcome_as_buckets_and_csv() {
    let server = Server::start_with(|c| c.usage_flush = Duration::from_millis(50)).await;
    let admin = server.admin();
    let c = server.customer().await;
    let second = admin.create_credential(&c.account_id).await.unwrap();
    let set = [keygate_client::RateLimit::new("requests", 2, "1m")];
    admin.set_credential_ratelimits(c.client_id(), &set).await.unwrap();
    let client = c.key_client(&server.url());
    for _ in 0..2 {
        client.verify().await.unwrap();
    }
    assert_eq!(client.verify().await.unwrap_err().code(), Some(Code::TooFrequent));
    keygate_client::ApiKeyClient::new(&server.url(), second.api_key.expose()).unwrap().verify().await.unwrap();

    let all = UsageQuery::new();
    wait_until(Duration::from_secs(5), "usage is written", || async {
        admin.account_usage(&c.account_id, &all).await.unwrap().iter().map(|b| b.total).sum::<u64>() == 4
    })
    .await;
    let days = admin.credential_usage(c.client_id(), &all).await.unwrap();
    let sum = |f: &dyn Fn(&keygate_client::UsageBucket) -> u64, v: &[keygate_client::UsageBucket]| {
        v.iter().map(f).sum::<u64>()
    };
    assert_eq!(sum(&|b| b.requests_with(1000), &days), 2);
    assert_eq!(sum(&|b| b.requests_with(1005), &days), 1);
    assert!(days.iter().all(|b| b.start % 86_400_000 == 0));
    let hours = admin.credential_usage(c.client_id(), &UsageQuery::new().granularity(Granularity::Hour)).await.unwrap();
    assert_eq!(sum(&|b| b.total, &hours), 3);
    assert!(hours.iter().all(|b| b.start % 3_600_000 == 0));
    let account = admin.account_usage(&c.account_id, &all).await.unwrap();
    assert_eq!((sum(&|b| b.requests_with(1000), &account), sum(&|b| b.requests_with(1005), &account)), (3, 1));

    // The older form reads the same days.
    let legacy = admin.usage(c.client_id(), Some(7)).await.unwrap();
    assert_eq!(legacy.iter().map(|d| (d.requests, d.limited)).fold((0, 0), |a, d| (a.0 + d.0, a.1 + d.1)), (2, 1));

    // CSV: the header, then a line per day, credential and outcome.
    let csv = admin.credential_usage_csv(c.client_id(), &all).await.unwrap();
    assert!(csv.starts_with("start,client_id,outcome,requests,credits\n"), "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.contains(c.client_id())), "{csv}");
    let csv = admin.account_usage_csv(&c.account_id, &UsageQuery::new().since_ms(0).until("2020-01-01")).await;
    assert!(matches!(csv, Err(ref e) if e.code() == Some(Code::ParamError) && e.status() == Some(400)), "{csv:?}");
    let csv = admin.account_usage_csv(&c.account_id, &all).await.unwrap();
    assert!(csv.contains(&second.client_id) && csv.contains(c.client_id()), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 3, "{csv}");

    // A period the server does not take, an unknown account.
    let err = admin.credential_usage(c.client_id(), &UsageQuery::new().since("2025-02-01").until("2025-01-01")).await;
    let err = err.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some(Code::ParamError), Some(400)), "{err:?}");
    let err = admin.account_usage("0123456789abcdef01234567", &all).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err:?}");
}

//! A running server learns of the CLI's writes into the same SQLite file through the change
//! feed (default poll interval 250 ms) and refuses revoked keys and banned accounts within a
//! second, even though it had them cached as valid.

use std::time::{Duration, Instant};

use crate::support::{Reply, Sandbox, Server, jwt_part};

const BOUND: Duration = Duration::from_secs(1);

/// Polls every 20 ms until `check` holds for the reply (or 5 s pass); returns the time taken
/// from `since`.
async fn time_until(
    what: &str,
    since: Instant,
    mut probe: impl AsyncFnMut() -> Reply,
    check: impl Fn(&Reply) -> bool,
) -> Duration {
    let mut last;
    loop {
        last = probe().await;
        if check(&last) {
            return since.elapsed();
        }
        if since.elapsed() > Duration::from_secs(5) {
            panic!("{what}: still not seen after 5 s; last answer {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cli(sb: &Sandbox, args: &[&str]) -> Instant {
    let out = sb.run(args);
    assert!(out.status.success(), "keygate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    // The write is committed before the process exits; measure from here.
    Instant::now()
}

async fn assert_within_bound(what: &str, server: &Server, key: &str, since: Instant, code: i64) -> Duration {
    let took = time_until(what, since, async || server.verify_key(key).await, |r| r.code() == code).await;
    eprintln!("{what}: seen by the server after {took:?}");
    assert!(took < BOUND, "{what}: took {took:?}, more than {BOUND:?}");
    took
}

#[tokio::test]
async fn cli_writes_reach_a_running_server_within_a_second() {
    let sb = Sandbox::with_database();
    let a1 = sb.create_account("revoke@example.com");
    let (c1, k1) = sb.create_credential(&a1);
    let a2 = sb.create_account("ban@example.com");
    let (c2, k2) = sb.create_credential(&a2);
    let (c3, k3) = sb.create_credential(&a2);

    // Default feed interval: no --feed-interval, and the environment is scrubbed.
    let server = sb.start(&[], &[]).await;

    // Warm the caches: every key and token is known to be valid.
    let t1 = server.token(&c1, &k1).await;
    let t2 = server.token(&c2, &k2).await;
    for key in [&k1, &k2, &k3] {
        assert_eq!(server.verify_key(key).await.code(), 1000);
    }
    for t in [&t1, &t2] {
        assert_eq!(server.verify_bearer(t).await.code(), 1000);
    }

    // Revoke in another process.
    let since = cli(&sb, &["credential", "revoke", &c1]);
    assert_within_bound("credential revoke (x-api-key)", &server, &k1, since, 1101).await;
    assert_eq!(server.verify_bearer(&t1).await.code(), 1101);
    assert_eq!(server.get_token(&c1, &k1).await.code(), 1101);

    // Ban in another process: every key and token of the account answers 1200.
    let since = cli(&sb, &["account", "ban", &a2, "--reason", "e2e"]);
    assert_within_bound("account ban (x-api-key)", &server, &k2, since, 1200).await;
    let r = server.verify_key(&k3).await;
    assert_eq!((r.code(), r.status), (1200, 403), "{r:?}");
    assert_eq!(server.verify_bearer(&t2).await.code(), 1200);
    assert_eq!(server.get_token(&c3, &k3).await.code(), 1200);

    // Unban: accepted again within the same bound.
    let since = cli(&sb, &["account", "unban", &a2]);
    assert_within_bound("account unban (x-api-key)", &server, &k2, since, 1000).await;
    assert_eq!(server.verify_bearer(&t2).await.code(), 1000);

    // Rotation without grace: the old key stops, the new one works.
    let rotated = sb.json(&["credential", "rotate", &c3]);
    let since = Instant::now();
    let new_key = rotated["apiKey"].as_str().unwrap().to_owned();
    assert_within_bound("credential rotate (old key)", &server, &k3, since, 1101).await;
    assert_eq!(server.verify_key(&new_key).await.code(), 1000);

    // The revoked credential's account is untouched.
    let (c4, k4) = sb.create_credential(&a1);
    let since = Instant::now();
    let took = time_until("new credential", since, async || server.verify_key(&k4).await, |r| r.code() == 1000).await;
    assert!(took < BOUND, "{took:?}");

    // Signing keys: after `signing-key rotate` the server signs with the new key; after
    // `signing-key retire` of the old one, tokens signed with it are refused.
    let old_token = server.token(&c4, &k4).await;
    let old_kid = jwt_part(&old_token, 0)["kid"].as_str().unwrap().to_owned();
    let new_kid = sb.json(&["signing-key", "rotate"])["kid"].as_str().unwrap().to_owned();
    let since = Instant::now();
    let took = time_until(
        "signing-key rotate",
        since,
        async || server.get_token(&c4, &k4).await,
        |r| r.body["token"].as_str().is_some_and(|t| jwt_part(t, 0)["kid"] == new_kid.as_str()),
    )
    .await;
    eprintln!("signing-key rotate: seen by the server after {took:?}");
    assert!(took < BOUND, "signing-key rotate took {took:?}");
    let new_token = server.token(&c4, &k4).await;
    assert_eq!(server.verify_bearer(&old_token).await.code(), 1000);
    let since = cli(&sb, &["signing-key", "retire", &old_kid]);
    let took =
        time_until("signing-key retire", since, async || server.verify_bearer(&old_token).await, |r| r.code() == 1101)
            .await;
    eprintln!("signing-key retire: seen by the server after {took:?}");
    assert!(took < BOUND, "signing-key retire took {took:?}");
    assert_eq!(server.verify_bearer(&new_token).await.code(), 1000);
}

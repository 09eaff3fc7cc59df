//! The shared rate-limit buckets on a real Redis (a private `redis-server` of the test's own):
//! leases never give more than the bucket holds, a changed limit keeps what was spent (as one
//! node's buckets do), fractions of a microsecond add up, and buckets expire once full.
#![cfg(feature = "redis")]

use keygate_auth::ratelimit::SharedCounter;
use keygate_auth::ratelimit::redis::RedisCounter;
use keygate_core::ratelimit::Policy;
use keygate_testkit::PrivateRedis;

const S: u64 = 1_000_000_000;

fn policy(limit: u64, secs: u64) -> Policy {
    Policy::new(limit, secs * S)
}

fn redis() -> Option<PrivateRedis> {
    match PrivateRedis::start() {
        Ok(r) => Some(r),
        Err(why) if !keygate_testkit::require_all() => {
            eprintln!("\n!!! SKIPPED redis_counter: {why}\n");
            None
        }
        Err(why) => panic!("KEYGATE_TEST_REQUIRE_ALL=1 and redis-server is missing: {why}"),
    }
}

#[tokio::test]
async fn leases_follow_the_shared_bucket() {
    let Some(redis) = redis() else { return };
    let counter = RedisCounter::connect(&redis.url).unwrap();
    counter.ping().await.unwrap();
    let now = 1_800_000_000 * S;
    let p = policy(10, 60);

    // Never more than the bucket holds, however much is asked.
    assert_eq!(counter.lease("k1", p, 4, now).await.unwrap().granted, 4);
    assert_eq!(counter.lease("k1", p, 100, now).await.unwrap().granted, 6);
    let dry = counter.lease("k1", p, 1, now).await.unwrap();
    assert_eq!(dry.granted, 0);
    // The arrival time: ten intervals of 6 s ahead of now.
    assert_eq!(dry.tat, now + 60 * S);
    // One interval later, one more.
    assert_eq!(counter.lease("k1", p, 5, now + 6 * S).await.unwrap().granted, 1);

    // Raised to 20 per minute with 6 spent: 14 left. Lowered below what was spent: none.
    let k2 = "k2";
    assert_eq!(counter.lease(k2, p, 6, now).await.unwrap().granted, 6);
    assert_eq!(counter.lease(k2, policy(20, 60), 100, now).await.unwrap().granted, 14);
    assert_eq!(counter.lease(k2, policy(5, 60), 100, now).await.unwrap().granted, 0);

    // 3 per second: an interval of 333,333.33 µs; the fractions add up to the window.
    let p3 = policy(3, 1);
    assert_eq!(counter.lease("k3", p3, 10, now).await.unwrap().granted, 3);
    assert_eq!(counter.lease("k3", p3, 10, now + S / 3 - 1_000).await.unwrap().granted, 0);
    assert_eq!(counter.lease("k3", p3, 10, now + S / 3 + 1_000).await.unwrap().granted, 1);
    assert_eq!(counter.lease("k3", p3, 10, now + 10 * S).await.unwrap().granted, 3, "full again, never more");

    // A limit of 0 grants nothing.
    assert_eq!(counter.lease("k4", policy(0, 1), 1, now).await.unwrap().granted, 0);
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_hang() {
    let Some(redis) = redis() else { return };
    let counter = RedisCounter::connect(&redis.url).unwrap();
    counter.ping().await.unwrap();
    redis.kill();
    let started = std::time::Instant::now();
    let now = 1_800_000_000 * S;
    assert!(counter.lease("k", policy(10, 1), 1, now).await.is_err());
    assert!(counter.ping().await.is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    redis.resume();
    let start = std::time::Instant::now();
    while counter.ping().await.is_err() {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "never reconnected");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(counter.lease("k", policy(10, 1), 1, now).await.unwrap().granted, 1);
}

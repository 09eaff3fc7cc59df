//! The usage contract, on both backends: counts per credential, per hour and per day, per outcome
//! (requests and credits); accounts summed over their credentials; `[from, to)` bounds; pruning
//! of hourly rows; batches as big as a busy server flushes, all or nothing; and migration 0006,
//! which turns the per-day counts of the old `credential_usage` table into daily rows.

use std::sync::Arc;

use keygate_core::audit::Audit;
use keygate_core::{AccountId, ClientId};
use keygate_store::{
    CredentialBucket, DAY_MS, Granularity, HOUR_MS, Store, StoreError, UsageBucket, UsageDelta, UsageScope,
};

use super::{hash, new_account};

/// 2024-10-04T00:00Z, in hours since the epoch (day 20,000).
const H0: i64 = 480_000;
const DAY0: i64 = H0 / 24;
const ALL: (i64, i64) = (i64::MIN, i64::MAX);

fn delta(client_id: ClientId, hour: i64, outcome: u32, requests: u64, credits: u64, last_used_at: i64) -> UsageDelta {
    UsageDelta { client_id, hour, outcome, requests, credits, last_used_at }
}

fn hour(h: i64, outcome: u32, requests: u64, credits: u64) -> UsageBucket {
    UsageBucket { start: h * HOUR_MS, outcome, requests, credits }
}

fn day(d: i64, outcome: u32, requests: u64, credits: u64) -> UsageBucket {
    UsageBucket { start: d * DAY_MS, outcome, requests, credits }
}

async fn read(store: &dyn Store, scope: UsageScope, (from, to): (i64, i64), g: Granularity) -> Vec<UsageBucket> {
    store.usage(scope, from, to, g).await.unwrap()
}

/// Batches add up per (credential, hour, outcome) and per (credential, day, outcome); an
/// account's usage is its credentials' summed, and its export lists each credential's; buckets
/// are taken when their start is in `[from, to)`; pruning drops old hours and keeps the days.
async fn outcomes_suite(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let a = store.create_account(&Audit::system(), &new_account("outcomes@example.com")).await.unwrap();
    let other = store.create_account(&Audit::system(), &new_account("other@example.com")).await.unwrap();
    let (c1, c2, c3) = (ClientId::generate(1), ClientId::generate(2), ClientId::generate(3));
    store.create_credential(&Audit::system(), a.id, c1, &hash("o1"), "h", &Default::default()).await.unwrap();
    store.create_credential(&Audit::system(), a.id, c2, &hash("o2"), "h", &Default::default()).await.unwrap();
    store.create_credential(&Audit::system(), other.id, c3, &hash("o3"), "h", &Default::default()).await.unwrap();
    let ghost = ClientId::generate(9);

    store
        .record_usage(&[
            delta(c1, H0, 1000, 5, 50, 1_000),
            delta(c1, H0, 1005, 2, 0, 1_100),
            delta(c1, H0 + 1, 1000, 1, 10, 1_200),
            delta(c2, H0 + 1, 1006, 3, 0, 1_300),
            delta(c3, H0, 1000, 7, 70, 1_400),
            delta(ghost, H0, 1000, 1, 1, 9_999),
        ])
        .await
        .unwrap();
    // A second flush adds to the same hours and starts new ones (the next day, another outcome).
    store
        .record_usage(&[
            delta(c1, H0, 1000, 1, 10, 900),
            delta(c1, H0 + 25, 1101, 4, 0, 2_000),
            delta(c2, H0 + 1, 1006, 1, 0, 1_000),
            delta(ghost, H0 + 1, 1000, 1, 1, 9_999),
        ])
        .await
        .unwrap();
    store.record_usage(&[]).await.unwrap();

    let c1_hours = [hour(H0, 1000, 6, 60), hour(H0, 1005, 2, 0), hour(H0 + 1, 1000, 1, 10), hour(H0 + 25, 1101, 4, 0)];
    assert_eq!(read(s, UsageScope::Credential(c1), ALL, Granularity::Hour).await, c1_hours);
    let c1_days = [day(DAY0, 1000, 7, 70), day(DAY0, 1005, 2, 0), day(DAY0 + 1, 1101, 4, 0)];
    assert_eq!(read(s, UsageScope::Credential(c1), ALL, Granularity::Day).await, c1_days);
    assert_eq!(read(s, UsageScope::Credential(c2), ALL, Granularity::Day).await, [day(DAY0, 1006, 4, 0)]);

    // An account: its credentials summed, by start then outcome; another account's are not in it.
    assert_eq!(
        read(s, UsageScope::Account(a.id), ALL, Granularity::Hour).await,
        [
            hour(H0, 1000, 6, 60),
            hour(H0, 1005, 2, 0),
            hour(H0 + 1, 1000, 1, 10),
            hour(H0 + 1, 1006, 4, 0),
            hour(H0 + 25, 1101, 4, 0)
        ]
    );
    assert_eq!(
        read(s, UsageScope::Account(a.id), ALL, Granularity::Day).await,
        [day(DAY0, 1000, 7, 70), day(DAY0, 1005, 2, 0), day(DAY0, 1006, 4, 0), day(DAY0 + 1, 1101, 4, 0)]
    );
    assert_eq!(read(s, UsageScope::Account(other.id), ALL, Granularity::Day).await, [day(DAY0, 1000, 7, 70)]);

    // Per credential: by start, clientId, outcome.
    let mut expected = vec![
        CredentialBucket { client_id: c1, bucket: day(DAY0, 1000, 7, 70) },
        CredentialBucket { client_id: c1, bucket: day(DAY0, 1005, 2, 0) },
        CredentialBucket { client_id: c2, bucket: day(DAY0, 1006, 4, 0) },
        CredentialBucket { client_id: c1, bucket: day(DAY0 + 1, 1101, 4, 0) },
    ];
    expected.sort_by_key(|r| (r.bucket.start, r.client_id.to_hex(), r.bucket.outcome));
    assert_eq!(
        store.usage_by_credential(UsageScope::Account(a.id), ALL.0, ALL.1, Granularity::Day).await.unwrap(),
        expected
    );
    let c1_rows = store.usage_by_credential(UsageScope::Credential(c1), ALL.0, ALL.1, Granularity::Hour).await.unwrap();
    assert_eq!(c1_rows.iter().map(|r| r.bucket).collect::<Vec<_>>(), c1_hours);
    assert!(c1_rows.iter().all(|r| r.client_id == c1));

    // Bounds: a bucket is in when its start is in [from, to).
    let hours =
        |from: i64, to: i64| read(s, UsageScope::Credential(c1), (from * HOUR_MS, to * HOUR_MS), Granularity::Hour);
    assert_eq!(hours(H0 + 1, H0 + 25).await, [hour(H0 + 1, 1000, 1, 10)]);
    assert_eq!(hours(H0, H0 + 1).await, c1_hours[..2]);
    assert_eq!(hours(H0 + 25, H0 + 26).await, c1_hours[3..]);
    assert_eq!(hours(H0, H0).await, []);
    assert_eq!(hours(H0 + 26, H0).await, []);
    let from_inside = read(s, UsageScope::Credential(c1), (H0 * HOUR_MS + 1, i64::MAX), Granularity::Hour).await;
    assert_eq!(from_inside, c1_hours[2..], "the hour that started before `from` is out");
    let to_inside = read(s, UsageScope::Credential(c1), (0, (H0 + 1) * HOUR_MS + 1), Granularity::Hour).await;
    assert_eq!(to_inside, c1_hours[..3], "the hour that starts before `to` is in");
    let days = read(s, UsageScope::Account(a.id), (DAY0 * DAY_MS + 1, (DAY0 + 2) * DAY_MS), Granularity::Day).await;
    assert_eq!(days, [day(DAY0 + 1, 1101, 4, 0)]);

    // Unknown ids have no usage; deltas of a credential that does not exist left nothing.
    assert_eq!(read(s, UsageScope::Credential(ghost), ALL, Granularity::Hour).await, []);
    assert_eq!(read(s, UsageScope::Account(AccountId::generate(9)), ALL, Granularity::Day).await, []);
    assert!(matches!(store.get_credential(ghost).await, Err(StoreError::NotFound)));
    // last_used_at: the newest of all the credential's deltas, never backwards.
    assert_eq!(store.get_credential(c1).await.unwrap().last_used_at, Some(2_000));
    assert_eq!(store.get_credential(c2).await.unwrap().last_used_at, Some(1_300));

    // Pruning deletes the hours before the given one (here: H0's three rows) and keeps every day.
    assert_eq!(store.prune_usage(H0 + 1).await.unwrap(), 3);
    assert_eq!(read(s, UsageScope::Credential(c1), ALL, Granularity::Hour).await, c1_hours[2..]);
    assert_eq!(read(s, UsageScope::Credential(c3), ALL, Granularity::Hour).await, []);
    assert_eq!(read(s, UsageScope::Credential(c1), ALL, Granularity::Day).await, c1_days);
    assert_eq!(read(s, UsageScope::Credential(c3), ALL, Granularity::Day).await, [day(DAY0, 1000, 7, 70)]);
    assert_eq!(store.prune_usage(H0 + 1).await.unwrap(), 0);
    // A pruned hour that is counted again starts over; its day keeps adding up.
    store.record_usage(&[delta(c3, H0, 1000, 1, 1, 1)]).await.unwrap();
    assert_eq!(read(s, UsageScope::Credential(c3), ALL, Granularity::Hour).await, [hour(H0, 1000, 1, 1)]);
    assert_eq!(read(s, UsageScope::Credential(c3), ALL, Granularity::Day).await, [day(DAY0, 1000, 8, 71)]);
}

/// Usage batches as big as a busy server flushes: more rows than one statement takes (the SQLite
/// backend writes a batch in chunks), still all or nothing.
async fn big_batch_suite(store: Arc<dyn Store>) {
    const HOURS: i64 = 60;
    let s = store.as_ref();
    let a = store.create_account(&Audit::system(), &new_account("usage@example.com")).await.unwrap();
    let mut cids = Vec::new();
    for i in 0..12 {
        let cid = ClientId::generate(i);
        store
            .create_credential(&Audit::system(), a.id, cid, &hash(&format!("usage-{i}")), "h", &Default::default())
            .await
            .unwrap();
        cids.push(cid);
    }
    let ghost = ClientId::generate(99);
    let requests = |k: usize, h: i64| (k as u64 + 1) * 10 + h as u64 % 7;
    let limited = |k: usize, h: i64| (k as u64 + h as u64) % 3;
    let credits = |k: usize, h: i64| requests(k, h) * (k as u64 % 4);
    // Each credential's newest use falls somewhere inside the batch, not at its end.
    let used_at = |k: usize, h: i64| 1_000_000 + ((h * 37 + k as i64 * 11) % 101) * 1_000;

    // 12 credentials x 60 hours (two and a half days) x 2 outcomes, hour after hour, so every
    // credential is in every chunk; plus a credential that does not exist (any more): skipped,
    // without an orphan usage row.
    let mut batch = Vec::new();
    for h in H0..H0 + HOURS {
        for (k, &cid) in cids.iter().enumerate() {
            batch.push(delta(cid, h, 1000, requests(k, h), credits(k, h), used_at(k, h)));
            if limited(k, h) > 0 {
                batch.push(delta(cid, h, 1005, limited(k, h), 0, used_at(k, h)));
            }
        }
        if h % 20 == 0 {
            batch.push(delta(ghost, h, 1000, 1, 1, 9_999_999));
        }
    }
    assert!(batch.len() > 1_200);
    store.record_usage(&batch).await.unwrap();
    let newest: Vec<i64> = (0..cids.len()).map(|k| (H0..H0 + HOURS).map(|h| used_at(k, h)).max().unwrap()).collect();
    for (k, &cid) in cids.iter().enumerate() {
        let mut expected = Vec::new();
        for h in H0..H0 + HOURS {
            expected.push(hour(h, 1000, requests(k, h), credits(k, h)));
            if limited(k, h) > 0 {
                expected.push(hour(h, 1005, limited(k, h), 0));
            }
        }
        assert_eq!(read(s, UsageScope::Credential(cid), ALL, Granularity::Hour).await, expected, "credential {k}");
        let mut days = Vec::new();
        for d in DAY0..=(H0 + HOURS - 1) / 24 {
            let hs = (d * 24).max(H0)..((d + 1) * 24).min(H0 + HOURS);
            days.push(day(d, 1000, hs.clone().map(|h| requests(k, h)).sum(), hs.clone().map(|h| credits(k, h)).sum()));
            let refused: u64 = hs.map(|h| limited(k, h)).sum();
            if refused > 0 {
                days.push(day(d, 1005, refused, 0));
            }
        }
        assert_eq!(read(s, UsageScope::Credential(cid), ALL, Granularity::Day).await, days, "credential {k}");
        assert_eq!(store.get_credential(cid).await.unwrap().last_used_at, Some(newest[k]), "credential {k}");
    }
    assert_eq!(read(s, UsageScope::Credential(ghost), ALL, Granularity::Hour).await, []);
    let account_day0 = read(s, UsageScope::Account(a.id), (DAY0 * DAY_MS, (DAY0 + 1) * DAY_MS), Granularity::Day).await;
    let sum = |f: &dyn Fn(usize, i64) -> u64| {
        (0..cids.len()).flat_map(|k| (H0..H0 + 24).map(move |h| (k, h))).map(|(k, h)| f(k, h)).sum::<u64>()
    };
    assert_eq!(account_day0[0], day(DAY0, 1000, sum(&requests), sum(&credits)));
    assert_eq!(account_day0[1], day(DAY0, 1005, sum(&limited), 0));

    // One (credential, hour, outcome) twice in one batch (the server never sends that, but
    // nothing forbids it) counts both.
    let (c0, c3) = (cids[0], cids[3]);
    let last = H0 + HOURS - 1;
    store.record_usage(&[delta(c3, last + 1, 1000, 1, 2, 1), delta(c3, last + 1, 1000, 2, 3, 1)]).await.unwrap();
    let next = (last + 1) * HOUR_MS;
    assert_eq!(
        read(s, UsageScope::Credential(c3), (next, i64::MAX), Granularity::Hour).await,
        [hour(last + 1, 1000, 3, 5)]
    );

    // All or nothing: a batch the database rejects at its end (here: two counts for one hour
    // whose sum overflows 64 bits) leaves no trace of its earlier rows, in whichever chunk they
    // were, hourly or daily; a count that does not fit 64 signed bits is refused before.
    let snapshot = || async {
        let mut all = Vec::new();
        for cid in [c0, c3] {
            for g in [Granularity::Hour, Granularity::Day] {
                all.push(read(s, UsageScope::Credential(cid), ALL, g).await);
            }
        }
        all
    };
    let before = snapshot().await;
    let mut bad: Vec<UsageDelta> = (0..1_100).map(|i| delta(c0, H0 + 1_000 + i, 1000, 1, 1, 7_000_000)).collect();
    bad.push(delta(c3, last + 1, 1000, i64::MAX as u64, 0, 1));
    bad.push(delta(c3, last + 1, 1000, i64::MAX as u64, 0, 1));
    assert!(store.record_usage(&bad).await.is_err());
    bad.truncate(1_100);
    bad.push(delta(c3, last + 1, 1000, 1, u64::MAX, 1));
    assert!(store.record_usage(&bad).await.is_err());
    assert_eq!(snapshot().await, before);
    assert_eq!(store.get_credential(c0).await.unwrap().last_used_at, Some(newest[0]));
}

#[tokio::test]
async fn sqlite_usage_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/usage.db", dir.path().display());
    outcomes_suite(keygate_store::connect(&url, true).await.unwrap()).await;
    big_batch_suite(keygate_store::connect(&url, true).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_usage_contract() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    outcomes_suite(keygate_store::connect(&db.url, true).await.unwrap()).await;
    big_batch_suite(keygate_store::connect(&db.url, true).await.unwrap()).await;
}

/// A database at migration 4 (before usage by outcome) with per-day counts in the old table:
/// `run` applies the migrator given, `exec` runs SQL.
async fn old_usage(
    migrations: &str,
    run: impl AsyncFn(&sqlx::migrate::Migrator),
    exec: impl AsyncFn(String),
) -> ClientId {
    let mut migrator = sqlx::migrate::Migrator::new(std::path::Path::new(migrations)).await.unwrap();
    migrator.migrations = migrator.migrations.iter().filter(|m| m.version <= 4).cloned().collect::<Vec<_>>().into();
    run(&migrator).await;
    let (account, cid) = (AccountId::generate(1).to_hex(), ClientId::generate(1));
    exec(format!(
        "INSERT INTO accounts (id, email, status, created_at, updated_at) VALUES ('{account}', 'old@example.com', 'active', 1, 1)"
    ))
    .await;
    exec(format!(
        "INSERT INTO credentials (client_id, account_id, status, generation, hint, created_at, updated_at) \
         VALUES ('{}', '{account}', 'active', 1, 'h', 1, 1)",
        cid.to_hex()
    ))
    .await;
    exec(format!(
        "INSERT INTO credential_usage (client_id, day, requests, limited) VALUES \
         ('{0}', 20000, 5, 0), ('{0}', 20001, 3, 2), ('{0}', 20002, 0, 4)",
        cid.to_hex()
    ))
    .await;
    cid
}

/// Migration 0006 on a database with usage: each day's requests become outcome 1000, its
/// rate-limited ones outcome 1005 (a zero count makes no row); no hourly rows are made up.
async fn check_migrated_usage(store: Arc<dyn Store>, cid: ClientId) {
    let s = store.as_ref();
    assert_eq!(
        read(s, UsageScope::Credential(cid), ALL, Granularity::Day).await,
        [day(20_000, 1000, 5, 0), day(20_001, 1000, 3, 0), day(20_001, 1005, 2, 0), day(20_002, 1005, 4, 0)]
    );
    assert_eq!(read(s, UsageScope::Credential(cid), ALL, Granularity::Hour).await, []);
    // And the new tables take new counts.
    store.record_usage(&[delta(cid, 20_002 * 24 + 5, 1005, 1, 0, 5)]).await.unwrap();
    assert_eq!(
        read(s, UsageScope::Credential(cid), (20_002 * DAY_MS, i64::MAX), Granularity::Day).await,
        [day(20_002, 1005, 5, 0)]
    );
}

#[tokio::test]
async fn sqlite_migration_keeps_old_usage() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/old.db", dir.path().display());
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
    let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true)).await.unwrap();
    let cid = old_usage(
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"),
        async |m| m.run(&pool).await.unwrap(),
        async |sql| {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
        },
    )
    .await;
    pool.close().await;
    check_migrated_usage(keygate_store::connect(&url, true).await.unwrap(), cid).await;
}

#[tokio::test]
async fn postgres_migration_keeps_old_usage() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let cid = old_usage(
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"),
        async |m| m.run(&pool).await.unwrap(),
        async |sql| {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
        },
    )
    .await;
    pool.close().await;
    check_migrated_usage(keygate_store::connect(&db.url, true).await.unwrap(), cid).await;
}

/// Not a check, a measurement: how long flushing 10,000 deltas (one per credential, two
/// outcomes each) takes, first as new rows, then as updates of existing ones. Run with
/// `cargo test -p keygate-store --test contract -- --ignored --nocapture usage_flush_timing`.
async fn usage_flush_timing(backend: &str, store: Arc<dyn Store>) {
    const N: usize = 10_000;
    let a = store.create_account(&Audit::system(), &new_account("timing@example.com")).await.unwrap();
    let setup = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut cids = Vec::new();
            for i in (t..N).step_by(8) {
                let cid = ClientId::generate(i as u64);
                store
                    .create_credential(
                        &Audit::system(),
                        a.id,
                        cid,
                        &hash(&format!("timing-{i}")),
                        "h",
                        &Default::default(),
                    )
                    .await
                    .unwrap();
                cids.push(cid);
            }
            cids
        }));
    }
    let mut cids = Vec::new();
    for t in tasks {
        cids.extend(t.await.unwrap());
    }
    eprintln!("{backend}: {N} credentials created in {:?}", setup.elapsed());
    for round in 0..3 {
        let batch: Vec<UsageDelta> = cids
            .iter()
            .flat_map(|&cid| [delta(cid, H0, 1000, 3, 3, 1_000 + round), delta(cid, H0, 1005, 1, 0, 1_000 + round)])
            .collect();
        let t = std::time::Instant::now();
        store.record_usage(&batch).await.unwrap();
        let kind = if round == 0 { "new rows" } else { "updates" };
        eprintln!("{backend}: flush of {} deltas ({kind}): {:?}", batch.len(), t.elapsed());
    }
    let t = std::time::Instant::now();
    let rows = store.usage_by_credential(UsageScope::Account(a.id), 0, i64::MAX, Granularity::Day).await.unwrap();
    eprintln!("{backend}: an account's export of {} rows read in {:?}", rows.len(), t.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn sqlite_usage_flush_timing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/timing.db", dir.path().display());
    usage_flush_timing("sqlite", keygate_store::connect(&url, true).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn postgres_usage_flush_timing() {
    let db = match keygate_testkit::TestDb::create().await {
        Ok(db) => db,
        Err(why) => keygate_testkit::skip_or_fail!("{why}"),
    };
    usage_flush_timing("postgres", keygate_store::connect(&db.url, true).await.unwrap()).await;
}

//! Verification at scale on PostgreSQL: seeds N credentials (default 1,000,000; kept between
//! runs), starts a node, and measures in-process:
//! - start-up time of a node (no preload: the cache fills on demand);
//! - cold-miss verification latency (each request's credential not cached yet);
//! - warm-cache verification latency (the same credentials again);
//! - memory per cached credential: with `--fill` (the default) every credential is verified, so
//!   cached, and RSS growth is divided by the credentials cached; the caches' own tables are
//!   counted too (`Authenticator::cache_table_bytes`), so the allocator's share shows.
//!
//! `cargo run --release -p keygate-bench --bin pg_scale -- --database-url postgres://postgres@127.0.0.1/kgbench`

use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::{HeaderMap, HeaderValue};
use clap::Parser;
use keygate_auth::identity::X_API_KEY;
use keygate_core::Secret;
use keygate_core::key::{API_KEY_PREFIX, RANDOM_LEN, with_checksum};
use keygate_core::{AccountId, ClientId, MasterKey};
use keygate_server::{Application, Config};
use rand::{Rng, SeedableRng};

/// The allocator the keygate binary uses, so that memory is measured as users run it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// An existing database (created if missing) on the PostgreSQL server.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/keygate_bench")]
    database_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    credentials: usize,
    /// Credentials verified one at a time, cold then warm (latencies).
    #[arg(long, default_value_t = 20_000)]
    sample: usize,
    /// Then verify every credential (so that all are cached) and measure memory and warm
    /// latency with all of them cached.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    fill: bool,
    /// Requests in flight while filling.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

const MASTER: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const BATCH: usize = 50_000;

/// Credential `i`'s API key, derived from `i` so the benchmark can present any of them.
fn key(i: usize) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
    let body: String = (0..RANDOM_LEN).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect();
    with_checksum(&format!("{API_KEY_PREFIX}{body}"))
}

fn id_hex(kind: u8, i: usize) -> String {
    let mut b = [0u8; 12];
    b[0] = 0x6b;
    b[3] = kind;
    b[4..].copy_from_slice(&(i as u64).to_be_bytes());
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let (base, name) = url.rsplit_once('/').context("database URL has no database name")?;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{base}/postgres")).await?;
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1").bind(name).fetch_optional(&mut conn).await?;
    if exists.is_none() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
    }
    Ok(())
}

async fn seed(url: &str, want: usize) -> anyhow::Result<()> {
    let store = keygate_store::postgres::PgStore::open(url, true).await?;
    let pool = store.pool();
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials").fetch_one(pool).await?;
    if have as usize >= want {
        println!("seed: {have} credentials already present");
        return Ok(());
    }
    let hasher = MasterKey::from_hex(MASTER)?.api_key_hasher();
    let started = Instant::now();
    let mut i = have as usize;
    while i < want {
        let end = (i + BATCH).min(want);
        let idx: Vec<usize> = (i..end).collect();
        let accounts: Vec<String> = idx.iter().map(|&i| id_hex(1, i)).collect();
        let emails: Vec<String> = idx.iter().map(|i| format!("bench{i}@example.com")).collect();
        let clients: Vec<String> = idx.iter().map(|&i| id_hex(2, i)).collect();
        let keys: Vec<String> = idx.iter().map(|&i| key(i)).collect();
        let hashes: Vec<Vec<u8>> = keys.iter().map(|k| hasher.hash(k).as_bytes().to_vec()).collect();
        let hints: Vec<String> = keys.iter().map(|k| keygate_core::key::hint_of(k)).collect();
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO accounts (id, email, first_name, status, created_at, updated_at) \
             SELECT id, email, 'Bench', 'active', 0, 0 FROM UNNEST($1::text[], $2::text[]) AS t(id, email)",
        )
        .bind(&accounts)
        .bind(&emails)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO credentials (client_id, account_id, status, generation, hint, created_at, updated_at) \
             SELECT c, a, 'active', 1, h, 0, 0 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t(c, a, h)",
        )
        .bind(&clients)
        .bind(&accounts)
        .bind(&hints)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO credential_secrets (hash, client_id, generation, created_at) \
             SELECT h, c, 1, 0 FROM UNNEST($1::bytea[], $2::text[]) AS t(h, c)",
        )
        .bind(&hashes)
        .bind(&clients)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        i = end;
        if i.is_multiple_of(1_000_000) || i == want {
            println!("seed: {i} credentials ({:.0?})", started.elapsed());
        }
    }
    sqlx::query("ANALYZE").execute(pool).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {} credentials in {secs:.0} s ({:.0}/s)",
        want - have as usize,
        (want - have as usize) as f64 / secs
    );
    Ok(())
}

/// Prints mean, p50, p99 and max; returns (p50, p99).
fn stats(name: &str, mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    let pct = |p: f64| d[((d.len() - 1) as f64 * p).round() as usize];
    let mean = d.iter().sum::<Duration>() / d.len() as u32;
    println!(
        "{name:<28} n={:<7} mean={:>9.1?} p50={:>9.1?} p99={:>9.1?} max={:>9.1?}",
        d.len(),
        mean,
        pct(0.5),
        pct(0.99),
        d[d.len() - 1]
    );
    (pct(0.5), pct(0.99))
}

fn headers(i: usize) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(&X_API_KEY, HeaderValue::from_str(&key(i)).expect("a key is a header value"));
    h
}

/// Verifies each of `picks` in turn, timing each.
async fn timed(auth: &keygate_auth::Authenticator, picks: &[HeaderMap]) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(picks.len());
    for h in picks {
        let t = Instant::now();
        auth.authenticate(h).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        out.push(t.elapsed());
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure_database(&args.database_url).await?;
    seed(&args.database_url, args.credentials).await?;

    let rss_before_start = rss_kib();
    let t = Instant::now();
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        database_url: args.database_url.clone(),
        master_key: Some(Secret::new(MASTER)),
        admin_token: Some(Secret::new("kga_bench-admin-token-0000000000000000")),
        cache_capacity: (args.credentials as u64).max(1_000_000),
        ..Config::default()
    };
    let app = Application::build(config).await?;
    let startup = t.elapsed();
    println!("node start-up (migrations checked, no preload): {startup:.1?}");
    let auth = app.state().auth.authenticator().clone();
    let store = auth.store().clone();

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut picks: Vec<usize> = (0..args.sample).map(|_| rng.random_range(0..args.credentials)).collect();
    picks.sort_unstable();
    picks.dedup();
    let sample: Vec<HeaderMap> = picks.iter().map(|&i| headers(i)).collect();

    let rss_before = rss_kib();
    let cold = timed(&auth, &sample).await?;
    let warm = timed(&auth, &sample).await?;
    println!("credentials in PostgreSQL: {}", args.credentials);
    let (cold50, cold99) = stats("cold miss (x-api-key)", cold);
    let (warm50, warm99) = stats("warm cache (x-api-key)", warm);
    auth.usage.flush(store.as_ref()).await?;
    let rss_after = rss_kib();
    let per = (rss_after.saturating_sub(rss_before) * 1024) as f64 / sample.len() as f64;
    println!(
        "memory: RSS {} KiB at start ({} KiB before the node), +{} KiB for {} cached credentials = {:.0} bytes each \
             (a small sample: mostly the allocator's first reservations; --fill gives the figure per credential)",
        rss_before,
        rss_before_start,
        rss_after.saturating_sub(rss_before),
        sample.len(),
        per
    );
    let mut result = format!(
        "RESULT credentials={} startup_ms={:.1} cold_p50_us={:.0} cold_p99_us={:.0} warm_p50_ns={} warm_p99_ns={}",
        args.credentials,
        startup.as_secs_f64() * 1e3,
        cold50.as_secs_f64() * 1e6,
        cold99.as_secs_f64() * 1e6,
        warm50.as_nanos(),
        warm99.as_nanos()
    );
    if args.fill {
        // Every credential verified (and so cached), `concurrency` at a time; usage flushed every
        // 10 s as a node does, so what stays is the cache.
        let t = Instant::now();
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // RSS when half are cached: the growth from there on is what each credential costs,
        // without what a node takes once (connections, the allocator's first reservations).
        let half = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let n = args.credentials;
        let flusher = {
            let (auth, store) = (auth.clone(), store.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    let _ = auth.usage.flush(store.as_ref()).await;
                }
            })
        };
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| {
                let (auth, next, half) = (auth.clone(), next.clone(), half.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return anyhow::Ok(());
                        }
                        auth.authenticate(&headers(i)).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
                        if (i + 1).is_multiple_of(1_000_000) {
                            println!("fill: {} credentials ({:.0?}), RSS {} MiB", i + 1, t.elapsed(), rss_kib() / 1024);
                        }
                        if i + 1 == n / 2 {
                            half.store(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.await??;
        }
        flusher.abort();
        auth.usage.flush(store.as_ref()).await?;
        let fill = t.elapsed();
        let rss_full = rss_kib();
        let full = timed(&auth, &sample).await?;
        println!("fill: all {n} verified in {fill:.1?} ({:.0}/s)", n as f64 / fill.as_secs_f64());
        let (full50, full99) = stats("warm, all cached", full);
        let per_full = (rss_full.saturating_sub(rss_before) * 1024) as f64 / n as f64;
        println!(
            "memory with all {n} cached: RSS {} KiB, +{} KiB over the node's start = {per_full:.0} bytes per credential",
            rss_full,
            rss_full.saturating_sub(rss_before)
        );
        // The allocator returns freed memory (the tables' earlier, smaller buffers, the loads'
        // states) to the system after a delay: RSS once it has settled.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss_settled = rss_kib();
        println!(
            "after 5 s idle: RSS {rss_settled} KiB = {:.0} bytes per credential",
            (rss_settled.saturating_sub(rss_before) * 1024) as f64 / n as f64
        );
        let rss_half = half.load(std::sync::atomic::Ordering::Relaxed);
        let marginal = (rss_full.saturating_sub(rss_half) * 1024) as f64 / (n - n / 2) as f64;
        println!("from half to all cached: RSS {rss_half} -> {rss_full} KiB = {marginal:.0} bytes per credential");
        let tables = auth.cache_table_bytes();
        println!(
            "of which the caches' tables: {} KiB = {:.0} bytes per credential (the rest: allocator \
             and what loads left behind)",
            tables / 1024,
            tables as f64 / n as f64
        );
        result += &format!(
            " marginal_bytes_per_credential={marginal:.0} table_bytes_per_credential={:.0} full_warm_p50_ns={} full_warm_p99_ns={} bytes_per_credential={per_full:.0} rss_full_mib={}",
            tables as f64 / n as f64,
            full50.as_nanos(),
            full99.as_nanos(),
            rss_full / 1024
        );
    }
    println!("{result}");
    let _ = AccountId::parse(&id_hex(1, 0))?;
    let _ = ClientId::parse(&id_hex(2, 0))?;
    Ok(())
}

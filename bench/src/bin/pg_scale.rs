//! Verification at scale on PostgreSQL: seeds N credentials (default 1,000,000; kept between
//! runs), starts a node, and measures in-process:
//! - start-up time of a node (no preload: the cache fills on demand);
//! - cold-miss verification latency (each request's credential not cached yet);
//! - warm-cache verification latency (the same credentials again);
//! - memory per cached credential (RSS growth over the cold pass / credentials cached).
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

#[derive(Parser)]
struct Args {
    /// An existing database (created if missing) on the PostgreSQL server.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/keygate_bench")]
    database_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    credentials: usize,
    /// Credentials verified cold then warm.
    #[arg(long, default_value_t = 50_000)]
    sample: usize,
}

const MASTER: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const BATCH: usize = 10_000;

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
        if i.is_multiple_of(100_000) || i == want {
            println!("seed: {i} credentials ({:.0?})", started.elapsed());
        }
    }
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(())
}

fn stats(name: &str, mut d: Vec<Duration>) {
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
        ..Config::default()
    };
    let app = Application::build(config).await?;
    println!("node start-up (migrations checked, no preload): {:.1?}", t.elapsed());
    let auth = app.state().auth.authenticator().clone();

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut picks: Vec<usize> = (0..args.sample).map(|_| rng.random_range(0..args.credentials)).collect();
    picks.sort_unstable();
    picks.dedup();
    let headers: Vec<HeaderMap> = picks
        .iter()
        .map(|&i| {
            let mut h = HeaderMap::new();
            h.insert(&X_API_KEY, HeaderValue::from_str(&key(i)).unwrap());
            h
        })
        .collect();

    let rss_before = rss_kib();
    let mut cold = Vec::with_capacity(headers.len());
    for h in &headers {
        let t = Instant::now();
        let id = auth.authenticate(h).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        cold.push(t.elapsed());
        debug_assert_eq!(id.client_id, ClientId::parse(&id.client_id.to_hex()).unwrap());
    }
    let rss_after = rss_kib();
    let mut warm = Vec::with_capacity(headers.len());
    for h in &headers {
        let t = Instant::now();
        auth.authenticate(h).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        warm.push(t.elapsed());
    }
    println!("credentials in PostgreSQL: {}", args.credentials);
    stats("cold miss (x-api-key)", cold);
    stats("warm cache (x-api-key)", warm);
    let per = (rss_after.saturating_sub(rss_before) * 1024) as f64 / headers.len() as f64;
    println!(
        "memory: RSS {} KiB at start ({} KiB before the node), +{} KiB for {} cached credentials = {:.0} bytes each",
        rss_before,
        rss_before_start,
        rss_after.saturating_sub(rss_before),
        headers.len(),
        per
    );
    let _ = AccountId::parse(&id_hex(1, 0))?;
    Ok(())
}

//! Seeds a keygate database with N customers (one account and one credential each) through the
//! same operations the CLI and the admin API use, and writes what a load generator needs:
//! - `--keys-out`: one API key per line;
//! - `--clients-out`: `clientId<TAB>apiKey` per line (for getToken).
//!
//! Used by `bench/gateway.sh`; the master key file is created beside a SQLite database, so a
//! `keygate serve` started on the same URL afterwards verifies these keys.
//!
//! `cargo run --release -p keygate-bench --bin seed -- --database-url sqlite:///tmp/kg/kg.db --count 10000 \
//!   --keys-out /tmp/kg/keys.txt --clients-out /tmp/kg/clients.tsv`

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use keygate_auth::{MasterKeySource, secrets};
use keygate_core::audit::Audit;
use keygate_core::ratelimit::RateLimit;
use keygate_ops::Ops;
use keygate_store::CreditScope;

#[derive(Parser)]
struct Args {
    /// The database to seed (created and migrated if missing), e.g. sqlite:///tmp/kg/kg.db.
    #[arg(long)]
    database_url: String,
    /// Customers to create: one account and one credential each.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Where to write the API keys, one per line.
    #[arg(long)]
    keys_out: PathBuf,
    /// Where to write `clientId<TAB>apiKey` lines.
    #[arg(long)]
    clients_out: PathBuf,
    /// A rate limit on every credential, NAME=LIMIT/DURATION (repeat for several).
    #[arg(long = "ratelimit")]
    ratelimits: Vec<RateLimit>,
    /// A rate limit on every account (shared by its credential), NAME=LIMIT/DURATION.
    #[arg(long = "account-ratelimit")]
    account_ratelimits: Vec<RateLimit>,
    /// A credits balance on every credential and on every account (both charged per request).
    #[arg(long)]
    credits: Option<i64>,
    /// A permission every credential holds (repeat the flag for several), set at its creation.
    #[arg(long = "permission")]
    permissions: Vec<String>,
}

fn create(path: &PathBuf) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(std::io::BufWriter::new(file))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let master = MasterKeySource::for_database(&args.database_url, None, None)?;
    let (store, master) = secrets::open_store(&args.database_url, &master, true).await?;
    let ops = Ops::new(store, &master, None);

    let mut keys = create(&args.keys_out)?;
    let mut clients = create(&args.clients_out)?;
    let run = std::process::id();
    let started = Instant::now();
    for i in 0..args.count {
        let account = ops
            .create_account(&Audit::system(), &format!("bench{i}-{run}@example.com"), "Bench")
            .await
            .map_err(|e| anyhow::anyhow!("creating account {i}: {e:?}"))?;
        let fields = keygate_core::model::CredentialChange {
            permissions: (!args.permissions.is_empty()).then(|| args.permissions.clone()),
            ..Default::default()
        };
        let issued = ops
            .create_credential_with(&Audit::system(), account.id, fields)
            .await
            .map_err(|e| anyhow::anyhow!("creating credential {i}: {e:?}"))?;
        if !args.ratelimits.is_empty() {
            ops.set_credential_ratelimits(&Audit::system(), issued.client_id, &args.ratelimits)
                .await
                .map_err(|e| anyhow::anyhow!("limiting credential {i}: {e:?}"))?;
        }
        if !args.account_ratelimits.is_empty() {
            ops.update_account_limits(&Audit::system(), account.id, Some(&args.account_ratelimits), None)
                .await
                .map_err(|e| anyhow::anyhow!("limiting account {i}: {e:?}"))?;
        }
        if let Some(remaining) = args.credits {
            let config = keygate_core::credits::CreditsConfig { remaining, refill: None };
            for scope in [CreditScope::Credential(issued.client_id), CreditScope::Account(account.id)] {
                ops.set_credits(&Audit::system(), scope, Some(&config))
                    .await
                    .map_err(|e| anyhow::anyhow!("credits {i}: {e:?}"))?;
            }
        }
        writeln!(keys, "{}", issued.api_key)?;
        writeln!(clients, "{}\t{}", issued.client_id.to_hex(), issued.api_key)?;
        if (i + 1) % 2_000 == 0 || i + 1 == args.count {
            eprintln!("seed: {} customers ({:.1?})", i + 1, started.elapsed());
        }
    }
    keys.flush()?;
    clients.flush()?;
    Ok(())
}

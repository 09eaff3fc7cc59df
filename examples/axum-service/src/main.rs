//! An axum service that keygate protects in-process: no gateway, no extra hop. Copy it to start
//! your own.
//!
//! ```sh
//! axum-service --database-url sqlite://keygate.db --listen 127.0.0.1:3000
//! curl -s 127.0.0.1:3000/hello -H "x-api-key: $KEY"     # {"code":1000,"msg":"OK","data":{...}}
//! curl -s 127.0.0.1:3000/public                         # no key needed
//! ```
//!
//! It opens the database keygate uses (the SQLite file beside its `keygate.key`, or PostgreSQL
//! with the nodes' shared master key) and wraps its router in `keygate_auth`'s Layer: every
//! request is decided as keygate's gateway and `/auth/verify` decide it (same codes, same
//! envelope), usage is counted into the same database, and a revoke or ban made with the
//! `keygate` CLI, the console or another node reaches this service within the change-feed bound.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use keygate_auth::{Auth, AuthSettings, Identity, MasterKeySource, StatusMode};
use keygate_core::Secret;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "An axum service protected by keygate_auth's tower Layer")]
struct Args {
    /// The database keygate uses: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, env = "KEYGATE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The master key file [default: beside the SQLite file, e.g. keygate.key].
    #[arg(long, env = "KEYGATE_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// The master key itself (64 hex characters), as keygate's nodes share it on PostgreSQL.
    #[arg(long, env = "KEYGATE_MASTER_KEY", hide_env_values = true, hide = true)]
    master_key: Option<Secret>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// How often the change feed is polled (the bound for a revoke made elsewhere).
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    feed_interval: Duration,
    /// "standard" or "always-200" for refusals.
    #[arg(long, default_value = "standard")]
    http_status: StatusMode,
}

/// Protected: the Layer has authenticated the request; the extractor hands over who it is.
async fn hello(identity: Identity) -> Json<Value> {
    Json(json!({"code": 1000, "msg": "OK", "data": identity}))
}

/// Public: let through by the Layer without a credential.
async fn public() -> Json<Value> {
    Json(json!({"code": 1000, "msg": "OK", "data": {"public": true}}))
}

/// The service's routes behind `auth`'s Layer, `/public` let through.
fn app(auth: &Auth) -> Router {
    Router::new().route("/hello", get(hello)).route("/public", get(public)).layer(auth.layer().public("/public"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let settings =
        AuthSettings { feed_interval: args.feed_interval, status_mode: args.http_status, ..AuthSettings::default() };
    let builder = Auth::builder().settings(settings);
    let auth = match args.master_key {
        Some(hex) => builder.open(&args.database_url, MasterKeySource::Hex(hex)).await?,
        None => builder.open_with_key_file(&args.database_url, args.master_key_file).await?,
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "axum-service listening");
    axum::serve(listener, app(&auth)).with_graceful_shutdown(shutdown_signal()).await?;
    // The last usage counts are written before exit.
    auth.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

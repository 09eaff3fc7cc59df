//! keygate's authenticator as a library: the decision made on every request of an API, in memory
//! and in microseconds, exactly as the keygate server makes it for its gateway and `/auth/verify`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use axum::{Router, routing::get};
//! use keygate_auth::{Auth, Identity};
//!
//! let master_key = keygate_core::MasterKey::from_hex(&std::fs::read_to_string("keygate.key")?)?;
//! let auth = Auth::open("sqlite://keygate.db", master_key).await?;
//! let app: Router = Router::new()
//!     .route("/v1/videos", get(|identity: Identity| async move { identity.client_id.to_string() }))
//!     .layer(auth.layer());
//! # Ok(()) }
//! ```
//!
//! The parts:
//! - [`authenticator`]: [`Authenticator::authenticate`], the hot path, and its caches ([`cache`]);
//! - [`feed`]: the change-feed follower that drops what a revoke, rotate or ban made stale, in
//!   this process or any other writing the same database;
//! - [`ratelimit`]: the rate limits' buckets (GCRA), decided after the credential, and the
//!   `RateLimit` headers;
//! - [`credits`]: prepaid balances, spent from leases taken from the database, never overspent
//!   across processes; charged after the credential, before the rate limits;
//! - [`usage`]: per-credential request counts, written in batches;
//! - [`secrets`]: the master key, its check against the database, signing keys;
//! - [`envelope`]: the protocol's `{"code","msg"}` envelope, the one place business codes and HTTP
//!   statuses are decided, and the status mode;
//! - [`body`]: request bodies with a read timeout (a stalled upload cannot hold a connection);
//! - [`identity`]: who a request is, and the headers that carry credentials and identity;
//! - [`layer`]: the tower Layer and the axum extractor;
//! - [`open`]: [`Auth`], an authenticator with its background tasks.
//!
//! This crate depends on `http` and tower's traits, not on axum's router, an HTTP client, the web
//! console or the gateway.
#![forbid(unsafe_code)]

pub mod authenticator;
pub mod body;
pub mod cache;
pub mod credits;
pub mod envelope;
pub mod feed;
pub mod identity;
pub mod layer;
pub mod open;
pub mod ratelimit;
pub mod secrets;
pub mod usage;

pub use authenticator::{Access, AuthError, AuthSettings, Authenticator, Denied};
pub use envelope::{ApiError, Resource, StatusMode};
pub use identity::{ClientIp, Identity, Profile, Require};
pub use layer::{AuthLayer, RequireAuth};
pub use open::{Auth, AuthBuilder};
pub use secrets::MasterKeySource;

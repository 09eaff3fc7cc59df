//! Rust SDK for keygate, the self-hosted authentication server that speaks the Akool OpenAPI
//! authentication protocol.
//!
//! - For the platform's **customers**: [`ApiKeyClient`] sends `x-api-key` on every request;
//!   [`TokenClient`] trades clientId + clientSecret for a token at
//!   `POST /api/open/v3/getToken`, caches it, refreshes it before it expires (and once on a
//!   `1101`), and sends `Authorization: Bearer`. Both call `/auth/verify` ([`ApiKeyClient::verify`])
//!   and build authenticated requests to the API behind keygate ([`ApiKeyClient::request`]).
//! - For the **platform's backend**: [`AdminClient`] covers the admin API under `/admin/v1`
//!   (accounts, bans, credentials and what each may do and when, roles, IP allowlists, rotation,
//!   usage, rate limits and plans, credits, signing keys, the audit log), with lists as streams.
//! - **Webhooks** in the vendor's scheme (SHA-1 signature, AES-CBC payload): [`webhook`].
//!
//! Every client retries connection failures, `1503` and (for requests that are safe to repeat)
//! other 5xx answers, with exponential backoff and full jitter ([`RetryPolicy`]); a refusal is an
//! [`Error::Api`] with its business [`Code`], HTTP status and message. A rate limit's refusal,
//! `1005` (HTTP 429), is never retried: it comes back at once with the server's `Retry-After`
//! ([`Error::retry_after`]). Nor is a refusal for credits, `1006` (HTTP 402): it is an
//! [`Error::InsufficientCredits`] with the credits left; nor one for permissions, `1009` (HTTP
//! 403): an [`Error::PermissionDenied`].
//!
//! # Quick start: an API key
//!
//! ```no_run
//! # async fn run() -> keygate_client::Result<()> {
//! use keygate_client::ApiKeyClient;
//!
//! let client = ApiKeyClient::new("http://127.0.0.1:8080", "kgk_...")?;
//! let me = client.verify().await?;
//! println!("account {} uid {} via {:?}", me.account_id, me.uid, me.method);
//!
//! // keygate as a gateway (`keygate serve --upstream ...`): any path of the API behind it.
//! let job: serde_json::Value = client
//!     .post("/v1/videos")
//!     .json(&serde_json::json!({"prompt": "a cat"}))
//!     .send_json()
//!     .await?;
//! # let _ = job;
//! # Ok(()) }
//! ```
//!
//! # Quick start: clientId + clientSecret and a token
//!
//! ```no_run
//! # async fn run() -> keygate_client::Result<()> {
//! use keygate_client::{Code, Error, TokenClient};
//!
//! let client = TokenClient::new("http://127.0.0.1:8080", "64db241f6d9e5c4bd136c187", "kgk_...")?;
//! match client.get("/v1/videos").send().await {
//!     Ok(res) => println!("{}", res.text().await?),
//!     Err(Error::Api { code: Code::Banned, .. }) => eprintln!("this account is banned"),
//!     Err(Error::Api { code: Code::InvalidAuth, .. }) => eprintln!("this credential was revoked"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
//!
//! # Quick start: the admin API
//!
//! ```no_run
//! # async fn run() -> keygate_client::Result<()> {
//! use std::time::Duration;
//! use futures_util::TryStreamExt;
//! use keygate_client::{AccountQuery, AdminClient};
//!
//! let admin = AdminClient::new("http://127.0.0.1:8080", "kga_...")?;
//! let account = admin.create_account("dev@example.com", "Dev").await?;
//! let issued = admin.create_credential(&account.id).await?;
//! println!("clientId {} apiKey {}", issued.client_id, issued.api_key.expose()); // shown once
//!
//! let mut accounts = admin.accounts(AccountQuery::new().search("@example.com"));
//! while let Some(a) = accounts.try_next().await? {
//!     println!("{} {:?}", a.email, a.status);
//! }
//! let rotated = admin.rotate_credential(&issued.client_id, Some(Duration::from_secs(24 * 3600))).await?;
//! admin.ban(&account.id, "chargeback fraud").await?;
//! # let _ = rotated;
//! # Ok(()) }
//! ```
//!
//! # Quick start: rate limits and plans
//!
//! ```no_run
//! # async fn run(admin: keygate_client::AdminClient, client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
//! use keygate_client::{Code, Error, RateLimit};
//!
//! let free = [RateLimit::new("requests", 10, "1s"), RateLimit::new("daily", 10_000, "1d")];
//! admin.put_plan("free", &free).await?;
//! let account = admin.set_account_plan("64db241f6d9e5c4bd136c187", Some("free")).await?;
//! println!("{:?}", account.effective_ratelimits);
//!
//! // The customer's side: where each limit stands, or how long to wait.
//! match client.verify().await {
//!     Ok(me) => me.ratelimits.iter().for_each(|l| println!("{}: {} left", l.name, l.remaining)),
//!     Err(Error::Api { code: Code::TooFrequent, retry_after, .. }) => println!("retry in {retry_after:?}"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
//!
//! # Quick start: credits
//!
//! ```no_run
//! # async fn run(admin: keygate_client::AdminClient, client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
//! use keygate_client::{CreditAdjustment, CreditsConfig, Error, Refill};
//!
//! let account = "64db241f6d9e5c4bd136c187";
//! // 500 credits now, and again on the 1st of every month; a payment's top-up, applied once.
//! admin.set_account_credits(account, Some(&CreditsConfig::new(500).with_refill(Refill::monthly(500)))).await?;
//! admin.adjust_account_credits(account, CreditAdjustment::Add(10_000), Some("payment-7f3a")).await?;
//! // Or every account on a plan: 100 a day.
//! admin.put_plan_with_credits("free", &[], Some(&Refill::daily(100))).await?;
//!
//! // The customer's side: a request that costs 10, and what is left.
//! match client.verify_with_cost(10).await {
//!     Ok(me) => println!("{:?} credits left", me.credits_remaining),
//!     Err(Error::InsufficientCredits { remaining, .. }) => println!("{remaining:?} left: top up first"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
//!
//! # Quick start: permissions, roles, expiry
//!
//! ```no_run
//! # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
//! use std::time::{Duration, SystemTime};
//! use keygate_client::{ApiKeyClient, CredentialFields, Error};
//!
//! admin.put_role("video-editor", &["videos.*", "images.read"]).await?;
//! let fields = CredentialFields::new()
//!     .name("render farm")
//!     .roles(["video-editor"])
//!     .ip_allowlist(["10.0.0.0/8"])
//!     .expires_at(SystemTime::now() + Duration::from_secs(90 * 86_400));
//! let issued = admin.create_credential_with("64db241f6d9e5c4bd136c187", &fields).await?;
//!
//! // The customer's side: who the key is, and a request that needs a permission.
//! let client = ApiKeyClient::new("http://127.0.0.1:8080", issued.api_key.expose())?;
//! match client.verify_requiring("videos.create").await {
//!     Ok(me) => println!("{:?} holds {:?}", me.name, me.permissions),
//!     Err(Error::PermissionDenied { msg, .. }) => println!("{msg}"),
//!     Err(e) => return Err(e),
//! }
//! // Suspend it for a while (1101 "disabled"), reversibly.
//! admin.update_credential(&issued.client_id, &CredentialFields::new().enabled(false)).await?;
//! # Ok(()) }
//! ```
//!
//! # Quick start: a webhook receiver
//!
//! ```
//! use std::time::Duration;
//! use keygate_client::webhook::{self, WebhookVerifier};
//!
//! let (client_id, secret) = ("64db241f6d9e5c4bd136c187", "kgk_7Hq2ZxW9pLm4Rt8Vb3Nc6Yd1KfTg");
//! # let body = serde_json::to_vec(&webhook::sign_and_encrypt(&serde_json::json!({"status": 3}), client_id, secret)?)?;
//! let verifier = WebhookVerifier::new(client_id, secret).max_age(Duration::from_secs(300));
//! let payload = verifier.verify_and_decrypt(&body)?; // body: the request's raw bytes
//! assert_eq!(payload["status"], 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod consumer;
mod error;
mod http;
mod options;
mod retry;
mod secret;
pub mod webhook;

pub use admin::{
    ADMIN_PREFIX, Account, AccountDetail, AccountEvent, AccountQuery, AccountStatus, AdminClient, Credential,
    CredentialDetail, CredentialStatus, DailyUsage, EffectiveLimit, IssuedCredential, LimitSource, Page, Plan,
    PlanDetail, RateLimit, SecretGeneration, SigningKey,
};
pub use admin::{ActorKind, AuditEntry, AuditFilter, TargetKind};
pub use admin::{CredentialFields, Role, RoleDetail, unix_ms};
pub use admin::{CreditAdjustment, CreditBalance, CreditSource, CreditsChanged, CreditsConfig, Refill, RefillInterval};
pub use admin::{Granularity, UsageBucket, UsageQuery};
pub use consumer::{
    ApiKeyClient, AuthMethod, COST_HEADER, GET_TOKEN_PATH, Identity, LimitStatus, REQUIRE_HEADER, RequestBuilder,
    TokenClient, VERIFY_PATH,
};
pub use error::{Code, Error, Result};
pub use options::ClientOptions;
pub use retry::RetryPolicy;
pub use secret::Secret;

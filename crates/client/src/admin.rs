//! The platform's side: [`AdminClient`] for keygate's admin API under `/admin/v1`, with the
//! admin token (`Authorization: Bearer kga_...`), and its typed answers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::http::{self, Read, Transport};
use crate::{ClientOptions, Secret};

mod audit;
mod credits;
mod keys;
mod usage;
pub use audit::{ActorKind, AuditEntry, AuditFilter, TargetKind};
pub use credits::{
    CreditAdjustment, CreditBalance, CreditSource, CreditsChanged, CreditsConfig, Refill, RefillInterval,
};
pub use keys::{CredentialFields, Role, RoleDetail, unix_ms};
pub use usage::{Granularity, UsageBucket, UsageQuery};

/// The admin API's prefix.
pub const ADMIN_PREFIX: &str = "/admin/v1";

/// An account's state.
///
/// ```
/// let s: keygate_client::AccountStatus = serde_json::from_str("\"banned\"")?;
/// assert_eq!(s, keygate_client::AccountStatus::Banned);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AccountStatus {
    /// Its keys and tokens work.
    Active,
    /// Its keys and tokens are refused with `1200`.
    Banned,
    /// A state this version of the SDK does not know.
    #[serde(other)]
    Other,
}

/// A credential's state.
///
/// ```
/// let s: keygate_client::CredentialStatus = serde_json::from_str("\"revoked\"")?;
/// assert_eq!(s, keygate_client::CredentialStatus::Revoked);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CredentialStatus {
    /// Its key works.
    Active,
    /// Its key and tokens are refused with `1101`.
    Revoked,
    /// A state this version of the SDK does not know.
    #[serde(other)]
    Other,
}

/// An account. Times are Unix milliseconds.
///
/// ```
/// let a: keygate_client::Account = serde_json::from_str(r#"{"id":"64db241f6d9e5c4bd136c187","uid":1,
///     "email":"dev@example.com","firstName":"Dev","status":"active","plan":"pro",
///     "ratelimits":[{"name":"requests","limit":1000,"duration":"1s"}],"createdAt":1,"updatedAt":1}"#)?;
/// assert_eq!(a.status, keygate_client::AccountStatus::Active);
/// assert_eq!(a.ban_reason, None);
/// assert_eq!(a.plan.as_deref(), Some("pro"));
/// assert_eq!(a.ratelimits, [keygate_client::RateLimit::new("requests", 1000, "1s")]);
///
/// // A server without rate limits leaves the fields out.
/// let a: keygate_client::Account = serde_json::from_str(r#"{"id":"64db241f6d9e5c4bd136c187","uid":1,
///     "email":"dev@example.com","firstName":"Dev","status":"active","createdAt":1,"updatedAt":1}"#)?;
/// assert_eq!((a.plan, a.ratelimits.len()), (None, 0));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Account {
    /// 24 hex characters.
    pub id: String,
    /// The account's number (the tokens' `uid` claim).
    pub uid: i64,
    /// The email, as given at creation (trimmed).
    pub email: String,
    /// The first name (may be empty).
    pub first_name: String,
    /// Active or banned.
    pub status: AccountStatus,
    /// Why it is banned, when it is.
    #[serde(default)]
    pub ban_reason: Option<String>,
    /// The [`Plan`] whose rate limits its requests count against (shared by its credentials).
    #[serde(default)]
    pub plan: Option<String>,
    /// Its own rate limits, shared by its credentials; each replaces the plan's limit of the same
    /// name.
    #[serde(default)]
    pub ratelimits: Vec<RateLimit>,
    /// The networks its credentials may be used from (empty: anywhere), as the server writes
    /// them (`203.0.113.0/24`, a single address as `203.0.113.7/32`); each credential's own
    /// allowlist applies as well ([`AdminClient::set_account_ip_allowlist`]).
    #[serde(default)]
    pub ip_allowlist: Vec<String>,
    /// When it was created.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

/// One entry of an account's history (a ban, an unban).
///
/// ```
/// let e: keygate_client::AccountEvent =
///     serde_json::from_str(r#"{"kind":"banned","reason":"fraud","actor":"admin-api","at":5}"#)?;
/// assert_eq!(e.reason.as_deref(), Some("fraud"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AccountEvent {
    /// `banned`, `unbanned`, ...
    pub kind: String,
    /// The reason given, if any.
    #[serde(default)]
    pub reason: Option<String>,
    /// Who did it: `admin-api`, `cli`, `console:...`.
    pub actor: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// An account with the rate limits that apply to it, its credits balance and its history: the
/// answer of [`AdminClient::account`] and of the calls that change its limits, plan or credits.
///
/// ```
/// use keygate_client::{CreditSource, LimitSource};
/// let d: keygate_client::AccountDetail = serde_json::from_str(r#"{"id":"64db241f6d9e5c4bd136c187","uid":1,
///     "email":"dev@example.com","firstName":"","status":"active","plan":"pro","ratelimits":[],
///     "createdAt":1,"updatedAt":1,"events":[],
///     "effectiveRatelimits":[{"name":"daily","limit":1000,"duration":"1d","source":"plan","plan":"pro"}],
///     "credits":{"remaining":250,"leased":0,"refill":{"interval":"daily","amount":300},"source":"plan",
///         "nextRefillAt":1738454400000}}"#)?;
/// assert!(d.events.is_empty());
/// assert_eq!(d.account.uid, 1);
/// assert_eq!(d.effective_ratelimits[0].source, LimitSource::Plan);
/// let credits = d.credits.expect("a quota applies");
/// assert_eq!((credits.remaining, credits.source), (250, CreditSource::Plan));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AccountDetail {
    /// The account.
    #[serde(flatten)]
    pub account: Account,
    /// The rate limits its requests count against, shared by its credentials: its plan's, each
    /// replaced by the account's own of the same name, then its own. Empty from a server
    /// without rate limits.
    #[serde(default)]
    pub effective_ratelimits: Vec<EffectiveLimit>,
    /// Its credits balance, shared by its credentials: its own, or its plan's refill
    /// ([`CreditBalance::source`]). `None`: no quota applies to the account (nor from a server
    /// without credits).
    #[serde(default)]
    pub credits: Option<CreditBalance>,
    /// Oldest first.
    pub events: Vec<AccountEvent>,
}

/// A secret generation of a credential that still works: the current one (no expiry), or the
/// previous one during a rotation's grace period (with the time it stops).
///
/// ```
/// let g: keygate_client::SecretGeneration = serde_json::from_str(r#"{"generation":1,"expiresAt":99}"#)?;
/// assert_eq!(g.expires_at, Some(99));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SecretGeneration {
    /// The generation number.
    pub generation: u32,
    /// When its secret stops working (`None`: the current secret).
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// A credential (never its secret). Times are Unix milliseconds.
///
/// ```
/// let c: keygate_client::Credential = serde_json::from_str(r#"{"clientId":"64db241f6d9e5c4bd136c188",
///     "accountId":"64db241f6d9e5c4bd136c187","status":"active","generation":1,"hint":"kgk_...Ab12",
///     "liveGenerations":[{"generation":1}],"createdAt":1,"updatedAt":1}"#)?;
/// assert_eq!(c.hint, "kgk_...Ab12");
/// assert_eq!(c.last_used_at, None);
/// // A server without key fields: enabled, no name, no restrictions.
/// assert!(c.enabled && c.name.is_none() && c.permissions.is_empty() && c.expiry().is_none());
///
/// let c: keygate_client::Credential = serde_json::from_str(r#"{"clientId":"64db241f6d9e5c4bd136c188",
///     "accountId":"64db241f6d9e5c4bd136c187","status":"active","generation":1,"hint":"kgk_...Ab12",
///     "createdAt":1,"updatedAt":1,"name":"ci","meta":{"team":"web"},"expiresAt":4102444800000,
///     "enabled":false,"permissions":["videos.*"],"roles":["reader"],"ipAllowlist":["10.0.0.0/8"]}"#)?;
/// assert_eq!((c.name.as_deref(), c.enabled, c.roles.as_slice()), (Some("ci"), false, &["reader".to_owned()][..]));
/// assert_eq!(c.meta.as_ref().and_then(|m| m.get("team")), Some(&serde_json::json!("web")));
/// assert_eq!(c.expiry(), Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(4_102_444_800)));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Credential {
    /// 24 hex characters.
    pub client_id: String,
    /// The account it belongs to.
    pub account_id: String,
    /// Active or revoked.
    pub status: CredentialStatus,
    /// The current secret generation (1 at creation, +1 per rotation).
    pub generation: u32,
    /// A hint of the current secret, e.g. `kgk_...Ab12`.
    pub hint: String,
    /// The generations whose secret (and tokens) still work, the current one included.
    #[serde(default)]
    pub live_generations: Vec<SecretGeneration>,
    /// When it was created.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
    /// When it was revoked.
    #[serde(default)]
    pub revoked_at: Option<i64>,
    /// When a request last authenticated with it (written in batches: up to a few seconds old).
    #[serde(default)]
    pub last_used_at: Option<i64>,
    /// Its own rate limits, counted for it alone; each replaces the plan's limit of the same name
    /// (not the account's own, which apply as well).
    #[serde(default)]
    pub ratelimits: Vec<RateLimit>,
    /// A name for people, sent upstream and in `/auth/verify`'s answer.
    #[serde(default)]
    pub name: Option<String>,
    /// Free-form metadata (a JSON object of up to 4 KB), sent upstream and in `/auth/verify`'s
    /// answer.
    #[serde(default)]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
    /// When it and its tokens stop working (then `1101`); `None`: never. See
    /// [`expiry`](Self::expiry).
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// `false`: refused (`1101` "disabled") until enabled again.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Its own permissions (`videos.create`, `images.*`, `*`); its roles' apply as well.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// The [`Role`]s it holds: each grants the role's permissions as they are now.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The networks it may be used from (empty: anywhere), as the server writes them
    /// (`10.0.0.0/8`, `::1/128`); its account's allowlist applies as well.
    #[serde(default)]
    pub ip_allowlist: Vec<String>,
}

fn enabled() -> bool {
    true
}

impl Credential {
    /// [`expires_at`](Self::expires_at) as a time.
    ///
    /// ```
    /// let c: keygate_client::Credential = serde_json::from_str(r#"{"clientId":"64db241f6d9e5c4bd136c188",
    ///     "accountId":"64db241f6d9e5c4bd136c187","status":"active","generation":1,"hint":"kgk_...Ab12",
    ///     "createdAt":1,"updatedAt":1,"expiresAt":1500}"#)?;
    /// assert_eq!(c.expiry(), Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1500)));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn expiry(&self) -> Option<std::time::SystemTime> {
        let ms = u64::try_from(self.expires_at?).ok()?;
        std::time::UNIX_EPOCH.checked_add(Duration::from_millis(ms))
    }
}

/// A credential, the rate limits its requests count against and its own credits balance: the
/// answer of [`AdminClient::credential`], [`AdminClient::set_credential_ratelimits`] and
/// [`AdminClient::set_credential_credits`].
///
/// ```
/// use keygate_client::{CredentialDetail, LimitSource};
/// let d: CredentialDetail = serde_json::from_str(r#"{"clientId":"64db241f6d9e5c4bd136c188",
///     "accountId":"64db241f6d9e5c4bd136c187","status":"active","generation":1,"hint":"kgk_...Ab12",
///     "liveGenerations":[{"generation":1}],"createdAt":1,"updatedAt":1,
///     "ratelimits":[{"name":"burst","limit":100,"duration":"1m"}],
///     "effectiveRatelimits":[{"name":"burst","limit":100,"duration":"1m","source":"credential"},
///         {"name":"daily","limit":10000,"duration":"1d","source":"plan","plan":"free"}]}"#)?;
/// assert_eq!(d.credential.ratelimits[0].name, "burst");
/// let sources: Vec<_> = d.effective_ratelimits.iter().map(|l| (l.source, l.plan.as_deref())).collect();
/// assert_eq!(sources, [(LimitSource::Credential, None), (LimitSource::Plan, Some("free"))]);
/// assert_eq!(d.credits, None, "no balance of its own");
///
/// let d: CredentialDetail = serde_json::from_str(r#"{"clientId":"64db241f6d9e5c4bd136c188",
///     "accountId":"64db241f6d9e5c4bd136c187","status":"active","generation":1,"hint":"kgk_...Ab12",
///     "createdAt":1,"updatedAt":1,"effectiveRatelimits":[],
///     "credits":{"remaining":9990,"leased":12,"source":"own"}}"#)?;
/// assert_eq!(d.credits.map(|b| (b.remaining, b.leased)), Some((9990, 12)));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CredentialDetail {
    /// The credential.
    #[serde(flatten)]
    pub credential: Credential,
    /// What applies to its requests (every one must pass): its own limits, then its account's
    /// (the plan's and the account's own) that it does not replace. Empty from a server without
    /// rate limits.
    #[serde(default)]
    pub effective_ratelimits: Vec<EffectiveLimit>,
    /// Its own credits balance. `None`: it has none (its account's may still apply, see
    /// [`AccountDetail::credits`]), or a server without credits.
    #[serde(default)]
    pub credits: Option<CreditBalance>,
}

/// A credential with its secret, as shown once, at creation or rotation.
///
/// ```
/// let i: keygate_client::IssuedCredential = serde_json::from_str(r#"{"clientId":"64db241f6d9e5c4bd136c188",
///     "apiKey":"kgk_0123456789012345678901234567","credential":{"clientId":"64db241f6d9e5c4bd136c188",
///     "accountId":"64db241f6d9e5c4bd136c187","status":"active","generation":1,"hint":"kgk_...4567",
///     "liveGenerations":[{"generation":1}],"createdAt":1,"updatedAt":1}}"#)?;
/// assert!(!format!("{i:?}").contains("0123456789"), "Debug hides the key");
/// assert_eq!(i.api_key.expose().len(), 32);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct IssuedCredential {
    /// The credential's clientId.
    pub client_id: String,
    /// The API key, also the legacy `clientSecret`. keygate keeps only its hash: store it now.
    pub api_key: Secret,
    /// The credential as stored.
    pub credential: Credential,
}

/// Requests authenticated with a credential on one UTC day, and those a rate limit refused, as
/// [`AdminClient::usage`] reads them ([`UsageBucket`] has every outcome and the credits).
///
/// ```
/// let u: keygate_client::DailyUsage = serde_json::from_str(r#"{"day":20000,"requests":12,"limited":3}"#)?;
/// assert_eq!((u.requests, u.limited), (12, 3));
/// let older: keygate_client::DailyUsage = serde_json::from_str(r#"{"day":20000,"requests":12}"#)?;
/// assert_eq!(older.limited, 0);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DailyUsage {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    /// Requests authenticated that day.
    pub requests: u64,
    /// Requests refused by a rate limit that day (`1005`).
    #[serde(default)]
    pub limited: u64,
}

impl DailyUsage {
    /// A day of the server's usage in this form (outcomes other than 1000 and 1005 left out).
    fn of(b: &UsageBucket) -> Self {
        Self { day: b.start.div_euclid(86_400_000), requests: b.requests_with(1000), limited: b.requests_with(1005) }
    }
}

// ---- Rate limits and plans -------------------------------------------------------------------

/// One named rate limit: at most `limit` requests per `duration`. A credential, an account and a
/// [`Plan`] each carry a set of them (at most 16, names unique); the server checks them and
/// refuses a bad one with `1003` (HTTP 400).
///
/// ```
/// use keygate_client::RateLimit;
///
/// let l = RateLimit::new("requests", 10, "1s");
/// assert_eq!(serde_json::to_string(&l)?, r#"{"name":"requests","limit":10,"duration":"1s"}"#);
/// assert_eq!(serde_json::from_str::<RateLimit>(r#"{"name":"daily","limit":1,"duration":"1d"}"#)?.duration, "1d");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RateLimit {
    /// `[a-z0-9][a-z0-9_.-]{0,63}`, unique within its set: names the limit in the `RateLimit`
    /// headers, in refusals, and for overrides (a limit replaces the plan's of the same name).
    pub name: String,
    /// Requests per window, 0 to 10⁹ (0 blocks every request).
    pub limit: u64,
    /// The window as the server reads and writes it: a whole number and one unit (`s`, `m`, `h`,
    /// `d`), from `1s` to `30d`, e.g. `"1s"`, `"24h"`. The server writes it with the largest unit
    /// that divides it: `"60s"` comes back as `"1m"`.
    pub duration: String,
}

impl RateLimit {
    /// At most `limit` requests per `duration` (`"1s"`, `"1m"`, `"24h"`, `"30d"`).
    ///
    /// ```
    /// let l = keygate_client::RateLimit::new("daily", 10_000, "1d");
    /// assert_eq!((l.name.as_str(), l.limit, l.duration.as_str()), ("daily", 10_000, "1d"));
    /// ```
    pub fn new(name: impl Into<String>, limit: u64, duration: impl Into<String>) -> Self {
        Self { name: name.into(), limit, duration: duration.into() }
    }
}

/// Where a limit that applies to a credential's or an account's requests comes from.
///
/// ```
/// let s: keygate_client::LimitSource = serde_json::from_str("\"plan\"")?;
/// assert_eq!(s, keygate_client::LimitSource::Plan);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LimitSource {
    /// The credential's own: counted for that credential alone.
    Credential,
    /// The account's own: counted for the account, shared by its credentials.
    Account,
    /// The account's plan: counted for the account, shared by its credentials.
    Plan,
    /// A source this version of the SDK does not know.
    #[serde(other)]
    Other,
}

/// A rate limit that applies, and where it comes from: the `effectiveRatelimits` of
/// [`CredentialDetail`] and [`AccountDetail`].
///
/// ```
/// use keygate_client::{EffectiveLimit, LimitSource, RateLimit};
/// let l: EffectiveLimit = serde_json::from_str(
///     r#"{"name":"daily","limit":1000,"duration":"1d","source":"plan","plan":"pro"}"#,
/// )?;
/// assert_eq!((l.source, l.plan.as_deref()), (LimitSource::Plan, Some("pro")));
/// assert_eq!(l.rate_limit(), RateLimit::new("daily", 1000, "1d"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EffectiveLimit {
    /// The limit's name.
    pub name: String,
    /// Requests per window (0 blocks every request).
    pub limit: u64,
    /// The window, e.g. `"1s"`, `"24h"`.
    pub duration: String,
    /// Whose limit it is.
    pub source: LimitSource,
    /// The plan it comes from, when `source` is [`LimitSource::Plan`].
    #[serde(default)]
    pub plan: Option<String>,
}

impl EffectiveLimit {
    /// The limit itself, without where it comes from.
    ///
    /// ```
    /// let l: keygate_client::EffectiveLimit =
    ///     serde_json::from_str(r#"{"name":"requests","limit":5,"duration":"1s","source":"credential"}"#)?;
    /// assert_eq!(l.rate_limit(), keygate_client::RateLimit::new("requests", 5, "1s"));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn rate_limit(&self) -> RateLimit {
        RateLimit::new(self.name.clone(), self.limit, self.duration.clone())
    }
}

/// A named set of rate limits assigned to accounts (`free`, `pro`, ...), with how it refills
/// their credits, if it does; changing it applies to every account on it. Times are Unix
/// milliseconds.
///
/// ```
/// let p: keygate_client::Plan = serde_json::from_str(r#"{"name":"free",
///     "ratelimits":[{"name":"requests","limit":10,"duration":"1s"}],"createdAt":1,"updatedAt":2}"#)?;
/// assert_eq!((p.ratelimits[0].limit, p.credits), (10, None));
/// let p: keygate_client::Plan = serde_json::from_str(r#"{"name":"starter","ratelimits":[],
///     "credits":{"interval":"monthly","amount":1000,"refillDay":15},"createdAt":1,"updatedAt":2}"#)?;
/// assert_eq!(p.credits, Some(keygate_client::Refill::monthly(1000).on_day(15)));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Plan {
    /// `[a-z0-9][a-z0-9_.-]{0,63}`.
    pub name: String,
    /// Its limits (possibly none).
    pub ratelimits: Vec<RateLimit>,
    /// How the credits balance of its accounts refills (accounts with a balance of their own
    /// keep theirs); `None`: the plan gives no credits quota.
    #[serde(default)]
    pub credits: Option<Refill>,
    /// When it was created.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

/// A plan and how many accounts are on it: the answer of [`AdminClient::plan`].
///
/// ```
/// let d: keygate_client::PlanDetail = serde_json::from_str(
///     r#"{"name":"free","ratelimits":[],"createdAt":1,"updatedAt":1,"accounts":42}"#,
/// )?;
/// assert_eq!((d.plan.name.as_str(), d.accounts), ("free", 42));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlanDetail {
    /// The plan.
    #[serde(flatten)]
    pub plan: Plan,
    /// Accounts on it (a plan with accounts cannot be deleted).
    pub accounts: u64,
}

/// A JWT signing key id (never the key: it is derived from the master key).
///
/// ```
/// let k: keygate_client::SigningKey = serde_json::from_str(r#"{"kid":"k1","createdAt":1}"#)?;
/// assert_eq!(k.retired_at, None);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SigningKey {
    /// The key id (the tokens' `kid` header).
    pub kid: String,
    /// When it was added.
    pub created_at: i64,
    /// Set once its tokens stop verifying.
    #[serde(default)]
    pub retired_at: Option<i64>,
}

/// One page of a list, and the cursor of the next one (`None` on the last page).
///
/// ```
/// let p = keygate_client::Page { items: vec![1, 2], next: Some("2".to_owned()) };
/// assert!(!p.is_last());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass it as `after` for the next page (the audit log's: as
    /// [`AuditFilter::cursor`]).
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Whether no page follows.
    ///
    /// ```
    /// assert!(keygate_client::Page::<u8> { items: vec![], next: None }.is_last());
    /// ```
    pub fn is_last(&self) -> bool {
        self.next.is_none()
    }
}

/// What [`AdminClient::accounts`] lists: accounts whose email or id contain `search`, `limit`
/// per page (1 to 1000; the server's default is 100).
///
/// ```
/// let q = keygate_client::AccountQuery::new().search("@example.com").limit(50);
/// # let _ = q;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountQuery {
    search: Option<String>,
    limit: Option<u32>,
}

impl AccountQuery {
    /// Every account, pages of the server's default size.
    ///
    /// ```
    /// assert_eq!(keygate_client::AccountQuery::new(), Default::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Only accounts whose email or id contain `text` (`q=`).
    ///
    /// ```
    /// let q = keygate_client::AccountQuery::new().search("dev@");
    /// # let _ = q;
    /// ```
    pub fn search(mut self, text: impl Into<String>) -> Self {
        self.search = Some(text.into());
        self
    }

    /// Items per page (`limit=`, 1 to 1000).
    ///
    /// ```
    /// let q = keygate_client::AccountQuery::new().limit(10);
    /// # let _ = q;
    /// ```
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }
}

/// A client of keygate's admin API, authenticated with the admin token. Cheap to clone.
///
/// Reads and the calls that are safe to repeat (ban, unban, revoke, setting rate limits, a plan
/// or credits, a credits change with an idempotency key, putting or deleting a plan or a role,
/// changing a credential's fields or an account's allowlist) are retried
/// as the [`RetryPolicy`](crate::RetryPolicy) says; creations, rotations and credits added
/// without an idempotency key are retried only when nothing was sent (a connection that could
/// not be opened) or keygate answered `1503`, since repeating them would create a second
/// account, credential or key, or add the credits twice.
///
/// ```no_run
/// # async fn run() -> keygate_client::Result<()> {
/// use futures_util::TryStreamExt;
/// use keygate_client::{AccountQuery, AdminClient};
///
/// let admin = AdminClient::new("http://127.0.0.1:8080", std::env::var("KEYGATE_ADMIN_TOKEN").unwrap())?;
/// let account = admin.create_account("dev@example.com", "Dev").await?;
/// let issued = admin.create_credential(&account.id).await?;
/// println!("clientId {} apiKey {}", issued.client_id, issued.api_key.expose());
///
/// let all: Vec<_> = admin.accounts(AccountQuery::new().limit(500)).try_collect().await?;
/// println!("{} accounts", all.len());
/// admin.ban(&account.id, "chargeback fraud").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AdminClient {
    inner: Arc<AdminInner>,
}

struct AdminInner {
    transport: Transport,
    token: HeaderValue,
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminClient").field("token", &"***").finish_non_exhaustive()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewAccount<'a> {
    email: &'a str,
    first_name: &'a str,
}

#[derive(Serialize)]
struct Reason<'a> {
    reason: &'a str,
}

#[derive(Serialize)]
struct Rotate {
    grace: String,
}

/// The body of the PATCHes: a whole set of limits.
#[derive(Serialize)]
struct Ratelimits<'a> {
    ratelimits: &'a [RateLimit],
}

/// `{"plan": "pro"}`, or `{"plan": null}` to remove it.
#[derive(Serialize)]
struct PlanChange<'a> {
    plan: Option<&'a str>,
}

/// A request body as JSON.
fn body<T: Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| Error::Invalid(e.to_string()))
}

impl AdminClient {
    /// A client of the admin API of the keygate at `base_url`, with the default options.
    ///
    /// ```
    /// let admin = keygate_client::AdminClient::new("http://127.0.0.1:8080", "kga_...")?;
    /// # let _ = admin;
    /// # Ok::<(), keygate_client::Error>(())
    /// ```
    pub fn new(base_url: &str, admin_token: impl Into<Secret>) -> Result<Self> {
        Self::with_options(base_url, admin_token, ClientOptions::default())
    }

    /// A client with `options`.
    ///
    /// ```
    /// use keygate_client::{AdminClient, ClientOptions, RetryPolicy};
    /// let admin = AdminClient::with_options("http://127.0.0.1:8080", "kga_...", ClientOptions::default().retry(RetryPolicy::none()))?;
    /// # let _ = admin;
    /// # Ok::<(), keygate_client::Error>(())
    /// ```
    pub fn with_options(base_url: &str, admin_token: impl Into<Secret>, options: ClientOptions) -> Result<Self> {
        let transport = Transport::new(base_url, &options)?;
        let mut token = HeaderValue::from_str(&format!("Bearer {}", admin_token.into().expose()))
            .map_err(|_| Error::Invalid("the admin token is not a valid header value".into()))?;
        token.set_sensitive(true);
        Ok(Self { inner: Arc::new(AdminInner { transport, token }) })
    }

    /// `/admin/v1/` + the path segments (each percent-encoded) + the query. An empty, `.` or
    /// `..` segment (an id, given by the caller) is refused: the URL would name another resource.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<reqwest::Url> {
        if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            return Err(Error::Invalid(format!("{bad:?} is not an id")));
        }
        let mut url = self.inner.transport.url(ADMIN_PREFIX)?;
        url.path_segments_mut().map_err(|_| Error::Invalid("the base URL cannot have a path".into()))?.extend(segments);
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// One call (with retries): the status and body of its successful answer.
    async fn send(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Option<serde_json::Value>,
        idempotent: bool,
    ) -> Result<(u16, Bytes)> {
        let t = &self.inner.transport;
        let answer = t
            .retrying(idempotent, || {
                let mut rb = t.request(method.clone(), url.clone()).header(AUTHORIZATION, self.inner.token.clone());
                if let Some(b) = &body {
                    rb = rb.json(b);
                }
                t.attempt(rb, Read::Body)
            })
            .await?;
        Ok(answer.into_body())
    }

    /// One call: the answer's `data` as `T` and its `next` cursor.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Option<serde_json::Value>,
        idempotent: bool,
    ) -> Result<(T, Option<String>)> {
        let (status, bytes) = self.send(method, url, body, idempotent).await?;
        http::decode_data(status, &bytes)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<(T, Option<String>)> {
        self.call(Method::GET, self.url(segments, query)?, None, true).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: Option<serde_json::Value>,
        idempotent: bool,
    ) -> Result<T> {
        Ok(self.call(Method::POST, self.url(segments, &[])?, body, idempotent).await?.0)
    }

    /// A PATCH: the whole new value of the fields it names, so safe to repeat.
    async fn patch<T: DeserializeOwned>(&self, segments: &[&str], body: serde_json::Value) -> Result<T> {
        Ok(self.call(Method::PATCH, self.url(segments, &[])?, Some(body), true).await?.0)
    }

    // ---- Accounts ------------------------------------------------------------------------

    /// `POST /accounts`: a new account. A taken email is `1003` (HTTP 409), a malformed one
    /// `1003` (HTTP 400).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let account = admin.create_account("dev@example.com", "Dev").await?;
    /// println!("{} (uid {})", account.id, account.uid);
    /// # Ok(()) }
    /// ```
    pub async fn create_account(&self, email: &str, first_name: &str) -> Result<Account> {
        self.post(&["accounts"], Some(body(&NewAccount { email, first_name })?), false).await
    }

    /// `GET /accounts?q=&limit=&after=`: one page of accounts (by uid), after the cursor
    /// `after` (the `next` of the page before).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::AccountQuery;
    /// let q = AccountQuery::new().limit(100);
    /// let mut page = admin.accounts_page(&q, None).await?;
    /// while let Some(next) = page.next.take() {
    ///     page = admin.accounts_page(&q, Some(&next)).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn accounts_page(&self, query: &AccountQuery, after: Option<&str>) -> Result<Page<Account>> {
        let mut q = Vec::new();
        if let Some(s) = &query.search {
            q.push(("q", s.clone()));
        }
        if let Some(n) = query.limit {
            q.push(("limit", n.to_string()));
        }
        if let Some(a) = after {
            q.push(("after", a.to_owned()));
        }
        let (items, next) = self.get(&["accounts"], &q).await?;
        Ok(Page { items, next })
    }

    /// Every account the query matches, page after page, as a stream.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use futures_util::TryStreamExt;
    /// let mut accounts = admin.accounts(keygate_client::AccountQuery::new().search("@example.com"));
    /// while let Some(a) = accounts.try_next().await? {
    ///     println!("{} {}", a.id, a.email);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn accounts(&self, query: AccountQuery) -> BoxStream<'static, Result<Account>> {
        let this = self.clone();
        paged(move |after| {
            let (this, query) = (this.clone(), query.clone());
            async move { this.accounts_page(&query, after.as_deref()).await }
        })
    }

    /// `GET /accounts/{id}`: an account and its history. An unknown id is `1109` (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let detail = admin.account("64db241f6d9e5c4bd136c187").await?;
    /// for e in &detail.events {
    ///     println!("{} by {}: {:?}", e.kind, e.actor, e.reason);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn account(&self, account_id: &str) -> Result<AccountDetail> {
        Ok(self.get(&["accounts", account_id], &[]).await?.0)
    }

    /// `POST /accounts/{id}/ban` `{"reason"}`: the account's keys and tokens get `1200` at once
    /// (an empty reason is none). Banning a banned account is not an error.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let account = admin.ban("64db241f6d9e5c4bd136c187", "chargeback fraud").await?;
    /// assert_eq!(account.status, keygate_client::AccountStatus::Banned);
    /// # Ok(()) }
    /// ```
    pub async fn ban(&self, account_id: &str, reason: &str) -> Result<Account> {
        self.post(&["accounts", account_id, "ban"], Some(body(&Reason { reason })?), true).await
    }

    /// `POST /accounts/{id}/unban` (with `{"reason"}` when given): lifts a ban.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// admin.unban("64db241f6d9e5c4bd136c187", Some("refund settled")).await?;
    /// admin.unban("64db241f6d9e5c4bd136c187", None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn unban(&self, account_id: &str, reason: Option<&str>) -> Result<Account> {
        let body = reason.map(|reason| body(&Reason { reason })).transpose()?;
        self.post(&["accounts", account_id, "unban"], body, true).await
    }

    // ---- Credentials ---------------------------------------------------------------------

    /// `POST /accounts/{id}/credentials`: a new credential, with its API key (shown this once).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let issued = admin.create_credential("64db241f6d9e5c4bd136c187").await?;
    /// println!("clientId {}, apiKey {}", issued.client_id, issued.api_key.expose());
    /// # Ok(()) }
    /// ```
    pub async fn create_credential(&self, account_id: &str) -> Result<IssuedCredential> {
        self.post(&["accounts", account_id, "credentials"], None, false).await
    }

    /// `GET /accounts/{id}/credentials?limit=&after=`: one page of an account's credentials, in
    /// the server's order, after the cursor `after` (the `next` of the page before).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let page = admin.credentials_page("64db241f6d9e5c4bd136c187", Some(10), None).await?;
    /// println!("{} credentials, more: {}", page.items.len(), !page.is_last());
    /// # Ok(()) }
    /// ```
    pub async fn credentials_page(
        &self,
        account_id: &str,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<Page<Credential>> {
        let mut q = Vec::new();
        if let Some(n) = limit {
            q.push(("limit", n.to_string()));
        }
        if let Some(a) = after {
            q.push(("after", a.to_owned()));
        }
        let (items, next) = self.get(&["accounts", account_id, "credentials"], &q).await?;
        Ok(Page { items, next })
    }

    /// Every credential of an account, page after page (`limit` per page), as a stream.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use futures_util::TryStreamExt;
    /// let creds: Vec<_> = admin.credentials("64db241f6d9e5c4bd136c187", None).try_collect().await?;
    /// # let _ = creds;
    /// # Ok(()) }
    /// ```
    pub fn credentials(&self, account_id: &str, limit: Option<u32>) -> BoxStream<'static, Result<Credential>> {
        let (this, account_id) = (self.clone(), account_id.to_owned());
        paged(move |after| {
            let (this, account_id) = (this.clone(), account_id.clone());
            async move { this.credentials_page(&account_id, limit, after.as_deref()).await }
        })
    }

    /// `GET /credentials/{clientId}`: the credential and the rate limits that apply to it. An
    /// unknown clientId is `1003` (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let c = admin.credential("64db241f6d9e5c4bd136c188").await?;
    /// println!("{:?}, last used {:?}", c.credential.status, c.credential.last_used_at);
    /// for l in &c.effective_ratelimits {
    ///     println!("{} = {}/{} from {:?}", l.name, l.limit, l.duration, l.source);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn credential(&self, client_id: &str) -> Result<CredentialDetail> {
        Ok(self.get(&["credentials", client_id], &[]).await?.0)
    }

    /// `POST /credentials/{clientId}/revoke`: its key and tokens get `1101` at once, everywhere.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let c = admin.revoke_credential("64db241f6d9e5c4bd136c188").await?;
    /// assert_eq!(c.status, keygate_client::CredentialStatus::Revoked);
    /// # Ok(()) }
    /// ```
    pub async fn revoke_credential(&self, client_id: &str) -> Result<Credential> {
        self.post(&["credentials", client_id, "revoke"], None, true).await
    }

    /// `POST /credentials/{clientId}/rotate` `{"grace"}`: a new API key for the same clientId.
    /// The old key and its tokens keep working for `grace` (at most 90 days; `None` or zero: they
    /// stop at once).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use std::time::Duration;
    /// let issued = admin.rotate_credential("64db241f6d9e5c4bd136c188", Some(Duration::from_secs(24 * 3600))).await?;
    /// println!("new key {}", issued.api_key.expose());
    /// # Ok(()) }
    /// ```
    pub async fn rotate_credential(&self, client_id: &str, grace: Option<Duration>) -> Result<IssuedCredential> {
        let body = grace.map(|g| body(&Rotate { grace: grace_text(g) })).transpose()?;
        self.post(&["credentials", client_id, "rotate"], body, false).await
    }

    /// `GET /credentials/{clientId}/usage?days=`: requests let in per UTC day over the last
    /// `days` (1 to 366; the server's default is 30), and those a rate limit refused; days
    /// without requests left out. The first form of [`AdminClient::credential_usage`], which
    /// has every outcome, the credits, hours and any period.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// for d in admin.usage("64db241f6d9e5c4bd136c188", Some(7)).await? {
    ///     println!("day {}: {} requests, {} rate limited", d.day, d.requests, d.limited);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn usage(&self, client_id: &str, days: Option<u32>) -> Result<Vec<DailyUsage>> {
        let q: Vec<(&str, String)> = days.map(|d| ("days", d.to_string())).into_iter().collect();
        let buckets: Vec<UsageBucket> = self.get(&["credentials", client_id, "usage"], &q).await?.0;
        Ok(buckets.iter().map(DailyUsage::of).collect())
    }

    // ---- Rate limits and plans -----------------------------------------------------------

    /// `PATCH /credentials/{clientId}` `{"ratelimits"}`: the credential's own rate limits,
    /// counted for it alone: the whole set (`&[]` removes them). Each replaces the plan's limit
    /// of the same name; the account's own limits apply as well. What was spent is kept (6 of 10
    /// spent, raised to 20, leaves 14), and every node applies the change within the change-feed
    /// bound. An invalid set is `1003` (HTTP 400), an unknown clientId `1003` (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::RateLimit;
    /// let c = admin
    ///     .set_credential_ratelimits("64db241f6d9e5c4bd136c188", &[RateLimit::new("burst", 100, "1m")])
    ///     .await?;
    /// for l in &c.effective_ratelimits {
    ///     println!("{} = {}/{} ({:?})", l.name, l.limit, l.duration, l.source);
    /// }
    /// admin.set_credential_ratelimits("64db241f6d9e5c4bd136c188", &[]).await?; // none of its own
    /// # Ok(()) }
    /// ```
    pub async fn set_credential_ratelimits(
        &self,
        client_id: &str,
        ratelimits: &[RateLimit],
    ) -> Result<CredentialDetail> {
        self.patch(&["credentials", client_id], body(&Ratelimits { ratelimits })?).await
    }

    /// `PATCH /accounts/{id}` `{"ratelimits"}`: the account's own rate limits, shared by its
    /// credentials: the whole set (`&[]` removes them); each replaces its plan's limit of the same
    /// name. The plan stays as it is. An invalid set is `1003` (HTTP 400), an unknown account
    /// `1109` (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::RateLimit;
    /// // This customer gets 1000/s instead of its plan's "requests".
    /// let a = admin
    ///     .set_account_ratelimits("64db241f6d9e5c4bd136c187", &[RateLimit::new("requests", 1000, "1s")])
    ///     .await?;
    /// println!("{} limits apply", a.effective_ratelimits.len());
    /// # Ok(()) }
    /// ```
    pub async fn set_account_ratelimits(&self, account_id: &str, ratelimits: &[RateLimit]) -> Result<AccountDetail> {
        self.patch(&["accounts", account_id], body(&Ratelimits { ratelimits })?).await
    }

    /// `PATCH /accounts/{id}` `{"plan"}`: puts the account on a plan (`Some("pro")`) or on none
    /// (`None`, sent as `null`). Its own limits stay as they are. An unknown plan is `1003`
    /// (HTTP 400), an unknown account `1109` (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let a = admin.set_account_plan("64db241f6d9e5c4bd136c187", Some("pro")).await?;
    /// assert_eq!(a.account.plan.as_deref(), Some("pro"));
    /// admin.set_account_plan("64db241f6d9e5c4bd136c187", None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_account_plan(&self, account_id: &str, plan: Option<&str>) -> Result<AccountDetail> {
        self.patch(&["accounts", account_id], body(&PlanChange { plan })?).await
    }

    /// `PUT /plans/{name}` `{"ratelimits"}`: creates the plan or replaces its limits (the whole
    /// set; `&[]` is a plan without limits), and whether it was created (HTTP 201) rather than
    /// replaced (200). Every account on it counts against the new limits within the change-feed
    /// bound, keeping what was spent. A bad name or set is `1003` (HTTP 400).
    ///
    /// The whole plan is replaced: a plan that refilled its accounts' credits no longer does (it
    /// is [`put_plan_with_credits`](Self::put_plan_with_credits) with `None`; give the refill
    /// there to keep it).
    ///
    /// Putting the same plan twice is harmless, so the call is retried as reads are; if an
    /// answer was lost and the retry is what reached keygate second, `created` is `false` for a
    /// plan this call did create.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::RateLimit;
    /// let (plan, created) = admin
    ///     .put_plan("free", &[RateLimit::new("requests", 10, "1s"), RateLimit::new("daily", 10_000, "1d")])
    ///     .await?;
    /// println!("{} {}", plan.name, if created { "created" } else { "replaced" });
    /// # Ok(()) }
    /// ```
    pub async fn put_plan(&self, name: &str, ratelimits: &[RateLimit]) -> Result<(Plan, bool)> {
        self.put_plan_with_credits(name, ratelimits, None).await
    }

    /// `GET /plans`: every plan, by name.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// for p in admin.plans().await? {
    ///     println!("{}: {} limits", p.name, p.ratelimits.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn plans(&self) -> Result<Vec<Plan>> {
        Ok(self.get(&["plans"], &[]).await?.0)
    }

    /// `GET /plans/{name}`: a plan and how many accounts are on it. An unknown plan is `1003`
    /// (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let p = admin.plan("free").await?;
    /// println!("{} accounts on {}", p.accounts, p.plan.name);
    /// # Ok(()) }
    /// ```
    pub async fn plan(&self, name: &str) -> Result<PlanDetail> {
        Ok(self.get(&["plans", name], &[]).await?.0)
    }

    /// `DELETE /plans/{name}`. Refused with `1003` (HTTP 409) while accounts are on it (move
    /// them first, with [`set_account_plan`](Self::set_account_plan)); an unknown plan is `1003`
    /// (HTTP 404), which a retry after a lost answer can also give for a plan this call deleted.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::{Code, Error};
    /// match admin.delete_plan("legacy").await {
    ///     Ok(()) => println!("deleted"),
    ///     Err(Error::Api { code: Code::ParamError, status: 409, .. }) => println!("accounts are still on it"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn delete_plan(&self, name: &str) -> Result<()> {
        self.send(Method::DELETE, self.url(&["plans", name], &[])?, None, true).await?;
        Ok(())
    }

    // ---- Signing keys --------------------------------------------------------------------

    /// `GET /signing-keys`: the JWT key ids, live and retired.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let live = admin.signing_keys().await?.into_iter().filter(|k| k.retired_at.is_none()).count();
    /// println!("{live} live signing keys");
    /// # Ok(()) }
    /// ```
    pub async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        Ok(self.get(&["signing-keys"], &[]).await?.0)
    }

    /// `POST /signing-keys/rotate`: a new signing key; new tokens are signed with it, existing
    /// ones keep verifying.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let key = admin.rotate_signing_key().await?;
    /// println!("now signing with {}", key.kid);
    /// # Ok(()) }
    /// ```
    pub async fn rotate_signing_key(&self) -> Result<SigningKey> {
        self.post(&["signing-keys", "rotate"], None, false).await
    }
}

/// A grace period as the server reads it ("86400s", "1500ms").
fn grace_text(g: Duration) -> String {
    if g.subsec_nanos() == 0 { format!("{}s", g.as_secs()) } else { format!("{}ms", g.as_millis()) }
}

/// The items of the pages `fetch` gives, following `next` until the last page. A cursor that
/// does not move is an error (it would loop forever).
fn paged<T, F, Fut>(fetch: F) -> BoxStream<'static, Result<T>>
where
    T: Send + 'static,
    F: FnMut(Option<String>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>>> + Send + 'static,
{
    enum Cursor {
        Start,
        After(String),
        Done,
    }
    stream::try_unfold((Cursor::Start, fetch), |(cursor, mut fetch)| async move {
        let after = match cursor {
            Cursor::Start => None,
            Cursor::After(c) => Some(c),
            Cursor::Done => return Ok(None),
        };
        let page = fetch(after.clone()).await?;
        let cursor = match page.next {
            None => Cursor::Done,
            Some(next) if Some(&next) == after.as_ref() => {
                return Err(Error::Decode {
                    status: 200,
                    reason: format!("the page cursor did not move from {next:?}"),
                });
            }
            Some(next) => Cursor::After(next),
        };
        Ok(Some((page.items, (cursor, fetch))))
    })
    .map_ok(|items| stream::iter(items.into_iter().map(Ok)))
    .try_flatten()
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_is_written_as_the_server_reads_it() {
        assert_eq!(grace_text(Duration::from_secs(86_400)), "86400s");
        assert_eq!(grace_text(Duration::from_millis(1500)), "1500ms");
        assert_eq!(grace_text(Duration::ZERO), "0s");
    }

    #[tokio::test]
    async fn pages_are_followed_and_a_stuck_cursor_stops() {
        let pages = |after: Option<String>| async move {
            Ok(match after.as_deref() {
                None => Page { items: vec![1, 2], next: Some("a".into()) },
                Some("a") => Page { items: vec![], next: Some("b".into()) },
                Some("b") => Page { items: vec![3], next: None },
                Some(other) => panic!("asked for {other}"),
            })
        };
        let all: Vec<i32> = paged(pages).try_collect().await.unwrap();
        assert_eq!(all, [1, 2, 3]);

        let stuck = |_after: Option<String>| async move { Ok(Page { items: vec![1], next: Some("same".into()) }) };
        let got: Vec<Result<i32>> = paged(stuck).collect().await;
        // The first page's item, then the error instead of the same page again and again.
        assert_eq!(got.len(), 2);
        assert!(matches!(got[0], Ok(1)));
        assert!(matches!(got[1], Err(Error::Decode { .. })));
    }
}

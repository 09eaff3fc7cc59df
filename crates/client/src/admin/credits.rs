//! Credits: a prepaid balance on a credential or an account (`PATCH` with `{"credits"}`), its
//! top-ups, refunds and corrections (`POST .../credits`, applied once per idempotency key), its
//! reading (`GET .../credits`), and a plan's refill (`PUT /plans/{name}` with `{"credits"}`).
//!
//! The server's numbers of credits are whole numbers from 0 to 10¹⁵ (a balance may go below
//! zero after a refund); it checks them and refuses a bad one with `1003` (HTTP 400).

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::{AccountDetail, AdminClient, CredentialDetail, Plan, RateLimit, body};
use crate::error::{Code, Error, Result};
use crate::http;

/// How often a balance is refilled: at 00:00 UTC every day, or every month on
/// [`Refill::refill_day`].
///
/// ```
/// use keygate_client::RefillInterval;
/// assert_eq!(serde_json::from_str::<RefillInterval>("\"monthly\"")?, RefillInterval::Monthly);
/// assert_eq!(serde_json::to_string(&RefillInterval::Daily)?, "\"daily\"");
/// assert_eq!(serde_json::from_str::<RefillInterval>("\"weekly\"")?, RefillInterval::Other);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RefillInterval {
    /// Every day at 00:00 UTC.
    Daily,
    /// Every month on the refill day (1-31, clamped to the month's last day) at 00:00 UTC.
    Monthly,
    /// An interval this version of the SDK does not know (the server refuses it in a request).
    #[serde(other)]
    Other,
}

/// How a balance is refilled: set to `amount` at the start of each period, exactly once per
/// period whatever the number of keygate nodes. A credential's or an account's own
/// ([`CreditsConfig::with_refill`]), or a plan's, for the accounts on it that have no balance of
/// their own ([`AdminClient::put_plan_with_credits`]).
///
/// ```
/// use keygate_client::{Refill, RefillInterval};
///
/// let daily = Refill::daily(100);
/// assert_eq!(serde_json::to_string(&daily)?, r#"{"interval":"daily","amount":100}"#);
/// let monthly = Refill::monthly(10_000).on_day(15);
/// assert_eq!(serde_json::to_string(&monthly)?, r#"{"interval":"monthly","amount":10000,"refillDay":15}"#);
///
/// let read: Refill = serde_json::from_str(r#"{"interval":"monthly","amount":500}"#)?;
/// assert_eq!((read.interval, read.amount, read.refill_day), (RefillInterval::Monthly, 500, None));
/// assert_eq!(read, Refill::monthly(500));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Refill {
    /// Daily or monthly.
    pub interval: RefillInterval,
    /// The balance at the start of each period (0 to 10¹⁵).
    pub amount: i64,
    /// Monthly only: the day of the month of the refill (1 to 31; a shorter month refills on its
    /// last day). `None`: the 1st. A daily refill with a day is refused (`1003`, HTTP 400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill_day: Option<u8>,
}

impl Refill {
    /// `amount` credits every day at 00:00 UTC.
    ///
    /// ```
    /// let r = keygate_client::Refill::daily(100);
    /// assert_eq!((r.amount, r.refill_day), (100, None));
    /// ```
    pub fn daily(amount: i64) -> Self {
        Self { interval: RefillInterval::Daily, amount, refill_day: None }
    }

    /// `amount` credits on the 1st of every month at 00:00 UTC (another day with
    /// [`on_day`](Self::on_day)).
    ///
    /// ```
    /// let r = keygate_client::Refill::monthly(500);
    /// assert_eq!((r.interval, r.refill_day), (keygate_client::RefillInterval::Monthly, None));
    /// ```
    pub fn monthly(amount: i64) -> Self {
        Self { interval: RefillInterval::Monthly, amount, refill_day: None }
    }

    /// The day of the month of a monthly refill (1 to 31; 31 refills on each month's last day).
    ///
    /// ```
    /// let r = keygate_client::Refill::monthly(500).on_day(31);
    /// assert_eq!(r.refill_day, Some(31));
    /// ```
    pub fn on_day(mut self, day: u8) -> Self {
        self.refill_day = Some(day);
        self
    }
}

/// What [`AdminClient::set_credential_credits`] and [`AdminClient::set_account_credits`] set: a
/// balance now and, optionally, how it refills.
///
/// ```
/// use keygate_client::{CreditsConfig, Refill};
///
/// let c = CreditsConfig::new(10_000);
/// assert_eq!(serde_json::to_string(&c)?, r#"{"remaining":10000}"#);
/// let c = CreditsConfig::new(500).with_refill(Refill::monthly(500).on_day(1));
/// assert_eq!(
///     serde_json::to_string(&c)?,
///     r#"{"remaining":500,"refill":{"interval":"monthly","amount":500,"refillDay":1}}"#
/// );
/// assert_eq!(c.refill, Some(Refill::monthly(500).on_day(1)));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CreditsConfig {
    /// The balance now (0 to 10¹⁵).
    pub remaining: i64,
    /// How it refills (`None`: it does not; it only changes by requests and adjustments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<Refill>,
}

impl CreditsConfig {
    /// A balance of `remaining` credits, not refilled.
    ///
    /// ```
    /// let c = keygate_client::CreditsConfig::new(42);
    /// assert_eq!((c.remaining, c.refill), (42, None));
    /// ```
    pub fn new(remaining: i64) -> Self {
        Self { remaining, refill: None }
    }

    /// Refilled as `refill` says.
    ///
    /// ```
    /// use keygate_client::{CreditsConfig, Refill};
    /// let c = CreditsConfig::new(100).with_refill(Refill::daily(100));
    /// assert_eq!(c.refill, Some(Refill::daily(100)));
    /// ```
    pub fn with_refill(mut self, refill: Refill) -> Self {
        self.refill = Some(refill);
        self
    }
}

/// Whose quota a balance follows.
///
/// ```
/// use keygate_client::CreditSource;
/// assert_eq!(serde_json::from_str::<CreditSource>("\"plan\"")?, CreditSource::Plan);
/// assert_eq!(serde_json::from_str::<CreditSource>("\"gift\"")?, CreditSource::Other);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CreditSource {
    /// Set on the credential or the account itself.
    Own,
    /// The account's plan's refill (the account has no balance of its own).
    Plan,
    /// A source this version of the SDK does not know.
    #[serde(other)]
    Other,
}

/// A balance as the admin API shows it: the `credits` of [`CredentialDetail`] and
/// [`AccountDetail`], and the answer of [`AdminClient::credential_credits`] and
/// [`AdminClient::account_credits`]. Times are Unix milliseconds.
///
/// ```
/// use keygate_client::{CreditBalance, CreditSource, Refill};
/// let b: CreditBalance = serde_json::from_str(r#"{"remaining":97,"leased":40,
///     "refill":{"interval":"daily","amount":100},"source":"plan","nextRefillAt":1738454400000}"#)?;
/// assert_eq!((b.remaining, b.leased, b.source), (97, 40, CreditSource::Plan));
/// assert_eq!((b.refill, b.next_refill_at), (Some(Refill::daily(100)), Some(1_738_454_400_000)));
///
/// // A balance without a refill, below zero after a refund.
/// let b: CreditBalance = serde_json::from_str(r#"{"remaining":-6,"leased":0,"source":"own"}"#)?;
/// assert_eq!((b.remaining, b.refill, b.next_refill_at), (-6, None, None));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CreditBalance {
    /// Credits left: in the database, plus what keygate nodes hold leased and have not spent (as
    /// of their last report, at most one `[credits] flush` interval old). Below zero after a
    /// refund larger than the balance.
    pub remaining: i64,
    /// Of `remaining`, what keygate nodes hold leased now.
    #[serde(default)]
    pub leased: i64,
    /// How it refills, if it does.
    #[serde(default)]
    pub refill: Option<Refill>,
    /// The credential's or account's own, or the account's plan's.
    pub source: CreditSource,
    /// When the next refill sets it to `refill.amount`.
    #[serde(default)]
    pub next_refill_at: Option<i64>,
}

/// A balance after [`AdminClient::adjust_credential_credits`] or
/// [`AdminClient::adjust_account_credits`], and whether the change had already been applied
/// under its idempotency key.
///
/// ```
/// let c: keygate_client::CreditsChanged =
///     serde_json::from_str(r#"{"remaining":10005,"leased":0,"source":"own","replayed":true}"#)?;
/// assert_eq!((c.balance.remaining, c.replayed), (10_005, true));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CreditsChanged {
    /// The balance after the change.
    #[serde(flatten)]
    pub balance: CreditBalance,
    /// The idempotency key had been used for this same change before: nothing was applied now
    /// (`balance` is the balance as it is).
    #[serde(default)]
    pub replayed: bool,
}

/// A change of a balance: a top-up, a refund or a correction.
///
/// ```
/// use keygate_client::CreditAdjustment;
/// let top_up = CreditAdjustment::Add(10_000);
/// let refund = CreditAdjustment::Add(-500);
/// let correction = CreditAdjustment::Set(0);
/// # let _ = (top_up, refund, correction);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreditAdjustment {
    /// Adds credits (a top-up after a payment) or, negative, takes them away (a refund; the
    /// balance may go below zero): -10¹⁵ to 10¹⁵.
    Add(i64),
    /// Sets the balance (0 to 10¹⁵); what keygate nodes held leased is void.
    Set(i64),
}

/// The body of `POST .../credits`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Change<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    add: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    set: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
}

/// `{"credits": {...}}`, or `{"credits": null}` to remove the quota.
#[derive(Serialize)]
struct CreditsPatch<'a> {
    credits: Option<&'a CreditsConfig>,
}

/// The body of `PUT /plans/{name}` with a refill.
#[derive(Serialize)]
struct PlanBody<'a> {
    ratelimits: &'a [RateLimit],
    #[serde(skip_serializing_if = "Option::is_none")]
    credits: Option<&'a Refill>,
}

impl AdminClient {
    /// `PATCH /credentials/{clientId}` `{"credits"}`: the credential's own balance and how it
    /// refills (`None`, sent as `null`, removes it: its requests are no longer charged to it; its
    /// account's balance, if any, still applies). Its rate limits stay as they are. What nodes
    /// held leased of an earlier balance is void. An invalid setting is `1003` (HTTP 400), an
    /// unknown clientId `1003` (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::{CreditsConfig, Refill};
    /// let c = admin.set_credential_credits("64db241f6d9e5c4bd136c188", Some(&CreditsConfig::new(10_000))).await?;
    /// println!("{:?} credits left", c.credits.map(|b| b.remaining));
    /// let monthly = CreditsConfig::new(500).with_refill(Refill::monthly(500));
    /// admin.set_credential_credits("64db241f6d9e5c4bd136c188", Some(&monthly)).await?;
    /// admin.set_credential_credits("64db241f6d9e5c4bd136c188", None).await?; // no quota
    /// # Ok(()) }
    /// ```
    pub async fn set_credential_credits(
        &self,
        client_id: &str,
        credits: Option<&CreditsConfig>,
    ) -> Result<CredentialDetail> {
        self.patch(&["credentials", client_id], body(&CreditsPatch { credits })?).await
    }

    /// `PATCH /accounts/{id}` `{"credits"}`: the account's own balance, shared by its
    /// credentials (a request is charged to both the credential's balance and the account's, and
    /// both must cover it), and how it refills. `None` (sent as `null`) removes it: its plan's
    /// refill applies if the plan has one, else its requests are not charged to the account. An
    /// invalid setting is `1003` (HTTP 400), an unknown account `1109` (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::{CreditsConfig, Refill};
    /// let every_month = CreditsConfig::new(500).with_refill(Refill::monthly(500).on_day(1));
    /// let a = admin.set_account_credits("64db241f6d9e5c4bd136c187", Some(&every_month)).await?;
    /// println!("next refill at {:?}", a.credits.and_then(|b| b.next_refill_at));
    /// # Ok(()) }
    /// ```
    pub async fn set_account_credits(
        &self,
        account_id: &str,
        credits: Option<&CreditsConfig>,
    ) -> Result<AccountDetail> {
        self.patch(&["accounts", account_id], body(&CreditsPatch { credits })?).await
    }

    /// `GET /credentials/{clientId}/credits`: the credential's own balance; `None` when it has
    /// none (the server's `1003` / HTTP 409; its account's may still apply, see
    /// [`account_credits`](Self::account_credits)). An unknown clientId is `1003` (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// match admin.credential_credits("64db241f6d9e5c4bd136c188").await? {
    ///     Some(b) => println!("{} left ({} leased by nodes)", b.remaining, b.leased),
    ///     None => println!("no quota of its own"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn credential_credits(&self, client_id: &str) -> Result<Option<CreditBalance>> {
        no_quota_is_none(self.get(&["credentials", client_id, "credits"], &[]).await)
    }

    /// `GET /accounts/{id}/credits`: the account's balance, its own or its plan's refill
    /// ([`CreditBalance::source`]); `None` when no quota applies to it. An unknown account is
    /// `1109` (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// if let Some(b) = admin.account_credits("64db241f6d9e5c4bd136c187").await? {
    ///     println!("{} left, from {:?}", b.remaining, b.source);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn account_credits(&self, account_id: &str) -> Result<Option<CreditBalance>> {
        no_quota_is_none(self.get(&["accounts", account_id, "credits"], &[]).await)
    }

    /// `POST /credentials/{clientId}/credits` `{"add"}` or `{"set"}`: a top-up, a refund or a
    /// correction of the credential's own balance, usable by every node within the change-feed
    /// bound. See [`adjust_account_credits`](Self::adjust_account_credits) for the idempotency
    /// key and the errors (an unknown clientId is `1003`, HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::CreditAdjustment;
    /// let changed = admin
    ///     .adjust_credential_credits("64db241f6d9e5c4bd136c188", CreditAdjustment::Add(10_000), Some("payment-7f3a"))
    ///     .await?;
    /// println!("{} left (replayed: {})", changed.balance.remaining, changed.replayed);
    /// # Ok(()) }
    /// ```
    pub async fn adjust_credential_credits(
        &self,
        client_id: &str,
        adjustment: CreditAdjustment,
        idempotency_key: Option<&str>,
    ) -> Result<CreditsChanged> {
        self.adjust(&["credentials", client_id, "credits"], adjustment, idempotency_key).await
    }

    /// `POST /accounts/{id}/credits` `{"add"}` or `{"set"}`: a top-up, a refund or a correction
    /// of the account's own balance (or of the balance its plan gave it).
    ///
    /// With an `idempotency_key` (1 to 255 characters, no control characters; kept 30 days), the
    /// change is applied once: the same key with the same change again applies nothing and
    /// answers [`CreditsChanged::replayed`]; the same key with another change is refused with
    /// `1003` (HTTP 409). So a call with a key, and a [`Set`](CreditAdjustment::Set), are retried
    /// as reads are; an [`Add`](CreditAdjustment::Add) without a key is retried only when nothing
    /// was sent or keygate answered `1503` (a repeat would add twice): give a key, such as the
    /// payment's id.
    ///
    /// A balance that does not exist (no quota: set one with
    /// [`set_account_credits`](Self::set_account_credits) first) is `1003` (HTTP 409); an amount
    /// out of range or a bad key `1003` (HTTP 400); an unknown account `1109` (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::{Code, CreditAdjustment, Error};
    /// let account = "64db241f6d9e5c4bd136c187";
    /// // A payment's top-up: applied once however often it is sent.
    /// let changed = admin.adjust_account_credits(account, CreditAdjustment::Add(10_000), Some("payment-7f3a")).await?;
    /// assert!(!changed.replayed);
    /// let again = admin.adjust_account_credits(account, CreditAdjustment::Add(10_000), Some("payment-7f3a")).await?;
    /// assert!(again.replayed);
    /// // A refund, and a correction.
    /// admin.adjust_account_credits(account, CreditAdjustment::Add(-500), Some("refund-7f3a")).await?;
    /// match admin.adjust_account_credits(account, CreditAdjustment::Set(0), None).await {
    ///     Ok(c) => println!("{} left", c.balance.remaining),
    ///     Err(Error::Api { code: Code::ParamError, status: 409, .. }) => println!("no quota to set"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn adjust_account_credits(
        &self,
        account_id: &str,
        adjustment: CreditAdjustment,
        idempotency_key: Option<&str>,
    ) -> Result<CreditsChanged> {
        self.adjust(&["accounts", account_id, "credits"], adjustment, idempotency_key).await
    }

    async fn adjust(
        &self,
        segments: &[&str],
        adjustment: CreditAdjustment,
        idempotency_key: Option<&str>,
    ) -> Result<CreditsChanged> {
        let (add, set) = match adjustment {
            CreditAdjustment::Add(n) => (Some(n), None),
            CreditAdjustment::Set(n) => (None, Some(n)),
        };
        // Safe to repeat: a keyed change is applied once, and setting twice sets the same.
        let idempotent = idempotency_key.is_some() || set.is_some();
        self.post(segments, Some(body(&Change { add, set, idempotency_key })?), idempotent).await
    }

    /// `PUT /plans/{name}` `{"ratelimits", "credits"}`: [`put_plan`](Self::put_plan) with the
    /// refill of its accounts' credits: an account on the plan without a balance of its own
    /// starts at `amount` and is refilled to it each period (its own balance, if any, overrides
    /// the plan's). `None` is a plan without credits: its accounts are not charged (but for
    /// their own balances). The whole plan is replaced, limits and refill. A bad refill is
    /// `1003` (HTTP 400).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::{RateLimit, Refill};
    /// let (plan, _created) = admin
    ///     .put_plan_with_credits("free", &[RateLimit::new("requests", 10, "1s")], Some(&Refill::daily(100)))
    ///     .await?;
    /// assert_eq!(plan.credits, Some(Refill::daily(100)));
    /// # Ok(()) }
    /// ```
    pub async fn put_plan_with_credits(
        &self,
        name: &str,
        ratelimits: &[RateLimit],
        credits: Option<&Refill>,
    ) -> Result<(Plan, bool)> {
        let url = self.url(&["plans", name], &[])?;
        let (status, bytes) = self.send(Method::PUT, url, Some(body(&PlanBody { ratelimits, credits })?), true).await?;
        let (plan, _) = http::decode_data(status, &bytes)?;
        Ok((plan, status == 201))
    }
}

/// A balance, or `None` for the server's "no credits quota applies" (`1003`, HTTP 409).
fn no_quota_is_none(answer: Result<(CreditBalance, Option<String>)>) -> Result<Option<CreditBalance>> {
    match answer {
        Ok((balance, _)) => Ok(Some(balance)),
        Err(Error::Api { code: Code::ParamError, status: 409, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_written_as_the_server_reads_them() {
        let json = |c: Change<'_>| serde_json::to_string(&c).unwrap();
        assert_eq!(json(Change { add: Some(-5), set: None, idempotency_key: None }), r#"{"add":-5}"#);
        assert_eq!(
            json(Change { add: None, set: Some(7), idempotency_key: Some("k") }),
            r#"{"set":7,"idempotencyKey":"k"}"#
        );
        let patch = |credits| serde_json::to_string(&CreditsPatch { credits }).unwrap();
        assert_eq!(patch(None), r#"{"credits":null}"#);
        assert_eq!(patch(Some(&CreditsConfig::new(3))), r#"{"credits":{"remaining":3}}"#);
        let plan = |credits| serde_json::to_string(&PlanBody { ratelimits: &[], credits }).unwrap();
        assert_eq!(plan(None), r#"{"ratelimits":[]}"#);
        assert_eq!(plan(Some(&Refill::daily(3))), r#"{"ratelimits":[],"credits":{"interval":"daily","amount":3}}"#);
    }

    #[test]
    fn only_the_no_quota_conflict_is_none() {
        let api = |code, status| Error::Api { code, status, msg: String::new(), retry_after: None };
        assert!(matches!(no_quota_is_none(Err(api(Code::ParamError, 409))), Ok(None)));
        assert!(no_quota_is_none(Err(api(Code::ParamError, 404))).is_err());
        assert!(no_quota_is_none(Err(api(Code::AccountNotFound, 404))).is_err());
    }
}

//! Usage a platform bills from: `GET /credentials/{clientId}/usage` and `GET /accounts/{id}/usage`,
//! per UTC day or hour and outcome (the business code of each answer), as JSON buckets or as a
//! CSV export.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::AdminClient;
use crate::error::{Error, Result};

/// How usage is bucketed.
///
/// ```
/// let g: keygate_client::Granularity = serde_json::from_str("\"hour\"")?;
/// assert_eq!(g, keygate_client::Granularity::Hour);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Granularity {
    /// UTC days (kept for ever).
    #[default]
    Day,
    /// UTC hours (kept for the last 7 days).
    Hour,
}

impl Granularity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Hour => "hour",
        }
    }
}

/// Which usage to read: the hours or days that start in `[since, until)`. Times are RFC 3339
/// (`2025-02-01T00:00:00Z`, `2025-02-01T01:00:00+01:00`), dates (`2025-02-01`: midnight UTC), or
/// Unix milliseconds ([`UsageQuery::since_ms`]). Left out, the server reads the last 30 days
/// (or, by hour, the last 24 hours) up to the end of the current one. At most 366 days; hours only
/// within the last 7 days (else `1003`, HTTP 400).
///
/// ```
/// use keygate_client::{Granularity, UsageQuery};
/// let january = UsageQuery::new().since("2025-01-01").until("2025-02-01");
/// let today_by_hour = UsageQuery::new().granularity(Granularity::Hour);
/// let since = UsageQuery::new().since_ms(1_738_368_000_000);
/// # let _ = (january, today_by_hour, since);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    granularity: Option<Granularity>,
}

impl UsageQuery {
    /// The server's defaults: the last 30 days, by day.
    pub fn new() -> Self {
        Self::default()
    }

    /// The earliest start of an hour or day to include (`from`): RFC 3339 or a date.
    pub fn since(mut self, time: impl Into<String>) -> Self {
        self.from = Some(time.into());
        self
    }

    /// [`UsageQuery::since`] in Unix milliseconds.
    pub fn since_ms(self, ms: i64) -> Self {
        self.since(ms.to_string())
    }

    /// The end, exclusive (`to`): RFC 3339 or a date.
    pub fn until(mut self, time: impl Into<String>) -> Self {
        self.to = Some(time.into());
        self
    }

    /// [`UsageQuery::until`] in Unix milliseconds.
    pub fn until_ms(self, ms: i64) -> Self {
        self.until(ms.to_string())
    }

    /// Days (the default) or hours.
    pub fn granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = Some(granularity);
        self
    }

    /// The query string's pairs; `format`: `csv`, or `None` for JSON (the server's default).
    pub(super) fn pairs(&self, format: Option<&'static str>) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(t) = &self.from {
            q.push(("from", t.clone()));
        }
        if let Some(t) = &self.to {
            q.push(("to", t.clone()));
        }
        if let Some(g) = self.granularity {
            q.push(("granularity", g.as_str().to_owned()));
        }
        if let Some(f) = format {
            q.push(("format", f.to_owned()));
        }
        q
    }
}

/// One hour or day of usage: requests per outcome (business code: `1000` let in, `1005` rate
/// limited, `1006` insufficient credits, `1101` refused credential, `1200` banned account, ...),
/// the credits they spent, and their total. Hours and days without requests are not listed.
///
/// ```
/// let b: keygate_client::UsageBucket = serde_json::from_str(
///     r#"{"start":1738368000000,"requests":{"1000":120,"1005":3},"credits":240,"total":123}"#,
/// )?;
/// assert_eq!((b.requests_with(1000), b.requests_with(1005), b.requests_with(1006)), (120, 3, 0));
/// assert_eq!((b.credits, b.total), (240, 123));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageBucket {
    /// The hour's or day's start, Unix milliseconds (UTC).
    pub start: i64,
    /// Requests per outcome (business code); only outcomes that occurred.
    pub requests: BTreeMap<u32, u64>,
    /// Credits spent (by the requests let in).
    #[serde(default)]
    pub credits: u64,
    /// All the requests, whatever their outcome.
    #[serde(default)]
    pub total: u64,
}

impl UsageBucket {
    /// The requests answered with business code `code` (0 when none).
    pub fn requests_with(&self, code: u32) -> u64 {
        self.requests.get(&code).copied().unwrap_or(0)
    }
}

impl AdminClient {
    /// `GET /credentials/{clientId}/usage`: the credential's usage per day or hour and outcome,
    /// oldest first. An unknown clientId is `1003` (HTTP 404); a period the server does not take
    /// is `1003` (HTTP 400) saying why.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::UsageQuery;
    /// let january = UsageQuery::new().since("2025-01-01").until("2025-02-01");
    /// for day in admin.credential_usage("64db241f6d9e5c4bd136c188", &january).await? {
    ///     println!("{}: {} let in, {} credits", day.start, day.requests_with(1000), day.credits);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn credential_usage(&self, client_id: &str, query: &UsageQuery) -> Result<Vec<UsageBucket>> {
        Ok(self.get(&["credentials", client_id, "usage"], &query.pairs(None)).await?.0)
    }

    /// `GET /accounts/{id}/usage`: the account's usage per day or hour and outcome, summed over
    /// its credentials (revoked ones too). An unknown account is `1109` (HTTP 404).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// use keygate_client::{Granularity, UsageQuery};
    /// let today = UsageQuery::new().granularity(Granularity::Hour);
    /// let hours = admin.account_usage("64db241f6d9e5c4bd136c187", &today).await?;
    /// let refused: u64 = hours.iter().map(|h| h.total - h.requests_with(1000)).sum();
    /// println!("{refused} requests refused in the last 24 hours");
    /// # Ok(()) }
    /// ```
    pub async fn account_usage(&self, account_id: &str, query: &UsageQuery) -> Result<Vec<UsageBucket>> {
        Ok(self.get(&["accounts", account_id, "usage"], &query.pairs(None)).await?.0)
    }

    /// The credential's usage as CSV (`format=csv`): a header line
    /// `start,client_id,outcome,requests,credits`, then one line per day or hour and outcome,
    /// `start` in RFC 3339 (UTC).
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let csv = admin.credential_usage_csv("64db241f6d9e5c4bd136c188", &keygate_client::UsageQuery::new()).await?;
    /// std::fs::write("usage.csv", csv).expect("writable");
    /// # Ok(()) }
    /// ```
    pub async fn credential_usage_csv(&self, client_id: &str, query: &UsageQuery) -> Result<String> {
        self.csv(&["credentials", client_id, "usage"], query).await
    }

    /// The account's usage as CSV: the lines of each of its credentials (the `client_id`
    /// column), no sums, so that adding up a column gives the account's total.
    ///
    /// ```no_run
    /// # async fn run(admin: keygate_client::AdminClient) -> keygate_client::Result<()> {
    /// let q = keygate_client::UsageQuery::new().since("2025-01-01").until("2025-02-01");
    /// let csv = admin.account_usage_csv("64db241f6d9e5c4bd136c187", &q).await?;
    /// let credits: u64 = csv.lines().skip(1).filter_map(|l| l.rsplit(',').next()?.parse::<u64>().ok()).sum();
    /// println!("{credits} credits in January");
    /// # Ok(()) }
    /// ```
    pub async fn account_usage_csv(&self, account_id: &str, query: &UsageQuery) -> Result<String> {
        self.csv(&["accounts", account_id, "usage"], query).await
    }

    async fn csv(&self, segments: &[&str], query: &UsageQuery) -> Result<String> {
        let (status, body) = self.send(Method::GET, self.url(segments, &query.pairs(Some("csv")))?, None, true).await?;
        String::from_utf8(body.to_vec()).map_err(|e| Error::Decode { status, reason: e.to_string() })
    }
}

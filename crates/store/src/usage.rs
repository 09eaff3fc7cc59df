//! Usage by outcome, by hour and by day: the types of the usage contract ([`Store::record_usage`],
//! [`Store::usage`], [`Store::usage_by_credential`], [`Store::prune_usage`]), the statements both
//! backends run with the same text, the rows they decode, and the bucket arithmetic.
//!
//! Two tables hold the same counts: `credential_usage_hourly` (kept for
//! [`HOURLY_RETENTION_HOURS`], then pruned) and `credential_usage_daily` (kept), each keyed by
//! (credential, hour or day, outcome) with the requests and the credits spent. A flush adds to
//! both in one transaction, so they always agree on the hours they both hold.
//!
//! [`Store::record_usage`]: crate::Store::record_usage
//! [`Store::usage`]: crate::Store::usage
//! [`Store::usage_by_credential`]: crate::Store::usage_by_credential
//! [`Store::prune_usage`]: crate::Store::prune_usage

use keygate_core::{AccountId, ClientId};
use serde::{Deserialize, Serialize};

use crate::rows::parse_id;
use crate::{Result, StoreError};

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// How long hourly rows are kept: 7 days that can be asked for, plus 1 of margin (a query for
/// "the last 7 days" made just before the pruning still finds its first hour).
pub const HOURLY_RETENTION_HOURS: i64 = 8 * 24;

/// What a credential's requests in one hour came to, with one outcome, since the last flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageDelta {
    pub client_id: ClientId,
    /// Hours since 1970-01-01T00:00Z (`now_ms.div_euclid(HOUR_MS)`).
    pub hour: i64,
    /// The business code of the answer: 1000 let in, 1005 rate limited, 1006 insufficient
    /// credits, 1101 refused credential, 1200 banned account, ...
    pub outcome: u32,
    pub requests: u64,
    /// Credits spent (only outcome 1000 spends).
    pub credits: u64,
    /// The newest of these requests (Unix ms): the credential's `last_used_at` moves to it.
    pub last_used_at: i64,
}

/// The size of the buckets usage is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// UTC days (kept for ever).
    #[default]
    Day,
    /// UTC hours (kept for the last 7 days).
    Hour,
}

impl Granularity {
    /// A bucket's length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Self::Day => DAY_MS,
            Self::Hour => HOUR_MS,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Hour => "hour",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Self::Day),
            "hour" => Some(Self::Hour),
            _ => None,
        }
    }

    /// The start (Unix ms) of the bucket `t` falls in.
    pub fn floor(self, t: i64) -> i64 {
        t.div_euclid(self.millis()).saturating_mul(self.millis())
    }
}

/// Whose usage: one credential's, or an account's (the sum over its credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageScope {
    Credential(ClientId),
    Account(AccountId),
}

impl UsageScope {
    /// The id the statements bind.
    pub(crate) fn key(self) -> String {
        match self {
            Self::Credential(id) => id.to_hex(),
            Self::Account(id) => id.to_hex(),
        }
    }
}

/// The requests with one outcome in one hour or day, and the credits they spent (of one
/// credential, or summed over an account's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UsageBucket {
    /// The hour's or day's start, Unix ms (UTC).
    pub start: i64,
    /// The business code of the answers.
    pub outcome: u32,
    pub requests: u64,
    pub credits: u64,
}

/// A [`UsageBucket`] of one credential, as [`Store::usage_by_credential`] lists them (an
/// account's export: one line per credential).
///
/// [`Store::usage_by_credential`]: crate::Store::usage_by_credential
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CredentialBucket {
    pub client_id: ClientId,
    #[serde(flatten)]
    pub bucket: UsageBucket,
}

/// The bucket numbers (hours or days since the epoch) whose start lies in `[from_ms, to_ms)`.
pub(crate) fn bounds(from_ms: i64, to_ms: i64, g: Granularity) -> (i64, i64) {
    let ceil = |t: i64| t.div_euclid(g.millis()) + i64::from(t.rem_euclid(g.millis()) != 0);
    (ceil(from_ms), ceil(to_ms))
}

/// The day of an hour (both since the epoch).
pub(crate) fn day_of(hour: i64) -> i64 {
    hour.div_euclid(24)
}

/// Every count of a batch fits what is stored (a 64-bit signed integer in both backends), so
/// the backends bind them `as i64`.
pub(crate) fn check_counts(batch: &[UsageDelta]) -> Result<()> {
    match batch.iter().flat_map(|d| [d.requests, d.credits]).find(|n| i64::try_from(*n).is_err()) {
        Some(n) => Err(StoreError::Other(format!("usage count {n} is too large to store"))),
        None => Ok(()),
    }
}

/// The statements on one of the two tables.
pub(crate) struct Statements {
    /// A credential's buckets: $1 client_id, $2..$3 bucket numbers.
    pub credential: &'static str,
    /// An account's buckets, summed over its credentials: $1 account id, $2..$3.
    pub account: &'static str,
    /// A credential's buckets with its client_id: $1 client_id, $2..$3.
    pub credential_rows: &'static str,
    /// An account's buckets, per credential: $1 account id, $2..$3.
    pub account_rows: &'static str,
    /// Adds the rows of a CTE `batch (client_id, <bucket column>, outcome, requests, credits)`,
    /// skipping credentials that do not exist (any more) and summing repeats first (an upsert
    /// cannot update one row twice in one statement).
    pub insert: &'static str,
}

macro_rules! statements {
    ($table:literal, $col:literal) => {
        Statements {
            credential: concat!(
                "SELECT ",
                $col,
                " AS bucket, outcome, requests, credits FROM ",
                $table,
                " WHERE client_id = $1 AND ",
                $col,
                " >= $2 AND ",
                $col,
                " < $3 ORDER BY ",
                $col,
                ", outcome"
            ),
            account: concat!(
                "SELECT u.",
                $col,
                " AS bucket, u.outcome, CAST(SUM(u.requests) AS BIGINT) AS requests, \
                 CAST(SUM(u.credits) AS BIGINT) AS credits FROM ",
                $table,
                " u \
                 JOIN credentials c ON c.client_id = u.client_id \
                 WHERE c.account_id = $1 AND u.",
                $col,
                " >= $2 AND u.",
                $col,
                " < $3 \
                 GROUP BY u.",
                $col,
                ", u.outcome ORDER BY u.",
                $col,
                ", u.outcome"
            ),
            credential_rows: concat!(
                "SELECT client_id, ",
                $col,
                " AS bucket, outcome, requests, credits FROM ",
                $table,
                " WHERE client_id = $1 AND ",
                $col,
                " >= $2 AND ",
                $col,
                " < $3 ORDER BY ",
                $col,
                ", outcome"
            ),
            account_rows: concat!(
                "SELECT u.client_id, u.",
                $col,
                " AS bucket, u.outcome, u.requests, u.credits FROM ",
                $table,
                " u \
                 JOIN credentials c ON c.client_id = u.client_id \
                 WHERE c.account_id = $1 AND u.",
                $col,
                " >= $2 AND u.",
                $col,
                " < $3 \
                 ORDER BY u.",
                $col,
                ", u.client_id, u.outcome"
            ),
            insert: concat!(
                "INSERT INTO ",
                $table,
                " (client_id, ",
                $col,
                ", outcome, requests, credits) \
                 SELECT client_id, ",
                $col,
                ", outcome, CAST(SUM(requests) AS BIGINT), CAST(SUM(credits) AS BIGINT) \
                 FROM batch WHERE EXISTS (SELECT 1 FROM credentials c WHERE c.client_id = batch.client_id) \
                 GROUP BY client_id, ",
                $col,
                ", outcome \
                 ON CONFLICT (client_id, ",
                $col,
                ", outcome) DO UPDATE SET \
                 requests = ",
                $table,
                ".requests + excluded.requests, credits = ",
                $table,
                ".credits + excluded.credits"
            ),
        }
    };
}

pub(crate) const HOURLY: Statements = statements!("credential_usage_hourly", "hour");
pub(crate) const DAILY: Statements = statements!("credential_usage_daily", "day");

/// Deletes hourly rows before an hour ($1).
pub(crate) const PRUNE_HOURLY: &str = "DELETE FROM credential_usage_hourly WHERE hour < $1";

impl Statements {
    pub(crate) fn of(g: Granularity) -> &'static Statements {
        match g {
            Granularity::Day => &DAILY,
            Granularity::Hour => &HOURLY,
        }
    }

    /// The summed buckets of a scope.
    pub(crate) fn buckets(&self, scope: UsageScope) -> &'static str {
        match scope {
            UsageScope::Credential(_) => self.credential,
            UsageScope::Account(_) => self.account,
        }
    }

    /// The buckets of a scope, per credential.
    pub(crate) fn rows(&self, scope: UsageScope) -> &'static str {
        match scope {
            UsageScope::Credential(_) => self.credential_rows,
            UsageScope::Account(_) => self.account_rows,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct BucketRow {
    bucket: i64,
    outcome: i32,
    requests: i64,
    credits: i64,
}

impl BucketRow {
    pub(crate) fn into_bucket(self, g: Granularity) -> UsageBucket {
        UsageBucket {
            start: self.bucket.saturating_mul(g.millis()),
            outcome: self.outcome as u32,
            requests: self.requests as u64,
            credits: self.credits as u64,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CredentialBucketRow {
    client_id: String,
    #[sqlx(flatten)]
    row: BucketRow,
}

impl CredentialBucketRow {
    pub(crate) fn into_bucket(self, g: Granularity) -> Result<CredentialBucket> {
        Ok(CredentialBucket { client_id: parse_id(&self.client_id)?, bucket: self.row.into_bucket(g) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_take_the_buckets_that_start_in_the_range() {
        let h = Granularity::Hour;
        assert_eq!(bounds(0, HOUR_MS, h), (0, 1));
        assert_eq!(bounds(1, HOUR_MS, h), (1, 1), "the hour starting at 0 is before `from`");
        assert_eq!(bounds(0, HOUR_MS + 1, h), (0, 2), "the hour starting at `to - 1` is in");
        assert_eq!(bounds(-1, 0, h), (0, 0));
        assert_eq!(bounds(10 * DAY_MS, 12 * DAY_MS, Granularity::Day), (10, 12));
        assert_eq!(bounds(i64::MIN, i64::MAX, Granularity::Day).0, i64::MIN / DAY_MS);
        assert_eq!(Granularity::Hour.floor(HOUR_MS + 5), HOUR_MS);
        assert_eq!(Granularity::Day.floor(-1), -DAY_MS);
        assert_eq!((day_of(23), day_of(24), day_of(-1)), (0, 1, -1));
    }

    #[test]
    fn statements_name_their_table() {
        assert!(HOURLY.insert.contains("credential_usage_hourly.requests + excluded.requests"));
        assert!(DAILY.account.contains("GROUP BY u.day, u.outcome"));
        assert!(DAILY.account_rows.ends_with("ORDER BY u.day, u.client_id, u.outcome"));
    }
}

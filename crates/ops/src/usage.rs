//! Usage a platform can bill from, shared by the admin API and the CLI (`keygate usage export`):
//! which period a request means ([`UsageRequest::range`]: defaults, bounds, the hourly
//! retention), times as RFC 3339 or Unix milliseconds ([`parse_time`]), and the two shapes of an
//! answer: [`UsageSummary`] (JSON: one entry per hour or day, requests per outcome) and CSV
//! ([`csv`]: one line per hour or day, credential and outcome).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use keygate_auth::envelope::Resource;
use keygate_store::{CredentialBucket, DAY_MS, Granularity, HOUR_MS, UsageBucket, UsageScope};
use serde::Serialize;

use crate::{Ops, OpsError, OrNotFound, Result};

/// The longest period one request may cover.
pub const MAX_RANGE_DAYS: i64 = 366;
/// How far back hourly usage can be asked for (hourly rows are kept one day longer).
pub const HOURLY_DAYS: i64 = 7;
/// The period without `from`: 30 days, or 24 hours, up to the end of the current one.
const DEFAULT_DAYS: i64 = 30;
const DEFAULT_HOURS: i64 = 24;

/// The admin API's form of a time: Unix milliseconds (up to 15 digits), an RFC 3339 date
/// (midnight UTC) or an RFC 3339 date-time with a UTC offset. Only these strings pass
/// [`parse_time`] (apart from dates that do not exist, such as February 30).
pub const TIME_PATTERN: &str = "^([0-9]{1,15}|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])([Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))?)$";

/// A request for usage as its caller gave it (the admin API's query, the CLI's flags), checked
/// by [`UsageRequest::range`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRequest {
    /// The first bucket's earliest start: RFC 3339 or Unix ms.
    pub from: Option<String>,
    /// The end (exclusive): RFC 3339 or Unix ms.
    pub to: Option<String>,
    /// [default: day]
    pub granularity: Option<Granularity>,
    /// The last `days` UTC days, today included (1 to 366): the credential endpoint's first
    /// query, kept; not with `from`, `to` or hours.
    pub days: Option<u32>,
}

/// A checked period: the buckets whose start is in `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRange {
    pub from_ms: i64,
    pub to_ms: i64,
    pub granularity: Granularity,
}

impl UsageRequest {
    /// The period this asks for at `now_ms`. Without `from`, the last 30 days (or 24 hours) up
    /// to `to`, which is by default the end of the current day (or hour). At most 366 days;
    /// hours only within the last 7 days.
    pub fn range(&self, now_ms: i64) -> Result<UsageRange> {
        let g = self.granularity.unwrap_or_default();
        let (default_span, end) = match g {
            Granularity::Day => (DEFAULT_DAYS * DAY_MS, g.floor(now_ms) + DAY_MS),
            Granularity::Hour => (DEFAULT_HOURS * HOUR_MS, g.floor(now_ms) + HOUR_MS),
        };
        let (from_ms, to_ms) = if let Some(days) = self.days {
            if self.from.is_some() || self.to.is_some() {
                return Err(OpsError::Invalid("days cannot be combined with from or to".into()));
            }
            if g == Granularity::Hour {
                return Err(OpsError::Invalid(
                    "days counts whole days: for hourly usage give from (and to) instead".into(),
                ));
            }
            if !(1..=MAX_RANGE_DAYS).contains(&i64::from(days)) {
                return Err(OpsError::Invalid(format!("days must be between 1 and {MAX_RANGE_DAYS}")));
            }
            (end - i64::from(days) * DAY_MS, end)
        } else {
            let to_ms = self.to.as_deref().map(|t| parse_time("to", t)).transpose()?.unwrap_or(end);
            let from_ms =
                self.from.as_deref().map(|t| parse_time("from", t)).transpose()?.unwrap_or(to_ms - default_span);
            (from_ms, to_ms)
        };
        if from_ms >= to_ms {
            return Err(OpsError::Invalid("from must be before to".into()));
        }
        let hourly_since = Granularity::Hour.floor(now_ms) - HOURLY_DAYS * DAY_MS;
        if g == Granularity::Hour && from_ms < hourly_since {
            return Err(OpsError::Invalid(format!(
                "hourly usage is kept for the last {HOURLY_DAYS} days only: from must be {} or later \
                 (or ask by day)",
                format_rfc3339(hourly_since)
            )));
        }
        if to_ms.saturating_sub(from_ms) > MAX_RANGE_DAYS * DAY_MS {
            return Err(OpsError::Invalid(format!("from and to must be at most {MAX_RANGE_DAYS} days apart")));
        }
        Ok(UsageRange { from_ms, to_ms, granularity: g })
    }
}

/// A time given as Unix milliseconds (digits only), an RFC 3339 date-time with its offset
/// (`2025-01-31T23:00:00Z`, `2025-02-01T00:00:00+01:00`, fractions of a second allowed), or
/// an RFC 3339 date (`2025-02-01`: its midnight, UTC). `name` is the parameter, for the message.
pub fn parse_time(name: &str, s: &str) -> Result<i64> {
    let bad = || {
        OpsError::Invalid(format!(
            "{name} must be an RFC 3339 time (2025-02-01T00:00:00Z), a date (2025-02-01) or Unix milliseconds"
        ))
    };
    if !s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    rfc3339_ms(s).ok_or_else(bad)
}

/// An RFC 3339 date or date-time as Unix milliseconds (fractions beyond milliseconds dropped).
fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let date_ms = days_from_civil(y, m, d) * DAY_MS;
    if b.len() == 10 {
        return Some(date_ms);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 20 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let frac = num(i + 1..i + 1 + digits.min(3))?;
        millis = frac * 10i64.pow(3 - digits.min(3) as u32);
        i += 1 + digits;
    }
    let offset_min = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let minutes = oh * 60 + om;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    Some(date_ms + ((hh * 60 + mm - offset_min) * 60 + ss) * 1_000 + millis)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_from_days(day: i64) -> (i64, i64, i64) {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Unix milliseconds as RFC 3339 in UTC, to the second (`2025-02-01T13:00:00Z`).
pub fn format_rfc3339(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    let secs = ms.rem_euclid(DAY_MS) / 1_000;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3_600, secs / 60 % 60, secs % 60)
}

/// One hour or day of usage: requests per outcome, and the credits spent.
///
/// `requests` maps each business code that occurred (as a string) to its count: `1000` let
/// in, `1005` rate limited, `1006` insufficient credits, `1101` refused credential, `1200`
/// banned account, ...; `total` is their sum. Hours and days without requests are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageSummary {
    /// The hour's or day's start, Unix ms (UTC).
    #[cfg_attr(feature = "openapi", schema(example = 1738368000000_i64))]
    pub start: i64,
    /// Requests per outcome (business code), e.g. `{"1000": 120, "1005": 3}`.
    pub requests: BTreeMap<String, u64>,
    /// Credits spent (by requests let in).
    pub credits: u64,
    /// All the requests, whatever their outcome.
    pub total: u64,
}

/// Buckets (by start, then outcome) grouped by their start.
pub fn summarize(buckets: &[UsageBucket]) -> Vec<UsageSummary> {
    let mut out: Vec<UsageSummary> = Vec::new();
    for b in buckets {
        if out.last().is_none_or(|s| s.start != b.start) {
            out.push(UsageSummary { start: b.start, requests: BTreeMap::new(), credits: 0, total: 0 });
        }
        let s = out.last_mut().expect("pushed above");
        *s.requests.entry(b.outcome.to_string()).or_default() += b.requests;
        s.credits += b.credits;
        s.total += b.requests;
    }
    out
}

/// The CSV header line.
pub const CSV_HEADER: &str = "start,client_id,outcome,requests,credits";

/// Usage as CSV: the header, then one line per hour or day, credential and outcome (`start` in
/// RFC 3339, UTC), by start, clientId, outcome; lines end with `\n`. An account's export lists
/// each of its credentials' lines and no sums, so that adding up a column gives the account's
/// total.
pub fn csv(rows: &[CredentialBucket]) -> String {
    let mut out = String::with_capacity(CSV_HEADER.len() + 1 + rows.len() * 64);
    out.push_str(CSV_HEADER);
    out.push('\n');
    for r in rows {
        let b = &r.bucket;
        let _ = writeln!(out, "{},{},{},{},{}", format_rfc3339(b.start), r.client_id, b.outcome, b.requests, b.credits);
    }
    out
}

impl Ops {
    /// A credential's or an account's usage over `range`, one entry per hour or day (an
    /// account's summed over its credentials, revoked ones included). An unknown id is
    /// `NotFound`.
    pub async fn usage(&self, scope: UsageScope, range: UsageRange) -> Result<Vec<UsageSummary>> {
        self.check_scope(scope).await?;
        let buckets = self.store.usage(scope, range.from_ms, range.to_ms, range.granularity).await?;
        Ok(summarize(&buckets))
    }

    /// The lines of [`csv`] for a credential or an account over `range`.
    pub async fn usage_rows(&self, scope: UsageScope, range: UsageRange) -> Result<Vec<CredentialBucket>> {
        self.check_scope(scope).await?;
        Ok(self.store.usage_by_credential(scope, range.from_ms, range.to_ms, range.granularity).await?)
    }

    /// [`Ops::usage_rows`] as CSV.
    pub async fn usage_csv(&self, scope: UsageScope, range: UsageRange) -> Result<String> {
        Ok(csv(&self.usage_rows(scope, range).await?))
    }

    async fn check_scope(&self, scope: UsageScope) -> Result<()> {
        match scope {
            UsageScope::Credential(id) => {
                self.store.get_credential(id).await.or_not_found(Resource::Credential).map(drop)
            }
            UsageScope::Account(id) => self.store.get_account(id).await.or_not_found(Resource::Account).map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use keygate_core::ClientId;

    use super::*;

    const NOW: i64 = 1_738_411_200_000 + 1_234; // 2025-02-01T12:00:01.234Z

    fn req(from: Option<&str>, to: Option<&str>, granularity: Option<Granularity>, days: Option<u32>) -> UsageRequest {
        UsageRequest { from: from.map(Into::into), to: to.map(Into::into), granularity, days }
    }

    fn invalid(r: Result<UsageRange>) -> String {
        match r {
            Err(OpsError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn times_in_rfc_3339_or_unix_milliseconds() {
        let t = |s| parse_time("from", s).unwrap();
        assert_eq!(t("1738368000000"), 1_738_368_000_000);
        assert_eq!(t("0"), 0);
        assert_eq!(t("2025-02-01"), 1_738_368_000_000);
        assert_eq!(t("2025-02-01T00:00:00Z"), 1_738_368_000_000);
        assert_eq!(t("2025-02-01t00:00:00z"), 1_738_368_000_000);
        assert_eq!(t("2025-02-01 00:00:00Z"), 1_738_368_000_000);
        assert_eq!(t("2025-02-01T01:00:00+01:00"), 1_738_368_000_000);
        assert_eq!(t("2025-01-31T19:30:00-04:30"), 1_738_368_000_000);
        assert_eq!(t("2025-02-01T00:00:00.5Z"), 1_738_368_000_500);
        assert_eq!(t("2025-02-01T00:00:00.123456789Z"), 1_738_368_000_123);
        assert_eq!(t("2024-02-29T23:59:59Z"), 1_709_251_199_000);
        assert_eq!(t("1970-01-01"), 0);
        assert_eq!(t("1969-12-31T23:59:59Z"), -1_000);
        for bad in [
            "",
            "-5",
            "1e3",
            "1234567890123456",
            "2025-02-30",
            "2023-02-29",
            "2025-13-01",
            "2025-2-01",
            "2025-02-01T24:00:00Z",
            "2025-02-01T00:00:00",
            "2025-02-01T00:00Z",
            "2025-02-01T00:00:00.Z",
            "2025-02-01T00:00:00+0100",
            "2025-02-01T00:00:00+24:00",
            "2025-02-01T00:00:00Zjunk",
            "yesterday",
            "２０２５-02-01",
        ] {
            let e = parse_time("from", bad).unwrap_err().to_string();
            assert!(e.starts_with("from must be an RFC 3339 time"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn formats_rfc_3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_738_368_000_000), "2025-02-01T00:00:00Z");
        assert_eq!(format_rfc3339(NOW), "2025-02-01T12:00:01Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        for ms in [0, 951_782_400_000, 1_709_251_199_000, 4_102_444_800_000, NOW] {
            assert_eq!(parse_time("t", &format_rfc3339(ms)).unwrap(), ms - ms % 1_000, "{ms}");
        }
    }

    #[test]
    fn periods_by_default_and_as_asked() {
        let day0 = Granularity::Day.floor(NOW);
        let hour0 = Granularity::Hour.floor(NOW);
        let r = req(None, None, None, None).range(NOW).unwrap();
        assert_eq!((r.from_ms, r.to_ms, r.granularity), (day0 + DAY_MS - 30 * DAY_MS, day0 + DAY_MS, Granularity::Day));
        let r = req(None, None, Some(Granularity::Hour), None).range(NOW).unwrap();
        assert_eq!((r.from_ms, r.to_ms), (hour0 + HOUR_MS - 24 * HOUR_MS, hour0 + HOUR_MS));
        let r = req(None, None, None, Some(7)).range(NOW).unwrap();
        assert_eq!((r.from_ms, r.to_ms), (day0 - 6 * DAY_MS, day0 + DAY_MS), "the last 7 days, today included");
        let r = req(Some("2025-01-01"), Some("2025-02-01"), None, None).range(NOW).unwrap();
        assert_eq!((r.from_ms, r.to_ms), (1_735_689_600_000, 1_738_368_000_000));
        let r = req(Some("2025-01-01"), None, None, None).range(NOW).unwrap();
        assert_eq!(r.to_ms, day0 + DAY_MS, "to: the end of today");
        let r = req(None, Some("2025-01-31"), None, None).range(NOW).unwrap();
        assert_eq!(r.from_ms, 1_738_281_600_000 - 30 * DAY_MS, "from: 30 days before to");
        // Hours as far back as 7 days (the start of the hour 7 days ago, or later).
        let r = req(Some(&(NOW - 7 * DAY_MS).to_string()), None, Some(Granularity::Hour), None).range(NOW).unwrap();
        assert_eq!(r.to_ms, hour0 + HOUR_MS);
        req(Some(&(hour0 - 7 * DAY_MS).to_string()), None, Some(Granularity::Hour), None).range(NOW).unwrap();
        // 366 days at most.
        req(Some("2024-02-01"), Some("2025-02-01"), None, None).range(NOW).unwrap();
        req(None, None, None, Some(366)).range(NOW).unwrap();
    }

    #[test]
    fn bad_periods_say_why() {
        let hour = Some(Granularity::Hour);
        let cases = [
            (req(Some("2025-02-01"), Some("2025-02-01"), None, None), "from must be before to"),
            (req(Some("2025-02-02"), Some("2025-02-01"), None, None), "from must be before to"),
            (req(Some("2024-01-01"), Some("2025-02-01"), None, None), "at most 366 days apart"),
            (req(Some("0"), Some("999999999999999"), None, None), "at most 366 days apart"),
            (req(Some("2025-01-01"), None, hour, None), "kept for the last 7 days only"),
            (
                req(Some(&(NOW - 8 * DAY_MS).to_string()), None, hour, None),
                "from must be 2025-01-25T12:00:00Z or later",
            ),
            (req(None, Some("2025-01-20"), hour, None), "kept for the last 7 days only"),
            (req(Some("2025-01-01"), None, None, Some(3)), "days cannot be combined with from or to"),
            (req(None, Some("2025-01-01"), None, Some(3)), "days cannot be combined with from or to"),
            (req(None, None, hour, Some(3)), "days counts whole days"),
            (req(None, None, None, Some(0)), "days must be between 1 and 366"),
            (req(None, None, None, Some(367)), "days must be between 1 and 366"),
            (req(Some("soon"), None, None, None), "from must be an RFC 3339 time"),
            (req(None, Some("later"), None, None), "to must be an RFC 3339 time"),
        ];
        for (r, needle) in cases {
            let m = invalid(r.range(NOW));
            assert!(m.contains(needle), "{r:?}: {m:?} does not say {needle:?}");
        }
    }

    #[test]
    fn summaries_group_by_start_and_csv_has_a_line_per_row() {
        let b = |start, outcome, requests, credits| UsageBucket { start, outcome, requests, credits };
        let s = summarize(&[b(0, 1000, 5, 50), b(0, 1005, 2, 0), b(HOUR_MS, 1006, 1, 0)]);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].total, s[0].credits, s[0].requests.len()), (7, 50, 2));
        assert_eq!(s[0].requests["1000"], 5);
        assert_eq!(s[1].start, HOUR_MS);
        assert!(summarize(&[]).is_empty());
        let json = serde_json::to_value(&s[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"start": 0, "requests": {"1000": 5, "1005": 2}, "credits": 50, "total": 7})
        );

        let cid: ClientId = "64db241f6d9e5c4bd136c188".parse().unwrap();
        let rows = [
            CredentialBucket { client_id: cid, bucket: b(1_738_368_000_000, 1000, 5, 50) },
            CredentialBucket { client_id: cid, bucket: b(1_738_368_000_000, 1005, 2, 0) },
        ];
        assert_eq!(
            csv(&rows),
            "start,client_id,outcome,requests,credits\n\
             2025-02-01T00:00:00Z,64db241f6d9e5c4bd136c188,1000,5,50\n\
             2025-02-01T00:00:00Z,64db241f6d9e5c4bd136c188,1005,2,0\n"
        );
        assert_eq!(csv(&[]), "start,client_id,outcome,requests,credits\n");
    }
}

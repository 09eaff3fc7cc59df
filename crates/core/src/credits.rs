//! Credits: a prepaid balance on a credential or an account, spent by requests (each costs 1 by
//! default) and refilled at a period boundary in UTC. Pure: the periods, the validation and the
//! shapes the admin API takes; the balance itself lives in the store and the authenticator.
//!
//! A balance belongs to a *period* of its refill policy (a day, or a month starting on
//! `refillDay`); when the current period is newer than the balance's, the balance is set to the
//! refill's `amount`, once (the store records the period it refilled).

use serde::{Deserialize, Serialize};

/// The largest balance, cost or amount: 10^15 (far above any real quota, well inside i64 and the
/// 2^53 a JSON number carries exactly).
pub const MAX_CREDITS: i64 = 1_000_000_000_000_000;

const DAY_MS: i64 = 86_400_000;

/// Reads a number of credits as JSON Schema counts integers: `10000` and also `10000.0` (what
/// some JSON encoders write for a whole number); a fraction is refused. Within i64 (the range is
/// checked by `validate`).
pub fn whole_credits<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number of credits")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("a number of credits out of range"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // Whole and exactly representable (|v| <= 2^53): the value is what was written.
            if v.fract() == 0.0 && v.abs() <= 9_007_199_254_740_992.0 {
                Ok(v as i64)
            } else {
                Err(E::custom("credits must be a whole number"))
            }
        }
    }
    d.deserialize_any(Whole)
}

/// [`whole_credits`] for an optional field.
pub fn whole_credits_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "whole_credits")] i64);
    Ok(Option::<W>::deserialize(d)?.map(|W(v)| v))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// Every day at 00:00 UTC.
    Daily,
    /// Every month on `refillDay` (1-31, clamped to the month's last day) at 00:00 UTC.
    Monthly,
}

/// How a balance is refilled: set to `amount` at each period boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Refill {
    pub interval: Interval,
    /// The balance at the start of each period.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1_000_000_000_000_000_i64))]
    #[serde(deserialize_with = "whole_credits")]
    pub amount: i64,
    /// Monthly only: the day of the month the refill happens (1-31; a shorter month refills on
    /// its last day) [default: 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 31))]
    pub refill_day: Option<u8>,
}

/// What `PATCH` sets: a balance and, optionally, how it refills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreditsConfig {
    /// The balance now.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1_000_000_000_000_000_i64))]
    #[serde(deserialize_with = "whole_credits")]
    pub remaining: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<Refill>,
}

/// A balance applies (what the request path caches): how it refills, and its epoch. The epoch
/// moves when the balance is set rather than added to (`set`, `PATCH`, a refill): credits leased
/// under an older epoch are void.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CreditsPolicy {
    pub refill: Option<Refill>,
    pub epoch: i64,
}

/// Whose quota a balance follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CreditSource {
    /// Set on the credential or account itself.
    Own,
    /// The account's plan's refill policy (the account has none of its own).
    Plan,
}

/// A balance as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreditBalance {
    /// Credits left: in the database, plus what nodes hold leased and have not spent (as of their
    /// last report, at most one flush interval old).
    pub remaining: i64,
    /// Of `remaining`, what nodes hold leased now.
    pub leased: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<Refill>,
    pub source: CreditSource,
    /// When the next refill sets the balance to `refill.amount` (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refill_at: Option<i64>,
}

/// A change of balance from a top-up, a refund or a correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    /// Adds (a top-up) or, negative, takes away (a refund); the balance may go below zero.
    Add(i64),
    /// Sets the balance.
    Set(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditsError {
    #[error("credits must be between 0 and {MAX_CREDITS}, got {0}")]
    OutOfRange(i64),
    #[error("refillDay must be between 1 and 31, got {0}")]
    RefillDay(u8),
    #[error("refillDay applies to a monthly refill only")]
    RefillDayDaily,
    #[error("an adjustment must be between -{MAX_CREDITS} and {MAX_CREDITS}, got {0}")]
    AdjustmentRange(i64),
}

impl Refill {
    pub fn validate(&self) -> Result<(), CreditsError> {
        check_amount(self.amount)?;
        match (self.interval, self.refill_day) {
            (Interval::Daily, Some(_)) => Err(CreditsError::RefillDayDaily),
            (Interval::Monthly, Some(d)) if !(1..=31).contains(&d) => Err(CreditsError::RefillDay(d)),
            _ => Ok(()),
        }
    }

    /// The period `now_ms` falls in: days since 1970-01-01 (daily), or months since January 1970
    /// counted from each month's refill day (monthly). Periods only grow with time.
    pub fn period(&self, now_ms: i64) -> i64 {
        let day = now_ms.div_euclid(DAY_MS);
        match self.interval {
            Interval::Daily => day,
            Interval::Monthly => {
                let (y, m, d) = civil_from_days(day);
                let month = (y - 1970) * 12 + i64::from(m) - 1;
                if d < self.refill_day_in(y, m) { month - 1 } else { month }
            }
        }
    }

    /// When period `period` starts (Unix ms).
    pub fn period_start(&self, period: i64) -> i64 {
        match self.interval {
            Interval::Daily => period * DAY_MS,
            Interval::Monthly => {
                let y = 1970 + period.div_euclid(12);
                let m = (period.rem_euclid(12) + 1) as u32;
                days_from_civil(y, m, self.refill_day_in(y, m)) * DAY_MS
            }
        }
    }

    /// When the next refill after `now_ms` happens (Unix ms).
    pub fn next_refill_at(&self, now_ms: i64) -> i64 {
        self.period_start(self.period(now_ms) + 1)
    }

    /// The refill day in month `m` of year `y`: `refillDay` clamped to the month's last day.
    fn refill_day_in(&self, y: i64, m: u32) -> u32 {
        u32::from(self.refill_day.unwrap_or(1)).min(days_in_month(y, m))
    }
}

/// `daily:AMOUNT` or `monthly:AMOUNT[:DAY]` (the CLI's and the console's form).
impl std::str::FromStr for Refill {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let shape = || format!("{s:?}: a refill is daily:AMOUNT or monthly:AMOUNT[:DAY], e.g. monthly:500:1");
        let mut parts = s.trim().split(':');
        let interval = match parts.next().map(str::to_ascii_lowercase).as_deref() {
            Some("daily") => Interval::Daily,
            Some("monthly") => Interval::Monthly,
            _ => return Err(shape()),
        };
        let amount = parts.next().and_then(|a| a.trim().parse().ok()).ok_or_else(shape)?;
        let refill_day = match parts.next() {
            Some(d) => Some(d.trim().parse().map_err(|_| shape())?),
            None => None,
        };
        if parts.next().is_some() {
            return Err(shape());
        }
        let refill = Refill { interval, amount, refill_day };
        refill.validate().map_err(|e| e.to_string())?;
        Ok(refill)
    }
}

impl std::fmt::Display for Refill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.interval, self.refill_day) {
            (Interval::Daily, _) => write!(f, "daily:{}", self.amount),
            (Interval::Monthly, Some(d)) => write!(f, "monthly:{}:{d}", self.amount),
            (Interval::Monthly, None) => write!(f, "monthly:{}", self.amount),
        }
    }
}

impl CreditsConfig {
    pub fn validate(&self) -> Result<(), CreditsError> {
        check_amount(self.remaining)?;
        self.refill.as_ref().map_or(Ok(()), Refill::validate)
    }
}

impl Adjustment {
    pub fn validate(&self) -> Result<(), CreditsError> {
        match *self {
            Self::Add(n) if !(-MAX_CREDITS..=MAX_CREDITS).contains(&n) => Err(CreditsError::AdjustmentRange(n)),
            Self::Set(n) => check_amount(n),
            _ => Ok(()),
        }
    }
}

fn check_amount(n: i64) -> Result<(), CreditsError> {
    if (0..=MAX_CREDITS).contains(&n) { Ok(()) } else { Err(CreditsError::OutOfRange(n)) }
}

/// Whether a request of `cost` may spend from `balance`: it must cover the cost, and a cost of 0
/// (a check that charges nothing) needs a positive balance.
pub fn covers(balance: i64, cost: u64) -> bool {
    let cost = i64::try_from(cost).unwrap_or(i64::MAX);
    balance >= cost.max(1)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(y: i64, m: u32, d: u32, h: i64) -> i64 {
        days_from_civil(y, m, d) * DAY_MS + h * 3_600_000
    }

    fn monthly(day: u8) -> Refill {
        Refill { interval: Interval::Monthly, amount: 10, refill_day: Some(day) }
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for z in -1_000_000..1_000_000 {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn daily_periods_turn_at_midnight_utc() {
        let r = Refill { interval: Interval::Daily, amount: 5, refill_day: None };
        let day = ms(2026, 12, 1, 0);
        assert_eq!(r.period(day), r.period(day + DAY_MS - 1));
        assert_eq!(r.period(day) + 1, r.period(day + DAY_MS));
        assert_eq!(r.next_refill_at(day + 5), day + DAY_MS);
    }

    #[test]
    fn monthly_refills_on_the_day_clamped_to_the_month() {
        let r = monthly(31);
        // January 31, February 28 (29 in a leap year), March 31, April 30.
        assert_eq!(r.next_refill_at(ms(2026, 1, 15, 0)), ms(2026, 1, 31, 0));
        assert_eq!(r.next_refill_at(ms(2026, 1, 31, 0)), ms(2026, 2, 28, 0));
        assert_eq!(r.next_refill_at(ms(2028, 2, 1, 0)), ms(2028, 2, 29, 0));
        assert_eq!(r.next_refill_at(ms(2026, 3, 31, 23)), ms(2026, 4, 30, 0));
        assert_eq!(r.period(ms(2026, 2, 27, 23)) + 1, r.period(ms(2026, 2, 28, 0)));
        // Day 1 (the default): calendar months.
        let first = Refill { refill_day: None, ..monthly(1) };
        assert_eq!(first.next_refill_at(ms(2026, 12, 1, 0)), ms(2027, 1, 1, 0));
        assert_eq!(first.period(ms(2026, 12, 31, 23)), first.period(ms(2026, 12, 1, 0)));
        let fifteenth = monthly(15);
        assert_eq!(fifteenth.period(ms(2026, 12, 14, 23)) + 1, fifteenth.period(ms(2026, 12, 15, 0)));
        assert_eq!(fifteenth.next_refill_at(ms(2026, 12, 20, 0)), ms(2027, 1, 15, 0));
    }

    #[test]
    fn validation() {
        assert!(monthly(1).validate().is_ok());
        assert_eq!(monthly(0).validate(), Err(CreditsError::RefillDay(0)));
        assert_eq!(monthly(32).validate(), Err(CreditsError::RefillDay(32)));
        let daily = Refill { interval: Interval::Daily, amount: 1, refill_day: Some(1) };
        assert_eq!(daily.validate(), Err(CreditsError::RefillDayDaily));
        assert_eq!(CreditsConfig { remaining: -1, refill: None }.validate(), Err(CreditsError::OutOfRange(-1)));
        assert!(CreditsConfig { remaining: MAX_CREDITS, refill: None }.validate().is_ok());
        assert!(Adjustment::Add(-5).validate().is_ok());
        assert!(Adjustment::Add(MAX_CREDITS + 1).validate().is_err());
        assert!(Adjustment::Set(-5).validate().is_err());
        let parsed: CreditsConfig =
            serde_json::from_str(r#"{"remaining":10000,"refill":{"interval":"monthly","amount":500,"refillDay":1}}"#)
                .unwrap();
        assert_eq!(parsed.refill, Some(Refill { interval: Interval::Monthly, amount: 500, refill_day: Some(1) }));
        assert!(serde_json::from_str::<CreditsConfig>(r#"{"remaining":1,"extra":1}"#).is_err());
        // A whole number written as a float is that number; a fraction is not credits.
        assert_eq!(serde_json::from_str::<CreditsConfig>(r#"{"remaining":519623.0}"#).unwrap().remaining, 519_623);
        assert!(serde_json::from_str::<CreditsConfig>(r#"{"remaining":1.5}"#).is_err());
        assert!(serde_json::from_str::<CreditsConfig>(r#"{"remaining":1e300}"#).is_err());
    }

    #[test]
    fn refills_in_their_line_form() {
        for line in ["daily:500", "monthly:10000:15", "monthly:1"] {
            assert_eq!(line.parse::<Refill>().unwrap().to_string(), line);
        }
        for bad in ["weekly:5", "daily", "daily:-1", "daily:5:1", "monthly:5:40", "monthly:5:1:2", ""] {
            assert!(bad.parse::<Refill>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cost_needs_that_much_and_a_check_needs_one() {
        assert!(covers(5, 5));
        assert!(!covers(4, 5));
        assert!(covers(1, 0));
        assert!(!covers(0, 0));
        assert!(!covers(-3, 1));
        assert!(!covers(MAX_CREDITS, u64::MAX));
    }

    proptest! {
        /// Each instant lies in its period: the period starts at or before it and the next one
        /// after it; periods never go backwards.
        #[test]
        fn every_instant_lies_in_its_period(t in -2_000_000_000_000_i64..8_000_000_000_000, day in 1u8..=31, daily: bool) {
            let r = if daily { Refill { interval: Interval::Daily, amount: 1, refill_day: None } } else { monthly(day) };
            let p = r.period(t);
            prop_assert!(r.period_start(p) <= t);
            prop_assert!(t < r.period_start(p + 1));
            prop_assert!(r.period(t + 1) >= p);
            prop_assert_eq!(r.period(r.period_start(p)), p);
        }
    }
}

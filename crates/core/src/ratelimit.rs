//! Rate limits: what a limit is (a name, a number of requests, a window), how a set of them is
//! validated, and GCRA, the algorithm that decides them.
//!
//! # The guarantee
//! A limit of `L` per `D` lets a burst of up to `L` requests through at once and then `L` per `D`:
//! over any span of time `t`, at most `L + L·t/D` requests pass (a bucket of `L` refilled
//! continuously at `L` per `D`), and under a sustained load exactly `L` per `D` pass. A limit of 0
//! lets nothing through.
//!
//! GCRA (the generic cell rate algorithm) keeps one number per limit, the theoretical arrival time
//! `tat`: the time at which the bucket would be full again. A request at `now` costs one
//! emission interval `T = D / L`; it passes when `max(tat, now) + T - now <= L·T`. `T` is rounded
//! up to the nanosecond, so rounding can only admit fewer, never more.
//!
//! Changing a limit keeps what was spent: the debt `tat - now` is re-expressed in the new
//! interval (`n` requests spent stay `n` spent, at most the new limit).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// At most this many limits in one set (a credential's, an account's, a plan's).
pub const MAX_LIMITS: usize = 16;
/// The largest `limit`.
pub const MAX_LIMIT: u64 = 1_000_000_000;
/// The shortest window.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// The longest window.
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// A limit's (and a plan's) name: a lowercase letter or digit, then up to 63 of those, `_`, `.`
/// or `-`. Safe to put in a structured header field's string as it is.
pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_.-]{0,63}$";
/// A window: a whole number and a unit (`s`, `m`, `h`, `d`), from 1 s to 30 days.
pub const WINDOW_PATTERN: &str = "^[1-9][0-9]{0,6}[smhd]$";

/// Whether `name` has the [`NAME_PATTERN`] form.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-'))
}

/// A limit's window, in whole seconds. Written as a number and one unit: `1s`, `90s`, `1m`, `24h`,
/// `30d` (the largest unit that divides it exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window(u32);

impl Window {
    /// A window of `secs` seconds, if within [`MIN_WINDOW`]..=[`MAX_WINDOW`].
    pub fn from_secs(secs: u64) -> Option<Self> {
        (MIN_WINDOW.as_secs()..=MAX_WINDOW.as_secs()).contains(&secs).then_some(Self(secs as u32))
    }

    pub fn as_secs(self) -> u64 {
        self.0 as u64
    }

    pub fn as_nanos(self) -> u64 {
        self.0 as u64 * 1_000_000_000
    }
}

impl std::str::FromStr for Window {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("duration must be a whole number and a unit (s, m, h or d) from 1s to 30d, not {s:?}");
        let unit = match s.as_bytes().last() {
            Some(b's') => 1,
            Some(b'm') => 60,
            Some(b'h') => 3_600,
            Some(b'd') => 86_400,
            _ => return Err(bad()),
        };
        let digits = &s[..s.len() - 1];
        if digits.is_empty()
            || digits.len() > 7
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        Window::from_secs(n * unit).ok_or_else(bad)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, unit) = self.parts();
        write!(f, "{n}{}", unit as char)
    }
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // On a stack buffer: answers carry it for every limit (`collect_str` goes through
        // core::fmt and escapes each piece).
        let (mut n, unit) = self.parts();
        let mut buf = [0u8; 11];
        let mut start = buf.len() - 1;
        buf[start] = unit;
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        s.serialize_str(std::str::from_utf8(&buf[start..]).expect("digits and a unit are ASCII"))
    }
}

impl Window {
    /// The number and the unit it is written with: the largest unit that divides it exactly.
    fn parts(self) -> (u32, u8) {
        let s = self.0;
        for (unit, secs) in [(b'd', 86_400), (b'h', 3_600), (b'm', 60)] {
            if s.is_multiple_of(secs) {
                return (s / secs, unit);
            }
        }
        (s, b's')
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Window {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(WINDOW_PATTERN))
            .description(Some("A window: a whole number and a unit (s, m, h, d), from 1s to 30d."))
            .examples(["1s", "1m", "24h"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Window {}

/// One named limit: at most `limit` requests per `duration` (see the module's guarantee).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Unique within its set; names the limit in headers, metrics and overrides.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", example = "requests"))]
    pub name: String,
    /// Requests per window (0 blocks every request).
    #[cfg_attr(feature = "openapi", schema(maximum = 1_000_000_000, example = 10))]
    pub limit: u64,
    pub duration: Window,
}

impl RateLimit {
    pub fn new(name: &str, limit: u64, duration: Window) -> Self {
        Self { name: name.to_owned(), limit, duration }
    }

    /// The limit as GCRA counts it.
    pub fn policy(&self) -> Policy {
        Policy::new(self.limit, self.duration.as_nanos())
    }
}

/// `NAME=LIMIT/DURATION`, e.g. `requests=10/1s`: a limit as the CLI and the console write it.
impl std::str::FromStr for RateLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a rate limit: write NAME=LIMIT/DURATION, e.g. requests=10/1s");
        let (name, rest) = s.trim().split_once('=').ok_or_else(bad)?;
        let (limit, duration) = rest.split_once('/').ok_or_else(bad)?;
        let limit = limit.trim().parse().map_err(|_| bad())?;
        let limit = RateLimit::new(name.trim(), limit, duration.trim().parse()?);
        validate(std::slice::from_ref(&limit))?;
        Ok(limit)
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}/{}", self.name, self.limit, self.duration)
    }
}

/// Checks a set of limits: names of the [`NAME_PATTERN`] form and unique, at most [`MAX_LIMITS`],
/// each limit at most [`MAX_LIMIT`]. The message is safe to show.
pub fn validate(set: &[RateLimit]) -> Result<(), String> {
    if set.len() > MAX_LIMITS {
        return Err(format!("at most {MAX_LIMITS} rate limits"));
    }
    for (i, l) in set.iter().enumerate() {
        if !valid_name(&l.name) {
            return Err(format!(
                "rate limit name {:?} must be 1 to 64 lowercase letters, digits, '_', '.' or '-', starting with a letter or digit",
                l.name
            ));
        }
        if l.limit > MAX_LIMIT {
            return Err(format!("rate limit {:?}: limit must be at most {MAX_LIMIT}", l.name));
        }
        if set[..i].iter().any(|o| o.name == l.name) {
            return Err(format!("rate limit {:?} appears twice", l.name));
        }
    }
    Ok(())
}

/// Where a limit that applies to a request comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The credential's own: counted for that credential alone.
    Credential,
    /// The account's own: counted for the account, shared by its credentials.
    Account,
    /// The account's plan: counted for the account, shared by its credentials.
    Plan,
}

/// A limit that applies to an account's requests, and whether it is the plan's (`plan` names
/// it) or the account's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountLimit {
    pub limit: RateLimit,
    pub plan: Option<String>,
}

/// The limits counted for an account: its plan's, each replaced by the account's own limit of the
/// same name, and the account's own.
pub fn account_limits(plan: Option<(&str, &[RateLimit])>, own: &[RateLimit]) -> Vec<AccountLimit> {
    let mut out: Vec<AccountLimit> = Vec::with_capacity(own.len() + plan.map_or(0, |(_, p)| p.len()));
    if let Some((name, limits)) = plan {
        out.extend(
            limits
                .iter()
                .filter(|l| !own.iter().any(|o| o.name == l.name))
                .map(|l| AccountLimit { limit: l.clone(), plan: Some(name.to_owned()) }),
        );
    }
    out.extend(own.iter().map(|l| AccountLimit { limit: l.clone(), plan: None }));
    out
}

/// Of an account's limits, those a request with a credential carrying `own` limits counts
/// against: all but the plan's limits that the credential overrides by name.
pub fn shared_limits<'a>(own: &'a [RateLimit], account: &'a [AccountLimit]) -> impl Iterator<Item = &'a AccountLimit> {
    account.iter().filter(move |a| a.plan.is_none() || !own.iter().any(|o| o.name == a.limit.name))
}

/// A limit as the admin API shows what applies to a credential or an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EffectiveLimit {
    pub name: String,
    /// Requests per window (0 blocks every request).
    pub limit: u64,
    pub duration: Window,
    pub source: Source,
    /// The plan it comes from, when `source` is `plan`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

impl EffectiveLimit {
    fn new(l: &RateLimit, source: Source, plan: Option<String>) -> Self {
        Self { name: l.name.clone(), limit: l.limit, duration: l.duration, source, plan }
    }

    /// The limit itself, without where it comes from.
    pub fn rate_limit(&self) -> RateLimit {
        RateLimit { name: self.name.clone(), limit: self.limit, duration: self.duration }
    }

    fn of_account(a: &AccountLimit) -> Self {
        let source = if a.plan.is_some() { Source::Plan } else { Source::Account };
        Self::new(&a.limit, source, a.plan.clone())
    }

    /// What applies to an account's requests.
    pub fn for_account(account: &[AccountLimit]) -> Vec<Self> {
        account.iter().map(Self::of_account).collect()
    }

    /// What applies to a credential's requests: its own, then its account's that it does not
    /// override.
    pub fn for_credential(own: &[RateLimit], account: &[AccountLimit]) -> Vec<Self> {
        own.iter()
            .map(|l| Self::new(l, Source::Credential, None))
            .chain(shared_limits(own, account).map(Self::of_account))
            .collect()
    }
}

/// A limit as GCRA sees it: `limit` per `window_ns` nanoseconds, with its interval worked out
/// once (a request's decision divides by nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy {
    pub limit: u64,
    pub window_ns: u64,
    interval: u64,
    capacity: u64,
}

impl Policy {
    pub fn new(limit: u64, window_ns: u64) -> Self {
        let interval = window_ns.div_ceil(limit.max(1));
        Self { limit, window_ns, interval, capacity: interval.saturating_mul(limit) }
    }

    /// The emission interval `T = D / L`, rounded up (`limit` > 0).
    pub fn interval(self) -> u64 {
        self.interval
    }

    /// How far ahead of `now` the arrival time may run: `limit` intervals (the window, or a
    /// little more where the interval was rounded up).
    pub fn capacity(self) -> u64 {
        self.capacity
    }
}

/// One limit's state: its theoretical arrival time, and the policy it was counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Nanoseconds since the Unix epoch; at or before `now`, the bucket is full.
    pub tat: u64,
    pub policy: Policy,
}

/// What a bucket says about the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// It passes; the bucket's `tat` becomes this.
    Pass(u64),
    /// It does not; it would pass in this many nanoseconds (`None`: never, the limit is 0).
    Refuse(Option<u64>),
}

impl Bucket {
    /// A full bucket.
    pub fn new(policy: Policy) -> Self {
        Self { tat: 0, policy }
    }

    /// Counts on under `policy` from `now`, keeping what was spent (at most the new limit). A
    /// limit of 0 is never adopted: while a limit is 0 nothing is spent, and the bucket keeps the
    /// last policy it counted under, to carry its debt over to the next limit above 0.
    pub fn adopt(&mut self, policy: Policy, now: u64) {
        if policy == self.policy || policy.limit == 0 {
            return;
        }
        let debt = self.tat.saturating_sub(now) as u128;
        if self.policy.limit > 0 && debt > 0 {
            let rescaled = debt * policy.interval() as u128 / self.policy.interval() as u128;
            self.tat = now + rescaled.min(policy.capacity() as u128) as u64;
        }
        self.policy = policy;
    }

    /// Whether `cost` more requests pass at `now` under `policy` (already adopted).
    pub fn take(&self, policy: Policy, cost: u64, now: u64) -> Take {
        if policy.limit == 0 {
            return Take::Refuse(None);
        }
        let t = policy.interval();
        let tat = self.tat.max(now).saturating_add(t.saturating_mul(cost));
        let allowed_at = tat.saturating_sub(policy.capacity());
        if allowed_at <= now { Take::Pass(tat) } else { Take::Refuse(Some(allowed_at - now)) }
    }

    /// Requests that would pass now, one after the other.
    pub fn remaining(&self, policy: Policy, now: u64) -> u64 {
        if policy.limit == 0 {
            return 0;
        }
        let room = (now + policy.capacity()).saturating_sub(self.tat.max(now));
        (room / policy.interval()).min(policy.limit)
    }

    /// Nanoseconds until one more request would pass than [`Bucket::remaining`] says (0 when
    /// the bucket is full; for a limit of 0, the window).
    pub fn reset(&self, policy: Policy, now: u64) -> u64 {
        if policy.limit == 0 {
            return policy.window_ns;
        }
        let t = policy.interval();
        let room = (now + policy.capacity()).saturating_sub(self.tat.max(now));
        if room / t >= policy.limit { 0 } else { t - room % t }
    }
}

/// Nanoseconds as whole seconds, rounded up (the headers' and `Retry-After`'s unit).
pub fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn policy(limit: u64, secs: u64) -> Policy {
        Policy::new(limit, secs * S)
    }

    /// Admits one request at `now` if it passes.
    fn hit(b: &mut Bucket, p: Policy, now: u64) -> bool {
        b.adopt(p, now);
        match b.take(p, 1, now) {
            Take::Pass(tat) => {
                b.tat = tat;
                true
            }
            Take::Refuse(_) => false,
        }
    }

    #[test]
    fn windows_parse_and_print() {
        for (s, secs, shown) in [
            ("1s", 1, "1s"),
            ("90s", 90, "90s"),
            ("60s", 60, "1m"),
            ("1m", 60, "1m"),
            ("24h", 86_400, "1d"),
            ("30d", 2_592_000, "30d"),
        ] {
            let w: Window = s.parse().unwrap();
            assert_eq!((w.as_secs(), w.to_string().as_str()), (secs, shown), "{s}");
        }
        for bad in ["", "0s", "01s", "1", "s", "31d", "1.5s", "1S", "-1s", "1 s", "1w", "2592001s", "99999999s"] {
            assert!(bad.parse::<Window>().is_err(), "{bad:?}");
        }
        let l: RateLimit = serde_json::from_str(r#"{"name":"requests","limit":10,"duration":"1s"}"#).unwrap();
        assert_eq!(l, RateLimit::new("requests", 10, Window(1)));
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"{"name":"requests","limit":10,"duration":"1s"}"#);
        assert!(serde_json::from_str::<RateLimit>(r#"{"name":"r","limit":1,"duration":"1s","x":1}"#).is_err());
    }

    #[test]
    fn the_line_form() {
        let l: RateLimit = "requests=10/1s".parse().unwrap();
        assert_eq!(l, RateLimit::new("requests", 10, Window(1)));
        assert_eq!(l.to_string(), "requests=10/1s");
        assert_eq!(" daily = 5 / 24h ".parse::<RateLimit>().unwrap().to_string(), "daily=5/1d");
        for bad in ["requests", "requests=10", "requests=x/1s", "Requests=1/1s", "r=1/0s", "r=-1/1s", "r=1/1w"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sets_are_validated() {
        let w = Window(1);
        assert!(validate(&[RateLimit::new("requests", 10, w), RateLimit::new("burst.v2-x_1", 0, w)]).is_ok());
        for bad in ["", "Requests", "_x", "a b", "é", &"x".repeat(65)] {
            assert!(validate(&[RateLimit::new(bad, 1, w)]).is_err(), "{bad:?}");
        }
        assert!(validate(&[RateLimit::new("a", MAX_LIMIT + 1, w)]).is_err());
        assert!(validate(&[RateLimit::new("a", 1, w), RateLimit::new("a", 2, w)]).is_err());
        let many: Vec<_> = (0..=MAX_LIMITS).map(|i| RateLimit::new(&format!("l{i}"), 1, w)).collect();
        assert!(validate(&many).is_err());
        assert!(validate(&many[..MAX_LIMITS]).is_ok());
    }

    #[test]
    fn plans_are_overridden_by_name() {
        let w = Window(1);
        let plan = [RateLimit::new("requests", 10, w), RateLimit::new("daily", 1000, Window(86_400))];
        let own = [RateLimit::new("requests", 50, w), RateLimit::new("burst", 5, w)];
        let account = account_limits(Some(("pro", &plan)), &own);
        let shown: Vec<_> = account.iter().map(|a| (a.limit.name.as_str(), a.limit.limit, a.plan.as_deref())).collect();
        assert_eq!(shown, [("daily", 1000, Some("pro")), ("requests", 50, None), ("burst", 5, None)]);
        // A credential's own "daily" replaces the plan's; the account's own limits still apply.
        let cred = [RateLimit::new("daily", 7, Window(86_400)), RateLimit::new("burst", 1, w)];
        let eff = EffectiveLimit::for_credential(&cred, &account);
        let shown: Vec<_> = eff.iter().map(|e| (e.name.as_str(), e.limit, e.source.clone())).collect();
        assert_eq!(
            shown,
            [
                ("daily", 7, Source::Credential),
                ("burst", 1, Source::Credential),
                ("requests", 50, Source::Account),
                ("burst", 5, Source::Account)
            ]
        );
        let json = serde_json::to_value(&EffectiveLimit::for_account(&account)[0]).unwrap();
        assert_eq!(json, serde_json::json!({"name":"daily","limit":1000,"duration":"1d","source":"plan","plan":"pro"}));
        assert!(account_limits(None, &[]).is_empty());
    }

    #[test]
    fn a_burst_then_the_rate() {
        let p = policy(10, 1);
        let mut b = Bucket::new(p);
        let t0 = 1_000 * S;
        assert_eq!(b.remaining(p, t0), 10);
        assert_eq!(b.reset(p, t0), 0);
        assert_eq!((0..15).filter(|_| hit(&mut b, p, t0)).count(), 10);
        assert_eq!(b.remaining(p, t0), 0);
        // One more every 100 ms.
        assert_eq!(b.reset(p, t0), S / 10);
        assert_eq!(b.take(p, 1, t0), Take::Refuse(Some(S / 10)));
        assert!(!hit(&mut b, p, t0 + S / 10 - 1));
        assert!(hit(&mut b, p, t0 + S / 10));
        assert!(!hit(&mut b, p, t0 + S / 10));
        // Idle for a long time: full again, never more.
        assert_eq!(b.remaining(p, t0 + 100 * S), 10);
    }

    #[test]
    fn zero_blocks_and_keeps_the_debt() {
        let p = policy(10, 10);
        let mut b = Bucket::new(p);
        let t0 = 50 * S;
        for _ in 0..4 {
            assert!(hit(&mut b, p, t0));
        }
        let zero = policy(0, 10);
        assert!(!hit(&mut b, zero, t0));
        assert_eq!(b.take(zero, 1, t0), Take::Refuse(None));
        assert_eq!((b.remaining(zero, t0), b.reset(zero, t0)), (0, 10 * S));
        assert_eq!(b.policy, p, "a limit of 0 is not adopted");
        assert_eq!(b.remaining(p, t0), 6);
    }

    #[test]
    fn changing_a_limit_keeps_what_was_spent() {
        let t0 = 1_000 * S;
        let p = policy(10, 60);
        let mut b = Bucket::new(p);
        for _ in 0..8 {
            assert!(hit(&mut b, p, t0));
        }
        assert_eq!(b.remaining(p, t0), 2);
        // Raised: 8 spent of 20.
        let raised = policy(20, 60);
        b.adopt(raised, t0);
        assert_eq!(b.remaining(raised, t0), 12);
        // Lowered below what was spent: nothing left, and no more debt than the new limit.
        let lowered = policy(5, 60);
        b.adopt(lowered, t0);
        assert_eq!(b.remaining(lowered, t0), 0);
        assert!(b.tat <= t0 + 60 * S);
        // A different window, same count: 5 spent of 10 per second.
        let mut b = Bucket::new(p);
        for _ in 0..5 {
            assert!(hit(&mut b, p, t0));
        }
        let per_second = policy(10, 1);
        b.adopt(per_second, t0);
        assert_eq!(b.remaining(per_second, t0), 5);
    }

    #[test]
    fn cost_takes_several() {
        let p = policy(10, 1);
        let mut b = Bucket::new(p);
        let t0 = 7 * S;
        match b.take(p, 10, t0) {
            Take::Pass(tat) => b.tat = tat,
            r => panic!("{r:?}"),
        }
        assert_eq!(b.take(p, 1, t0), Take::Refuse(Some(S / 10)));
        assert_eq!(b.take(p, 11, t0 + 100 * S), Take::Refuse(Some(S / 10)));
        assert!(matches!(b.take(p, 0, t0), Take::Pass(_)));
    }

    proptest::proptest! {
        /// However requests arrive, over any span t at most L + L*t/D pass, and under a load
        /// above the limit at least L*t/D - 1 do.
        #[test]
        fn the_guarantee(limit in 1u64..50, secs in 1u64..5, gaps in proptest::collection::vec(0u64..400_000_000, 1..400)) {
            let p = policy(limit, secs);
            let mut b = Bucket::new(p);
            let mut now = 10 * S;
            let mut passed = Vec::new();
            for gap in gaps {
                now += gap;
                if hit(&mut b, p, now) {
                    passed.push(now);
                }
            }
            let d = (secs * S) as u128;
            for (i, &start) in passed.iter().enumerate() {
                for (j, &end) in passed.iter().enumerate().skip(i) {
                    let span = (end - start) as u128;
                    let bound = limit as u128 + (limit as u128 * span) / d;
                    proptest::prop_assert!((j - i + 1) as u128 <= bound, "{} in {span} ns > {bound}", j - i + 1);
                }
            }
        }

        /// Re-expressing the spent count under another policy never leaves more room than the
        /// new limit minus what was spent (rounded in keygate's favour), nor debt past a window.
        #[test]
        fn adopting_keeps_the_count(l1 in 1u64..1000, s1 in 1u64..100, l2 in 1u64..1000, s2 in 1u64..100, spent in 0u64..1000) {
            let (p1, p2) = (policy(l1, s1), policy(l2, s2));
            let now = 1_000_000 * S;
            let mut b = Bucket::new(p1);
            let spent = spent.min(l1);
            for _ in 0..spent {
                proptest::prop_assert!(hit(&mut b, p1, now));
            }
            b.adopt(p2, now);
            let left = b.remaining(p2, now);
            proptest::prop_assert!(left <= l2.saturating_sub(spent.min(l2)) + 1, "left {left} of {l2} with {spent} spent");
            proptest::prop_assert!(left + 1 >= l2.saturating_sub(spent), "left {left} of {l2} with {spent} spent");
            proptest::prop_assert!(b.tat <= now + p2.capacity());
        }
    }
}

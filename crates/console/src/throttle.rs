//! Login and sign-up throttling, in memory, in a sliding window (OWASP's authentication and
//! credential-stuffing advice: by account and address, no lockout that anyone can cause):
//! - failed logins per account *and* client address (by email, known or not, so the answer does
//!   not reveal which emails exist): a guesser is stopped where it guesses from, while the
//!   account's owner still signs in from elsewhere;
//! - failed logins per account from every address together, at a much higher limit: a guesser
//!   spread over many addresses is slowed too (locking an account out takes that many addresses);
//! - failed logins per client address, whatever the account;
//! - sign-up attempts per client address;
//! - mails to one address (sign-up links, "you have an account already"), so that sign-up cannot
//!   flood someone's mailbox.
//!
//! Past a limit, attempts are refused before any password check (HTTP 429, code 1005) until the
//! oldest failure leaves the window. A successful login forgets its account's failures.
//!
//! The counters are per process: on several nodes an attacker gets the limits once per node. The
//! number of keys is bounded (stale ones are dropped first), so a flood of distinct emails cannot
//! grow memory without limit.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub window: Duration,
    /// Failed logins per account from one address.
    pub per_account: usize,
    /// Failed logins per account from all addresses together.
    pub per_account_any_ip: usize,
    /// Failed logins per address.
    pub per_ip: usize,
    /// Sign-up attempts per address.
    pub signups_per_ip: usize,
    /// Mails to one email address.
    pub mails_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(15 * 60),
            per_account: 5,
            per_account_any_ip: 100,
            per_ip: 20,
            signups_per_ip: 10,
            mails_per_address: 3,
        }
    }
}

/// Keys tracked at most; past it, keys whose failures all left the window are dropped, then
/// (under a flood of distinct emails from many addresses) arbitrary account keys.
const MAX_KEYS: usize = 100_000;

pub struct Throttle {
    limits: Limits,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

fn email_of(email: &str) -> String {
    email.trim().to_lowercase()
}

fn ip_of(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "unknown".into(), |ip| ip.to_string())
}

/// An account from one address.
fn account_key(email: &str, ip: Option<IpAddr>) -> String {
    format!("a:{}|{}", email_of(email), ip_of(ip))
}

/// An account from anywhere.
fn any_ip_key(email: &str) -> String {
    format!("A:{}", email_of(email))
}

fn ip_key(ip: Option<IpAddr>) -> String {
    format!("i:{}", ip_of(ip))
}

fn signup_key(ip: Option<IpAddr>) -> String {
    format!("s:{}", ip_of(ip))
}

fn mail_key(email: &str) -> String {
    format!("m:{}", email_of(email))
}

impl Throttle {
    pub fn new(limits: Limits) -> Self {
        Self { limits, failures: Mutex::new(HashMap::new()) }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Failures of `key` still in the window; and when the oldest of them leaves it.
    fn recent(&self, map: &HashMap<String, VecDeque<Instant>>, key: &str, now: Instant) -> (usize, Option<Instant>) {
        let Some(q) = map.get(key) else { return (0, None) };
        let live: Vec<&Instant> = q.iter().filter(|t| now.duration_since(**t) < self.limits.window).collect();
        (live.len(), live.first().map(|t| **t + self.limits.window))
    }

    /// `Err(retry_after)` when the account or the IP is over its limit.
    pub fn check(&self, email: Option<&str>, ip: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let map = self.map();
        let mut until: Option<Instant> = None;
        let mut over = |key: &str, limit: usize| {
            let (n, oldest_expiry) = self.recent(&map, key, now);
            if n >= limit {
                until = until.max(oldest_expiry);
            }
        };
        if let Some(email) = email {
            over(&account_key(email, ip), self.limits.per_account);
            over(&any_ip_key(email), self.limits.per_account_any_ip);
        }
        over(&ip_key(ip), self.limits.per_ip);
        match until {
            Some(t) => Err(t.saturating_duration_since(now).max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    /// `Err(retry_after)` when the address has tried to sign up (or failed to log in) too often.
    pub fn check_signup(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let map = self.map();
        let mut until: Option<Instant> = None;
        for (key, limit) in [(signup_key(ip), self.limits.signups_per_ip), (ip_key(ip), self.limits.per_ip)] {
            let (n, oldest_expiry) = self.recent(&map, &key, now);
            if n >= limit {
                until = until.max(oldest_expiry);
            }
        }
        match until {
            Some(t) => Err(t.saturating_duration_since(now).max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    /// Records a sign-up attempt from the address (made or not).
    pub fn signed_up(&self, ip: Option<IpAddr>) {
        self.record(vec![signup_key(ip)]);
    }

    /// Whether a mail may go to `email` now; if so, it is counted.
    pub fn may_mail(&self, email: &str) -> bool {
        let key = mail_key(email);
        let mut map = self.map();
        let (n, _) = self.recent(&map, &key, Instant::now());
        if n >= self.limits.mails_per_address {
            return false;
        }
        self.record_in(&mut map, vec![key]);
        true
    }

    /// Records a failed attempt for the IP and, when given, the account (from this IP, and from
    /// anywhere).
    pub fn fail(&self, email: Option<&str>, ip: Option<IpAddr>) {
        let mut keys = vec![ip_key(ip)];
        if let Some(email) = email {
            keys.push(account_key(email, ip));
            keys.push(any_ip_key(email));
        }
        self.record(keys);
    }

    fn record(&self, keys: Vec<String>) {
        self.record_in(&mut self.map(), keys);
    }

    fn record_in(&self, map: &mut HashMap<String, VecDeque<Instant>>, keys: Vec<String>) {
        let now = Instant::now();
        let window = self.limits.window;
        let l = &self.limits;
        let keep =
            l.per_ip.max(l.per_account).max(l.per_account_any_ip).max(l.signups_per_ip).max(l.mails_per_address) + 1;
        if map.len() >= MAX_KEYS {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
            if map.len() >= MAX_KEYS {
                let victims: Vec<String> =
                    map.keys().filter(|k| !k.starts_with("i:")).take(MAX_KEYS / 10).cloned().collect();
                for k in victims {
                    map.remove(&k);
                }
            }
        }
        for key in keys {
            let q = map.entry(key).or_default();
            while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                q.pop_front();
            }
            q.push_back(now);
            // Only the newest failures up to the largest limit matter.
            while q.len() > keep {
                q.pop_front();
            }
        }
    }

    /// A successful login: the account starts afresh (the IP's failures stay).
    pub fn succeed(&self, email: &str, ip: Option<IpAddr>) {
        let mut map = self.map();
        map.remove(&account_key(email, ip));
        map.remove(&any_ip_key(email));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_account_and_ip() {
        let limits = Limits {
            window: Duration::from_millis(200),
            per_account: 2,
            per_account_any_ip: 4,
            per_ip: 3,
            signups_per_ip: 2,
            mails_per_address: 2,
        };
        let t = Throttle::new(limits);
        let (a, b) = (Some("127.0.0.1".parse().unwrap()), Some("10.0.0.1".parse().unwrap()));
        t.fail(Some("X@example.com"), a);
        assert!(t.check(Some("x@example.com"), a).is_ok());
        t.fail(Some("x@example.com"), a);
        // The account is over its limit from a; case and spaces do not matter. Not from b: its
        // owner still gets in from there (no lockout a guesser can cause from one place).
        assert!(t.check(Some(" x@EXAMPLE.com"), a).is_err());
        assert!(t.check(Some("x@example.com"), b).is_ok());
        t.fail(Some("x@example.com"), b);
        assert!(t.check(Some("y@example.com"), b).is_ok());
        t.fail(Some("y@example.com"), a);
        t.fail(Some("z@example.com"), a);
        // IP a has 3 failures: every account is refused from there, not from b.
        let wait = t.check(Some("w@example.com"), a).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(t.check(Some("w@example.com"), b).is_ok());
        t.succeed("x@example.com", b);
        assert!(t.check(Some("x@example.com"), b).is_ok());
        // Guesses from many addresses: the account's own limit across them.
        let t = Throttle::new(limits);
        for i in 0..4 {
            t.fail(Some("v@example.com"), Some(format!("192.0.2.{i}").parse().unwrap()));
        }
        assert!(t.check(Some("v@example.com"), Some("192.0.2.200".parse().unwrap())).is_err());
        // Sign-ups per address.
        let t = Throttle::new(limits);
        t.signed_up(a);
        assert!(t.check_signup(a).is_ok());
        t.signed_up(a);
        assert!(t.check_signup(a).is_err());
        assert!(t.check_signup(b).is_ok());
        // Mails per address, whatever the case.
        let t = Throttle::new(limits);
        assert!(t.may_mail("m@example.com"));
        assert!(t.may_mail("M@example.com "));
        assert!(!t.may_mail("m@example.com"));
        assert!(t.may_mail("n@example.com"));
        let t = Throttle::new(limits);
        std::thread::sleep(Duration::from_millis(250));
        assert!(t.check(Some("w@example.com"), a).is_ok(), "failures leave the window");
    }
}

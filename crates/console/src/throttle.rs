//! Login throttling, in memory: failed attempts per account (by email, known or not, so the
//! answer does not reveal which emails exist) and per client IP, in a sliding window. Past a
//! limit, attempts are refused before any password check (HTTP 429, code 1005) until the oldest
//! failure leaves the window. A successful login forgets its account's failures.
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
    pub per_account: usize,
    pub per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { window: Duration::from_secs(15 * 60), per_account: 5, per_ip: 20 }
    }
}

/// Keys tracked at most; past it, keys whose failures all left the window are dropped, then
/// (under a flood of distinct emails from many addresses) arbitrary account keys.
const MAX_KEYS: usize = 100_000;

pub struct Throttle {
    limits: Limits,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

fn account_key(email: &str) -> String {
    format!("a:{}", email.trim().to_lowercase())
}

fn ip_key(ip: Option<IpAddr>) -> String {
    match ip {
        Some(ip) => format!("i:{ip}"),
        None => "i:unknown".into(),
    }
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
            over(&account_key(email), self.limits.per_account);
        }
        over(&ip_key(ip), self.limits.per_ip);
        match until {
            Some(t) => Err(t.saturating_duration_since(now).max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    /// Records a failed attempt for the IP and, when given, the account.
    pub fn fail(&self, email: Option<&str>, ip: Option<IpAddr>) {
        let now = Instant::now();
        let window = self.limits.window;
        let keep = self.limits.per_ip.max(self.limits.per_account) + 1;
        let mut map = self.map();
        if map.len() >= MAX_KEYS {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
            if map.len() >= MAX_KEYS {
                let victims: Vec<String> =
                    map.keys().filter(|k| k.starts_with("a:")).take(MAX_KEYS / 10).cloned().collect();
                for k in victims {
                    map.remove(&k);
                }
            }
        }
        let mut keys = vec![ip_key(ip)];
        if let Some(email) = email {
            keys.push(account_key(email));
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
    pub fn succeed(&self, email: &str) {
        self.map().remove(&account_key(email));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_account_and_ip() {
        let t = Throttle::new(Limits { window: Duration::from_millis(200), per_account: 2, per_ip: 3 });
        let (a, b) = (Some("127.0.0.1".parse().unwrap()), Some("10.0.0.1".parse().unwrap()));
        t.fail(Some("X@example.com"), a);
        assert!(t.check(Some("x@example.com"), a).is_ok());
        t.fail(Some("x@example.com"), b);
        // The account is over its limit from any IP; case and spaces do not matter.
        assert!(t.check(Some(" x@EXAMPLE.com"), b).is_err());
        assert!(t.check(Some("y@example.com"), b).is_ok());
        t.fail(Some("y@example.com"), a);
        t.fail(Some("z@example.com"), a);
        // IP a has 3 failures: every account is refused from there, not from b.
        let wait = t.check(Some("w@example.com"), a).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(t.check(Some("w@example.com"), b).is_ok());
        t.succeed("x@example.com");
        assert!(t.check(Some("x@example.com"), b).is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(t.check(Some("w@example.com"), a).is_ok(), "failures leave the window");
    }
}

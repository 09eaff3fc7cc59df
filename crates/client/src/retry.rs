//! [`RetryPolicy`]: bounded retries with exponential backoff and full jitter.

use std::time::Duration;

/// How failed requests are retried: at most `max_attempts` tries in all, waiting before try
/// `n + 1` a random time between zero and `min(max_delay, base_delay * 2^(n - 1))` ("full
/// jitter", so that many clients failing together do not come back together). A `Retry-After`
/// in seconds from the server (keygate sends one with its connection-limit 503) is honoured up
/// to `max_delay`.
///
/// What is retried is decided by [`Error::is_retryable`](crate::Error::is_retryable):
/// connection failures and `1503` always; other 5xx answers and failures after the request went
/// out only for idempotent requests (GET, HEAD, PUT, DELETE, OPTIONS, and the calls of this SDK
/// that are safe to repeat, like getToken or a ban), unless
/// [`retry_non_idempotent`](Self::retry_non_idempotent) says otherwise; never a 4xx, and never a
/// rate limit's `1005` (HTTP 429), idempotent or not, whatever its status: it comes back as an
/// [`Error::Api`](crate::Error::Api) with the server's
/// [`retry_after`](crate::Error::retry_after), for the caller to decide whether to wait; and
/// never a refusal for credits, `1006` (HTTP 402), whatever its status: it comes back as an
/// [`Error::InsufficientCredits`](crate::Error::InsufficientCredits), since only a top-up or a
/// refill helps.
///
/// ```
/// use std::time::Duration;
/// use keygate_client::RetryPolicy;
///
/// let policy = RetryPolicy::new(5)
///     .base_delay(Duration::from_millis(50))
///     .max_delay(Duration::from_secs(2));
/// assert_eq!(policy.max_attempts(), 5);
/// assert!(policy.backoff(3) <= Duration::from_millis(200));
/// assert_eq!(RetryPolicy::none().max_attempts(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    retry_non_idempotent: bool,
}

impl Default for RetryPolicy {
    /// Three attempts, 100 ms base delay, 5 s cap, idempotent requests only.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            retry_non_idempotent: false,
        }
    }
}

impl RetryPolicy {
    /// The default policy with `max_attempts` tries in all (at least one).
    ///
    /// ```
    /// assert_eq!(keygate_client::RetryPolicy::new(0).max_attempts(), 1);
    /// ```
    pub fn new(max_attempts: u32) -> Self {
        Self { max_attempts: max_attempts.max(1), ..Self::default() }
    }

    /// One attempt, no retry.
    ///
    /// ```
    /// assert_eq!(keygate_client::RetryPolicy::none().max_attempts(), 1);
    /// ```
    pub fn none() -> Self {
        Self::new(1)
    }

    /// The delay bound before the first retry (doubled for each further one).
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = keygate_client::RetryPolicy::default().base_delay(Duration::ZERO);
    /// assert_eq!(p.backoff(1), Duration::ZERO);
    /// ```
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }

    /// The largest delay between two tries.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = keygate_client::RetryPolicy::new(10).max_delay(Duration::from_millis(10));
    /// assert!(p.backoff(9) <= Duration::from_millis(10));
    /// ```
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Also retry POST and PATCH requests after a 5xx or a failure once they were sent (say,
    /// when the API behind keygate deduplicates them with an idempotency key).
    ///
    /// ```
    /// let p = keygate_client::RetryPolicy::default().retry_non_idempotent(true);
    /// assert!(p.retries_non_idempotent());
    /// ```
    pub fn retry_non_idempotent(mut self, yes: bool) -> Self {
        self.retry_non_idempotent = yes;
        self
    }

    /// Tries in all, the first one included.
    ///
    /// ```
    /// assert_eq!(keygate_client::RetryPolicy::default().max_attempts(), 3);
    /// ```
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether non-idempotent requests are retried too.
    ///
    /// ```
    /// assert!(!keygate_client::RetryPolicy::default().retries_non_idempotent());
    /// ```
    pub fn retries_non_idempotent(&self) -> bool {
        self.retry_non_idempotent
    }

    /// A random delay to wait before retry number `retry` (1 for the first retry): uniform in
    /// `[0, min(max_delay, base_delay * 2^(retry - 1))]`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = keygate_client::RetryPolicy::default();
    /// assert!(p.backoff(1) <= Duration::from_millis(100));
    /// assert!(p.backoff(2) <= Duration::from_millis(200));
    /// assert!(p.backoff(30) <= Duration::from_secs(5));
    /// ```
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(31));
        let cap = self.base_delay.saturating_mul(factor).min(self.max_delay);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::random_range(0..=nanos))
    }

    /// The wait before retry `retry`: the server's `Retry-After` (capped) when it gave one,
    /// else [`backoff`](Self::backoff).
    pub(crate) fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) => d.min(self.max_delay),
            None => self.backoff(retry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let p = RetryPolicy::new(8).base_delay(Duration::from_millis(10)).max_delay(Duration::from_millis(100));
        for retry in 1..=8u32 {
            let cap = Duration::from_millis(10 * 2u64.pow(retry - 1)).min(Duration::from_millis(100));
            let samples: Vec<Duration> = (0..200).map(|_| p.backoff(retry)).collect();
            assert!(samples.iter().all(|d| *d <= cap), "retry {retry}: over {cap:?}");
            // Full jitter: the delays spread over the whole range, not one value.
            let distinct: std::collections::HashSet<_> = samples.iter().collect();
            assert!(distinct.len() > 100, "retry {retry}: {} distinct delays", distinct.len());
            assert!(samples.iter().any(|d| *d < cap / 4), "retry {retry}: nothing small");
        }
        // Huge retry numbers neither overflow nor pass the cap.
        assert!(p.backoff(u32::MAX) <= Duration::from_millis(100));
        assert_eq!(p.wait(1, Some(Duration::from_secs(60))), Duration::from_millis(100));
        assert_eq!(p.wait(1, Some(Duration::from_millis(7))), Duration::from_millis(7));
    }
}

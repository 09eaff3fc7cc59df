//! [`ClientOptions`]: what every client of this crate is configured with.

use std::time::Duration;

use crate::RetryPolicy;

/// Settings shared by [`ApiKeyClient`](crate::ApiKeyClient), [`TokenClient`](crate::TokenClient)
/// and [`AdminClient`](crate::AdminClient).
///
/// ```
/// use std::time::Duration;
/// use keygate_client::{ApiKeyClient, ClientOptions, RetryPolicy};
///
/// let options = ClientOptions::default()
///     .retry(RetryPolicy::new(5))
///     .timeout(Duration::from_secs(10));
/// let client = ApiKeyClient::with_options("http://127.0.0.1:8080", "kgk_...", options)?;
/// # Ok::<(), keygate_client::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    pub(crate) http: Option<reqwest::Client>,
    pub(crate) refresh_before: Duration,
}

impl Default for ClientOptions {
    /// [`RetryPolicy::default`], a 30 s timeout per try, a 10 s connect timeout, tokens refreshed
    /// 60 s (at most half their lifetime) before they expire.
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(10),
            http: None,
            refresh_before: Duration::from_secs(60),
        }
    }
}

impl ClientOptions {
    /// How failed requests are retried.
    ///
    /// ```
    /// let o = keygate_client::ClientOptions::default().retry(keygate_client::RetryPolicy::none());
    /// # let _ = o;
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The longest one try may take, from sending to the end of the answer's headers (and its
    /// body, for the calls that read it).
    ///
    /// ```
    /// let o = keygate_client::ClientOptions::default().timeout(std::time::Duration::from_secs(5));
    /// # let _ = o;
    /// ```
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// No timeout per try (long downloads through the gateway, say).
    ///
    /// ```
    /// let o = keygate_client::ClientOptions::default().no_timeout();
    /// # let _ = o;
    /// ```
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// The longest wait for a TCP (and TLS) connection. Ignored with
    /// [`http_client`](Self::http_client).
    ///
    /// ```
    /// let o = keygate_client::ClientOptions::default().connect_timeout(std::time::Duration::from_secs(2));
    /// # let _ = o;
    /// ```
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Use this `reqwest::Client` (its pool, proxy, TLS settings) instead of the SDK's own. The
    /// SDK's own follows no redirect, so that a credential is never sent on to another host; a
    /// client given here should do the same (`reqwest::redirect::Policy::none()`).
    ///
    /// ```
    /// let http = reqwest::Client::builder()
    ///     .redirect(reqwest::redirect::Policy::none())
    ///     .build()?;
    /// let o = keygate_client::ClientOptions::default().http_client(http);
    /// # let _ = o;
    /// # Ok::<(), reqwest::Error>(())
    /// ```
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// [`TokenClient`](crate::TokenClient) only: get a new token this long before the current
    /// one expires (at most half of the token's lifetime before).
    ///
    /// ```
    /// let o = keygate_client::ClientOptions::default().refresh_before(std::time::Duration::from_secs(300));
    /// # let _ = o;
    /// ```
    pub fn refresh_before(mut self, d: Duration) -> Self {
        self.refresh_before = d;
        self
    }
}

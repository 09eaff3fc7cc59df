//! The customers' side: [`ApiKeyClient`] (`x-api-key` on every request) and [`TokenClient`]
//! (clientId + clientSecret for a token from getToken, then `Authorization: Bearer`), the
//! generic [`RequestBuilder`] for the API behind keygate, and [`Identity`] from `/auth/verify`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Code, Error, Result};
use crate::http::{self, Answer, Read, Transport};
use crate::{ClientOptions, Secret};

/// The vendor's token endpoint.
pub const GET_TOKEN_PATH: &str = "/api/open/v3/getToken";
/// keygate's verify endpoint.
pub const VERIFY_PATH: &str = "/auth/verify";
/// The request header that tells `/auth/verify` what a request costs in credits (default 1):
/// what [`ApiKeyClient::verify_with_cost`] sends.
pub const COST_HEADER: &str = "x-keygate-cost";
/// The request header that tells `/auth/verify` which permissions a request requires, an
/// expression (`videos.create AND (images.read OR admin)`): what
/// [`ApiKeyClient::verify_requiring`] sends.
pub const REQUIRE_HEADER: &str = "x-keygate-require";

/// Who keygate says a credential belongs to: the answer of `/auth/verify`, with where each rate
/// limit that applies stands after it and the credits left.
///
/// ```
/// let id: keygate_client::Identity = serde_json::from_str(
///     r#"{"accountId":"64db241f6d9e5c4bd136c187","uid":7,"clientId":"64db241f6d9e5c4bd136c188","method":"api_key"}"#,
/// )?;
/// assert_eq!(id.uid, 7);
/// assert_eq!(id.method, keygate_client::AuthMethod::ApiKey);
/// assert!(id.ratelimits.is_empty(), "no limit applies");
/// assert_eq!(id.credits_remaining, None, "no credits balance applies");
///
/// let id: keygate_client::Identity = serde_json::from_str(
///     r#"{"accountId":"64db241f6d9e5c4bd136c187","uid":7,"clientId":"64db241f6d9e5c4bd136c188","method":"api_key",
///     "ratelimits":[{"name":"requests","limit":10,"duration":"1s","remaining":9,"reset":1}]}"#,
/// )?;
/// assert_eq!((id.ratelimits[0].name.as_str(), id.ratelimits[0].remaining), ("requests", 9));
///
/// let id: keygate_client::Identity = serde_json::from_str(
///     r#"{"accountId":"64db241f6d9e5c4bd136c187","uid":7,"clientId":"64db241f6d9e5c4bd136c188","method":"bearer",
///     "creditsRemaining":9990}"#,
/// )?;
/// assert_eq!(id.credits_remaining, Some(9990));
/// assert!(id.name.is_none() && id.permissions.is_empty() && id.meta.is_none());
///
/// // A credential with a name, permissions (its own and its roles') and metadata.
/// let id: keygate_client::Identity = serde_json::from_str(
///     r#"{"accountId":"64db241f6d9e5c4bd136c187","uid":7,"clientId":"64db241f6d9e5c4bd136c188","method":"api_key",
///     "name":"ci runner","permissions":["images.*","videos.read"],"meta":{"team":"web"}}"#,
/// )?;
/// assert_eq!(id.name.as_deref(), Some("ci runner"));
/// assert_eq!(id.permissions, ["images.*", "videos.read"]);
/// assert_eq!(id.meta.as_ref().and_then(|m| m.get("team")), Some(&serde_json::json!("web")));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Identity {
    /// The account (24 hex characters).
    pub account_id: String,
    /// The account's number.
    pub uid: i64,
    /// The credential (24 hex characters).
    pub client_id: String,
    /// How the request authenticated.
    pub method: AuthMethod,
    /// Where each rate limit that applies to the credential stands after this request (the
    /// body's copy of the `RateLimit` header); empty when none applies.
    #[serde(default)]
    pub ratelimits: Vec<LimitStatus>,
    /// The credits left after this request was charged (the body's copy of the
    /// `x-keygate-credits-remaining` header): the smallest of the balances charged, the
    /// credential's own and its account's. `None` when no balance applies. With several keygate
    /// nodes, what the answering node knows (each spends from its own lease). When the balance
    /// does not cover a request, the answer is [`Error::InsufficientCredits`].
    #[serde(default)]
    pub credits_remaining: Option<i64>,
    /// The credential's name, when it has one (the upstream gets it as `x-keygate-key-name`).
    #[serde(default)]
    pub name: Option<String>,
    /// The permissions the credential holds, its own and its roles', wildcards as granted
    /// (`images.*`, `*`); empty when it holds none.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// The credential's metadata, when it has some (the upstream gets it as `x-keygate-meta`).
    #[serde(default)]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Where one rate limit stands after a request: an item of [`Identity::ratelimits`]. A request
/// past it is refused with [`Code::TooFrequent`] (`1005`, HTTP 429), whose
/// [`Error::retry_after`] says when to come back.
///
/// ```
/// let s: keygate_client::LimitStatus =
///     serde_json::from_str(r#"{"name":"daily","limit":1000,"duration":"1d","remaining":999,"reset":87}"#)?;
/// assert_eq!((s.remaining, s.reset), (999, 87));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LimitStatus {
    /// The limit's name.
    pub name: String,
    /// Requests per window.
    pub limit: u64,
    /// The window, e.g. `"1s"`, `"24h"`.
    pub duration: String,
    /// Requests that would pass now, one after the other.
    pub remaining: u64,
    /// Seconds until one more would pass (0: nothing is spent).
    pub reset: u64,
}

/// How a request proved who it is.
///
/// ```
/// use keygate_client::AuthMethod;
/// let m: AuthMethod = serde_json::from_str("\"bearer\"")?;
/// assert_eq!(m, AuthMethod::Bearer);
/// let m: AuthMethod = serde_json::from_str("\"carrier_pigeon\"")?;
/// assert_eq!(m, AuthMethod::Other);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthMethod {
    /// `x-api-key`.
    ApiKey,
    /// `Authorization: Bearer` with a token from getToken.
    Bearer,
    /// `x-client-id` + `x-client-secret` headers.
    ClientSecret,
    /// A method this version of the SDK does not know.
    #[serde(other)]
    Other,
}

// ---- ApiKeyClient ----------------------------------------------------------------------------

/// A client that sends `x-api-key: {API Key}` on every request (the vendor's recommended
/// method). Cheap to clone; clones share the connection pool.
///
/// ```no_run
/// # async fn run() -> keygate_client::Result<()> {
/// use keygate_client::ApiKeyClient;
///
/// let client = ApiKeyClient::new("http://127.0.0.1:8080", std::env::var("KEYGATE_API_KEY").unwrap())?;
/// let me = client.verify().await?;
/// println!("account {} (uid {})", me.account_id, me.uid);
/// let videos: serde_json::Value = client.get("/v1/videos").send_json().await?;
/// # let _ = videos;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ApiKeyClient {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    transport: Transport,
    api_key: HeaderValue,
}

impl fmt::Debug for ApiKeyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyClient").field("api_key", &"***").finish_non_exhaustive()
    }
}

impl ApiKeyClient {
    /// A client for the keygate (or gateway) at `base_url` with the default options.
    ///
    /// ```
    /// let client = keygate_client::ApiKeyClient::new("http://127.0.0.1:8080", "kgk_...")?;
    /// # let _ = client;
    /// assert!(keygate_client::ApiKeyClient::new("not a url", "kgk_...").is_err());
    /// # Ok::<(), keygate_client::Error>(())
    /// ```
    pub fn new(base_url: &str, api_key: impl Into<Secret>) -> Result<Self> {
        Self::with_options(base_url, api_key, ClientOptions::default())
    }

    /// A client with `options` (retries, timeouts, an HTTP client of your own).
    ///
    /// ```
    /// use keygate_client::{ApiKeyClient, ClientOptions, RetryPolicy};
    /// let client = ApiKeyClient::with_options(
    ///     "https://api.example.com",
    ///     "kgk_...",
    ///     ClientOptions::default().retry(RetryPolicy::new(5)),
    /// )?;
    /// # let _ = client;
    /// # Ok::<(), keygate_client::Error>(())
    /// ```
    pub fn with_options(base_url: &str, api_key: impl Into<Secret>, options: ClientOptions) -> Result<Self> {
        let transport = Transport::new(base_url, &options)?;
        let mut api_key = HeaderValue::from_str(api_key.into().expose())
            .map_err(|_| Error::Invalid("the API key is not a valid header value".into()))?;
        api_key.set_sensitive(true);
        Ok(Self { inner: Arc::new(KeyInner { transport, api_key }) })
    }

    /// A request to `path` under the base URL, authenticated with the API key when sent.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// let job: serde_json::Value = client
    ///     .request(reqwest::Method::POST, "/v1/videos")
    ///     .json(&serde_json::json!({"prompt": "a cat"}))
    ///     .send_json()
    ///     .await?;
    /// # let _ = job;
    /// # Ok(()) }
    /// ```
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder::new(Auth::Key(self.clone()), method, path)
    }

    /// `GET path`.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// let res = client.get("/v1/videos/42").send().await?;
    /// println!("{}", res.status());
    /// # Ok(()) }
    /// ```
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// `POST path`.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// let res = client.post("/v1/videos").body("{}").header("content-type", "application/json").send().await?;
    /// # let _ = res;
    /// # Ok(()) }
    /// ```
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// `GET /auth/verify`: who keygate says this key belongs to. A revoked key is
    /// [`Code::InvalidAuth`], a banned account [`Code::Banned`].
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// use keygate_client::{Code, Error};
    /// match client.verify().await {
    ///     Ok(me) => println!("hello, account {}", me.account_id),
    ///     Err(Error::Api { code: Code::Banned, .. }) => println!("banned"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn verify(&self) -> Result<Identity> {
        verify(self.get(VERIFY_PATH)).await
    }

    /// `GET /auth/verify` with `x-keygate-cost: cost`: [`verify`](Self::verify) charged `cost`
    /// credits instead of 1 where a credits balance applies (0 checks that the balance is
    /// positive and charges nothing). A balance that does not cover it is
    /// [`Error::InsufficientCredits`] (`1006`, HTTP 402), with what is left, and is not charged;
    /// a cost above 10¹⁵ is `1003` (HTTP 400).
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// use keygate_client::Error;
    /// match client.verify_with_cost(10).await {
    ///     Ok(me) => println!("{:?} credits left", me.credits_remaining),
    ///     Err(Error::InsufficientCredits { remaining, .. }) => println!("only {remaining:?} left: top up"),
    ///     Err(e) => return Err(e),
    /// }
    /// let balance = client.verify_with_cost(0).await?.credits_remaining; // free, needs a positive balance
    /// # let _ = balance;
    /// # Ok(()) }
    /// ```
    pub async fn verify_with_cost(&self, cost: u64) -> Result<Identity> {
        verify(self.get(VERIFY_PATH).header(COST_HEADER, cost)).await
    }

    /// `GET /auth/verify` with `x-keygate-require: requirement`: [`verify`](Self::verify), and
    /// the credential must hold what the expression requires (`videos.create`,
    /// `videos.create AND (images.read OR admin)`; a grant `images.*` or `*` covers the names
    /// under it). When it does not, the answer is [`Error::PermissionDenied`] (`1009`, HTTP 403),
    /// whose message names what was required, and nothing is charged; a malformed expression is
    /// `1003` (HTTP 400).
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// use keygate_client::Error;
    /// match client.verify_requiring("videos.create").await {
    ///     Ok(me) => println!("{:?} may create videos", me.name),
    ///     Err(Error::PermissionDenied { msg, .. }) => println!("not allowed: {msg}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn verify_requiring(&self, requirement: &str) -> Result<Identity> {
        verify(self.get(VERIFY_PATH).header(REQUIRE_HEADER, requirement)).await
    }

    /// Adds the `x-api-key` header to a `reqwest` request of your own (one sent with a streaming
    /// body, say, which this SDK's [`RequestBuilder`] cannot retry). No retries, no checks.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> Result<(), reqwest::Error> {
    /// let http = reqwest::Client::new();
    /// let res = client.authorize(http.put("https://api.example.com/v1/uploads/1")).body("...").send().await?;
    /// # let _ = res;
    /// # Ok(()) }
    /// ```
    pub fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.header(X_API_KEY, self.inner.api_key.clone())
    }
}

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

// ---- TokenClient -----------------------------------------------------------------------------

/// A client that trades clientId + clientSecret for a token at getToken
/// (`POST /api/open/v3/getToken`) and sends `Authorization: Bearer {token}`.
///
/// - The token is cached and shared by all clones; callers arriving together while it is
///   fetched wait for the one getToken in flight.
/// - It is refreshed before it expires: its `exp` and `iat` claims (read from the JWT, whose
///   signature only the server checks) give its lifetime, and a new one is fetched
///   [`refresh_before`](ClientOptions::refresh_before) its end (at most half its lifetime
///   before). The lifetime is counted on this machine's monotonic clock from the moment
///   getToken was asked, so a skewed clock does not matter.
/// - An answer `1101` (the token was revoked, rotated out or its signing key retired) drops it
///   and fetches a new one, once; if that fails too, the error is returned (a revoked
///   credential ends in `Error::Api { code: Code::InvalidAuth, .. }` from getToken).
///
/// ```no_run
/// # async fn run() -> keygate_client::Result<()> {
/// use keygate_client::TokenClient;
///
/// let client = TokenClient::new("http://127.0.0.1:8080", "64db241f6d9e5c4bd136c187", "kgk_...")?;
/// let me = client.verify().await?; // one getToken, then Bearer
/// let again = client.verify().await?; // the cached token
/// assert_eq!(me.client_id, again.client_id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokenClient {
    inner: Arc<TokenInner>,
}

struct TokenInner {
    transport: Transport,
    client_id: String,
    client_secret: Secret,
    refresh_before: Duration,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    /// When to fetch a new one (`None`: the token's lifetime is unknown; keep it until 1101).
    refresh_at: Option<Instant>,
    /// When it stops working (by its claims).
    expires_at: Option<Instant>,
}

impl fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenClient")
            .field("client_id", &self.inner.client_id)
            .field("client_secret", &"***")
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GetToken<'a> {
    client_id: &'a str,
    client_secret: &'a str,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
}

impl TokenClient {
    /// A client for the keygate at `base_url`, with the credential's clientId and its API key
    /// (the clientSecret), and the default options.
    ///
    /// ```
    /// let client = keygate_client::TokenClient::new("http://127.0.0.1:8080", "64db241f6d9e5c4bd136c187", "kgk_...")?;
    /// assert_eq!(client.client_id(), "64db241f6d9e5c4bd136c187");
    /// # Ok::<(), keygate_client::Error>(())
    /// ```
    pub fn new(base_url: &str, client_id: &str, client_secret: impl Into<Secret>) -> Result<Self> {
        Self::with_options(base_url, client_id, client_secret, ClientOptions::default())
    }

    /// A client with `options`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use keygate_client::{ClientOptions, TokenClient};
    /// let client = TokenClient::with_options(
    ///     "http://127.0.0.1:8080",
    ///     "64db241f6d9e5c4bd136c187",
    ///     "kgk_...",
    ///     ClientOptions::default().refresh_before(Duration::from_secs(600)),
    /// )?;
    /// # let _ = client;
    /// # Ok::<(), keygate_client::Error>(())
    /// ```
    pub fn with_options(
        base_url: &str,
        client_id: &str,
        client_secret: impl Into<Secret>,
        options: ClientOptions,
    ) -> Result<Self> {
        let transport = Transport::new(base_url, &options)?;
        Ok(Self {
            inner: Arc::new(TokenInner {
                transport,
                client_id: client_id.to_owned(),
                client_secret: client_secret.into(),
                refresh_before: options.refresh_before,
                cache: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The credential's clientId.
    ///
    /// ```
    /// let c = keygate_client::TokenClient::new("http://127.0.0.1:8080", "64db241f6d9e5c4bd136c187", "kgk_...")?;
    /// assert_eq!(c.client_id(), "64db241f6d9e5c4bd136c187");
    /// # Ok::<(), keygate_client::Error>(())
    /// ```
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The current token: the cached one while it is not due for refresh, else a new one from
    /// getToken (one call shared by everyone asking meanwhile). Retries as the policy says; a
    /// refused credential is `Error::Api` with `1101` (or `1200` for a banned account).
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::TokenClient) -> keygate_client::Result<()> {
    /// let token = client.token().await?;
    /// println!("Authorization: Bearer {}", token.expose());
    /// # Ok(()) }
    /// ```
    pub async fn token(&self) -> Result<Secret> {
        let mut slot = self.inner.cache.lock().await;
        let now = Instant::now();
        if let Some(c) = slot.as_ref()
            && c.refresh_at.is_none_or(|t| now < t)
        {
            return Ok(c.token.clone());
        }
        match self.fetch().await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *slot = Some(fresh);
                Ok(token)
            }
            // A refresh ahead of time that failed for a passing reason: the old token still
            // works until it expires.
            Err(e) if e.is_retryable(true) => match slot.as_ref() {
                Some(c) if c.expires_at.is_some_and(|t| Instant::now() < t) => Ok(c.token.clone()),
                _ => Err(e),
            },
            Err(e) => {
                *slot = None;
                Err(e)
            }
        }
    }

    /// Forgets the cached token: the next request gets a new one.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::TokenClient) {
    /// client.clear_token().await;
    /// # }
    /// ```
    pub async fn clear_token(&self) {
        *self.inner.cache.lock().await = None;
    }

    /// Drops `used` if it is still the cached token (another caller may have replaced it).
    async fn invalidate(&self, used: &Secret) {
        let mut slot = self.inner.cache.lock().await;
        if slot.as_ref().is_some_and(|c| &c.token == used) {
            *slot = None;
        }
    }

    /// One getToken (with retries: asking twice is harmless).
    async fn fetch(&self) -> Result<Cached> {
        let t = &self.inner.transport;
        let url = t.url(GET_TOKEN_PATH)?;
        let body = GetToken { client_id: &self.inner.client_id, client_secret: self.inner.client_secret.expose() };
        let asked_at = Instant::now();
        let answer =
            t.retrying(true, || t.attempt(t.request(Method::POST, url.clone()).json(&body), Read::Body)).await?;
        let (status, bytes) = answer.into_body();
        let token = http::decode::<TokenAnswer>(status, &bytes)?
            .token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Decode { status, reason: "getToken answered without a token".into() })?;
        let (refresh_at, expires_at) = schedule(&token, asked_at, self.inner.refresh_before, unix_now());
        Ok(Cached { token: Secret::new(token), refresh_at, expires_at })
    }

    /// Runs `call` with the current token; on `1101`, once more with a new one.
    async fn with_token<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(Secret) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let token = self.token().await?;
        match call(token.clone()).await {
            Err(e) if e.code() == Some(Code::InvalidAuth) => {
                self.invalidate(&token).await;
                call(self.token().await?).await
            }
            other => other,
        }
    }

    /// A request to `path` under the base URL, sent with `Authorization: Bearer {token}`.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::TokenClient) -> keygate_client::Result<()> {
    /// let job: serde_json::Value = client
    ///     .request(reqwest::Method::POST, "/v1/videos")
    ///     .json(&serde_json::json!({"prompt": "a cat"}))
    ///     .send_json()
    ///     .await?;
    /// # let _ = job;
    /// # Ok(()) }
    /// ```
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder::new(Auth::Token(self.clone()), method, path)
    }

    /// `GET path`.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::TokenClient) -> keygate_client::Result<()> {
    /// let res = client.get("/v1/videos/42").send().await?;
    /// # let _ = res;
    /// # Ok(()) }
    /// ```
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// `POST path`.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::TokenClient) -> keygate_client::Result<()> {
    /// let res = client.post("/v1/videos").json(&serde_json::json!({})).send().await?;
    /// # let _ = res;
    /// # Ok(()) }
    /// ```
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// `GET /auth/verify` with the token: who keygate says this credential belongs to.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::TokenClient) -> keygate_client::Result<()> {
    /// let me = client.verify().await?;
    /// assert_eq!(me.method, keygate_client::AuthMethod::Bearer);
    /// # Ok(()) }
    /// ```
    pub async fn verify(&self) -> Result<Identity> {
        verify(self.get(VERIFY_PATH)).await
    }

    /// `GET /auth/verify` with the token and `x-keygate-cost: cost`: see
    /// [`ApiKeyClient::verify_with_cost`]. getToken itself is never charged.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::TokenClient) -> keygate_client::Result<()> {
    /// let me = client.verify_with_cost(5).await?;
    /// println!("{:?} credits left", me.credits_remaining);
    /// # Ok(()) }
    /// ```
    pub async fn verify_with_cost(&self, cost: u64) -> Result<Identity> {
        verify(self.get(VERIFY_PATH).header(COST_HEADER, cost)).await
    }

    /// `GET /auth/verify` with the token and `x-keygate-require: requirement`: see
    /// [`ApiKeyClient::verify_requiring`]. A token carries no permissions of its own: its
    /// credential's, as they are now, apply.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::TokenClient) -> keygate_client::Result<()> {
    /// let me = client.verify_requiring("images.read OR admin").await?;
    /// println!("{:?}", me.permissions);
    /// # Ok(()) }
    /// ```
    pub async fn verify_requiring(&self, requirement: &str) -> Result<Identity> {
        verify(self.get(VERIFY_PATH).header(REQUIRE_HEADER, requirement)).await
    }

    /// Adds `Authorization: Bearer {token}` to a `reqwest` request of your own (getting a token
    /// first if needed). No retries, no refresh on 1101.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::TokenClient) -> keygate_client::Result<()> {
    /// let http = reqwest::Client::new();
    /// let req = client.authorize(http.get("https://api.example.com/v1/videos")).await?;
    /// let res = req.send().await?;
    /// # let _ = res;
    /// # Ok(()) }
    /// ```
    pub async fn authorize(&self, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder> {
        Ok(req.header(AUTHORIZATION, bearer(&self.token().await?)?))
    }
}

/// Sends a `/auth/verify` request: the identity in its answer's `data`.
async fn verify(request: RequestBuilder) -> Result<Identity> {
    let (status, bytes) = request.execute(Read::Body).await?.into_body();
    http::decode_data(status, &bytes).map(|(identity, _)| identity)
}

fn bearer(token: &Secret) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| Error::Decode {
        status: 200,
        reason: "getToken answered a token that is no header value".into(),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The claims of a JWT that say when it expires (no signature check: the server does that).
#[derive(Deserialize)]
struct TimeClaims {
    exp: Option<i64>,
    iat: Option<i64>,
}

fn time_claims(token: &str) -> Option<TimeClaims> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&json).ok()
}

/// When to refresh a token asked for at `asked_at`, and when it expires, from its claims:
/// its lifetime is `exp - iat` (the server's clock both), less one second since both are
/// whole seconds; without `iat`, `exp` against this machine's clock (`now_unix`). `None`: unknown
/// (not a JWT, no `exp`, or too short to plan for): kept until a 1101.
fn schedule(
    token: &str,
    asked_at: Instant,
    refresh_before: Duration,
    now_unix: i64,
) -> (Option<Instant>, Option<Instant>) {
    let Some(TimeClaims { exp: Some(exp), iat }) = time_claims(token) else {
        return (None, None);
    };
    let secs = match iat {
        Some(iat) => exp.saturating_sub(iat).saturating_sub(1),
        None => exp.saturating_sub(now_unix).saturating_sub(1),
    };
    if secs <= 0 {
        return (None, None);
    }
    let life = Duration::from_secs(secs as u64);
    let margin = refresh_before.min(life / 2);
    (Some(asked_at + (life - margin)), Some(asked_at + life))
}

// ---- RequestBuilder --------------------------------------------------------------------------

#[derive(Clone)]
enum Auth {
    Key(ApiKeyClient),
    Token(TokenClient),
}

impl Auth {
    fn transport(&self) -> &Transport {
        match self {
            Self::Key(c) => &c.inner.transport,
            Self::Token(c) => &c.inner.transport,
        }
    }
}

/// A request to the API behind keygate (keygate as a gateway), or to keygate itself, that is
/// authenticated when sent: from [`ApiKeyClient::request`] or [`TokenClient::request`].
///
/// Sending retries as the client's [`RetryPolicy`](crate::RetryPolicy) says (the body is kept as
/// bytes so it can be sent again), and with a [`TokenClient`], a `1101` answer gets a new token
/// and one more try.
///
/// - [`send`](Self::send) gives the response of any status below 400 with its body unread; a
///   status of 400 or more is an error ([`Error::Api`] when the body is keygate's envelope,
///   [`Error::Status`] else).
/// - [`send_json`](Self::send_json) also reads the body as JSON; an envelope with a code other
///   than 1000 is an [`Error::Api`] whatever the status (the vendor's convention, and keygate's
///   `always-200` mode).
/// - [`send_data`](Self::send_data) reads an envelope's `data`.
///
/// ```no_run
/// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
/// use std::time::Duration;
/// let res = client
///     .get("/v1/videos")
///     .query(&[("status", "done"), ("limit", "10")])
///     .header("x-request-id", "abc-123")
///     .timeout(Duration::from_secs(5))
///     .send()
///     .await?;
/// println!("{}", res.text().await?);
/// # Ok(()) }
/// ```
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    auth: Auth,
    method: Method,
    url: Result<reqwest::Url>,
    headers: HeaderMap,
    body: Option<Bytes>,
    timeout: Option<Duration>,
    idempotent: Option<bool>,
    error: Option<Error>,
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .field("url", &self.url.as_ref().map(|u| u.as_str()).ok())
            .finish_non_exhaustive()
    }
}

impl RequestBuilder {
    fn new(auth: Auth, method: Method, path: &str) -> Self {
        let url = auth.transport().url(path);
        Self { auth, method, url, headers: HeaderMap::new(), body: None, timeout: None, idempotent: None, error: None }
    }

    /// Adds a header (an invalid name or value fails the request when it is sent). The
    /// credential headers are the client's to set.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// let res = client.get("/v1/videos").header("accept", "application/json").send().await?;
    /// # let _ = res;
    /// # Ok(()) }
    /// ```
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        HeaderValue: TryFrom<V>,
    {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(v)) => {
                self.headers.append(n, v);
            }
            _ => self.error = Some(Error::Invalid("invalid header name or value".into())),
        }
        self
    }

    /// Adds every header of `headers`.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// let mut h = reqwest::header::HeaderMap::new();
    /// h.insert("accept", "application/json".parse().unwrap());
    /// let res = client.get("/v1/videos").headers(h).send().await?;
    /// # let _ = res;
    /// # Ok(()) }
    /// ```
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        for (name, value) in headers.iter() {
            self.headers.append(name, value.clone());
        }
        self
    }

    /// Appends `pairs` to the URL's query string (percent-encoded).
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// let res = client.get("/v1/search").query(&[("q", "cats & dogs")]).send().await?;
    /// # let _ = res;
    /// # Ok(()) }
    /// ```
    pub fn query<K: AsRef<str>, V: AsRef<str>>(mut self, pairs: &[(K, V)]) -> Self {
        if let Ok(url) = &mut self.url {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k.as_ref(), v.as_ref());
            }
        }
        self
    }

    /// A JSON body (and `content-type: application/json`).
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// let res = client.post("/v1/videos").json(&serde_json::json!({"prompt": "a cat"})).send().await?;
    /// # let _ = res;
    /// # Ok(()) }
    /// ```
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => {
                self.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                self.body = Some(bytes.into());
            }
            Err(e) => self.error = Some(Error::Invalid(format!("serialising the JSON body: {e}"))),
        }
        self
    }

    /// A body of bytes (kept, so that a retry can send it again).
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// let res = client.post("/v1/notes").header("content-type", "text/plain").body("hello").send().await?;
    /// # let _ = res;
    /// # Ok(()) }
    /// ```
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// A timeout for each try of this request, instead of the client's.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// let res = client.get("/v1/slow").timeout(std::time::Duration::from_secs(120)).send().await?;
    /// # let _ = res;
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Whether this request may be sent twice (so retried after a 5xx or a failure once sent).
    /// Defaults to the method's nature: GET, HEAD, PUT, DELETE and OPTIONS are, POST and PATCH
    /// are not. Say `true` for a POST the API deduplicates (an idempotency key).
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// let res = client
    ///     .post("/v1/payments")
    ///     .header("idempotency-key", "order-42")
    ///     .idempotent(true)
    ///     .send()
    ///     .await?;
    /// # let _ = res;
    /// # Ok(()) }
    /// ```
    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = Some(yes);
        self
    }

    /// Sends the request: the response for a status below 400 (body unread), else an error.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// let bytes = client.get("/v1/videos/42/file").send().await?.bytes().await?;
    /// # let _ = bytes;
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<reqwest::Response> {
        Ok(self.execute(Read::Response).await?.into_response())
    }

    /// Sends the request and reads the whole answer as JSON `T`; an envelope with a code other
    /// than 1000 is an [`Error::Api`].
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// #[derive(serde::Deserialize)]
    /// struct Video { id: String }
    /// let v: Video = client.get("/v1/videos/42").send_json().await?;
    /// # let _ = v.id;
    /// # Ok(()) }
    /// ```
    pub async fn send_json<T: DeserializeOwned>(self) -> Result<T> {
        let (status, bytes) = self.execute(Read::Body).await?.into_body();
        http::decode(status, &bytes)
    }

    /// Sends the request and reads the `data` of the answer's envelope
    /// `{"code": 1000, "msg": "OK", "data": ...}` as `T`.
    ///
    /// ```no_run
    /// # async fn run(client: keygate_client::ApiKeyClient) -> keygate_client::Result<()> {
    /// let me: keygate_client::Identity = client.get("/auth/verify").send_data().await?;
    /// # let _ = me;
    /// # Ok(()) }
    /// ```
    pub async fn send_data<T: DeserializeOwned>(self) -> Result<T> {
        let (status, bytes) = self.execute(Read::Body).await?.into_body();
        http::decode_data(status, &bytes).map(|(data, _)| data)
    }

    async fn execute(self, read: Read) -> Result<Answer> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let url = self.url?;
        let idempotent = self.idempotent.unwrap_or_else(|| http::is_idempotent(&self.method));
        let parts = Parts { method: self.method, url, headers: self.headers, body: self.body, timeout: self.timeout };
        match &self.auth {
            Auth::Key(c) => {
                let t = &c.inner.transport;
                let key = &c.inner.api_key;
                t.retrying(idempotent, || t.attempt(parts.build(t).header(X_API_KEY, key.clone()), read)).await
            }
            Auth::Token(c) => {
                let t = &c.inner.transport;
                c.with_token(|token| {
                    let parts = &parts;
                    async move {
                        let auth = bearer(&token)?;
                        t.retrying(idempotent, || t.attempt(parts.build(t).header(AUTHORIZATION, auth.clone()), read))
                            .await
                    }
                })
                .await
            }
        }
    }
}

/// A request ready to be built once per try.
struct Parts {
    method: Method,
    url: reqwest::Url,
    headers: HeaderMap,
    body: Option<Bytes>,
    timeout: Option<Duration>,
}

impl Parts {
    fn build(&self, t: &Transport) -> reqwest::RequestBuilder {
        let mut headers = self.headers.clone();
        // The client's credential is the one sent.
        for h in [&AUTHORIZATION, &X_API_KEY] {
            headers.remove(h);
        }
        let mut rb = t.request(self.method.clone(), self.url.clone()).headers(headers);
        if let Some(body) = &self.body {
            rb = rb.body(body.clone());
        }
        if let Some(d) = self.timeout {
            rb = rb.timeout(d);
        }
        rb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"HS256","typ":"JWT"}"#), b64(claims))
    }

    #[test]
    fn refresh_is_planned_from_the_claims() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        // A year-long token: refreshed a minute before its end (less the second of rounding).
        let year = 366 * 86_400;
        let (refresh, expires) = schedule(&jwt(&format!(r#"{{"iat":100,"exp":{}}}"#, 100 + year)), t0, minute, 0);
        assert_eq!(expires, Some(t0 + Duration::from_secs(year as u64 - 1)));
        assert_eq!(refresh, Some(t0 + Duration::from_secs(year as u64 - 1) - minute));
        // A short one: at most half its lifetime before.
        let (refresh, expires) = schedule(&jwt(r#"{"iat":100,"exp":103}"#), t0, minute, 0);
        assert_eq!(expires, Some(t0 + Duration::from_secs(2)));
        assert_eq!(refresh, Some(t0 + Duration::from_secs(1)));
        // The client's clock does not matter when iat is there...
        let (refresh, _) = schedule(&jwt(r#"{"iat":100,"exp":103}"#), t0, minute, 999_999);
        assert_eq!(refresh, Some(t0 + Duration::from_secs(1)));
        // ...and is used when it is not.
        let (refresh, expires) = schedule(&jwt(r#"{"exp":1000}"#), t0, Duration::from_secs(10), 901);
        assert_eq!((refresh, expires), (Some(t0 + Duration::from_secs(88)), Some(t0 + Duration::from_secs(98))));
        // Unknown lifetimes: kept until the server says 1101.
        for token in [
            "opaque-token".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            "x.!!!.y".to_owned(),
            jwt(r#"{"iat":100}"#),
            jwt(r#"{"iat":100,"exp":101}"#),
            jwt(r#"{"exp":5}"#),
            jwt(r#"{"exp":"soon"}"#),
        ] {
            assert_eq!(schedule(&token, t0, minute, 1000), (None, None), "{token}");
        }
        // Padding is tolerated.
        let padded = format!("{}==", jwt(r#"{"iat":1,"exp":3}"#).rsplit_once('.').unwrap().0) + ".s";
        assert!(time_claims(&padded).is_some());
    }

    #[test]
    fn futures_and_clients_can_move_between_threads() {
        fn send<T: Send>(_: &T) {}
        fn shared<T: Send + Sync + Clone + 'static>() {}
        shared::<ApiKeyClient>();
        shared::<TokenClient>();
        shared::<crate::AdminClient>();
        let k = ApiKeyClient::new("http://127.0.0.1:1", "kgk_x").unwrap();
        let t = TokenClient::new("http://127.0.0.1:1", "64db241f6d9e5c4bd136c187", "kgk_x").unwrap();
        let a = crate::AdminClient::new("http://127.0.0.1:1", "kga_x").unwrap();
        send(&k.verify());
        send(&k.verify_with_cost(3));
        send(&t.verify());
        send(&t.verify_with_cost(3));
        send(&t.get("/x").send());
        send(&k.post("/x").send_json::<serde_json::Value>());
        send(&a.signing_keys());
        send(&a.accounts(crate::AccountQuery::new()));
        send(&a.credential_credits("64db241f6d9e5c4bd136c188"));
        send(&a.adjust_account_credits("64db241f6d9e5c4bd136c187", crate::CreditAdjustment::Add(1), Some("k")));
        send(&a.put_plan_with_credits("free", &[], Some(&crate::Refill::daily(1))));
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c = ApiKeyClient::new("http://127.0.0.1:1", "kgk_secret_value_0123456789abcdef").unwrap();
        assert!(!format!("{c:?}").contains("secret_value"));
        let c = TokenClient::new("http://127.0.0.1:1", "64db241f6d9e5c4bd136c187", "kgk_secret_value").unwrap();
        assert!(!format!("{c:?}").contains("secret_value"));
        assert!(format!("{c:?}").contains("64db241f6d9e5c4bd136c187"));
        assert!(ApiKeyClient::new("http://127.0.0.1:1", "bad\nkey").is_err());
    }
}

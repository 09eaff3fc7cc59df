//! The transport every client shares: the base URL, one try of a request and how its answer is
//! judged (the envelope's code, the HTTP status), and the retry loop around tries.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{Code, Error, Result};
use crate::{ClientOptions, RetryPolicy};

/// How much of a non-envelope error body an [`Error::Status`] keeps.
const ERROR_BODY_BYTES: usize = 1024;

/// What keygate says is left of a credits balance, on `/auth/verify`'s answers and on a `1006`.
pub(crate) const CREDITS_REMAINING: &str = "x-keygate-credits-remaining";

/// What an answer's headers add to a refusal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Hints {
    /// `Retry-After`, in seconds.
    pub(crate) retry_after: Option<Duration>,
    /// `x-keygate-credits-remaining`.
    pub(crate) credits_remaining: Option<i64>,
}

impl Hints {
    fn of(headers: &HeaderMap) -> Self {
        Self {
            retry_after: retry_after(headers.get(RETRY_AFTER)),
            credits_remaining: headers.get(CREDITS_REMAINING).and_then(|v| v.to_str().ok()?.trim().parse().ok()),
        }
    }
}

/// A failed try, with the server's `Retry-After` when it sent one.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: Error,
    pub(crate) retry_after: Option<Duration>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self { error, retry_after: None }
    }
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Self {
        Error::Transport(e).into()
    }
}

/// What a try should give back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// The response, its body unread (for an answer below 400).
    Response,
    /// The whole body, checked for an envelope with a code other than 1000 whatever the status
    /// (keygate's `always-200` mode answers refusals with HTTP 200).
    Body,
}

/// A successful try.
#[derive(Debug)]
pub(crate) enum Answer {
    Response(reqwest::Response),
    Body { status: u16, bytes: Bytes },
}

impl Answer {
    pub(crate) fn into_body(self) -> (u16, Bytes) {
        match self {
            Self::Body { status, bytes } => (status, bytes),
            Self::Response(_) => unreachable!("Read::Body gives bodies"),
        }
    }

    pub(crate) fn into_response(self) -> reqwest::Response {
        match self {
            Self::Response(r) => r,
            Self::Body { .. } => unreachable!("Read::Response gives responses"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Transport {
    pub(crate) http: reqwest::Client,
    /// The base URL without a trailing slash.
    base: String,
    retry: RetryPolicy,
    timeout: Option<Duration>,
}

impl Transport {
    pub(crate) fn new(base_url: &str, options: &ClientOptions) -> Result<Self> {
        let url = Url::parse(base_url).map_err(|e| Error::Invalid(format!("base URL {base_url:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(Error::Invalid(format!("base URL {base_url:?} must be http:// or https://")));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::Invalid(format!("base URL {base_url:?} must have no query or fragment")));
        }
        let http = match &options.http {
            Some(c) => c.clone(),
            None => reqwest::Client::builder()
                // A credential must never follow a redirect to another host.
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(options.connect_timeout)
                .user_agent(concat!("keygate-client/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| Error::Invalid(format!("building the HTTP client: {e}")))?,
        };
        let base = url.as_str().trim_end_matches('/').to_owned();
        Ok(Self { http, base, retry: options.retry.clone(), timeout: options.timeout })
    }

    /// `path` (with or without a leading `/`, possibly with a query) under the base URL.
    pub(crate) fn url(&self, path: &str) -> Result<Url> {
        let sep = if path.starts_with('/') { "" } else { "/" };
        let joined = format!("{}{sep}{path}", self.base);
        Url::parse(&joined).map_err(|e| Error::Invalid(format!("URL {joined:?}: {e}")))
    }

    /// A request to `url` with this transport's timeout.
    pub(crate) fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, url);
        match self.timeout {
            Some(t) => rb.timeout(t),
            None => rb,
        }
    }

    /// One try: sends `req` and judges the answer. A status of 400 or more is a failure (its
    /// body read for the envelope); with [`Read::Body`], so is an envelope whose code is not
    /// 1000.
    pub(crate) async fn attempt(&self, req: reqwest::RequestBuilder, read: Read) -> Result<Answer, Failure> {
        let res = req.send().await?;
        let status = res.status().as_u16();
        let hints = Hints::of(res.headers());
        let retry_after = hints.retry_after;
        if status >= 400 {
            let bytes = res.bytes().await.unwrap_or_default();
            return Err(Failure { error: error_of(status, &bytes, hints), retry_after });
        }
        match read {
            Read::Response => Ok(Answer::Response(res)),
            Read::Body => {
                let bytes = res.bytes().await?;
                if let Some(error) = refusal(status, &bytes, hints) {
                    return Err(Failure { error, retry_after });
                }
                Ok(Answer::Body { status, bytes })
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the policy's attempts are spent.
    pub(crate) async fn retrying<T, F, Fut>(&self, idempotent: bool, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let idempotent = idempotent || self.retry.retries_non_idempotent();
        let mut tries = 1;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(f) if tries < self.retry.max_attempts() && f.error.is_retryable(idempotent) => {
                    tokio::time::sleep(self.retry.wait(tries, f.retry_after)).await;
                    tries += 1;
                }
                Err(f) => return Err(f.error),
            }
        }
    }
}

/// Whether `method` may be sent twice with the effect of once (RFC 9110 section 9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE)
}

fn retry_after(v: Option<&HeaderValue>) -> Option<Duration> {
    v?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The envelope's `code` and `msg`, when a body is one.
#[derive(Deserialize)]
struct Head {
    code: u32,
    #[serde(default)]
    msg: String,
}

fn head(bytes: &[u8]) -> Option<Head> {
    // Only a JSON object can be an envelope; skip the parse for anything else.
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    if bytes[start] != b'{' {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

/// The error of an envelope with a code other than 1000: [`Error::InsufficientCredits`] for a
/// `1006` (with the credits left), [`Error::PermissionDenied`] for a `1009`, else [`Error::Api`]
/// (with its `Retry-After`).
fn refused(status: u16, h: Head, hints: Hints) -> Error {
    match Code::from_u32(h.code) {
        Code::QuotaExceeded => Error::InsufficientCredits { status, msg: h.msg, remaining: hints.credits_remaining },
        Code::PermissionDenied => Error::PermissionDenied { status, msg: h.msg },
        code => Error::Api { code, status, msg: h.msg, retry_after: hints.retry_after },
    }
}

/// The error of an answer with `status` >= 400.
pub(crate) fn error_of(status: u16, bytes: &[u8], hints: Hints) -> Error {
    match head(bytes) {
        Some(h) if h.code != 1000 => refused(status, h, hints),
        _ => {
            let end = bytes.len().min(ERROR_BODY_BYTES);
            Error::Status { status, body: String::from_utf8_lossy(&bytes[..end]).into_owned() }
        }
    }
}

/// The refusal an answer below 400 carries in its envelope, if any (keygate's `always-200` mode
/// answers a rate-limited getToken 200 / `1005` with a `Retry-After`).
fn refusal(status: u16, bytes: &[u8], hints: Hints) -> Option<Error> {
    head(bytes).filter(|h| h.code != 1000).map(|h| refused(status, h, hints))
}

/// The whole body as `T`.
pub(crate) fn decode<T: DeserializeOwned>(status: u16, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Decode { status, reason: e.to_string() })
}

/// A success envelope: its `data` and its `next` cursor.
#[derive(Deserialize)]
pub(crate) struct Envelope<T> {
    data: Option<T>,
    #[serde(default)]
    next: Option<String>,
}

/// The envelope's `data` as `T`, and `next`.
pub(crate) fn decode_data<T: DeserializeOwned>(status: u16, bytes: &[u8]) -> Result<(T, Option<String>)> {
    let env: Envelope<T> = decode(status, bytes)?;
    match env.data {
        Some(data) => Ok((data, env.next)),
        None => Err(Error::Decode { status, reason: "the envelope has no data".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_judged_by_envelope_and_status() {
        let e = error_of(403, br#"{"code":1200,"msg":"The account has been banned"}"#, Hints::default());
        assert!(
            matches!(e, Error::Api { code: Code::Banned, status: 403, ref msg, retry_after: None } if msg.contains("banned"))
        );
        let e = error_of(502, b"<html>bad gateway</html>", Hints::default());
        assert!(matches!(e, Error::Status { status: 502, ref body } if body.contains("bad gateway")));
        let e = error_of(500, &[b'x'; 5000], Hints::default());
        assert!(matches!(e, Error::Status { ref body, .. } if body.len() == ERROR_BODY_BYTES));
        // A JSON error body that is not an envelope.
        assert!(matches!(error_of(404, br#"{"error":"nope"}"#, Hints::default()), Error::Status { status: 404, .. }));
        // A rate limit's refusal keeps its Retry-After, and is not retried.
        let wait = Hints { retry_after: Some(Duration::from_secs(19)), credits_remaining: None };
        let e = error_of(429, br#"{"code":1005,"msg":"Operation too frequent"}"#, wait);
        assert_eq!((e.code(), e.status(), e.retry_after()), (Some(Code::TooFrequent), Some(429), wait.retry_after));
        assert!(!e.is_retryable(true) && !e.is_retryable(false));
        // Even when a proxy made the 429 a 5xx (nginx's auth_request does).
        let e = error_of(500, br#"{"code":1005,"msg":"Operation too frequent"}"#, wait);
        assert!(!e.is_retryable(true));
        // A non-envelope 429 (an upstream's own) is not retried either.
        assert!(!error_of(429, b"slow down", wait).is_retryable(true));

        // Below 400, only an envelope with another code than 1000 is a refusal.
        assert!(refusal(200, br#"{"code":1000,"msg":"OK","data":{}}"#, Hints::default()).is_none());
        assert!(refusal(200, br#"[1,2,3]"#, Hints::default()).is_none());
        assert!(refusal(200, b"plain text", Hints::default()).is_none());
        assert!(refusal(200, br#"{"code":"1101"}"#, Hints::default()).is_none(), "a string code is not the protocol's");
        let e = refusal(200, br#" {"code":1101,"msg":"Invalid authorization"}"#, Hints::default()).unwrap();
        assert_eq!((e.code(), e.status()), (Some(Code::InvalidAuth), Some(200)));
        // always-200: getToken answers a rate limit 200 / 1005, with Retry-After.
        let e = refusal(200, br#"{"code":1005,"msg":"Operation too frequent"}"#, wait).unwrap();
        assert_eq!((e.code(), e.status(), e.retry_after()), (Some(Code::TooFrequent), Some(200), wait.retry_after));
        assert!(!e.is_retryable(true));

        // A refusal for credits: its own variant, with what is left, never retried.
        let left = Hints { retry_after: None, credits_remaining: Some(2) };
        let body = br#"{"code":1006,"msg":"Insufficient quota balance: the request costs 5 and 2 credits are left"}"#;
        for status in [402, 500] {
            let e = error_of(status, body, left);
            assert!(
                matches!(e, Error::InsufficientCredits { status: s, ref msg, remaining: Some(2) } if s == status && msg.contains("costs 5")),
                "{e:?}"
            );
            assert_eq!((e.code(), e.credits_remaining()), (Some(Code::QuotaExceeded), Some(2)));
            assert!(!e.is_retryable(true) && !e.is_retryable(false), "HTTP {status}");
        }
        let e = refusal(200, br#"{"code":1006,"msg":"Insufficient quota balance"}"#, Hints::default()).unwrap();
        assert!(matches!(e, Error::InsufficientCredits { status: 200, remaining: None, .. }), "{e:?}");
        // A 402 that is not the envelope stays a status.
        assert!(matches!(error_of(402, b"pay up", left), Error::Status { status: 402, .. }));

        // A refusal for permissions: its own variant, never retried (nginx's auth_request makes
        // a 403 a 403, a proxy may make it anything).
        let body = br#"{"code":1009,"msg":"Permission denied: requires videos.create"}"#;
        for status in [403, 500] {
            let e = error_of(status, body, Hints::default());
            assert!(
                matches!(e, Error::PermissionDenied { status: s, ref msg } if s == status && msg.contains("videos.create")),
                "{e:?}"
            );
            assert_eq!(e.code(), Some(Code::PermissionDenied));
            assert!(!e.is_retryable(true) && !e.is_retryable(false), "HTTP {status}");
        }
        let e = refusal(200, br#"{"code":1009,"msg":"Permission denied"}"#, Hints::default()).unwrap();
        assert!(matches!(e, Error::PermissionDenied { status: 200, .. }), "{e:?}");
    }

    #[test]
    fn urls_join_under_the_base() {
        let o = ClientOptions::default();
        for base in ["http://127.0.0.1:8080", "http://127.0.0.1:8080/"] {
            let t = Transport::new(base, &o).unwrap();
            assert_eq!(t.url("/auth/verify").unwrap().as_str(), "http://127.0.0.1:8080/auth/verify");
            assert_eq!(t.url("auth/verify").unwrap().as_str(), "http://127.0.0.1:8080/auth/verify");
        }
        let t = Transport::new("https://api.example.com/keygate/", &o).unwrap();
        assert_eq!(
            t.url("/admin/v1/accounts?limit=2").unwrap().as_str(),
            "https://api.example.com/keygate/admin/v1/accounts?limit=2"
        );
        for bad in ["", "127.0.0.1:8080", "ftp://x", "http://x/?a=b", "http://x/#f", "mailto:a@b"] {
            assert!(matches!(Transport::new(bad, &o), Err(Error::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn credits_left_are_read_from_their_header() {
        let mut h = HeaderMap::new();
        assert_eq!(Hints::of(&h), Hints::default());
        h.insert(CREDITS_REMAINING, HeaderValue::from_static("41"));
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(Hints::of(&h), Hints { retry_after: Some(Duration::from_secs(3)), credits_remaining: Some(41) });
        h.insert(CREDITS_REMAINING, HeaderValue::from_static("lots"));
        assert_eq!(Hints::of(&h).credits_remaining, None);
    }

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(retry_after(Some(&HeaderValue::from_static("1"))), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(Some(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"))), None);
        assert_eq!(retry_after(None), None);
    }
}

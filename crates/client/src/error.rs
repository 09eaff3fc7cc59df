//! [`Error`] and the protocol's business codes, [`Code`].

use std::fmt;
use std::time::Duration;

/// A business code of the protocol: the `code` of every answer's envelope
/// `{"code", "msg", "data"?}`. 1000 is success; anything else is a refusal or a failure.
///
/// ```
/// use keygate_client::Code;
///
/// assert_eq!(Code::from_u32(1200), Code::Banned);
/// assert_eq!(Code::Banned.as_u32(), 1200);
/// assert_eq!(Code::from_u32(4242), Code::Other(4242));
/// assert_eq!(Code::InvalidAuth.to_string(), "1101");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// 1000: success.
    Success,
    /// 1003: parameter error (bad body, bad id, a value out of range, a conflict).
    ParamError,
    /// 1005: operation too frequent (rate limited; HTTP 429).
    TooFrequent,
    /// 1006: insufficient quota balance (HTTP 402): the credits left do not cover the request's
    /// cost. Such an answer is an [`Error::InsufficientCredits`], never an [`Error::Api`].
    QuotaExceeded,
    /// 1009: permission denied (HTTP 403): the credential does not hold the permissions the
    /// request requires, or may not be used from the client's address. Such an answer is an
    /// [`Error::PermissionDenied`], never an [`Error::Api`].
    PermissionDenied,
    /// 1101: invalid authorization, or the token has expired (HTTP 401).
    InvalidAuth,
    /// 1102: authorization cannot be empty (HTTP 401).
    EmptyAuth,
    /// 1109: the account does not exist (HTTP 404).
    AccountNotFound,
    /// 1200: the account has been banned (HTTP 403).
    Banned,
    /// 1408: the request body was not sent in time (HTTP 408).
    RequestTimeout,
    /// 1499: the client closed the request.
    ClientClosed,
    /// 1500: internal error (HTTP 500).
    Internal,
    /// 1502: the gateway's upstream refused or broke the connection (HTTP 502).
    UpstreamUnavailable,
    /// 1503: keygate's store cannot be reached, or keygate is at its connection limit (HTTP 503).
    /// keygate did nothing with the request, so it is always safe to retry.
    Unavailable,
    /// 1504: the gateway's upstream did not answer in time (HTTP 504).
    UpstreamTimeout,
    /// A code this version of the SDK does not know.
    Other(u32),
}

impl Code {
    /// The code for a number.
    ///
    /// ```
    /// assert_eq!(keygate_client::Code::from_u32(1503), keygate_client::Code::Unavailable);
    /// ```
    pub fn from_u32(n: u32) -> Self {
        match n {
            1000 => Self::Success,
            1003 => Self::ParamError,
            1005 => Self::TooFrequent,
            1006 => Self::QuotaExceeded,
            1009 => Self::PermissionDenied,
            1101 => Self::InvalidAuth,
            1102 => Self::EmptyAuth,
            1109 => Self::AccountNotFound,
            1200 => Self::Banned,
            1408 => Self::RequestTimeout,
            1499 => Self::ClientClosed,
            1500 => Self::Internal,
            1502 => Self::UpstreamUnavailable,
            1503 => Self::Unavailable,
            1504 => Self::UpstreamTimeout,
            n => Self::Other(n),
        }
    }

    /// The code's number.
    ///
    /// ```
    /// assert_eq!(keygate_client::Code::ParamError.as_u32(), 1003);
    /// ```
    pub fn as_u32(self) -> u32 {
        match self {
            Self::Success => 1000,
            Self::ParamError => 1003,
            Self::TooFrequent => 1005,
            Self::QuotaExceeded => 1006,
            Self::PermissionDenied => 1009,
            Self::InvalidAuth => 1101,
            Self::EmptyAuth => 1102,
            Self::AccountNotFound => 1109,
            Self::Banned => 1200,
            Self::RequestTimeout => 1408,
            Self::ClientClosed => 1499,
            Self::Internal => 1500,
            Self::UpstreamUnavailable => 1502,
            Self::Unavailable => 1503,
            Self::UpstreamTimeout => 1504,
            Self::Other(n) => n,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u32())
    }
}

/// Everything that can go wrong talking to keygate (or to the API behind it).
///
/// A refusal by keygate is [`Error::Api`], with its business [`Code`], the HTTP status, the
/// server's message and its `Retry-After`, but for a refusal for credits (`1006`), which is
/// [`Error::InsufficientCredits`] with what is left, and a refusal for permissions (`1009`),
/// which is [`Error::PermissionDenied`]; match on the code:
///
/// ```
/// use std::time::Duration;
/// use keygate_client::{Code, Error};
///
/// fn explain(e: &Error) -> String {
///     match e {
///         Error::Api { code: Code::Banned, .. } => "the account is banned".into(),
///         Error::Api { code: Code::InvalidAuth, .. } => "the key was revoked or rotated out".into(),
///         Error::Api { code: Code::TooFrequent, retry_after: Some(d), .. } => format!("rate limited for {d:?}"),
///         Error::Api { code: Code::TooFrequent, retry_after: None, .. } => "a limit of 0 blocks it".into(),
///         Error::InsufficientCredits { remaining, .. } => format!("top up: {remaining:?} credits left"),
///         Error::PermissionDenied { msg, .. } => format!("not allowed: {msg}"),
///         Error::Api { status, .. } if *status >= 500 => "keygate is in trouble".into(),
///         Error::Transport(_) => "keygate cannot be reached".into(),
///         _ => "something else".into(),
///     }
/// }
/// let e = Error::Api { code: Code::Banned, status: 403, msg: "The account has been banned".into(), retry_after: None };
/// assert_eq!(explain(&e), "the account is banned");
/// assert_eq!(e.code(), Some(Code::Banned));
/// assert_eq!(e.status(), Some(403));
/// let e = Error::Api {
///     code: Code::TooFrequent,
///     status: 429,
///     msg: "Operation too frequent".into(),
///     retry_after: Some(Duration::from_secs(20)),
/// };
/// assert_eq!(explain(&e), "rate limited for 20s");
/// assert_eq!(e.retry_after(), Some(Duration::from_secs(20)));
/// let e = Error::InsufficientCredits { status: 402, msg: "Insufficient quota balance".into(), remaining: Some(3) };
/// assert_eq!(explain(&e), "top up: Some(3) credits left");
/// assert_eq!((e.code(), e.status(), e.credits_remaining()), (Some(Code::QuotaExceeded), Some(402), Some(3)));
/// let e = Error::PermissionDenied { status: 403, msg: "Permission denied: requires videos.create".into() };
/// assert_eq!(explain(&e), "not allowed: Permission denied: requires videos.create");
/// assert_eq!((e.code(), e.status()), (Some(Code::PermissionDenied), Some(403)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An answer with the envelope `{"code", "msg"}` and a code other than 1000 (and 1006, an
    /// [`Error::InsufficientCredits`]).
    #[error("code {code} (HTTP {status}): {msg}")]
    Api {
        /// The business code.
        code: Code,
        /// The HTTP status (200 when the server answers refusals with `always-200`).
        status: u16,
        /// The server's message (never a secret).
        msg: String,
        /// The answer's `Retry-After` (in seconds; an HTTP date is not read): how long until the
        /// request would pass. keygate sends it with `1005` (HTTP 429, absent when a limit of 0
        /// blocks every request) and with its connection-limit `1503`.
        retry_after: Option<Duration>,
    },
    /// The credits left do not cover the request's cost: an answer with code `1006`
    /// ([`Code::QuotaExceeded`], HTTP 402), from `/auth/verify` or from the gateway (or the API
    /// behind it, which may use the code too). keygate charged nothing for the request.
    ///
    /// Retrying does not help until the balance is topped up or refilled, so the SDK never
    /// retries it, whatever the status a proxy in between gave it ([`Error::is_retryable`] is
    /// `false`). [`code`](Error::code) is [`Code::QuotaExceeded`].
    #[error("insufficient credits (code 1006, HTTP {status}): {msg}")]
    InsufficientCredits {
        /// The HTTP status (402; 200 when the server answers refusals with `always-200`; what a
        /// proxy in between made of it).
        status: u16,
        /// The server's message (keygate's says what the request costs and what is left).
        msg: String,
        /// The credits left, from the answer's `x-keygate-credits-remaining` header (keygate
        /// sends it with every `1006`; `None` when the answer had none, e.g. from the API behind
        /// the gateway, or through a proxy that dropped it). 0 or more.
        remaining: Option<i64>,
    },
    /// The credential may not do this: an answer with code `1009` ([`Code::PermissionDenied`],
    /// HTTP 403), from `/auth/verify` (a requirement it does not meet, see
    /// [`ApiKeyClient::verify_requiring`](crate::ApiKeyClient::verify_requiring)), from the
    /// gateway (a route's `permissions`), or from getToken and any of them when the credential or
    /// its account has an IP allowlist the client's address is not on. keygate's message names
    /// what was required, never what the credential holds.
    ///
    /// Retrying does not help until the credential's permissions, roles or allowlist change, so
    /// the SDK never retries it, whatever the status a proxy in between gave it
    /// ([`Error::is_retryable`] is `false`). [`code`](Error::code) is [`Code::PermissionDenied`].
    #[error("permission denied (code 1009, HTTP {status}): {msg}")]
    PermissionDenied {
        /// The HTTP status (403; 200 when the server answers refusals with `always-200`; what a
        /// proxy in between made of it).
        status: u16,
        /// The server's message.
        msg: String,
    },
    /// An HTTP error status whose body is not the envelope (the API behind the gateway, or a
    /// proxy in between, answered by itself). `body` is its first kilobyte.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the body, lossily decoded as UTF-8.
        body: String,
    },
    /// The request could not be sent or its answer not received (connection refused or reset,
    /// DNS, TLS, timeout).
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// A success answer that does not have the expected shape.
    #[error("unexpected answer (HTTP {status}): {reason}")]
    Decode {
        /// The HTTP status.
        status: u16,
        /// What was wrong with it.
        reason: String,
    },
    /// The client was configured or used wrongly (a base URL that is not one, a bad header).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A webhook callback could not be verified or decrypted.
    #[error(transparent)]
    Webhook(#[from] crate::webhook::WebhookError),
}

impl Error {
    /// The business code, for [`Error::Api`].
    ///
    /// ```
    /// let e = keygate_client::Error::Invalid("no".into());
    /// assert_eq!(e.code(), None);
    /// ```
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Api { code, .. } => Some(*code),
            Self::InsufficientCredits { .. } => Some(Code::QuotaExceeded),
            Self::PermissionDenied { .. } => Some(Code::PermissionDenied),
            _ => None,
        }
    }

    /// The credits left, for an [`Error::InsufficientCredits`] whose answer said.
    ///
    /// ```
    /// use keygate_client::Error;
    /// let e = Error::InsufficientCredits { status: 402, msg: String::new(), remaining: Some(0) };
    /// assert_eq!(e.credits_remaining(), Some(0));
    /// assert!(!e.is_retryable(true), "retrying does not help");
    /// assert_eq!(Error::Invalid("no".into()).credits_remaining(), None);
    /// ```
    pub fn credits_remaining(&self) -> Option<i64> {
        match self {
            Self::InsufficientCredits { remaining, .. } => *remaining,
            _ => None,
        }
    }

    /// The server's `Retry-After`, for an [`Error::Api`] whose answer had one: with
    /// [`Code::TooFrequent`] (`1005`, a rate limit), the time until the request would pass.
    /// The SDK never retries a `1005` by itself; waiting is the caller's call.
    ///
    /// ```
    /// use std::time::Duration;
    /// use keygate_client::{Code, Error};
    /// let limited = Error::Api {
    ///     code: Code::TooFrequent,
    ///     status: 429,
    ///     msg: String::new(),
    ///     retry_after: Some(Duration::from_secs(3)),
    /// };
    /// assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
    /// assert!(!limited.is_retryable(true));
    /// assert_eq!(Error::Invalid("no".into()).retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status of the answer, when there was one.
    ///
    /// ```
    /// let e = keygate_client::Error::Status { status: 404, body: "not here".into() };
    /// assert_eq!(e.status(), Some(404));
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. }
            | Self::InsufficientCredits { status, .. }
            | Self::PermissionDenied { status, .. }
            | Self::Status { status, .. }
            | Self::Decode { status, .. } => Some(*status),
            Self::Transport(e) => e.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// Whether a retry may succeed, for a request that is `idempotent` (safe to send twice).
    ///
    /// - a connection that could not be opened (nothing was sent), and `1503` (keygate refused
    ///   before doing anything): always;
    /// - other 5xx answers and transport failures after the request went out: only when
    ///   `idempotent`, since the server may have acted on it;
    /// - a rate limit's `1005`: never, whatever the status a proxy in between gave it (the wait
    ///   it asks for, [`retry_after`](Self::retry_after), is often longer than a retry's delay,
    ///   and whether to wait is the caller's decision);
    /// - a refusal for credits, [`Error::InsufficientCredits`] (`1006`): never, whatever its
    ///   status (only a top-up or a refill helps);
    /// - a refusal for permissions, [`Error::PermissionDenied`] (`1009`): never, whatever its
    ///   status (only a change of the credential's permissions, roles or allowlist helps);
    /// - anything else (every 4xx, 429 included): never.
    ///
    /// ```
    /// use keygate_client::{Code, Error};
    /// let busy = Error::Api { code: Code::Unavailable, status: 503, msg: String::new(), retry_after: None };
    /// assert!(busy.is_retryable(false));
    /// let bad_gateway = Error::Status { status: 502, body: String::new() };
    /// assert!(bad_gateway.is_retryable(true) && !bad_gateway.is_retryable(false));
    /// let banned = Error::Api { code: Code::Banned, status: 403, msg: String::new(), retry_after: None };
    /// assert!(!banned.is_retryable(true));
    /// // A 429 that a proxy turned into a 500 is still a rate limit.
    /// let limited = Error::Api { code: Code::TooFrequent, status: 500, msg: String::new(), retry_after: None };
    /// assert!(!limited.is_retryable(true));
    /// let broke = Error::InsufficientCredits { status: 500, msg: String::new(), remaining: Some(0) };
    /// assert!(!broke.is_retryable(true));
    /// let denied = Error::PermissionDenied { status: 500, msg: String::new() };
    /// assert!(!denied.is_retryable(true));
    /// ```
    pub fn is_retryable(&self, idempotent: bool) -> bool {
        match self {
            Self::Api { code: Code::Unavailable, .. } => true,
            Self::Api { code: Code::TooFrequent, .. }
            | Self::InsufficientCredits { .. }
            | Self::PermissionDenied { .. } => false,
            Self::Api { status, .. } | Self::Status { status, .. } => *status >= 500 && idempotent,
            Self::Transport(e) => e.is_connect() || (idempotent && !e.is_builder() && !e.is_decode()),
            _ => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

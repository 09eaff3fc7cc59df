//! Server configuration: one [`Config`] struct, where each setting is defined once: its TOML key
//! (the field's name), its type and default ([`Config::default`]), its environment variable and
//! its flag (the `#[arg]` attribute), and its help (the doc comment, which is also `--help`).
//!
//! Precedence: flags over `KEYGATE_*` environment variables over the TOML file over defaults.
//! The file is read first ([`Config::load`]); clap then overwrites exactly the settings given as a
//! flag or in the environment ([`clap::FromArgMatches::update_from_arg_matches`]); finally
//! [`Config::validate`] checks ranges. The database settings are shared with every CLI command
//! and come from the CLI's global flags ([`DatabaseArgs`]).
//!
//! Secrets (`admin_token`, `master_key`) are [`Secret`]s: `Debug` prints `***`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ArgAction;
use keygate_auth::ratelimit::FailMode;
use keygate_auth::{AuthSettings, MasterKeySource, StatusMode};
use keygate_console::{ConsoleSettings, MailSettings, SecureCookies};
use keygate_core::Secret;
use keygate_core::net::{Cidr, TrustedProxies};
use keygate_gateway::{GatewayConfig, Route, Upstream};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        keygate_core::from_name(s).map_err(|e| format!("log format: {e}"))
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://keygate.db";

/// Every setting of `keygate serve`.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "KEYGATE_LISTEN", value_name = "HOST:PORT", required = false, value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB [default: sqlite://keygate.db].
    /// A global flag of every command (see the CLI's `--database-url`).
    #[arg(skip = DEFAULT_DATABASE_URL.to_owned())]
    pub database_url: String,
    /// File holding the master key [default: beside the SQLite file, e.g. keygate.key].
    #[arg(skip)]
    pub master_key_file: Option<PathBuf>,
    /// The master key itself, 64 hex characters; prefer the environment or a file.
    #[arg(skip)]
    pub master_key: Option<Secret>,
    /// Admin API token (at least 24 characters); else one is generated at first start.
    /// Prefer KEYGATE_ADMIN_TOKEN or the config file: flags are visible in the process list.
    #[arg(long, env = "KEYGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// Lifetime of tokens from getToken, e.g. 366d, 12h [default: 366d].
    #[arg(long, env = "KEYGATE_TOKEN_TTL", required = false, value_parser = duration("token_ttl"))]
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// The `from` claim of issued tokens [default: keygate].
    #[arg(long, env = "KEYGATE_TOKEN_FROM", required = false)]
    pub token_from: String,
    /// "standard" (401/403/400) or "always-200" (the vendor's behaviour) for protocol answers
    /// [default: standard].
    #[arg(long, env = "KEYGATE_HTTP_STATUS", required = false)]
    pub http_status: StatusMode,
    /// Largest accepted request body in bytes [default: 65536].
    #[arg(long, env = "KEYGATE_MAX_BODY_BYTES", required = false)]
    pub max_body_bytes: usize,
    /// Entries per authentication cache [default: 1000000].
    #[arg(long, env = "KEYGATE_CACHE_CAPACITY", required = false)]
    pub cache_capacity: u64,
    /// How often the change feed is polled, e.g. 250ms: the bound on how long a change made
    /// elsewhere takes to apply here [default: 250ms].
    #[arg(long, env = "KEYGATE_FEED_INTERVAL", required = false, value_parser = duration("feed_interval"))]
    #[serde(with = "humantime_serde")]
    pub feed_interval: Duration,
    /// How long cached credentials keep being honoured while the change feed cannot be followed
    /// (database unreachable) [default: 5m].
    #[arg(long, env = "KEYGATE_FAIL_STATIC", required = false, value_parser = duration("fail_static"))]
    #[serde(with = "humantime_serde")]
    pub fail_static: Duration,
    /// How long a request waits for the database on a cache miss before failing with 1503
    /// [default: 2s].
    #[arg(long, env = "KEYGATE_STORE_TIMEOUT", required = false, value_parser = duration("store_timeout"))]
    #[serde(with = "humantime_serde")]
    pub store_timeout: Duration,
    /// How often usage counters (last used, requests per hour and day by outcome) are written [default: 10s].
    #[arg(long, env = "KEYGATE_USAGE_FLUSH", required = false, value_parser = duration("usage_flush"))]
    #[serde(with = "humantime_serde")]
    pub usage_flush: Duration,
    /// "text" or "json" [default: text]; the level comes from RUST_LOG.
    #[arg(long, env = "KEYGATE_LOG_FORMAT", required = false)]
    pub log_format: LogFormat,
    /// One access-log line per request, target `keygate::access` [default: true].
    #[arg(long, env = "KEYGATE_ACCESS_LOG", required = false, action = ArgAction::Set)]
    pub access_log: bool,
    /// Proxy every other path to this upstream (http://HOST:PORT[/BASE]) after authentication: a
    /// gateway route `/`. Several routes: [[gateway.routes]] in the config file.
    #[arg(long, env = "KEYGATE_UPSTREAM", value_name = "URL")]
    pub upstream: Option<Upstream>,
    /// The reverse-proxy gateway (`[gateway]` and `[[gateway.routes]]` in TOML).
    #[command(flatten)]
    pub gateway: GatewaySettings,
    /// Rate limits across nodes (`[limits]` in TOML).
    #[command(flatten)]
    pub limits: LimitSettings,
    /// How credits balances are leased and reported (`[credits]` in TOML).
    #[command(flatten)]
    pub credits: CreditSettings,
    /// The audit log (`[audit]` in TOML).
    #[command(flatten)]
    pub audit: AuditSettings,
    /// Email the console sends (`[email]` in TOML): with it, sign-up is confirmed by a link.
    #[command(flatten)]
    pub email: EmailSettings,
    /// Whether visitors may create accounts in the web console (/console) [default: true].
    #[arg(long, env = "KEYGATE_CONSOLE_SIGNUP", required = false, action = ArgAction::Set)]
    pub console_signup: bool,
    /// Absolute lifetime of a console login session [default: 12h].
    #[arg(long, env = "KEYGATE_CONSOLE_SESSION_TTL", required = false, value_parser = duration("console_session_ttl"))]
    #[serde(with = "humantime_serde")]
    pub console_session_ttl: Duration,
    /// `Secure` console cookies: auto (behind a proxy sending X-Forwarded-Proto: https), true,
    /// false [default: auto].
    #[arg(long, env = "KEYGATE_CONSOLE_SECURE_COOKIES", required = false)]
    pub console_secure_cookies: SecureCookies,
    /// Worker threads serving HTTP, each a single-threaded event loop [default: one per core].
    #[arg(long, env = "KEYGATE_WORKERS", required = false)]
    pub workers: usize,
    /// How long a client may take to send a request's headers, and how long a kept-alive
    /// connection may stay idle; stops slow-header attacks [default: 30s].
    #[arg(long, env = "KEYGATE_HEADER_READ_TIMEOUT", required = false, value_parser = duration("header_read_timeout"))]
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight (HTTP/1 or HTTP/2) is closed after this long
    /// [default: 60s].
    #[arg(long, env = "KEYGATE_IDLE_TIMEOUT", required = false, value_parser = duration("idle_timeout"))]
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The longest wait for the next part of a request body; a stalled upload answers 408
    /// [default: 30s].
    #[arg(long, env = "KEYGATE_BODY_READ_TIMEOUT", required = false, value_parser = duration("body_read_timeout"))]
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Connections open at most; past it a new connection gets a 503 and is closed [default:
    /// from the open-file limit, raised to its maximum at start: (limit - 64) / 2].
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Proxies in front of keygate whose X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and
    /// X-Request-Id are believed: addresses or networks, e.g. 127.0.0.1,10.0.0.0/8 [default: none:
    /// every client is its TCP peer].
    #[arg(long, env = "KEYGATE_TRUSTED_PROXIES", value_name = "CIDR,...", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,
}

/// `[credits]`: how a node spends credits balances. A node leases a slice of a balance from the
/// database and reports what it spent every `flush`; no node ever spends credits it was not
/// handed, and a node killed with `kill -9` gives back, once its leases expire, all but what it
/// spent since its last report.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct CreditSettings {
    /// How often spent credits are reported: the most a node killed with `kill -9` can have spent
    /// unreported (which comes back to the balance) [default: 1s].
    #[arg(long = "credits-flush", env = "KEYGATE_CREDITS_FLUSH", required = false, value_parser = duration("credits flush"))]
    #[serde(with = "humantime_serde")]
    pub flush: Duration,
    /// How long a node's lease lives without a report before the database takes it back (and a
    /// node that cannot report stops using it after two thirds of it) [default: 30s].
    #[arg(long = "credits-lease-ttl", env = "KEYGATE_CREDITS_LEASE_TTL", required = false, value_parser = duration("credits lease_ttl"))]
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// A lease unused this long is given back to the balance, for the other nodes [default: 5s].
    #[arg(long = "credits-idle-return", env = "KEYGATE_CREDITS_IDLE_RETURN", required = false, value_parser = duration("credits idle_return"))]
    #[serde(with = "humantime_serde")]
    pub idle_return: Duration,
    /// The most credits a lease takes ahead of the request that needs it (it takes about two
    /// seconds of the key's spend, at least 256, at most half of what is left) [default: 10000].
    #[arg(long = "credits-max-prefetch", env = "KEYGATE_CREDITS_MAX_PREFETCH", required = false)]
    pub max_prefetch: i64,
}

impl Default for CreditSettings {
    fn default() -> Self {
        let d = keygate_auth::credits::CreditSettings::default();
        Self { flush: d.flush, lease_ttl: d.lease_ttl, idle_return: d.idle_return, max_prefetch: d.max_prefetch }
    }
}

/// `[audit]`: how long the audit log keeps its entries.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Entries older than this are deleted (checked at start and every hour); 0s keeps them all
    /// [default: 400d].
    #[arg(long = "audit-retention", env = "KEYGATE_AUDIT_RETENTION", required = false, value_parser = duration("audit retention"))]
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { retention: Duration::from_secs(400 * 86_400) }
    }
}

/// `[email]`: the SMTP relay the console sends its mails through. With `smtp_url` set, a sign-up
/// makes its account only when its owner opens the link mailed to them, and the sign-up page
/// answers the same whether or not an email is registered.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct EmailSettings {
    /// The relay: smtps://[USER:PASS@]HOST[:465] (TLS), smtp://[USER:PASS@]HOST:587?tls=required
    /// (STARTTLS), smtp://HOST:PORT (plain: a relay on this host) [default: none: sign-up makes
    /// accounts at once].
    #[arg(long = "smtp-url", value_name = "URL", env = "KEYGATE_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<Secret>,
    /// The sender of the console's mails, `Name <address>` (needed with smtp_url).
    #[arg(long = "email-from", value_name = "MAILBOX", env = "KEYGATE_EMAIL_FROM")]
    pub from: Option<String>,
    /// The console's public address, which mailed links point to, e.g.
    /// https://api.example.com/console (needed with smtp_url; never taken from a request).
    #[arg(long = "console-url", value_name = "URL", env = "KEYGATE_CONSOLE_URL")]
    pub console_url: Option<String>,
    /// How long a sign-up link stays valid [default: 24h].
    #[arg(long = "signup-link-ttl", env = "KEYGATE_SIGNUP_LINK_TTL", required = false, value_parser = duration("signup_link_ttl"))]
    #[serde(with = "humantime_serde")]
    pub signup_link_ttl: Duration,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self { smtp_url: None, from: None, console_url: None, signup_link_ttl: Duration::from_secs(86_400) }
    }
}

impl EmailSettings {
    /// The console's mail settings, `None` without `smtp_url`.
    pub fn mail(&self) -> anyhow::Result<Option<MailSettings>> {
        let Some(smtp_url) = &self.smtp_url else {
            if self.from.is_some() || self.console_url.is_some() {
                bail!("email from and console_url are used only with email smtp_url (KEYGATE_SMTP_URL)");
            }
            return Ok(None);
        };
        let (Some(from), Some(console_url)) = (&self.from, &self.console_url) else {
            bail!("email smtp_url needs email from and console_url too (KEYGATE_EMAIL_FROM, KEYGATE_CONSOLE_URL)");
        };
        let mail = MailSettings {
            smtp_url: smtp_url.clone(),
            from: from.clone(),
            console_url: console_url.clone(),
            signup_link_ttl: self.signup_link_ttl,
        };
        mail.check().map_err(anyhow::Error::msg)?;
        Ok(Some(mail))
    }
}

/// `[limits]`: how rate limits are counted when several nodes serve the same credentials.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Share rate-limit counters between nodes through this Redis
    /// (`redis://[:PASSWORD@]HOST:PORT[/DB]`, `rediss://` for TLS) [default: none: each node
    /// counts on its own].
    #[arg(long = "redis-url", value_name = "URL", env = "KEYGATE_REDIS_URL")]
    pub redis_url: Option<Secret>,
    /// While Redis cannot be reached: `open` (each node counts on its own) or `closed` (requests
    /// of limited credentials answer 1503) [default: open].
    #[arg(long = "redis-failure", value_name = "MODE", env = "KEYGATE_REDIS_FAILURE", required = false)]
    pub redis_failure: FailMode,
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Remove `x-api-key`, `Authorization`, `x-client-id`, `x-client-secret` before forwarding
    /// [default: true].
    #[arg(
        long = "gateway-strip-credentials",
        value_name = "BOOL",
        env = "KEYGATE_GATEWAY_STRIP_CREDENTIALS",
        required = false,
        action = ArgAction::Set
    )]
    pub strip_credentials: bool,
    /// Forward the client's `Host` instead of the upstream's [default: false].
    #[arg(
        long = "gateway-preserve-host",
        value_name = "BOOL",
        env = "KEYGATE_GATEWAY_PRESERVE_HOST",
        required = false,
        action = ArgAction::Set
    )]
    pub preserve_host: bool,
    /// Time allowed to connect to an upstream [default: 5s].
    #[arg(
        long = "gateway-connect-timeout",
        value_name = "DURATION",
        env = "KEYGATE_GATEWAY_CONNECT_TIMEOUT",
        required = false,
        value_parser = duration("gateway.connect_timeout")
    )]
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed until the upstream's response headers [default: 60s].
    #[arg(
        long = "gateway-response-timeout",
        value_name = "DURATION",
        env = "KEYGATE_GATEWAY_RESPONSE_TIMEOUT",
        required = false,
        value_parser = duration("gateway.response_timeout")
    )]
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// `[[gateway.routes]]` (the config file only): `prefix`, `upstream`, `public`, `strip_prefix`.
    #[arg(skip)]
    pub routes: Vec<Route>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("the default listen address parses"),
            database_url: DEFAULT_DATABASE_URL.into(),
            master_key_file: None,
            master_key: None,
            admin_token: None,
            token_ttl: Duration::from_secs(366 * 86_400),
            token_from: "keygate".into(),
            http_status: StatusMode::Standard,
            max_body_bytes: 64 * 1024,
            cache_capacity: 1_000_000,
            feed_interval: Duration::from_millis(250),
            fail_static: Duration::from_secs(300),
            store_timeout: Duration::from_secs(2),
            usage_flush: Duration::from_secs(10),
            log_format: LogFormat::Text,
            access_log: true,
            upstream: None,
            gateway: GatewaySettings::default(),
            limits: LimitSettings::default(),
            credits: CreditSettings::default(),
            audit: AuditSettings::default(),
            email: EmailSettings::default(),
            console_signup: true,
            console_session_ttl: Duration::from_secs(12 * 3600),
            console_secure_cookies: SecureCookies::Auto,
            workers: crate::serve::default_workers(),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_connections: None,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            strip_credentials: true,
            preserve_host: false,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            routes: Vec::new(),
        }
    }
}

/// The database settings every command shares, as global flags (and their environment
/// variables) of the CLI; they override the file's.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DatabaseArgs {
    /// Database URL [default: sqlite://keygate.db].
    #[arg(long, global = true, env = "KEYGATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// File holding the master key [default: beside the SQLite file, e.g. keygate.key].
    #[arg(long, global = true, env = "KEYGATE_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The master key itself, as 64 hex characters (prefer the file).
    #[arg(long, global = true, env = "KEYGATE_MASTER_KEY", hide_env_values = true, hide = true)]
    pub master_key: Option<Secret>,
}

impl DatabaseArgs {
    /// Puts the settings given as flags or environment into `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(url) = &self.database_url {
            config.database_url = url.clone();
        }
        if let Some(path) = &self.master_key_file {
            config.master_key_file = Some(path.clone());
        }
        if let Some(key) = &self.master_key {
            config.master_key = Some(key.clone());
        }
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("listen address {s:?} is not HOST:PORT"))
}

/// A clap parser for a duration setting, naming the setting when the value is wrong.
fn duration(what: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s| {
        humantime::parse_duration(s)
            .map_err(|_| format!("{what} {s:?} is not a duration like \"366d\", \"1h\", \"250ms\""))
    }
}

impl Config {
    /// The settings of a TOML file (defaults for what it leaves out), or the defaults.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = file else { return Ok(Config::default()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {} is invalid", path.display()))
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.admin_token.as_ref().is_some_and(|t| t.expose().len() < 24) {
            bail!("the configured admin token is too short: use at least 24 random characters");
        }
        // Token times are whole seconds (JWT NumericDate): a shorter lifetime would expire at issue.
        if self.token_ttl < Duration::from_secs(1) {
            bail!("token_ttl must be at least 1s");
        }
        if self.feed_interval < Duration::from_millis(10) || self.feed_interval > Duration::from_secs(60) {
            bail!("feed_interval must be between 10ms and 60s");
        }
        if self.usage_flush < Duration::from_millis(10) {
            bail!("usage_flush must be at least 10ms");
        }
        let c = &self.credits;
        if c.flush < Duration::from_millis(10) || c.flush > Duration::from_secs(60) {
            bail!("credits flush must be between 10ms and 60s");
        }
        if c.lease_ttl < c.flush * 3 || c.lease_ttl > Duration::from_secs(3600) {
            bail!("credits lease_ttl must be at least 3 times flush and at most 1h");
        }
        if c.idle_return < c.flush || c.idle_return > Duration::from_secs(3600) {
            bail!("credits idle_return must be at least flush and at most 1h");
        }
        if !(0..=keygate_core::credits::MAX_CREDITS).contains(&c.max_prefetch) {
            bail!("credits max_prefetch must be between 0 and 10^15");
        }
        if self.store_timeout.is_zero() {
            bail!("store_timeout must be positive");
        }
        if self.console_session_ttl < Duration::from_secs(1)
            || self.console_session_ttl > Duration::from_secs(30 * 86_400)
        {
            bail!("console_session_ttl must be between 1s and 30d");
        }
        if !(1..=1024).contains(&self.workers) {
            bail!("workers must be between 1 and 1024");
        }
        for (name, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_read_timeout", self.body_read_timeout),
        ] {
            if value < Duration::from_millis(100) {
                bail!("{name} must be at least 100ms");
            }
        }
        if self.max_connections == Some(0) {
            bail!("max_connections must be at least 1");
        }
        self.gateway()?;
        self.master_key_source()?;
        self.email.mail()?;
        Ok(())
    }

    /// Where the master key comes from.
    pub fn master_key_source(&self) -> anyhow::Result<MasterKeySource> {
        MasterKeySource::for_database(&self.database_url, self.master_key.clone(), self.master_key_file.clone())
    }

    /// The gateway's configuration: its routes (plus `/` for `upstream`), or `None`.
    pub fn gateway(&self) -> anyhow::Result<Option<GatewayConfig>> {
        let g = &self.gateway;
        let mut routes = g.routes.clone();
        if let Some(u) = &self.upstream {
            routes.push(Route::new("/", u.clone()));
        }
        GatewayConfig {
            routes,
            strip_credentials: g.strip_credentials,
            preserve_host: g.preserve_host,
            connect_timeout: g.connect_timeout,
            response_timeout: g.response_timeout,
        }
        .validated()
    }

    /// What the authenticator needs.
    pub fn auth_settings(&self) -> AuthSettings {
        AuthSettings {
            token_ttl: self.token_ttl,
            token_from: self.token_from.clone(),
            cache_capacity: self.cache_capacity,
            fail_static: self.fail_static,
            store_timeout: self.store_timeout,
            feed_interval: self.feed_interval,
            usage_flush: self.usage_flush,
            credits: keygate_auth::credits::CreditSettings {
                flush: self.credits.flush,
                lease_ttl: self.credits.lease_ttl,
                idle_return: self.credits.idle_return,
                max_prefetch: self.credits.max_prefetch,
                store_timeout: self.store_timeout,
            },
            status_mode: self.http_status,
        }
    }

    /// What serving connections needs.
    /// (Raises the process's open-file limit to its maximum: see [`crate::serve::open_file_limit`].)
    pub fn limits(&self) -> crate::serve::Limits {
        let open_files = crate::serve::open_file_limit();
        crate::serve::Limits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            body_read_timeout: self.body_read_timeout,
            max_connections: self.max_connections.unwrap_or_else(|| crate::serve::default_max_connections(open_files)),
            refusing: crate::serve::default_refusing(open_files),
        }
    }

    /// The proxies whose forwarding headers are believed.
    pub fn trusted_proxies(&self) -> TrustedProxies {
        TrustedProxies::new(self.trusted_proxies.clone())
    }

    /// What the console needs.
    pub fn console_settings(&self) -> anyhow::Result<ConsoleSettings> {
        Ok(ConsoleSettings {
            signup: self.console_signup,
            session_ttl: self.console_session_ttl,
            secure_cookies: self.console_secure_cookies,
            limits: Default::default(),
            mail: self.email.mail()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    /// Parses `args` as `serve`'s flags over `base`.
    fn with_flags(mut base: Config, args: &[&str]) -> anyhow::Result<Config> {
        let cmd = Config::augment_args(clap::Command::new("serve"));
        let matches = cmd.try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))?;
        base.update_from_arg_matches(&matches)?;
        base.validate()?;
        Ok(base)
    }

    #[test]
    fn layering_and_defaults() {
        let file: Config = toml::from_str("listen = \"0.0.0.0:9000\"\ntoken_ttl = \"1h\"\naccess_log = false").unwrap();
        assert_eq!(file.listen.to_string(), "0.0.0.0:9000");
        let c = with_flags(file.clone(), &["--listen", "127.0.0.1:1"]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:1");
        assert_eq!(c.token_ttl, Duration::from_secs(3600), "the file's, no flag given");
        assert!(!c.access_log, "a flag not given does not reset the file's value");
        let c = with_flags(file, &["--access-log", "true", "--token-ttl", "2h"]).unwrap();
        assert!(c.access_log);
        assert_eq!(c.token_ttl, Duration::from_secs(7200));
        let d = Config::default();
        assert_eq!(d.database_url, DEFAULT_DATABASE_URL);
        assert!(
            matches!(d.master_key_source().unwrap(), MasterKeySource::File { path, .. } if path == Path::new("keygate.key"))
        );
        let err = with_flags(Config::default(), &["--token-ttl", "soon"]).unwrap_err().to_string();
        assert!(err.contains("token_ttl"), "{err}");
        let pg = Config { database_url: "postgres://u:pw@h/db".into(), ..Config::default() };
        let err = pg.validate().unwrap_err().to_string();
        assert!(err.contains("master key") && !err.contains("pw"), "{err}");
    }

    #[test]
    fn gateway_routes() {
        let toml = r#"
            upstream = "http://127.0.0.1:9000"
            [gateway]
            response_timeout = "2s"
            [[gateway.routes]]
            prefix = "/v1"
            upstream = "http://10.0.0.1:8080/base/"
            [[gateway.routes]]
            prefix = "/v1/health"
            upstream = "http://10.0.0.1:8080"
            public = true
        "#;
        let c: Config = toml::from_str(toml).unwrap();
        let g = c.gateway().unwrap().unwrap();
        let pick = |p: &str| g.routes.iter().find(|r| r.matches(p)).map(|r| r.prefix.as_str());
        assert_eq!(pick("/v1/health"), Some("/v1/health"));
        assert_eq!(pick("/v1/x"), Some("/v1"));
        assert_eq!(pick("/v1"), Some("/v1"));
        assert_eq!(pick("/v10"), Some("/"));
        assert_eq!(g.routes.iter().find(|r| r.prefix == "/v1").unwrap().upstream.base_path, "/base");
        assert_eq!(g.response_timeout, Duration::from_secs(2));
        for bad in ["https://x", "ftp://x", "http://x/?q=1", "not a url"] {
            assert!(toml::from_str::<Config>(&format!("upstream = {bad:?}")).is_err(), "{bad}");
            assert!(with_flags(Config::default(), &["--upstream", bad]).is_err(), "{bad}");
        }
        assert!(
            toml::from_str::<Config>("[[gateway.routes]]\nprefix = \"v1\"\nupstream = \"http://x:1\"")
                .unwrap()
                .validate()
                .is_err()
        );
        assert!(Config::default().gateway().unwrap().is_none());
        let c =
            with_flags(Config::default(), &["--gateway-connect-timeout", "1s", "--upstream", "http://u:1"]).unwrap();
        assert_eq!(c.gateway().unwrap().unwrap().connect_timeout, Duration::from_secs(1));
    }

    #[test]
    fn console_settings() {
        let c = Config::default();
        assert!(c.console_signup);
        assert_eq!(c.console_session_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(c.console_secure_cookies, SecureCookies::Auto);
        let toml = "console_signup = false\nconsole_session_ttl = \"1h\"\nconsole_secure_cookies = true\n";
        let c: Config = toml::from_str(toml).unwrap();
        assert!(!c.console_signup);
        assert_eq!(c.console_session_ttl, Duration::from_secs(3600));
        assert_eq!(c.console_secure_cookies, SecureCookies::Always);
        for (text, want) in
            [("auto", SecureCookies::Auto), ("false", SecureCookies::Never), ("true", SecureCookies::Always)]
        {
            let t = format!("console_secure_cookies = \"{text}\"");
            assert_eq!(toml::from_str::<Config>(&t).unwrap().console_secure_cookies, want);
        }
        assert!(toml::from_str::<Config>("console_secure_cookies = \"maybe\"").is_err());
        let c = Config { console_session_ttl: Duration::ZERO, ..Config::default() };
        assert!(c.validate().is_err());
    }

    #[test]
    fn email_settings() {
        assert!(Config::default().console_settings().unwrap().mail.is_none());
        let toml = "[email]\nsmtp_url = \"smtps://u:hunter2@mail.example.com\"\nfrom = \"Example <no-reply@example.com>\"\n\
                    console_url = \"https://api.example.com/console\"\nsignup_link_ttl = \"2h\"\n";
        let c: Config = toml::from_str(toml).unwrap();
        c.validate().unwrap();
        let mail = c.console_settings().unwrap().mail.unwrap();
        assert_eq!(mail.signup_link_ttl, Duration::from_secs(7200));
        assert!(!format!("{c:?}").contains("hunter2"), "the relay's password is never printed");
        // Flags and the environment's names.
        let c = with_flags(
            Config::default(),
            &[
                "--smtp-url",
                "smtp://127.0.0.1:2525",
                "--email-from",
                "a@example.com",
                "--console-url",
                "http://x/console",
            ],
        )
        .unwrap();
        assert_eq!(c.email.signup_link_ttl, Duration::from_secs(86_400));
        // Half-configured or wrong: refused at start, saying what is missing, never the password.
        for bad in [
            "[email]\nsmtp_url = \"smtp://u:hunter2@x\"\n",
            "[email]\nfrom = \"a@example.com\"\n",
            "[email]\nsmtp_url = \"smtp://u:hunter2@x\"\nfrom = \"nobody\"\nconsole_url = \"https://x/console\"\n",
            "[email]\nsmtp_url = \"smtp://u:hunter2@x\"\nfrom = \"a@example.com\"\nconsole_url = \"/console\"\n",
            "[email]\nsmtp_url = \"imap://u:hunter2@x\"\nfrom = \"a@example.com\"\nconsole_url = \"https://x/console\"\n",
        ] {
            let e = toml::from_str::<Config>(bad).unwrap().validate().unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn status_mode_in_the_file() {
        let c: Config = toml::from_str("http_status = \"always-200\"").unwrap();
        assert_eq!(c.http_status, StatusMode::Always200);
        assert!(toml::from_str::<Config>("http_status = \"sometimes\"").is_err());
    }

    #[test]
    fn secrets_are_not_printed() {
        let c: Config = toml::from_str("admin_token = \"kga_a-very-secret-admin-token-value\"").unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert_eq!(c.admin_token.unwrap().expose(), "kga_a-very-secret-admin-token-value");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("listen_adress = \"x\"").unwrap_err().to_string();
        assert!(err.contains("listen_adress"), "{err}");
        assert!(toml::from_str::<Config>("[gateway]\ntimeout = \"1s\"").is_err());
    }
}

/// `examples/keygate.toml` names every setting and holds the defaults, so it cannot drift.
#[cfg(test)]
mod example_file {
    use super::*;
    use serde::de::{self, Visitor};

    const EXAMPLE: &str = include_str!("../../../examples/keygate.toml");

    /// The field names serde knows for `T` (a deserializer that records them and stops).
    fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        struct Recorder<'a>(&'a mut &'static [&'static str]);
        impl<'de> de::Deserializer<'de> for Recorder<'_> {
            type Error = de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                *self.0 = fields;
                Err(de::Error::custom("recorded"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
                option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
                ignored_any
            }
        }
        let mut out: &'static [&'static str] = &[];
        let _ = T::deserialize(Recorder(&mut out));
        out
    }

    /// Keys written (`key = ...` or `# key = ...`) at the top of the file (`section` None) or in
    /// `[section]` (`[[gateway.routes]]` counts as the gateway's `routes`).
    fn keys(section: Option<&str>) -> Vec<String> {
        let mut current: Option<String> = None;
        let mut out = Vec::new();
        for line in EXAMPLE.lines() {
            let bare = line.trim_start_matches('#').trim();
            if bare == "[[gateway.routes]]" {
                if section == Some("gateway") {
                    out.push("routes".to_owned());
                }
                continue;
            }
            if let Some(name) = bare.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
                current = Some(name.to_owned());
                continue;
            }
            if let Some((key, _)) = bare.split_once(" = ")
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && current.as_deref() == section
            {
                out.push(key.to_owned());
            }
        }
        out
    }

    #[test]
    fn names_every_setting() {
        let sections = [
            (fields::<Config>(), None),
            (fields::<GatewaySettings>(), Some("gateway")),
            (fields::<LimitSettings>(), Some("limits")),
            (fields::<CreditSettings>(), Some("credits")),
            (fields::<AuditSettings>(), Some("audit")),
            (fields::<EmailSettings>(), Some("email")),
        ];
        for (names, section) in sections {
            assert!(!names.is_empty(), "recorded {names:?}");
            let written = keys(section);
            for name in names {
                if ["gateway", "limits", "credits", "audit", "email"].contains(name) {
                    assert!(EXAMPLE.contains(&format!("\n[{name}]\n")), "examples/keygate.toml has no [{name}]");
                    continue;
                }
                assert!(
                    written.iter().any(|k| k == name),
                    "examples/keygate.toml does not name `{name}` in {section:?}"
                );
            }
        }
    }

    #[test]
    fn holds_the_defaults() {
        let example: Config = toml::from_str(EXAMPLE).expect("examples/keygate.toml is a valid configuration");
        example.validate().unwrap();
        assert_eq!(format!("{example:?}"), format!("{:?}", Config::default()));
    }
}

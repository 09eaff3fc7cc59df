//! Server configuration: defaults, overridden by an optional TOML file, overridden by
//! environment (`KEYGATE_*`), overridden by flags. The CLI collects the layers; this module
//! defines them and resolves them into one [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::keys::MasterKeySource;

/// How HTTP statuses are chosen for protocol answers (getToken and refusals of API calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StatusMode {
    /// 401 for 1101/1102 (with `WWW-Authenticate`), 403 for 1200, 400 for 1003.
    #[default]
    Standard,
    /// Every protocol answer is HTTP 200; only `code` tells (the vendor's observed behaviour).
    Always200,
}

impl std::str::FromStr for StatusMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "standard" => Ok(Self::Standard),
            "always-200" | "always200" => Ok(Self::Always200),
            _ => Err(format!("unknown http status mode {s:?}: use \"standard\" or \"always-200\"")),
        }
    }
}

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
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown log format {s:?}: use \"text\" or \"json\"")),
        }
    }
}

/// One layer of settings; every field optional. The TOML file deserializes into this, and the
/// CLI fills one from flags and environment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub master_key_file: Option<PathBuf>,
    /// Hex master key; prefer the environment or a file over writing it into the config file.
    pub master_key: Option<String>,
    /// An operator-chosen admin token (at least 24 characters); else one is generated.
    pub admin_token: Option<String>,
    /// Token lifetime, e.g. "366d", "1h".
    pub token_ttl: Option<String>,
    /// The `from` claim of issued tokens.
    pub token_from: Option<String>,
    pub http_status: Option<StatusMode>,
    pub max_body_bytes: Option<usize>,
    pub cache_capacity: Option<u64>,
    /// How often the change feed is polled, e.g. "250ms".
    pub feed_interval: Option<String>,
    /// How long cached credentials keep being honoured while the change feed cannot be
    /// followed (database unreachable), e.g. "5m". Past it every request needs the database.
    pub fail_static: Option<String>,
    /// How long a request waits for the database on a cache miss before failing with 1503.
    pub store_timeout: Option<String>,
    /// How often usage counters (last used, requests per day) are written, e.g. "10s".
    pub usage_flush: Option<String>,
    pub log_format: Option<LogFormat>,
    /// One access-log line per request (target `keygate::access`) [default: true].
    pub access_log: Option<bool>,
    /// Shortcut for a gateway with one authenticated route `/` to this upstream.
    pub upstream: Option<String>,
    /// The reverse-proxy gateway (`[gateway]` and `[[gateway.routes]]` in TOML).
    pub gateway: Option<GatewayLayer>,
    /// Whether visitors may create accounts in the web console (`/console`) [default: true].
    pub console_signup: Option<bool>,
    /// Absolute lifetime of a console login session, e.g. "12h" [default: 12h].
    pub console_session_ttl: Option<String>,
    /// `Secure` on console cookies: "auto" (when the request says `X-Forwarded-Proto: https`),
    /// true or false [default: auto].
    pub console_secure_cookies: Option<SecureCookies>,
    /// Worker threads serving HTTP, each with its own connections [default: one per core].
    pub workers: Option<usize>,
    /// How long a client may take to send a request's headers, and how long a kept-alive
    /// connection may stay idle, e.g. "30s" [default: 30s]. Stops slow-header (slowloris) attacks.
    pub header_read_timeout: Option<String>,
}

/// When console cookies carry `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecureCookies {
    /// When the request came through a TLS-terminating proxy (`X-Forwarded-Proto: https` or
    /// `Forwarded: proto=https`). keygate itself serves plain HTTP.
    #[default]
    Auto,
    Always,
    Never,
}

impl std::str::FromStr for SecureCookies {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "true" | "always" => Ok(Self::Always),
            "false" | "never" => Ok(Self::Never),
            _ => Err(format!("console_secure_cookies {s:?}: use \"auto\", true or false")),
        }
    }
}

impl<'de> Deserialize<'de> for SecureCookies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Self::Always),
            Raw::Bool(false) => Ok(Self::Never),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `[gateway]` in the TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayLayer {
    /// Remove `x-api-key`, `Authorization`, `x-client-id`, `x-client-secret` before forwarding
    /// [default: true].
    pub strip_credentials: Option<bool>,
    /// Forward the client's `Host` instead of the upstream's [default: false].
    pub preserve_host: Option<bool>,
    /// e.g. "5s" [default: 5s].
    pub connect_timeout: Option<String>,
    /// Time allowed until the upstream's response headers, e.g. "60s" [default: 60s].
    pub response_timeout: Option<String>,
    #[serde(default)]
    pub routes: Vec<RouteLayer>,
}

/// `[[gateway.routes]]`: requests whose path starts with `prefix` go to `upstream`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLayer {
    pub prefix: String,
    /// `http://host:port` with an optional base path prepended to forwarded paths.
    pub upstream: String,
    /// No authentication on this route (say, the upstream's own health page).
    #[serde(default)]
    pub public: bool,
    /// Forward the path without `prefix`.
    #[serde(default)]
    pub strip_prefix: bool,
}

impl Layer {
    /// Fields set in `over` replace those in `self`.
    pub fn merge(self, over: Layer) -> Layer {
        Layer {
            listen: over.listen.or(self.listen),
            database_url: over.database_url.or(self.database_url),
            master_key_file: over.master_key_file.or(self.master_key_file),
            master_key: over.master_key.or(self.master_key),
            admin_token: over.admin_token.or(self.admin_token),
            token_ttl: over.token_ttl.or(self.token_ttl),
            token_from: over.token_from.or(self.token_from),
            http_status: over.http_status.or(self.http_status),
            max_body_bytes: over.max_body_bytes.or(self.max_body_bytes),
            cache_capacity: over.cache_capacity.or(self.cache_capacity),
            feed_interval: over.feed_interval.or(self.feed_interval),
            fail_static: over.fail_static.or(self.fail_static),
            store_timeout: over.store_timeout.or(self.store_timeout),
            usage_flush: over.usage_flush.or(self.usage_flush),
            log_format: over.log_format.or(self.log_format),
            access_log: over.access_log.or(self.access_log),
            upstream: over.upstream.or(self.upstream),
            gateway: over.gateway.or(self.gateway),
            console_signup: over.console_signup.or(self.console_signup),
            console_session_ttl: over.console_session_ttl.or(self.console_session_ttl),
            console_secure_cookies: over.console_secure_cookies.or(self.console_secure_cookies),
            workers: over.workers.or(self.workers),
            header_read_timeout: over.header_read_timeout.or(self.header_read_timeout),
        }
    }

    pub fn from_toml_file(path: &std::path::Path) -> anyhow::Result<Layer> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {} is invalid", path.display()))
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://keygate.db";

/// The resolved configuration.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub master_key: MasterKeySource,
    pub admin_token: Option<String>,
    pub token_ttl: Duration,
    pub token_from: String,
    pub http_status: StatusMode,
    pub max_body_bytes: usize,
    pub cache_capacity: u64,
    pub feed_interval: Duration,
    pub fail_static: Duration,
    pub store_timeout: Duration,
    pub usage_flush: Duration,
    pub log_format: LogFormat,
    pub access_log: bool,
    /// `None` when no route is configured: keygate then serves only its own endpoints.
    pub gateway: Option<GatewayConfig>,
    /// Whether the web console offers sign-up.
    pub console_signup: bool,
    /// Absolute lifetime of a console session.
    pub console_session_ttl: Duration,
    pub console_secure_cookies: SecureCookies,
    /// Worker threads serving HTTP (see [`crate::serve`]).
    pub workers: usize,
    pub header_read_timeout: Duration,
}

/// A resolved upstream: scheme http, authority and base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub authority: http::uri::Authority,
    /// Prepended to forwarded paths; empty or starting with `/`, never ending with `/`.
    pub base_path: String,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    pub upstream: Upstream,
    pub public: bool,
    pub strip_prefix: bool,
}

impl Route {
    /// Whether this route serves `path` (segment-aware: `/v1` serves `/v1` and `/v1/x`, not `/v10`).
    pub fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => self.prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Longest prefix first.
    pub routes: Vec<Route>,
    pub strip_credentials: bool,
    pub preserve_host: bool,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

fn parse_upstream(s: &str) -> anyhow::Result<Upstream> {
    let uri: http::Uri = s.parse().with_context(|| format!("upstream {s:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            bail!("upstream {s:?}: https upstreams are not supported yet; use http:// on a private network")
        }
        _ => bail!("upstream {s:?} must start with http://"),
    }
    let authority = uri.authority().cloned().with_context(|| format!("upstream {s:?} has no host"))?;
    if uri.query().is_some() {
        bail!("upstream {s:?} must not have a query string");
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok(Upstream { authority, base_path })
}

fn resolve_gateway(upstream: Option<String>, layer: Option<GatewayLayer>) -> anyhow::Result<Option<GatewayConfig>> {
    let layer = layer.unwrap_or_default();
    let mut routes = Vec::new();
    for r in &layer.routes {
        if !r.prefix.starts_with('/') {
            bail!("gateway route prefix {:?} must start with /", r.prefix);
        }
        routes.push(Route {
            prefix: r.prefix.clone(),
            upstream: parse_upstream(&r.upstream)?,
            public: r.public,
            strip_prefix: r.strip_prefix,
        });
    }
    if let Some(u) = upstream {
        routes.push(Route { prefix: "/".into(), upstream: parse_upstream(&u)?, public: false, strip_prefix: false });
    }
    if routes.is_empty() {
        return Ok(None);
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    Ok(Some(GatewayConfig {
        routes,
        strip_credentials: layer.strip_credentials.unwrap_or(true),
        preserve_host: layer.preserve_host.unwrap_or(false),
        connect_timeout: duration("gateway.connect_timeout", layer.connect_timeout.as_deref().unwrap_or("5s"))?,
        response_timeout: duration("gateway.response_timeout", layer.response_timeout.as_deref().unwrap_or("60s"))?,
    }))
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("token_ttl", &self.token_ttl)
            .field("http_status", &self.http_status)
            .finish_non_exhaustive()
    }
}

/// A database URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn duration(what: &str, s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s)
        .with_context(|| format!("{what} {s:?} is not a duration like \"366d\", \"1h\", \"250ms\""))
}

/// The SQLite file a `sqlite:` URL names, if it names one.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
}

impl Config {
    pub fn resolve(layer: Layer) -> anyhow::Result<Config> {
        let listen = layer.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr =
            listen.parse().with_context(|| format!("listen address {listen:?} is not HOST:PORT"))?;
        let database_url = layer.database_url.unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        let master_key = match (layer.master_key, layer.master_key_file) {
            (Some(hex), _) => MasterKeySource::Hex(hex),
            (None, Some(path)) => MasterKeySource::File { path, create: true },
            (None, None) => match sqlite_path(&database_url) {
                Some(db) => MasterKeySource::File { path: db.with_extension("key"), create: true },
                None if database_url.starts_with("sqlite:") => MasterKeySource::Ephemeral,
                None => bail!(
                    "a shared master key is needed with {}: set KEYGATE_MASTER_KEY or --master-key-file",
                    redact_url(&database_url)
                ),
            },
        };
        if let Some(t) = &layer.admin_token
            && t.len() < 24
        {
            bail!("the configured admin token is too short: use at least 24 random characters");
        }
        let token_ttl = duration("token_ttl", layer.token_ttl.as_deref().unwrap_or("366d"))?;
        // Token times are whole seconds (JWT NumericDate): a shorter lifetime would expire at issue.
        if token_ttl < Duration::from_secs(1) {
            bail!("token_ttl must be at least 1s");
        }
        let feed_interval = duration("feed_interval", layer.feed_interval.as_deref().unwrap_or("250ms"))?;
        if feed_interval < Duration::from_millis(10) || feed_interval > Duration::from_secs(60) {
            bail!("feed_interval must be between 10ms and 60s");
        }
        let fail_static = duration("fail_static", layer.fail_static.as_deref().unwrap_or("5m"))?;
        let store_timeout = duration("store_timeout", layer.store_timeout.as_deref().unwrap_or("2s"))?;
        let usage_flush = duration("usage_flush", layer.usage_flush.as_deref().unwrap_or("10s"))?;
        if usage_flush < Duration::from_millis(10) {
            bail!("usage_flush must be at least 10ms");
        }
        if store_timeout.is_zero() {
            bail!("store_timeout must be positive");
        }
        let console_session_ttl =
            duration("console_session_ttl", layer.console_session_ttl.as_deref().unwrap_or("12h"))?;
        if console_session_ttl < Duration::from_secs(1) || console_session_ttl > Duration::from_secs(30 * 86_400) {
            bail!("console_session_ttl must be between 1s and 30d");
        }
        let workers = layer.workers.unwrap_or_else(crate::serve::default_workers);
        if !(1..=1024).contains(&workers) {
            bail!("workers must be between 1 and 1024");
        }
        let header_read_timeout =
            duration("header_read_timeout", layer.header_read_timeout.as_deref().unwrap_or("30s"))?;
        if header_read_timeout < Duration::from_millis(100) {
            bail!("header_read_timeout must be at least 100ms");
        }
        Ok(Config {
            workers,
            header_read_timeout,
            listen,
            database_url,
            master_key,
            admin_token: layer.admin_token,
            token_ttl,
            token_from: layer.token_from.unwrap_or_else(|| "keygate".into()),
            http_status: layer.http_status.unwrap_or_default(),
            max_body_bytes: layer.max_body_bytes.unwrap_or(64 * 1024),
            cache_capacity: layer.cache_capacity.unwrap_or(1_000_000),
            feed_interval,
            fail_static,
            store_timeout,
            usage_flush,
            log_format: layer.log_format.unwrap_or_default(),
            access_log: layer.access_log.unwrap_or(true),
            gateway: resolve_gateway(layer.upstream, layer.gateway)?,
            console_signup: layer.console_signup.unwrap_or(true),
            console_session_ttl,
            console_secure_cookies: layer.console_secure_cookies.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering_and_defaults() {
        let file = Layer { listen: Some("0.0.0.0:9000".into()), token_ttl: Some("1h".into()), ..Default::default() };
        let flags = Layer { listen: Some("127.0.0.1:1".into()), ..Default::default() };
        let c = Config::resolve(file.merge(flags)).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:1");
        assert_eq!(c.token_ttl, Duration::from_secs(3600));
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert!(matches!(&c.master_key, MasterKeySource::File { path, .. } if path == &PathBuf::from("keygate.key")));
        assert!(Config::resolve(Layer { token_ttl: Some("soon".into()), ..Default::default() }).is_err());
        assert!(
            Config::resolve(Layer { database_url: Some("postgres://u:pw@h/db".into()), ..Default::default() }).is_err()
        );
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
        let c = Config::resolve(toml::from_str::<Layer>(toml).unwrap()).unwrap();
        let g = c.gateway.unwrap();
        let pick = |p: &str| g.routes.iter().find(|r| r.matches(p)).map(|r| r.prefix.as_str());
        assert_eq!(pick("/v1/health"), Some("/v1/health"));
        assert_eq!(pick("/v1/x"), Some("/v1"));
        assert_eq!(pick("/v1"), Some("/v1"));
        assert_eq!(pick("/v10"), Some("/"));
        assert_eq!(g.routes.iter().find(|r| r.prefix == "/v1").unwrap().upstream.base_path, "/base");
        assert_eq!(g.response_timeout, Duration::from_secs(2));
        for bad in ["https://x", "ftp://x", "http://x/?q=1", "not a url"] {
            assert!(Config::resolve(Layer { upstream: Some(bad.into()), ..Default::default() }).is_err(), "{bad}");
        }
        assert!(Config::resolve(Layer::default()).unwrap().gateway.is_none());
    }

    #[test]
    fn console_settings() {
        let c = Config::resolve(Layer::default()).unwrap();
        assert!(c.console_signup);
        assert_eq!(c.console_session_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(c.console_secure_cookies, SecureCookies::Auto);
        let toml = "console_signup = false\nconsole_session_ttl = \"1h\"\nconsole_secure_cookies = true\n";
        let c = Config::resolve(toml::from_str::<Layer>(toml).unwrap()).unwrap();
        assert!(!c.console_signup);
        assert_eq!(c.console_session_ttl, Duration::from_secs(3600));
        assert_eq!(c.console_secure_cookies, SecureCookies::Always);
        for (text, want) in
            [("auto", SecureCookies::Auto), ("false", SecureCookies::Never), ("true", SecureCookies::Always)]
        {
            let t = format!("console_secure_cookies = \"{text}\"");
            assert_eq!(toml::from_str::<Layer>(&t).unwrap().console_secure_cookies, Some(want));
        }
        assert!(toml::from_str::<Layer>("console_secure_cookies = \"maybe\"").is_err());
        assert!(Config::resolve(Layer { console_session_ttl: Some("0s".into()), ..Default::default() }).is_err());
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("sqlite://keygate.db"), "sqlite://keygate.db");
    }
}

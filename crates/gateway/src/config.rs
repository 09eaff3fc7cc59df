//! What the gateway is given: its routes and timeouts.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// A resolved upstream: scheme http, authority and base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub authority: http::uri::Authority,
    /// Prepended to forwarded paths; empty or starting with `/`, never ending with `/`.
    pub base_path: String,
}

impl std::str::FromStr for Upstream {
    type Err = anyhow::Error;

    /// `http://host:port[/base]`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
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
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// `[[gateway.routes]]`: requests whose path starts with `prefix` go to `upstream`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// A path prefix starting with `/`; the longest matching prefix wins.
    pub prefix: String,
    /// `http://host:port` with an optional base path prepended to forwarded paths.
    pub upstream: Upstream,
    /// No authentication on this route (say, the upstream's own health page).
    #[serde(default)]
    pub public: bool,
    /// Forward the path without `prefix`.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Credits a request on this route costs, where a balance applies (0: needs a positive
    /// balance, charges nothing) [default: 1].
    #[serde(default = "one_credit")]
    pub cost: u64,
    /// The permissions a request on this route requires, an expression such as
    /// `"videos.create AND (images.read OR admin)"`; a credential that does not hold them is
    /// refused with 1009 [default: none].
    #[serde(default)]
    pub permissions: Option<keygate_core::permission::Requirement>,
}

fn one_credit() -> u64 {
    1
}

impl Route {
    /// An authenticated route forwarding paths as they are.
    pub fn new(prefix: impl Into<String>, upstream: Upstream) -> Self {
        Self { prefix: prefix.into(), upstream, public: false, strip_prefix: false, cost: 1, permissions: None }
    }

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
    /// Any order; [`GatewayConfig::new`] puts the longest prefix first.
    pub routes: Vec<Route>,
    /// Remove the credential headers before forwarding.
    pub strip_credentials: bool,
    /// Forward the client's `Host` instead of the upstream's.
    pub preserve_host: bool,
    pub connect_timeout: Duration,
    /// Until the upstream's response headers.
    pub response_timeout: Duration,
}

impl GatewayConfig {
    /// Checks the routes and orders them longest prefix first; `None` when there is no route
    /// (keygate then serves only its own endpoints).
    pub fn validated(mut self) -> anyhow::Result<Option<Self>> {
        if let Some(r) = self.routes.iter().find(|r| !r.prefix.starts_with('/')) {
            bail!("gateway route prefix {:?} must start with /", r.prefix);
        }
        let max = keygate_core::credits::MAX_CREDITS as u64;
        if let Some(r) = self.routes.iter().find(|r| r.cost > max) {
            bail!("gateway route {:?}: cost must be between 0 and {max} credits", r.prefix);
        }
        if let Some(r) = self.routes.iter().find(|r| r.public && r.permissions.is_some()) {
            bail!("gateway route {:?} is public: it cannot require permissions", r.prefix);
        }
        if self.routes.is_empty() {
            return Ok(None);
        }
        self.routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Some(self))
    }
}

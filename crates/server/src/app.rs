//! The state handlers share. It holds the parts (authenticator, operations, console), each built
//! with its own settings by [`crate::startup`]; no handler reads the configuration.

use std::ops::Deref;
use std::sync::Arc;

use keygate_auth::Auth;
use keygate_console::Console;
use keygate_ops::Ops;
use metrics_exporter_prometheus::PrometheusHandle;

use keygate_ops::admin_token::AdminToken;

/// What every handler can reach: one `Arc`, so the per-request clones axum makes (one per
/// `State` extractor and middleware) cost a reference count, not a copy of the whole state.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

pub struct AppStateInner {
    /// The authenticator with its feed follower and usage flusher.
    pub auth: Arc<Auth>,
    pub ops: Ops,
    /// What the admin API's callers must present.
    pub admin_token: AdminToken,
    pub metrics: PrometheusHandle,
    /// The web console (its routes have it as their own state; kept here for white-box tests).
    pub console: Arc<Console>,
}

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

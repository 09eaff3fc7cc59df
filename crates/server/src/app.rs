//! Start-up and the router. [`Application::build`] opens the store, prepares the secrets, binds
//! the socket (port 0 works, see [`Application::local_addr`]); [`Application::run_until`] serves
//! until the given future resolves, then drains in-flight requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use keygate_core::{MasterKey, SecretHasher};
use keygate_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::{AuthSettings, Authenticator};
use crate::config::{Config, StatusMode, redact_url};
use crate::error::ApiError;
use crate::feed::Follower;
use crate::gateway::Gateway;
use crate::keys;
use crate::ops::Ops;
use crate::routes;
use metrics_exporter_prometheus::PrometheusHandle;

/// What every handler can reach: one `Arc`, so the per-request clones axum makes (one per
/// `State` extractor and middleware) cost a reference count, not a copy of the whole state.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

pub struct AppStateInner {
    pub config: Arc<Config>,
    pub auth: Arc<Authenticator>,
    pub ops: Ops,
    pub admin_hasher: SecretHasher,
    pub master: MasterKey,
    pub feed_cursor: watch::Receiver<i64>,
    /// The reverse proxy, when routes are configured.
    pub gateway: Option<Arc<Gateway>>,
    pub metrics: PrometheusHandle,
    /// The web console's own state (sessions, passwords, login throttling).
    pub console: Arc<crate::console::Console>,
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    follower: Follower,
    /// An admin token generated at this start, to be shown once by the caller.
    pub generated_admin_token: Option<String>,
}

/// Opens the configured store, checks the master key against it and makes sure signing keys
/// exist. Shared by `serve` and the CLI.
pub async fn open_store(config: &Config, migrate: bool) -> anyhow::Result<(Arc<dyn Store>, MasterKey)> {
    let store = keygate_store::connect(&config.database_url, migrate)
        .await
        .with_context(|| format!("opening database {}", redact_url(&config.database_url)))?;
    let master = keys::load_master_key(&config.master_key)?;
    keys::check_master_key(store.as_ref(), &master).await?;
    keys::ensure_signing_key(store.as_ref()).await?;
    Ok((store, master))
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let (store, master) = open_store(&config, true).await?;
        let generated_admin_token = match config.admin_token {
            Some(_) => None,
            None => keys::ensure_admin_token(store.as_ref(), &master).await?,
        };
        let keyring = keys::load_keyring(store.as_ref(), &master).await?;
        let settings = AuthSettings {
            token_ttl: config.token_ttl,
            token_from: config.token_from.clone(),
            cache_capacity: config.cache_capacity,
            fail_static: config.fail_static,
            store_timeout: config.store_timeout,
        };
        let auth = Arc::new(Authenticator::new(store.clone(), master.api_key_hasher(), keyring, settings));
        let cursor = store.last_change_seq().await?;
        let (applied, feed_cursor) = watch::channel(cursor);
        let follower = Follower {
            store: store.clone(),
            auth: auth.clone(),
            master: master.clone(),
            interval: config.feed_interval,
            cursor,
            applied,
        };
        let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let ops = Ops::new(store, master.api_key_hasher(), Some(auth.clone()));
        let config_gateway = config.gateway.clone();
        let workers = config.workers;
        // The recorder first: the metric handles made below (the gateway's, say) bind to it.
        let metrics = crate::observe::prometheus();
        let console = Arc::new(crate::console::Console::new(&config, &master));
        let state = AppState(Arc::new(AppStateInner {
            config: Arc::new(config),
            auth,
            ops,
            admin_hasher: master.admin_token_hasher(),
            master,
            feed_cursor,
            gateway: config_gateway.map(|g| Arc::new(Gateway::new(g, workers))),
            metrics,
            console,
        }));
        Ok(Self { listener, state, follower, generated_admin_token })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut feed_stop = stop_rx.clone();
        let feed = tokio::spawn(self.follower.run(async move {
            let _ = feed_stop.wait_for(|s| *s).await;
        }));
        let pruner = tokio::spawn(prune_changes(self.state.auth.store().clone(), stop_rx.clone()));
        let usage = tokio::spawn(crate::usage::run_flusher(
            self.state.auth.usage.clone(),
            self.state.auth.store().clone(),
            self.state.config.usage_flush,
            stop_rx.clone(),
        ));
        tracing::info!(%addr, backend = self.state.auth.store().backend(), workers = self.state.config.workers, "keygate listening");
        let workers = self.state.config.workers;
        let header_read_timeout = self.state.config.header_read_timeout;
        let mut threads = crate::serve::Workers::start(Dispatch::new(self.state), workers, header_read_timeout)?;
        let result = threads.accept_until(self.listener, shutdown).await;
        let _ = stop_tx.send(true);
        let _ = tokio::join!(feed, pruner, usage);
        threads.finish().await;
        result
    }
}

/// Keeps the change feed to the last hour (a process further behind drops its whole cache).
async fn prune_changes(store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(300)) => {}
        }
        if let Err(e) = store.prune_changes(keygate_store::now_ms() - 3_600_000).await {
            tracing::warn!(error = %e, "pruning the change feed failed");
        }
    }
}

/// Serves one request: keygate's own endpoints through the router; with a gateway configured,
/// every other path straight to the gateway, past the router's routing, layers and fallback (the
/// hot path of a proxied request, measured by `bench/gateway.sh`).
#[derive(Clone)]
pub struct Dispatch {
    router: Router,
    state: AppState,
}

impl Dispatch {
    pub fn new(state: AppState) -> Self {
        Self { router: router(state.clone()), state }
    }

    pub fn call(&self, req: Request) -> impl Future<Output = Result<Response, Infallible>> + Send + use<> {
        use futures_util::future::Either;
        use tower::Service;
        let path = req.uri().path();
        let state = self.state.clone();
        // `/auth/verify` (nginx auth_request, Envoy ext_authz) is on every request of the API
        // behind that proxy: served directly too, with the router's route labels.
        if let Some(rest) = path.strip_prefix(VERIFY_PATH)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            let label = if rest.is_empty() { VERIFY_PATH } else { "/auth/verify/{*rest}" };
            return Either::Right(Either::Left(direct(state, req, label, |state, req| async move {
                routes::protocol::verify(State(state), req).await.into_response()
            })));
        }
        if self.state.gateway.is_none() || is_own_path(path) {
            return Either::Left(self.router.clone().call(req));
        }
        Either::Right(Either::Right(direct(state, req, "", |state, req| crate::gateway::proxy(State(state), req))))
    }
}

/// One request to `handler` past the router: observed (the route label is `label`, or the
/// gateway's route), and a panic answers 500 as the router's CatchPanicLayer does.
async fn direct<F, Fut>(state: AppState, req: Request, label: &'static str, handler: F) -> Result<Response, Infallible>
where
    F: FnOnce(AppState, Request) -> Fut,
    Fut: Future<Output = Response>,
{
    use futures_util::FutureExt;
    let label = (!label.is_empty()).then_some(label);
    let observed = crate::observe::observe(&state, req, label, |req| handler(state.clone(), req));
    Ok(std::panic::AssertUnwindSafe(observed)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| ApiError::Internal("handler panicked".into()).into_response()))
}

const VERIFY_PATH: &str = "/auth/verify";

/// Paths that [`router`] serves (exactly, or as a prefix covering the path and what is under it).
const OWN_EXACT: &[&str] = &["/api/open/v3/getToken", "/healthz", "/metrics", "/readyz"];
const OWN_PREFIXES: &[&str] = &["/auth/verify", ADMIN_PREFIX, "/console"];

/// Whether `path` is one of keygate's own endpoints (never proxied).
pub fn is_own_path(path: &str) -> bool {
    OWN_EXACT.contains(&path)
        || OWN_PREFIXES
            .iter()
            .any(|p| path.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// Where the admin API lives. The whole namespace is keygate's: the gateway never proxies a path
/// under it, not even one no admin handler matches.
pub const ADMIN_PREFIX: &str = "/admin/v1";

pub fn router(state: AppState) -> Router {
    let protocol = Router::new()
        .route("/api/open/v3/getToken", post(routes::protocol::get_token))
        .layer(middleware::from_fn_with_state(state.clone(), status_mode));
    Router::new()
        .merge(protocol)
        .route("/auth/verify", any(routes::protocol::verify))
        .route("/auth/verify/{*rest}", any(routes::protocol::verify))
        .route("/healthz", get(routes::health::healthz))
        .route("/metrics", get(crate::observe::metrics_handler))
        .route("/readyz", get(routes::health::readyz))
        .nest(ADMIN_PREFIX, routes::admin::router())
        .nest("/console", crate::console::router())
        .route("/console/", get(|| async { axum::response::Redirect::permanent("/console") }))
        .fallback(crate::gateway::proxy)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| ApiError::Internal("handler panicked".into()).into_response()))
        .layer(middleware::from_fn_with_state(state.clone(), crate::observe::middleware))
        .with_state(state)
}

/// With `http_status = "always-200"`, protocol answers keep their envelope but use HTTP 200,
/// as the vendor's own clients expect.
async fn status_mode(State(state): State<AppState>, req: Request, next: Next) -> Response {
    protocol_status(&state, next.run(req).await)
}

/// Applies `http_status` to a protocol answer (getToken, or the gateway's own refusals).
pub fn protocol_status(state: &AppState, mut res: Response) -> Response {
    if state.config.http_status == StatusMode::Always200 && res.status() != StatusCode::OK {
        *res.status_mut() = StatusCode::OK;
        res.headers_mut().remove(axum::http::header::WWW_AUTHENTICATE);
    }
    res
}

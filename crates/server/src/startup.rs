//! Start-up: [`Application::build`] opens the store, prepares the secrets, builds each part with
//! its own settings and binds the socket (port 0 works, see [`Application::local_addr`]);
//! [`Application::run_until`] serves until the given future resolves, then drains in-flight
//! requests, stops the background tasks and writes the last usage counts.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use keygate_auth::{Auth, secrets};
use keygate_console::Console;
use keygate_gateway::Gateway;
use keygate_ops::Ops;
use tokio::net::TcpListener;

use crate::access_log::{AccessLog, Settings as AccessLogSettings};
use crate::app::{AppState, AppStateInner};
use crate::config::Config;
use crate::observe::Observer;
use crate::router::Dispatch;
use crate::serve::Limits;
use keygate_ops::admin_token::AdminToken;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    dispatch: Dispatch,
    workers: usize,
    limits: Limits,
    /// How long audit entries are kept (zero: forever).
    audit_retention: std::time::Duration,
    /// Written out after the last request, at the end of [`Application::run_until`].
    access_log: Option<Arc<AccessLog>>,
    /// An admin token generated at this start, to be shown once by the caller.
    pub generated_admin_token: Option<String>,
}

/// Shares rate-limit counters through Redis when `[limits] redis_url` is set; says where each
/// node counts on its own.
fn share_rate_limits(config: &Config, auth: &Auth) -> anyhow::Result<()> {
    let limiter = &auth.authenticator().limiter;
    match &config.limits.redis_url {
        Some(url) => {
            let counter = keygate_auth::ratelimit::redis::RedisCounter::connect(url.expose())
                .map_err(|e| anyhow::anyhow!("[limits] redis_url: {e}"))?;
            limiter.share(Arc::new(counter), config.limits.redis_failure);
            tracing::info!(
                redis = %keygate_auth::secrets::redact_url(url.expose()),
                fail_mode = ?config.limits.redis_failure,
                "rate limits: counters shared through Redis"
            );
        }
        None if auth.authenticator().store().backend() == "postgres" => tracing::warn!(
            "rate limits: each node counts on its own (no [limits] redis_url): N nodes behind a load balancer \
             admit up to N times a limit"
        ),
        None => {}
    }
    Ok(())
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_access_log(config, Box::new(std::io::stderr())).await
    }

    /// [`Application::build`] with the access log (when on) written to `out` instead of
    /// standard error: a file of the embedding application's, or a test's captured output.
    pub async fn build_with_access_log(config: Config, out: Box<dyn std::io::Write + Send>) -> anyhow::Result<Self> {
        config.validate()?;
        let (store, master) = secrets::open_store(&config.database_url, &config.master_key_source()?, true).await?;
        let generated_admin_token = match config.admin_token {
            Some(_) => None,
            None => {
                keygate_ops::admin_token::ensure(store.as_ref(), &master, &keygate_core::audit::Audit::system()).await?
            }
        };
        // The recorder first: the metric handles made below (the gateway's, say) bind to it.
        let metrics = crate::observe::prometheus();
        let auth = Arc::new(Auth::builder().settings(config.auth_settings()).start(store.clone(), &master).await?);
        share_rate_limits(&config, &auth)?;
        let ops = Ops::new(store, &master, Some(auth.authenticator().clone()));
        let console = Arc::new(Console::new(config.console_settings()?, &master, ops.clone())?);
        let gateway = config
            .gateway()?
            .map(|g| Arc::new(Gateway::new(g, auth.authenticator().clone(), config.http_status, config.workers)));
        if let Some(g) = &gateway {
            for r in g.routes() {
                tracing::info!(prefix = %r.prefix, upstream = %r.upstream.authority, public = r.public, "gateway route");
            }
        }
        let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let state = AppState::new(AppStateInner {
            auth,
            ops,
            admin_token: AdminToken::new(&master, config.admin_token.as_ref()),
            metrics,
            console,
        });
        // The access log is on unless switched off, in the settings or by RUST_LOG (for example
        // `keygate::access=off`), which is asked once here.
        let access_log = (config.access_log && tracing::enabled!(target: "keygate::access", tracing::Level::INFO))
            .then(|| {
                let settings = AccessLogSettings { format: config.log_format, ..AccessLogSettings::default() };
                AccessLog::start(settings, out).context("starting the access log's writer")
            })
            .transpose()?
            .map(Arc::new);
        let observer = Observer { access_log: access_log.clone(), trusted_proxies: Arc::new(config.trusted_proxies()) };
        let dispatch = Dispatch::new(state.clone(), gateway, observer, config.max_body_bytes);
        Ok(Self {
            listener,
            state,
            dispatch,
            workers: config.workers,
            limits: config.limits(),
            audit_retention: config.audit.retention,
            access_log,
            generated_admin_token,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let auth = self.state.auth.clone();
        tracing::info!(
            %addr,
            backend = auth.authenticator().store().backend(),
            workers = self.workers,
            max_connections = self.limits.max_connections,
            "keygate listening"
        );
        let pruner = (!self.audit_retention.is_zero())
            .then(|| tokio::spawn(prune_audit(auth.authenticator().store().clone(), self.audit_retention)));
        let dispatch = self.dispatch;
        let mut threads = crate::serve::Workers::start(
            move |req| dispatch.call(req),
            self.workers,
            self.limits,
            keygate_gateway::upstream::set_worker,
        )?;
        let result = threads.accept_until(self.listener, shutdown).await;
        if let Some(p) = pruner {
            p.abort();
        }
        auth.shutdown().await;
        threads.finish().await;
        if let Some(log) = self.access_log {
            // Every request has been answered: its lines are the last.
            tokio::task::spawn_blocking(move || log.close()).await.ok();
        }
        tracing::info!("keygate stopped");
        result
    }
}

/// Deletes audit entries older than `retention`, now and every hour (in batches, so that a first
/// pruning of a long history never holds the database for long).
async fn prune_audit(store: Arc<dyn keygate_store::Store>, retention: std::time::Duration) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
    loop {
        let before = keygate_store::now_ms().saturating_sub(retention.as_millis().min(i64::MAX as u128) as i64);
        let mut pruned = 0;
        loop {
            match store.prune_audit(before).await {
                Ok(0) => break,
                Ok(n) => pruned += n,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the audit log failed");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, retention = %humantime::format_duration(retention), "audit log: old entries deleted");
        }
        tokio::time::sleep(EVERY).await;
    }
}

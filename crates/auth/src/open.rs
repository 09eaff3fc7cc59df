//! [`Auth`]: an [`Authenticator`] on a database, with the background work that keeps its answers
//! current and its usage counts written: the change-feed follower, the usage flusher and the
//! pruning (of the feed, and of hourly usage). The keygate server runs one; so does a service
//! that embeds the Layer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_core::MasterKey;
use keygate_store::{Store, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::authenticator::{AuthSettings, Authenticator};
use crate::envelope::StatusMode;
use crate::feed::FeedFollower;
use crate::layer::AuthLayer;
use crate::secrets::{self, MasterKeySource};

/// How long the change feed keeps entries; a process further behind drops its whole cache.
const FEED_RETENTION_MS: i64 = 3_600_000;
const PRUNE_EVERY: Duration = Duration::from_secs(300);
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A running authenticator. Dropping it stops its background tasks; [`Auth::shutdown`] also
/// waits for the last usage counts to be written.
pub struct Auth {
    authenticator: Arc<Authenticator>,
    status_mode: StatusMode,
    feed_interval: Duration,
    feed_cursor: watch::Receiver<i64>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// How an [`Auth`] is opened. Defaults are the server's.
#[derive(Debug, Clone, Default)]
pub struct AuthBuilder {
    settings: AuthSettings,
    migrate: bool,
}

impl AuthBuilder {
    /// Token lifetime, cache, fail-static window, store timeout, feed interval, usage flushes,
    /// status mode ([`AuthSettings::default`] is the server's).
    pub fn settings(mut self, settings: AuthSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Create or upgrade the schema when opening [default: false: the database is keygate's,
    /// set up by `keygate migrate` or `keygate serve`].
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Opens `database_url` with the master key from `master` and starts following it.
    pub async fn open(self, database_url: &str, master: MasterKeySource) -> anyhow::Result<Auth> {
        let (store, master) = secrets::open_store(database_url, &master, self.migrate).await?;
        Ok(self.start(store, &master).await?)
    }

    /// Opens `database_url` with its master key file (`None`: beside the SQLite file).
    pub async fn open_with_key_file(self, database_url: &str, key_file: Option<PathBuf>) -> anyhow::Result<Auth> {
        let source = match key_file {
            Some(path) => MasterKeySource::File { path, create: false },
            None => match MasterKeySource::for_database(database_url, None, None)? {
                MasterKeySource::File { path, .. } => MasterKeySource::File { path, create: false },
                other => other,
            },
        };
        self.open(database_url, source).await
    }

    /// Starts on a store opened (and checked against `master`) already.
    pub async fn start(self, store: Arc<dyn Store>, master: &MasterKey) -> Result<Auth, StoreError> {
        let keyring = secrets::load_keyring(store.as_ref(), master).await?;
        let (feed_interval, usage_flush, status_mode) =
            (self.settings.feed_interval, self.settings.usage_flush, self.settings.status_mode);
        let authenticator =
            Arc::new(Authenticator::new(store.clone(), master.api_key_hasher(), keyring, self.settings));
        let cursor = store.last_change_seq().await?;
        let (applied, feed_cursor) = watch::channel(cursor);
        let (stop, stopped) = watch::channel(false);
        let follower = FeedFollower {
            store: store.clone(),
            auth: authenticator.clone(),
            master: master.clone(),
            interval: feed_interval,
            cursor,
            applied,
        };
        let mut feed_stop = stopped.clone();
        let tasks = vec![
            tokio::spawn(follower.run(async move {
                let _ = feed_stop.wait_for(|s| *s).await;
            })),
            tokio::spawn(crate::usage::run_flusher(
                authenticator.usage.clone(),
                store.clone(),
                usage_flush,
                stopped.clone(),
            )),
            tokio::spawn(crate::credits::run_refiller(authenticator.credits.clone(), store.clone(), stopped.clone())),
            tokio::spawn(crate::credits::run_settler(authenticator.credits.clone(), store.clone(), stopped.clone())),
            tokio::spawn(prune_changes(store, stopped.clone())),
            tokio::spawn(sweep_limits(authenticator.clone(), stopped)),
        ];
        Ok(Auth { authenticator, status_mode, feed_interval, feed_cursor, stop, tasks: Mutex::new(tasks) })
    }
}

impl Auth {
    /// An [`AuthBuilder`] with the server's defaults.
    pub fn builder() -> AuthBuilder {
        AuthBuilder::default()
    }

    /// Opens the database keygate uses (`sqlite://keygate.db`, or PostgreSQL with the nodes'
    /// shared master key) and starts following its change feed.
    pub async fn open(database_url: &str, master_key: MasterKey) -> anyhow::Result<Auth> {
        Self::builder().open(database_url, MasterKeySource::Key(master_key)).await
    }

    /// The tower Layer deciding every request with this authenticator.
    pub fn layer(&self) -> AuthLayer {
        AuthLayer::new(self.authenticator.clone(), self.status_mode)
    }

    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.authenticator
    }

    pub fn status_mode(&self) -> StatusMode {
        self.status_mode
    }

    pub fn feed_interval(&self) -> Duration {
        self.feed_interval
    }

    /// The newest change-feed entry applied to the cache.
    pub fn feed_cursor(&self) -> i64 {
        *self.feed_cursor.borrow()
    }

    /// Waits until the change feed has been applied up to at least `seq`.
    pub async fn wait_for_feed(&self, seq: i64) {
        let mut rx = self.feed_cursor.clone();
        let _ = rx.wait_for(|c| *c >= seq).await;
    }

    /// Whether answers are current: the feed was followed within the fail-static window.
    pub fn is_ready(&self) -> bool {
        self.authenticator.cache_trusted()
    }

    /// Stops following the feed and writes the last usage counts.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Forgets rate-limit buckets that are full and unused (their memory, not their counts: a full
/// bucket is what a new one is).
async fn sweep_limits(auth: Arc<Authenticator>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        let left = auth.limiter.sweep(crate::ratelimit::now_ns());
        metrics::gauge!("keygate_ratelimit_scopes").set(left as f64);
    }
}

/// Keeps the change feed to [`FEED_RETENTION_MS`], and hourly usage to
/// [`keygate_store::HOURLY_RETENTION_HOURS`] (daily usage is kept).
async fn prune_changes(store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
        if let Err(e) = store.prune_changes(keygate_store::now_ms() - FEED_RETENTION_MS).await {
            tracing::warn!(error = %e, "pruning the change feed failed");
        }
        let hour = keygate_store::now_ms().div_euclid(keygate_store::HOUR_MS);
        if let Err(e) = store.prune_usage(hour - keygate_store::HOURLY_RETENTION_HOURS).await {
            tracing::warn!(error = %e, "pruning hourly usage failed");
        }
    }
}

//! Follows the store's change feed and invalidates the authenticator's cache.
//!
//! One mechanism for every deployment: each write that can change an authentication decision
//! appends to `changes` in its own transaction; every keygate process polls for entries newer
//! than the last one it applied. With SQLite this is how a server sees what the CLI wrote into
//! the same file; with several nodes on one PostgreSQL it is how a node sees the others' writes.
//!
//! Where the store can push (PostgreSQL `LISTEN keygate_changes`), a notification triggers the
//! poll at once, so propagation takes milliseconds; the periodic poll stays as reconciliation, so
//! a lost notification (dropped connection, restart) delays a change by at most one interval.
//! A dropped listener is re-created after a second, followed by an immediate catch-up poll.
//!
//! Staleness bound: `feed_interval` (default 250 ms) plus one query, while the database answers.
//! While it does not, cached state is honoured for `fail_static` (see [`Authenticator`]).

use std::sync::Arc;
use std::time::Duration;

use keygate_store::{ChangeListener, Entity, Store};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::authenticator::Authenticator;
use crate::secrets;

pub struct FeedFollower {
    pub store: Arc<dyn Store>,
    pub auth: Arc<Authenticator>,
    pub master: keygate_core::MasterKey,
    pub interval: Duration,
    /// The newest change applied so far.
    pub cursor: i64,
    /// Published after every successful poll (the applied cursor), for readiness and tests.
    pub applied: watch::Sender<i64>,
}

const BATCH: u32 = 1000;
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

async fn wait_on(listener: &mut Option<Box<dyn ChangeListener>>) -> keygate_store::Result<bool> {
    match listener {
        Some(l) => l.wait().await,
        None => std::future::pending().await,
    }
}

impl FeedFollower {
    /// Follows the feed until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listener: Option<Box<dyn ChangeListener>> = None;
        let mut listen_at = Some(Instant::now());
        loop {
            if listen_at.is_some_and(|t| Instant::now() >= t) {
                match self.store.change_listener().await {
                    Ok(Some(l)) => {
                        listener = Some(l);
                        listen_at = None;
                    }
                    // This backend has no push: polling alone.
                    Ok(None) => listen_at = None,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for change notifications; polling meanwhile");
                        listen_at = Some(Instant::now() + RELISTEN_AFTER);
                    }
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
                woke = wait_on(&mut listener) => match woke {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!("change notification connection was lost; catching up"),
                    Err(e) => {
                        tracing::warn!(error = %e, "change notification listener failed; catching up and re-listening");
                        listener = None;
                        listen_at = Some(Instant::now() + RELISTEN_AFTER);
                    }
                },
            }
            if let Err(e) = self.poll().await {
                tracing::warn!(error = %e, age_ms = self.auth.feed_age_ms(), "change feed poll failed; cached state is kept within the fail-static window");
            }
        }
    }

    /// Applies every change newer than the cursor.
    pub async fn poll(&mut self) -> Result<(), keygate_store::StoreError> {
        loop {
            let changes = self.store.changes_since(self.cursor, BATCH).await?;
            let Some(first) = changes.first() else { break };
            if first.seq > self.cursor + 1 && self.cursor > 0 {
                // Entries we never saw were pruned: we cannot tell what changed, so forget all.
                tracing::warn!(cursor = self.cursor, next = first.seq, "change feed gap; dropping the whole cache");
                self.auth.invalidate_all();
            }
            let mut keys_changed = false;
            for c in &changes {
                self.auth.invalidate(c.entity, &c.entity_id);
                keys_changed |= matches!(c.entity, Entity::SigningKey | Entity::Unknown);
            }
            if keys_changed {
                self.auth.set_keyring(secrets::load_keyring(self.store.as_ref(), &self.master).await?);
            }
            self.cursor = changes.last().map_or(self.cursor, |c| c.seq);
            if changes.len() < BATCH as usize {
                break;
            }
        }
        self.auth.feed_succeeded();
        self.applied.send_replace(self.cursor);
        Ok(())
    }
}

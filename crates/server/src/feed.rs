//! Follows the store's change feed and invalidates the authenticator's cache.
//!
//! One mechanism for every deployment: each write that can change an authentication decision
//! appends to `changes` in its own transaction; every keygate process polls for entries newer
//! than the last one it applied. With SQLite this is how a server sees what the CLI wrote into
//! the same file; with several nodes on one database it is how a node sees the others' writes.
//! The bound on staleness is the poll interval (default 250 ms), plus the time of one query.

use std::sync::Arc;
use std::time::Duration;

use keygate_store::{Entity, Store};
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::keys;

/// What the follower needs to rebuild the keyring when signing keys change.
pub struct Follower {
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

impl Follower {
    /// Polls until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.poll().await {
                tracing::warn!(error = %e, "change feed poll failed; cached state is kept and the poll retried");
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
                keys_changed |= c.entity == Entity::SigningKey;
            }
            if keys_changed {
                self.auth.set_keyring(keys::load_keyring(self.store.as_ref(), &self.master).await?);
            }
            self.cursor = changes.last().map_or(self.cursor, |c| c.seq);
            if changes.len() < BATCH as usize {
                break;
            }
        }
        self.applied.send_replace(self.cursor);
        Ok(())
    }
}

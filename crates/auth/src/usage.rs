//! Usage bookkeeping off the request path: each authenticated request bumps an in-memory
//! counter (a short, sharded lock); a background task flushes the counters to the store in one
//! batch every `usage_flush` (default 10 s) and once more at shutdown. A failed flush keeps its
//! counts for the next one, so nothing is lost while the database is briefly away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_core::ClientId;
use keygate_store::{Store, UsageDelta};
use tokio::sync::watch;

const SHARDS: usize = 16;
const DAY_MS: i64 = 86_400_000;

/// Per (credential, day): requests let in, requests refused by a rate limit, last used.
type Counts = HashMap<(ClientId, i64), Count, foldhash::fast::RandomState>;

#[derive(Default, Clone, Copy)]
struct Count {
    requests: u64,
    limited: u64,
    last_used_at: i64,
}

#[derive(Default)]
pub struct UsageRecorder {
    shards: [Mutex<Counts>; SHARDS],
}

impl UsageRecorder {
    /// Counts one request by `client_id` at `now_ms`.
    pub fn record(&self, client_id: ClientId, now_ms: i64) {
        self.count(client_id, now_ms, |c| c.requests += 1);
    }

    /// Counts one request by `client_id` refused by a rate limit at `now_ms` (it was presented,
    /// so the credential was used).
    pub fn record_limited(&self, client_id: ClientId, now_ms: i64) {
        self.count(client_id, now_ms, |c| c.limited += 1);
    }

    fn count(&self, client_id: ClientId, now_ms: i64, f: impl FnOnce(&mut Count)) {
        let shard = &self.shards[client_id.as_bytes()[11] as usize % SHARDS];
        let mut counts = shard.lock().unwrap_or_else(|p| p.into_inner());
        let e = counts.entry((client_id, now_ms.div_euclid(DAY_MS))).or_default();
        f(e);
        e.last_used_at = e.last_used_at.max(now_ms);
    }

    fn drain(&self) -> Vec<UsageDelta> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let counts = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            out.extend(counts.into_iter().map(|((client_id, day), c)| UsageDelta {
                client_id,
                day,
                requests: c.requests,
                limited: c.limited,
                last_used_at: c.last_used_at,
            }));
        }
        out
    }

    fn restore(&self, batch: Vec<UsageDelta>) {
        for d in batch {
            let shard = &self.shards[d.client_id.as_bytes()[11] as usize % SHARDS];
            let mut counts = shard.lock().unwrap_or_else(|p| p.into_inner());
            let e = counts.entry((d.client_id, d.day)).or_default();
            e.requests += d.requests;
            e.limited += d.limited;
            e.last_used_at = e.last_used_at.max(d.last_used_at);
        }
    }

    /// Writes what has been counted; on failure the counts are kept for the next flush.
    pub async fn flush(&self, store: &dyn Store) -> keygate_store::Result<usize> {
        let batch = self.drain();
        let n = batch.len();
        if let Err(e) = store.record_usage(&batch).await {
            self.restore(batch);
            return Err(e);
        }
        Ok(n)
    }
}

/// Flushes every `interval` until `stop` turns true, then once more.
pub async fn run_flusher(
    recorder: Arc<UsageRecorder>,
    store: Arc<dyn Store>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stopping = tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            _ = tokio::time::sleep(interval) => false,
        };
        if let Err(e) = recorder.flush(store.as_ref()).await {
            tracing::warn!(error = %e, "usage flush failed; counts kept for the next flush");
        }
        if stopping {
            return;
        }
    }
}

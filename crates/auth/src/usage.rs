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

type Counts = HashMap<(ClientId, i64), (u64, i64), foldhash::fast::RandomState>;

#[derive(Default)]
pub struct UsageRecorder {
    shards: [Mutex<Counts>; SHARDS],
}

impl UsageRecorder {
    /// Counts one request by `client_id` at `now_ms`.
    pub fn record(&self, client_id: ClientId, now_ms: i64) {
        let shard = &self.shards[client_id.as_bytes()[11] as usize % SHARDS];
        let mut counts = shard.lock().unwrap_or_else(|p| p.into_inner());
        let e = counts.entry((client_id, now_ms.div_euclid(DAY_MS))).or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(now_ms);
    }

    fn drain(&self) -> Vec<UsageDelta> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let counts = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            out.extend(counts.into_iter().map(|((client_id, day), (requests, last_used_at))| UsageDelta {
                client_id,
                day,
                requests,
                last_used_at,
            }));
        }
        out
    }

    fn restore(&self, batch: Vec<UsageDelta>) {
        for d in batch {
            let shard = &self.shards[d.client_id.as_bytes()[11] as usize % SHARDS];
            let mut counts = shard.lock().unwrap_or_else(|p| p.into_inner());
            let e = counts.entry((d.client_id, d.day)).or_insert((0, 0));
            e.0 += d.requests;
            e.1 = e.1.max(d.last_used_at);
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

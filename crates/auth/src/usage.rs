//! Usage bookkeeping off the request path: each request a credential presents bumps an in-memory
//! counter per (credential, UTC hour, outcome) with its requests and the credits it spent (a
//! short, sharded lock); a background task flushes the counters to the store in one batch every
//! `usage_flush` (default 10 s) and once more at shutdown, which adds them to the hour and to the
//! day. A failed flush keeps its counts for the next one, so nothing is lost while the database
//! is briefly away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_core::ClientId;
use keygate_core::code::BusinessCode;
use keygate_store::{HOUR_MS, Store, UsageDelta};
use tokio::sync::watch;

const SHARDS: usize = 16;

/// Per (credential, hour, outcome): requests, credits spent, last used.
type Counts = HashMap<(ClientId, i64, u32), Count, foldhash::fast::RandomState>;

#[derive(Default, Clone, Copy)]
struct Count {
    requests: u64,
    credits: u64,
    last_used_at: i64,
}

#[derive(Default)]
pub struct UsageRecorder {
    shards: [Mutex<Counts>; SHARDS],
}

impl UsageRecorder {
    /// Counts one request by `client_id` at `now_ms` that was let in (1000), spending nothing.
    pub fn record(&self, client_id: ClientId, now_ms: i64) {
        self.record_outcome(client_id, now_ms, BusinessCode::Success.as_u32(), 0);
    }

    /// Counts one request by `client_id` refused by a rate limit at `now_ms` (1005; it was
    /// presented, so the credential was used).
    pub fn record_limited(&self, client_id: ClientId, now_ms: i64) {
        self.record_outcome(client_id, now_ms, BusinessCode::TooFrequent.as_u32(), 0);
    }

    /// Counts one request by `client_id` at `now_ms` answered with business code `code` (1000
    /// let in, 1005 rate limited, 1006 insufficient credits, 1101 refused credential, 1200
    /// banned account, ...), which spent `credits` (only a request let in spends).
    pub fn record_outcome(&self, client_id: ClientId, now_ms: i64, code: u32, credits: u64) {
        let shard = &self.shards[client_id.as_bytes()[11] as usize % SHARDS];
        let mut counts = shard.lock().unwrap_or_else(|p| p.into_inner());
        let e = counts.entry((client_id, now_ms.div_euclid(HOUR_MS), code)).or_default();
        e.requests += 1;
        e.credits = e.credits.saturating_add(credits);
        e.last_used_at = e.last_used_at.max(now_ms);
    }

    fn drain(&self) -> Vec<UsageDelta> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let counts = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            out.extend(counts.into_iter().map(|((client_id, hour, outcome), c)| UsageDelta {
                client_id,
                hour,
                outcome,
                requests: c.requests,
                credits: c.credits,
                last_used_at: c.last_used_at,
            }));
        }
        out
    }

    fn restore(&self, batch: Vec<UsageDelta>) {
        for d in batch {
            let shard = &self.shards[d.client_id.as_bytes()[11] as usize % SHARDS];
            let mut counts = shard.lock().unwrap_or_else(|p| p.into_inner());
            let e = counts.entry((d.client_id, d.hour, d.outcome)).or_default();
            e.requests += d.requests;
            e.credits = e.credits.saturating_add(d.credits);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut batch: Vec<UsageDelta>) -> Vec<(i64, u32, u64, u64, i64)> {
        batch.sort_by_key(|d| (d.hour, d.outcome));
        batch.iter().map(|d| (d.hour, d.outcome, d.requests, d.credits, d.last_used_at)).collect()
    }

    #[test]
    fn counts_per_hour_and_outcome_with_credits() {
        let r = UsageRecorder::default();
        let cid = ClientId::generate(1);
        let h = 480_000 * HOUR_MS;
        r.record(cid, h + 5);
        r.record_outcome(cid, h + 9, 1000, 3);
        r.record_outcome(cid, h + 7, 1000, 2);
        r.record_limited(cid, h + 1);
        r.record_outcome(cid, h + HOUR_MS, 1006, 0);
        r.record_outcome(cid, h + HOUR_MS + 1, 1101, 0);
        assert_eq!(
            sorted(r.drain()),
            [
                (480_000, 1000, 3, 5, h + 9),
                (480_000, 1005, 1, 0, h + 1),
                (480_001, 1006, 1, 0, h + HOUR_MS),
                (480_001, 1101, 1, 0, h + HOUR_MS + 1)
            ]
        );
        assert!(r.drain().is_empty(), "a drain takes everything");
    }

    #[test]
    fn a_failed_flush_keeps_its_counts_for_the_next() {
        let r = UsageRecorder::default();
        let cid = ClientId::generate(1);
        r.record_outcome(cid, 10, 1000, 4);
        let batch = r.drain();
        r.record_outcome(cid, 20, 1000, 1);
        r.restore(batch);
        assert_eq!(sorted(r.drain()), [(0, 1000, 2, 5, 20)]);
    }
}

//! Shared rate-limit buckets in Redis: one hash per limit (`tat`, the bucket's arrival time in
//! microseconds, and `t`, the interval it was counted under), changed only by one Lua script that
//! leases units atomically. Nodes take units ahead of their requests ([`super::Limiter::share`]),
//! so a request waits for Redis only when its node holds none.
//!
//! Times are microseconds as Lua numbers (doubles, exact to the microsecond until the year 2255);
//! an interval may be a fraction of a microsecond, so shared counting is exact to within a
//! quarter of a microsecond per lease.

use std::time::Duration;

use keygate_core::ratelimit::Policy;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Ask, BoxFuture, Grant, SharedCounter};

/// Takes up to `want` units: GCRA on the stored arrival time, after carrying the spent count
/// over to a changed interval (as `Bucket::adopt` does on one node). Returns the units taken and
/// the arrival time after, as a string (`%.17g`: every digit of a double).
const LEASE: &str = r#"
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local t = tonumber(ARGV[3 * i - 1])
  local limit = tonumber(ARGV[3 * i])
  local want = tonumber(ARGV[3 * i + 1])
  local cap = t * limit
  local stored = redis.call('HMGET', key, 'tat', 't')
  local tat = tonumber(stored[1]) or 0
  local old_t = tonumber(stored[2]) or t
  if tat < now then tat = now end
  if old_t ~= t and old_t > 0 then
    tat = now + math.min((tat - now) * t / old_t, cap)
  end
  local n = 0
  if limit > 0 then
    n = math.floor((now + cap - tat) / t + 1e-6)
    if n > want then n = want end
    if n < 0 then n = 0 end
  end
  tat = tat + n * t
  redis.call('HSET', key, 'tat', string.format('%.17g', tat), 't', string.format('%.17g', t))
  redis.call('PEXPIRE', key, math.ceil((tat - now) / 1000) + 1000)
  out[2 * i - 1] = n
  out[2 * i] = string.format('%.17g', tat)
end
return out
"#;

/// The shared buckets of one Redis.
pub struct RedisCounter {
    conn: ConnectionManager,
    script: redis::Script,
}

impl RedisCounter {
    /// Connects to `url` (`redis://[:PASSWORD@]HOST:PORT[/DB]`, `rediss://` for TLS) lazily: a Redis
    /// that is down at start is retried in the background, and the fail mode applies meanwhile.
    pub fn connect(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(super::SHARED_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        Ok(Self { conn, script: redis::Script::new(LEASE) })
    }
}

impl SharedCounter for RedisCounter {
    fn lease<'a>(&'a self, key: &'a str, policy: Policy, want: u64, now: u64) -> BoxFuture<'a, Result<Grant, String>> {
        Box::pin(async move {
            let ask = [Ask { key: key.to_owned(), policy, want }];
            let mut grants = self.lease_many(&ask, now).await?;
            grants.pop().ok_or_else(|| "Redis answered no lease".to_owned())
        })
    }

    fn lease_many<'a>(&'a self, asks: &'a [Ask], now: u64) -> BoxFuture<'a, Result<Vec<Grant>, String>> {
        Box::pin(async move {
            let mut invocation = self.script.prepare_invoke();
            invocation.arg((now / 1_000) as f64);
            for a in asks {
                let interval_us = a.policy.window_ns as f64 / 1_000.0 / a.policy.limit.max(1) as f64;
                invocation.key(&a.key).arg(format!("{interval_us:.17e}")).arg(a.policy.limit).arg(a.want);
            }
            let mut conn = self.conn.clone();
            let flat: Vec<redis::Value> =
                invocation.invoke_async(&mut conn).await.map_err(|e| format!("Redis: {e}"))?;
            if flat.len() != 2 * asks.len() {
                return Err(format!("Redis answered {} values for {} leases", flat.len(), asks.len()));
            }
            flat.chunks(2)
                .map(|pair| {
                    let granted: u64 = redis::from_redis_value_ref(&pair[0]).map_err(|e| format!("Redis: {e}"))?;
                    let tat: String = redis::from_redis_value_ref(&pair[1]).map_err(|e| format!("Redis: {e}"))?;
                    let tat_us: f64 = tat.parse().map_err(|_| format!("Redis answered a malformed time {tat:?}"))?;
                    Ok(Grant { granted, tat: (tat_us * 1_000.0) as u64 })
                })
                .collect()
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("PING").query_async::<()>(&mut conn).await.map_err(|e| format!("Redis: {e}"))
        })
    }
}

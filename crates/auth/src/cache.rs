//! A small concurrent map with a size bound, for the authenticator's caches.
//!
//! Sharded `RwLock<HashMap>`: a hit is one hash and one uncontended read lock, and an entry costs
//! its key and value plus the hash table's slack — a few dozen bytes, where a general-purpose
//! cache with admission sketches and recency lists costs several hundred. When a shard is full,
//! inserting evicts one entry chosen by the table's hash order, i.e. at random: a miss costs a
//! store query, never a wrong answer, so a simple policy is enough. Keys are hashed with foldhash
//! (randomly seeded): they are HMAC outputs, server-generated ids and verified tokens, which a
//! client cannot choose, so SipHash's flooding resistance would only cost time.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use foldhash::fast::RandomState;
use std::sync::RwLock;

const SHARDS: usize = 32;

pub struct BoundedCache<K, V> {
    shards: Box<[RwLock<HashMap<K, V, RandomState>>]>,
    per_shard: usize,
    hasher: RandomState,
}

impl<K: Hash + Eq + Clone, V: Clone> BoundedCache<K, V> {
    /// A cache holding at most about `capacity` entries.
    pub fn new(capacity: u64) -> Self {
        let per_shard = (capacity as usize).div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::default())).collect(),
            per_shard,
            hasher: RandomState::default(),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &RwLock<HashMap<K, V, RandomState>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).read().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// Runs `f` on the cached value under the shard's read lock (no clone).
    pub fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).read().unwrap_or_else(|p| p.into_inner()).get(key).map(f)
    }

    /// Changes the cached value in place, if there is one.
    pub fn update<Q>(&self, key: &Q, f: impl FnOnce(&mut V))
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(v) = self.shard(key).write().unwrap_or_else(|p| p.into_inner()).get_mut(key) {
            f(v);
        }
    }

    pub fn insert(&self, key: K, value: V) {
        let mut map = self.shard(&key).write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.per_shard
            && !map.contains_key(&key)
            && let Some(victim) = map.keys().next().cloned()
        {
            map.remove(&victim);
        }
        map.insert(key, value);
    }

    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).write().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    pub fn invalidate_all(&self) {
        for s in self.shards.iter() {
            s.write().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_consistent() {
        let c = BoundedCache::new(64);
        for i in 0..1000u32 {
            c.insert(i, i * 2);
            assert_eq!(c.get(&i), Some(i * 2), "a fresh insert is visible");
        }
        assert!(c.len() <= 64 + SHARDS, "{}", c.len());
        c.insert(5, 1);
        c.invalidate(&5);
        assert_eq!(c.get(&5), None);
        c.invalidate_all();
        assert!(c.is_empty());
        let s: BoundedCache<String, u8> = BoundedCache::new(10);
        s.insert("tok".into(), 1);
        assert_eq!(s.get("tok"), Some(1));
    }
}

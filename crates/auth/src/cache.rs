//! A small concurrent map with a size bound, for the authenticator's caches.
//!
//! Sharded `RwLock<HashTable>` (hashbrown's table with the hash given by the caller): a hit is one
//! hash of the key (for the shard and the slot both) and one uncontended read lock, and an entry costs
//! its key and value plus the hash table's slack — a few dozen bytes, where a general-purpose
//! cache with admission sketches and recency lists costs several hundred. When a shard is full,
//! inserting evicts one entry chosen by the table's hash order, i.e. at random: a miss costs a
//! store query, never a wrong answer, so a simple policy is enough. Keys are hashed with foldhash
//! (randomly seeded): they are HMAC outputs, server-generated ids and verified tokens, which a
//! client cannot choose, so SipHash's flooding resistance would only cost time.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use foldhash::fast::RandomState;
use hashbrown::HashTable;

const SHARDS: usize = 32;

/// One shard: a table of (key, value) pairs under its lock.
type Shard<K, V> = RwLock<HashTable<(K, V)>>;

pub struct BoundedCache<K, V> {
    shards: Box<[Shard<K, V>]>,
    per_shard: usize,
    hasher: RandomState,
}

impl<K: Hash + Eq + Clone, V: Clone> BoundedCache<K, V> {
    /// A cache holding at most about `capacity` entries.
    pub fn new(capacity: u64) -> Self {
        let per_shard = (capacity as usize).div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            per_shard,
            hasher: RandomState::default(),
        }
    }

    /// A key's hash, made once per call: it picks the shard (bits 40-44, which the table itself
    /// does not use for a table of under 2^40 slots) and finds the slot.
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    fn read(&self, hash: u64) -> RwLockReadGuard<'_, HashTable<(K, V)>> {
        self.shards[(hash >> 40) as usize % SHARDS].read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, hash: u64) -> RwLockWriteGuard<'_, HashTable<(K, V)>> {
        self.shards[(hash >> 40) as usize % SHARDS].write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.with(key, V::clone)
    }

    /// Runs `f` on the cached value under the shard's read lock (no clone).
    pub fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let h = self.hash(key);
        self.read(h).find(h, |(k, _)| k.borrow() == key).map(|(_, v)| f(v))
    }

    /// Changes the cached value in place, if there is one.
    pub fn update<Q>(&self, key: &Q, f: impl FnOnce(&mut V))
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let h = self.hash(key);
        if let Some((_, v)) = self.write(h).find_mut(h, |(k, _)| k.borrow() == key) {
            f(v);
        }
    }

    pub fn insert(&self, key: K, value: V) {
        let h = self.hash(&key);
        let mut table = self.write(h);
        match table.find_mut(h, |(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => {
                if table.len() >= self.per_shard
                    && let Some(victim) = table.iter().next().map(|(k, _)| k.clone())
                {
                    let vh = self.hash(&victim);
                    if let Ok(e) = table.find_entry(vh, |(k, _)| *k == victim) {
                        e.remove();
                    }
                }
                table.insert_unique(h, (key, value), |(k, _)| self.hash(k));
            }
        }
    }

    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let h = self.hash(key);
        if let Ok(e) = self.write(h).find_entry(h, |(k, _)| k.borrow() == key) {
            e.remove();
        }
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

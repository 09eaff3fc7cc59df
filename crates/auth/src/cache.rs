//! A small concurrent map with a size bound, for the authenticator's caches.
//!
//! Sharded `RwLock`s, each over a dense shard: the entries in a `Vec` and, beside it, a hashbrown
//! `HashTable` of their `u32` positions (the hash given by the caller). A hit is one hash of the
//! key (for the shard and the slot both), one uncontended read lock, a probe of the position table
//! and one read of the entry. An entry costs its key and value and about 8 bytes of table: the
//! table's slack (it is 44-88% full) is paid on 4-byte positions, not on the entries, which is
//! what keeps a cached credential small (see the authenticator's `SecretEntry`). When a shard is
//! full, inserting evicts one entry at a position picked by the new key's hash, i.e. at random: a
//! miss costs a store query, never a wrong answer, so a simple policy is enough. Removing an entry
//! moves the last one into its place. Keys are hashed with foldhash (randomly seeded): they are
//! HMAC outputs, server-generated ids and verified tokens, which a client cannot choose, so
//! SipHash's flooding resistance would only cost time. Keys that end in a keyed hash (the HMAC
//! of an API key, a verified token's signature) are not hashed again: [`PreHashed`] mixes their
//! last 8 bytes.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use foldhash::fast::RandomState;
use hashbrown::HashTable;

const SHARDS: usize = 32;

/// One shard: its entries, densely, and their positions by hash.
struct Shard<K, V> {
    positions: HashTable<u32>,
    entries: Vec<(K, V)>,
}

impl<K, V> Shard<K, V> {
    fn new() -> Self {
        Self { positions: HashTable::new(), entries: Vec::new() }
    }

    fn find<Q>(&self, h: u64, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let entries = &self.entries;
        self.positions.find(h, |&i| entries[i as usize].0.borrow() == key).map(|&i| i as usize)
    }

    /// Removes the entry at `pos` (whose key hashes to `h`); the last entry takes its place.
    fn remove_at(&mut self, h: u64, pos: usize, hash: impl Fn(&K) -> u64) {
        if let Ok(e) = self.positions.find_entry(h, |&i| i as usize == pos) {
            e.remove();
        }
        let last = self.entries.len() - 1;
        if pos != last {
            let lh = hash(&self.entries[last].0);
            if let Some(p) = self.positions.find_mut(lh, |&i| i as usize == last) {
                *p = pos as u32;
            }
        }
        self.entries.swap_remove(pos);
    }

    fn clear(&mut self) {
        self.positions.clear();
        self.entries.clear();
    }
}

/// For keys that end in at least 8 bytes no client can choose or predict: the HMAC-SHA-256 of an
/// API key, and a verified token (HS256: its last 8 characters are 48 bits of its signature).
/// The hash is those last 8 bytes, mixed (fmix64) so that ASCII bytes fill all 64 bits. A lookup
/// with a made-up token hashes where the attacker chooses, but only probes: the entries in the
/// table are verified tokens, whose hashes are the signatures'. What else is written (the length
/// prefix of a slice, the 0xff a `str` ends with) is ignored; shorter writes are folded in.
#[derive(Default, Clone, Copy)]
pub struct PreHashed;

#[derive(Default)]
pub struct PreHashedHasher(u64);

impl BuildHasher for PreHashed {
    type Hasher = PreHashedHasher;
    fn build_hasher(&self) -> PreHashedHasher {
        PreHashedHasher(0)
    }
}

impl std::hash::Hasher for PreHashedHasher {
    fn finish(&self) -> u64 {
        fmix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        match bytes.last_chunk::<8>() {
            Some(tail) => self.0 = u64::from_le_bytes(*tail),
            None => self.0 = bytes.iter().fold(self.0, |h, &b| h.rotate_left(8) ^ b as u64),
        }
    }
    fn write_u8(&mut self, _end: u8) {}
    fn write_usize(&mut self, _len: usize) {}
}

/// A 64-bit finalizer (MurmurHash3's fmix64): every input bit reaches every output bit.
pub fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

pub struct BoundedCache<K, V, S = RandomState> {
    shards: Box<[RwLock<Shard<K, V>>]>,
    per_shard: usize,
    hasher: S,
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher + Default> BoundedCache<K, V, S> {
    /// A cache holding at most about `capacity` entries.
    pub fn new(capacity: u64) -> Self {
        let per_shard = (capacity as usize).div_ceil(SHARDS).clamp(1, u32::MAX as usize);
        Self { shards: (0..SHARDS).map(|_| RwLock::new(Shard::new())).collect(), per_shard, hasher: S::default() }
    }

    /// A key's hash, made once per call: it picks the shard (bits 40-44, which the table itself
    /// does not use for a table of under 2^40 slots) and finds the slot.
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    fn read(&self, hash: u64) -> RwLockReadGuard<'_, Shard<K, V>> {
        self.shards[(hash >> 40) as usize % SHARDS].read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, hash: u64) -> RwLockWriteGuard<'_, Shard<K, V>> {
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
        let shard = self.read(h);
        shard.find(h, key).map(|i| f(&shard.entries[i].1))
    }

    /// Changes the cached value in place, if there is one.
    pub fn update<Q>(&self, key: &Q, f: impl FnOnce(&mut V))
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let h = self.hash(key);
        let mut shard = self.write(h);
        if let Some(i) = shard.find(h, key) {
            f(&mut shard.entries[i].1);
        }
    }

    pub fn insert(&self, key: K, value: V) {
        let h = self.hash(&key);
        let mut shard = self.write(h);
        if let Some(i) = shard.find(h, &key) {
            shard.entries[i].1 = value;
            return;
        }
        if shard.entries.len() >= self.per_shard {
            let victim = (h as usize) % shard.entries.len();
            let vh = self.hash(&shard.entries[victim].0);
            shard.remove_at(vh, victim, |k| self.hash(k));
        }
        let Shard { positions, entries } = &mut *shard;
        if entries.len() == entries.capacity() {
            // Doubling, but never past the bound: a full shard holds no spare entries.
            let room = self.per_shard.saturating_sub(entries.len()).max(1);
            entries.reserve_exact(entries.len().max(4).min(room));
        }
        positions.insert_unique(h, entries.len() as u32, |&i| self.hash(&entries[i as usize].0));
        entries.push((key, value));
    }

    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let h = self.hash(key);
        let mut shard = self.write(h);
        if let Some(i) = shard.find(h, key) {
            shard.remove_at(h, i, |k| self.hash(k));
        }
    }

    pub fn invalidate_all(&self) {
        for s in self.shards.iter() {
            s.write().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|p| p.into_inner()).entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes its tables take (entries, with their spare capacity, and position tables),
    /// not counting what values point to.
    pub fn table_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.read().unwrap_or_else(|p| p.into_inner());
                s.entries.capacity() * std::mem::size_of::<(K, V)>() + s.positions.allocation_size()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A key ending in a keyed hash hashes to its last 8 bytes (mixed): the same for an array
    /// and a slice of it, and for a `String` and the `str` it is looked up by; caches keyed so
    /// work as ones hashed with foldhash.
    #[test]
    fn prehashed_keys_hash_to_their_last_bytes() {
        let mut key = [0u8; 32];
        key.iter_mut().enumerate().for_each(|(i, b)| *b = (i as u8).wrapping_mul(37) ^ 0x5a);
        let want = fmix64(u64::from_le_bytes(key[24..].try_into().unwrap()));
        assert_eq!(PreHashed.hash_one(key), want);
        assert_eq!(PreHashed.hash_one(&key[..]), want);
        let token = "eyJhbGciOiJIUzI1NiJ9.e30.Xj2fK0aQ9bZ3pL7mN1sT4uV6wY8cD5eG2hI0kJ9oR3q".to_owned();
        assert_eq!(PreHashed.hash_one(&token), PreHashed.hash_one(token.as_str()));
        assert_ne!(PreHashed.hash_one("short"), PreHashed.hash_one("shorT"));
        let c: BoundedCache<[u8; 32], u32, PreHashed> = BoundedCache::new(1_000);
        let t: BoundedCache<String, u32, PreHashed> = BoundedCache::new(1_000);
        for i in 0..2_000u32 {
            let mut k = key;
            k[24..28].copy_from_slice(&i.wrapping_mul(0x9e37_79b9).to_le_bytes());
            k[28..].copy_from_slice(&(i ^ 0xdead).wrapping_mul(0x85eb_ca6b).to_le_bytes());
            c.insert(k, i);
            assert_eq!(c.get(&k), Some(i));
            let tok = format!("{token}{i:08}");
            t.insert(tok.clone(), i);
            assert_eq!(t.get(tok.as_str()), Some(i));
        }
        assert!(c.len() <= 1_000 + SHARDS && t.len() <= 1_000 + SHARDS);
    }

    #[test]
    fn bounded_and_consistent() {
        let c: BoundedCache<u32, u32> = BoundedCache::new(64);
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

    /// Random inserts, updates, removals and evictions against a `HashMap`: every key the cache
    /// holds maps to what the model says (an eviction may only drop keys, never change them),
    /// and the positions stay those of the entries.
    #[test]
    fn agrees_with_a_map_under_churn() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let c: BoundedCache<u64, u64> = BoundedCache::new(2_000);
        let mut model: HashMap<u64, u64> = HashMap::new();
        for step in 0..200_000u64 {
            let k = next() % 4_000;
            match next() % 10 {
                0..=5 => {
                    c.insert(k, step);
                    model.insert(k, step);
                }
                6 => {
                    c.invalidate(&k);
                    model.remove(&k);
                }
                7 => {
                    c.update(&k, |v| *v += 1);
                    if let Some(v) = model.get_mut(&k)
                        && c.get(&k).is_some()
                    {
                        *v += 1;
                    }
                }
                _ => {
                    if let Some(v) = c.get(&k) {
                        assert_eq!(Some(&v), model.get(&k), "key {k} at step {step}");
                    }
                }
            }
            if step % 10_000 == 0 {
                c.invalidate_all();
                model.clear();
            }
        }
        assert!(c.len() <= 2_000 + SHARDS);
        for s in c.shards.iter() {
            let s = s.read().unwrap();
            assert_eq!(s.positions.len(), s.entries.len());
            for (i, (k, v)) in s.entries.iter().enumerate() {
                assert_eq!(s.find(c.hash(k), k), Some(i));
                assert_eq!(model.get(k), Some(v));
            }
        }
    }
}

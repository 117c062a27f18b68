//! A thread-safe LRU cache bounded by bytes, with hit/miss counters. Used for SAM image
//! embeddings ("set the image once, send many prompts"), keyed by model id and a content hash
//! of the image.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Content hash of image bytes (BLAKE3), as a cache key part and an id clients can refer to.
pub fn content_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Counters of a cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Lookups that found an entry.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries dropped to stay within the byte budget.
    pub evictions: u64,
    /// Entries held.
    pub entries: usize,
    /// Bytes held.
    pub bytes: usize,
    /// Byte budget.
    pub capacity_bytes: usize,
}

struct Inner<K, V> {
    map: HashMap<K, (Arc<V>, usize, u64)>,
    tick: u64,
    stats: CacheStats,
}

/// LRU cache bounded by the byte size of its values.
pub struct ByteLru<K, V> {
    inner: Mutex<Inner<K, V>>,
}

impl<K: Hash + Eq + Clone, V> ByteLru<K, V> {
    /// A cache holding at most `capacity_bytes` (0 disables caching).
    pub fn new(capacity_bytes: usize) -> Self {
        ByteLru {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                tick: 0,
                stats: CacheStats { capacity_bytes, ..CacheStats::default() },
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks up a key, counting a hit or a miss.
    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        match g.map.get_mut(key) {
            Some(entry) => {
                entry.2 = tick;
                let v = entry.0.clone();
                g.stats.hits += 1;
                Some(v)
            }
            None => {
                g.stats.misses += 1;
                None
            }
        }
    }

    /// Inserts a value of `bytes` size, evicting least recently used entries to make room.
    /// A value larger than the whole budget is not cached.
    pub fn insert(&self, key: K, value: Arc<V>, bytes: usize) {
        let mut g = self.lock();
        if bytes > g.stats.capacity_bytes {
            return;
        }
        g.tick += 1;
        let tick = g.tick;
        if let Some((_, old, _)) = g.map.insert(key, (value, bytes, tick)) {
            g.stats.bytes -= old;
        }
        g.stats.bytes += bytes;
        while g.stats.bytes > g.stats.capacity_bytes {
            let Some(oldest) = g.map.iter().min_by_key(|(_, (_, _, t))| *t).map(|(k, _)| k.clone()) else { break };
            if let Some((_, b, _)) = g.map.remove(&oldest) {
                g.stats.bytes -= b;
                g.stats.evictions += 1;
            }
        }
        g.stats.entries = g.map.len();
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let g = self.lock();
        CacheStats { entries: g.map.len(), ..g.stats }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut g = self.lock();
        g.map.clear();
        g.stats.bytes = 0;
        g.stats.entries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_the_byte_budget() {
        let c: ByteLru<&str, u32> = ByteLru::new(10);
        c.insert("a", Arc::new(1), 4);
        c.insert("b", Arc::new(2), 4);
        assert_eq!(*c.get(&"a").unwrap(), 1); // a is now the most recent
        c.insert("c", Arc::new(3), 4); // over budget: evict b
        assert!(c.get(&"b").is_none());
        assert!(c.get(&"a").is_some() && c.get(&"c").is_some());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.evictions, s.entries, s.bytes), (3, 1, 1, 2, 8));
        c.insert("huge", Arc::new(9), 11);
        assert!(c.get(&"huge").is_none(), "larger than the budget: not cached");
        assert_eq!(content_hash(b"x").len(), 64);
    }
}

//! A small in-process map whose entries expire, shared by the auth and tenant caches.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Entries keyed by string, each served for at most `ttl` after the moment its value was read
/// from the source. Bounded: when full, expired entries are dropped, and if that is not enough
/// everything is dropped (the cache only ever saves lookups, it never changes an answer).
pub(crate) struct TtlCache<V> {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    pub(crate) fn new(ttl: Duration, max_entries: usize) -> Self {
        TtlCache {
            ttl,
            max_entries: max_entries.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value for `key` if it was read less than `ttl` ago.
    pub(crate) fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (read_at, value) = entries.get(key)?;
        (read_at.elapsed() < self.ttl).then(|| value.clone())
    }

    /// Stores `value`, read from the source at `read_at` (taken before the read started, so the
    /// entry never outlives `ttl` past the moment the source answered).
    pub(crate) fn insert(&self, key: &str, value: V, read_at: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.max_entries && !entries.contains_key(key) {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert(key.to_owned(), (read_at, value));
    }

    /// Forgets `key`.
    pub(crate) fn remove(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_ttl() {
        let cache = TtlCache::new(Duration::from_secs(1), 10);
        cache.insert("a", 1, Instant::now());
        assert_eq!(cache.get("a"), Some(1));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(cache.get("a"), Some(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(cache.get("a"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn stays_bounded() {
        let cache = TtlCache::new(Duration::from_secs(1), 3);
        for i in 0..3 {
            cache.insert(&i.to_string(), i, Instant::now());
        }
        assert_eq!(cache.len(), 3);
        cache.insert("x", 9, Instant::now());
        assert!(cache.len() <= 3);
        assert_eq!(cache.get("x"), Some(9));
        cache.remove("x");
        assert_eq!(cache.get("x"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn full_cache_drops_expired_first() {
        let cache = TtlCache::new(Duration::from_secs(1), 2);
        cache.insert("old", 0, Instant::now());
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.insert("new", 1, Instant::now());
        cache.insert("newer", 2, Instant::now());
        assert_eq!(cache.get("new"), Some(1));
        assert_eq!(cache.get("newer"), Some(2));
    }
}

//! The shared tier of the tenant-config cache (DESIGN §3): what every gateway and coordinator
//! read from the metadata store, kept where all of them find it, so the store is read about once
//! a second per tenant however many processes serve it.
//!
//! [`TenantCache`](crate::TenantCache) asks its in-process entries first, then this tier, then
//! the metadata store. An entry here lives [`SHARED_TENANT_TTL`] from the moment the store was
//! read, and an in-process entry taken from it expires when it does: so a change to a tenant is
//! in effect on every role within that second *whatever happens to invalidations* (Redis down
//! during the change, a coordinator without Redis, a crash between the change and its
//! invalidation). Invalidation makes it sooner, and is race-free by *generations*: each tenant
//! has a generation that every invalidation moves, a lookup that misses returns the generation
//! it saw, and the entry filled after reading the store carries it; an entry whose generation is
//! no longer current is never served, so a reader that read the store before a change cannot
//! put the old configuration back after the change's invalidation.
//!
//! Implementations: [`MemoryTenantConfigCache`] (one process; the embedded default, shared by
//! the roles of `pairdb dev`) and [`RedisTenantConfigCache`] (every process using one Redis).

mod redis;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use pairdb_metadata::TenantConfig;
use tokio::time::Instant;

pub use self::redis::RedisTenantConfigCache;
use crate::idempotency::StoreError;

/// How long a filled entry is served, from the moment the store was read: the bound on how long
/// a tenant change may take to reach every role.
pub const SHARED_TENANT_TTL: Duration = Duration::from_secs(1);

/// What [`TenantConfigCache::lookup`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A current entry.
    Hit {
        /// The tenant as the store held it (`None`: it did not exist).
        tenant: Option<TenantConfig>,
        /// How much longer the entry is served.
        remaining: Duration,
    },
    /// No current entry; fill one with this generation after reading the store.
    Miss {
        /// The tenant's generation when the lookup ran.
        generation: u64,
    },
}

/// The shared tier of tenant configurations, by tenant id.
#[async_trait]
pub trait TenantConfigCache: Send + Sync + std::fmt::Debug + 'static {
    /// The current entry of `id`, or the generation to fill one with.
    async fn lookup(&self, id: &str) -> Result<Lookup, StoreError>;

    /// Stores `tenant` (what the store answered after a [`Lookup::Miss`] of `generation`) for
    /// `ttl`. An entry filled with a generation an invalidation has since passed is never served.
    async fn fill(
        &self,
        id: &str,
        generation: u64,
        tenant: &Option<TenantConfig>,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Makes every entry of `id` filled so far stale: the next lookup on any role misses.
    async fn invalidate(&self, id: &str) -> Result<(), StoreError>;
}

/// The shared tier within one process, holding at most `max_entries` tenants: past that, every
/// entry is dropped (each lives a second at most anyway).
pub struct MemoryTenantConfigCache {
    max_entries: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tenants: HashMap<String, Tenant>,
    /// The generation of every tenant not in `tenants`; moved past every generation handed out
    /// whenever tenants are dropped, so a fill from before the drop is never served.
    floor: u64,
    /// The last generation handed out.
    last: u64,
}

struct Tenant {
    generation: u64,
    entry: Option<(Instant, Option<TenantConfig>)>,
}

impl State {
    fn generation(&self, id: &str) -> u64 {
        self.tenants.get(id).map_or(self.floor, |t| t.generation)
    }

    fn next(&mut self) -> u64 {
        self.last += 1;
        self.last
    }
}

impl std::fmt::Debug for MemoryTenantConfigCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTenantConfigCache")
            .finish_non_exhaustive()
    }
}

impl MemoryTenantConfigCache {
    /// A cache holding at most `max_entries` tenants.
    pub fn new(max_entries: usize) -> Self {
        MemoryTenantConfigCache {
            max_entries: max_entries.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes room for one more tenant: drops every tenant, moving the floor past every
    /// generation handed out.
    fn make_room(&self, state: &mut State) {
        if state.tenants.len() >= self.max_entries {
            state.tenants.clear();
            state.floor = state.next();
        }
    }
}

impl Default for MemoryTenantConfigCache {
    fn default() -> Self {
        MemoryTenantConfigCache::new(crate::tenant::TENANT_CACHE_MAX_ENTRIES)
    }
}

#[async_trait]
impl TenantConfigCache for MemoryTenantConfigCache {
    async fn lookup(&self, id: &str) -> Result<Lookup, StoreError> {
        let state = self.lock();
        let now = Instant::now();
        Ok(match state.tenants.get(id) {
            Some(Tenant {
                entry: Some((expires, tenant)),
                ..
            }) if *expires > now => Lookup::Hit {
                tenant: tenant.clone(),
                remaining: *expires - now,
            },
            _ => Lookup::Miss {
                generation: state.generation(id),
            },
        })
    }

    async fn fill(
        &self,
        id: &str,
        generation: u64,
        tenant: &Option<TenantConfig>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        if generation != state.generation(id) {
            return Ok(());
        }
        if !state.tenants.contains_key(id) {
            self.make_room(&mut state);
            if generation != state.floor {
                // The room made moved the floor: this fill is from before it.
                return Ok(());
            }
        }
        let entry = Some((Instant::now() + ttl, tenant.clone()));
        state
            .tenants
            .insert(id.to_owned(), Tenant { generation, entry });
        Ok(())
    }

    async fn invalidate(&self, id: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !state.tenants.contains_key(id) {
            self.make_room(&mut state);
        }
        let generation = state.next();
        state.tenants.insert(
            id.to_owned(),
            Tenant {
                generation,
                entry: None,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str) -> Option<TenantConfig> {
        Some(TenantConfig {
            tenant_id: id.into(),
            replication_factor: 3,
            default_consistency: pairdb_core::Consistency::Quorum,
            rate_limit: pairdb_metadata::RateLimit::default(),
            created_at: "2026-11-30T00:00:00Z".into(),
        })
    }

    async fn miss(cache: &MemoryTenantConfigCache, id: &str) -> u64 {
        match cache.lookup(id).await.expect("lookup") {
            Lookup::Miss { generation } => generation,
            hit => panic!("expected a miss, got {hit:?}"),
        }
    }

    #[tokio::test]
    async fn stays_bounded_and_never_serves_a_fill_from_before_it_made_room() {
        let cache = MemoryTenantConfigCache::new(2);
        let ttl = Duration::from_secs(60);
        // A reader of `c` looks up before the cache is emptied to make room.
        let stale = miss(&cache, "c").await;
        for id in ["a", "b"] {
            let g = miss(&cache, id).await;
            cache.fill(id, g, &config(id), ttl).await.expect("fill");
        }
        cache.invalidate("x").await.expect("invalidate");
        assert!(cache.lock().tenants.len() <= 2);
        cache
            .fill("c", stale, &config("c"), ttl)
            .await
            .expect("fill");
        assert!(matches!(
            cache.lookup("c").await.expect("lookup"),
            Lookup::Miss { .. }
        ));
        // Many tenants later, still bounded.
        for i in 0..100 {
            let id = format!("t{i}");
            let g = miss(&cache, &id).await;
            cache.fill(&id, g, &config(&id), ttl).await.expect("fill");
            cache.invalidate(&id).await.expect("invalidate");
        }
        assert!(cache.lock().tenants.len() <= 2);
    }
}

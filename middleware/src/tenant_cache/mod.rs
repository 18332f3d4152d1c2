//! The shared tier of the tenant-config cache (DESIGN §3): what every gateway and coordinator
//! read from the metadata store, kept where all of them find it, and invalidated on change.
//!
//! [`TenantCache`](crate::TenantCache) asks its in-process entries first (each served for at
//! most a second), then this tier, then the metadata store. The tier is correct under races by
//! *generations*: each tenant has a generation that every invalidation increments, a lookup that
//! misses returns the generation it saw, and the entry filled after reading the store carries
//! that generation. An entry whose generation is no longer current is never served, so a reader
//! that read the store before a change can never put the old configuration back after the
//! change's invalidation. A change is therefore in effect on every role within the in-process
//! tier's second.
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

/// How long a filled entry is kept (invalidation, not expiry, is what makes changes visible;
/// expiry only bounds what a lost invalidation could cost).
pub const SHARED_TENANT_TTL: Duration = Duration::from_secs(60);

/// What [`TenantConfigCache::lookup`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A current entry: the tenant as the store held it (`None`: it did not exist).
    Hit(Option<TenantConfig>),
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

/// The shared tier within one process. Bounded: past `max_entries` tenants, expired entries are
/// dropped, then every entry (generations are kept, so nothing stale can come back).
pub struct MemoryTenantConfigCache {
    max_entries: usize,
    tenants: Mutex<HashMap<String, Tenant>>,
}

#[derive(Default)]
struct Tenant {
    generation: u64,
    entry: Option<(u64, Instant, Option<TenantConfig>)>,
}

impl std::fmt::Debug for MemoryTenantConfigCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTenantConfigCache")
            .finish_non_exhaustive()
    }
}

impl MemoryTenantConfigCache {
    /// A cache holding entries of at most `max_entries` tenants.
    pub fn new(max_entries: usize) -> Self {
        MemoryTenantConfigCache {
            max_entries: max_entries.max(1),
            tenants: Mutex::new(HashMap::new()),
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
        let tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tenant) = tenants.get(id) else {
            return Ok(Lookup::Miss { generation: 0 });
        };
        Ok(match &tenant.entry {
            Some((generation, expires, config))
                if *generation == tenant.generation && *expires > Instant::now() =>
            {
                Lookup::Hit(config.clone())
            }
            _ => Lookup::Miss {
                generation: tenant.generation,
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
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if tenants.len() >= self.max_entries && !tenants.contains_key(id) {
            let now = Instant::now();
            for t in tenants.values_mut() {
                if t.entry
                    .as_ref()
                    .is_some_and(|(_, expires, _)| *expires <= now)
                {
                    t.entry = None;
                }
            }
            tenants.retain(|_, t| t.entry.is_some() || t.generation > 0);
            if tenants.len() >= self.max_entries {
                for t in tenants.values_mut() {
                    t.entry = None;
                }
                tenants.retain(|_, t| t.generation > 0);
            }
            if tenants.len() >= self.max_entries {
                // Every slot holds a generation: keep them, cache nothing more.
                return Ok(());
            }
        }
        let entry = tenants.entry(id.to_owned()).or_default();
        if generation == entry.generation {
            entry.entry = Some((generation, Instant::now() + ttl, tenant.clone()));
        }
        Ok(())
    }

    async fn invalidate(&self, id: &str) -> Result<(), StoreError> {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = tenants.entry(id.to_owned()).or_default();
        entry.generation += 1;
        entry.entry = None;
        Ok(())
    }
}

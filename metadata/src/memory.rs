//! An in-memory metadata store for tests and tools, with the semantics of the SQLite store.
//!
//! [`MemoryStore`] keeps the four tables of the SQL schema (tenants, API keys, nodes, the one
//! placement row) in ordered maps behind one [`Mutex`]. Every method takes the lock once, checks
//! everything it must refuse before it changes anything, and never awaits while holding it: each
//! call is atomic and a refused call writes nothing, exactly as the SQLite store's transactions.
//!
//! The refusals are those of [`SqliteStore`](crate::sqlite::SqliteStore), in the same order and
//! with the same [`MetadataError`] variants (only the messages of `Unavailable` and `Corrupt`
//! differ), including the limits of its columns: an epoch beyond `i64::MAX` cannot be stored. Lists
//! are ordered as its `ORDER BY` clauses order them (byte-wise on the UTF-8 text, as SQLite's
//! default `BINARY` collation compares).
//!
//! Nothing is persisted: the data lives as long as the store and its clones.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use pairdb_core::Placement;

use crate::{ApiKeyRecord, JobRecord, MetadataError, MetadataStore, NodeRecord, TenantConfig};

/// A [`MetadataStore`] kept in process memory, with the semantics of
/// [`SqliteStore`](crate::sqlite::SqliteStore).
///
/// Guarantees: every method is atomic and linearizable (one lock over the whole state, held for
/// the whole call and never across an `.await`); a call that fails or answers `false` changes
/// nothing; the same calls give the same results and error variants as on a fresh SQLite store.
/// The store never becomes unavailable: its only errors are the refusals documented on each
/// method, and [`ping`](MetadataStore::ping) always succeeds.
///
/// Cloning is cheap and clones share the data, like clones of `SqliteStore`; [`Default`] and
/// [`new`](Self::new) give an empty store (no tenant, key, node or placement).
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

/// The tables, keyed by their primary keys.
#[derive(Debug, Default)]
struct State {
    tenants: BTreeMap<String, TenantConfig>,
    api_keys: BTreeMap<String, ApiKeyRecord>,
    nodes: BTreeMap<String, NodeRecord>,
    placement: Option<Placement>,
    /// Live instances by `(role, instance)`, with the moment each expires.
    instances: BTreeMap<(String, String), std::time::Instant>,
    /// Jobs by id, with their owner and the moment the owner's lease runs out.
    jobs: BTreeMap<String, (JobRecord, String, std::time::Instant)>,
    /// Coordinators' epochs by instance, with the moment each expires.
    epoch_acks: BTreeMap<String, (u64, std::time::Instant)>,
}

impl MemoryStore {
    /// An empty store: no tenant, API key, node or placement. Same as [`Default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the state. A poisoned lock is recovered: no method can panic between its first write
    /// and its last (all checks come first, and the writes are plain map inserts), so the state
    /// behind a poisoned lock is still consistent.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The stored placement's epoch.
    fn epoch(&self) -> Option<u64> {
        self.placement.as_ref().map(|p| p.epoch)
    }

    /// Refuses to install `next` unless the stored epoch is `expected` and `next` advances it.
    fn check_swap(&self, expected: u64, next: &Placement) -> Result<(), MetadataError> {
        if self.epoch() != Some(expected) || next.epoch <= expected {
            return Err(MetadataError::PlacementConflict {
                expected: Some(expected),
            });
        }
        check_epoch(next.epoch)
    }

    /// Refuses `key` as the `api_keys` constraints would: a taken key id (primary key) first, then
    /// an owner that is neither an existing tenant nor `new_tenant` (foreign key). Both are
    /// [`MetadataError::Unavailable`], as in the SQLite store.
    fn check_new_key(
        &self,
        key: &ApiKeyRecord,
        new_tenant: Option<&str>,
    ) -> Result<(), MetadataError> {
        if self.api_keys.contains_key(&key.key_id) {
            return Err(MetadataError::Unavailable(format!(
                "API key id {} is already taken",
                key.key_id
            )));
        }
        let owner = key.tenant_id.as_str();
        if new_tenant != Some(owner) && !self.tenants.contains_key(owner) {
            return Err(MetadataError::Unavailable(format!(
                "cannot store API key {}: no tenant {owner:?}",
                key.key_id
            )));
        }
        Ok(())
    }
}

/// Refuses an epoch the SQL `placement.epoch` column (a signed 64-bit integer) cannot hold, with
/// the SQLite store's [`MetadataError::Corrupt`].
fn check_epoch(epoch: u64) -> Result<(), MetadataError> {
    if i64::try_from(epoch).is_err() {
        return Err(MetadataError::Corrupt(format!(
            "epoch {epoch} does not fit a signed 64-bit column"
        )));
    }
    Ok(())
}

#[async_trait]
impl MetadataStore for MemoryStore {
    /// See [`MetadataStore::create_tenant`]. Refusals, checked in this order and writing nothing:
    /// [`MetadataError::PlacementConflict`] if no placement is stored, its epoch is not
    /// `expected_epoch` or `next.epoch` does not exceed it; [`MetadataError::TenantExists`] if the
    /// id is taken; [`MetadataError::Unavailable`] if `first_key`'s id is taken or its `tenant_id`
    /// is neither `tenant.tenant_id` nor an existing tenant; [`MetadataError::Corrupt`] if
    /// `next.epoch` exceeds `i64::MAX`.
    async fn create_tenant(
        &self,
        tenant: &TenantConfig,
        first_key: &ApiKeyRecord,
        expected_epoch: u64,
        next: &Placement,
    ) -> Result<(), MetadataError> {
        let mut state = self.lock();
        if state.epoch() != Some(expected_epoch) || next.epoch <= expected_epoch {
            return Err(MetadataError::PlacementConflict {
                expected: Some(expected_epoch),
            });
        }
        if state.tenants.contains_key(&tenant.tenant_id) {
            return Err(MetadataError::TenantExists);
        }
        state.check_new_key(first_key, Some(&tenant.tenant_id))?;
        check_epoch(next.epoch)?;
        state
            .tenants
            .insert(tenant.tenant_id.clone(), tenant.clone());
        state
            .api_keys
            .insert(first_key.key_id.clone(), first_key.clone());
        state.placement = Some(next.clone());
        Ok(())
    }

    /// See [`MetadataStore::get_tenant`]. Never fails.
    async fn get_tenant(&self, id: &str) -> Result<Option<TenantConfig>, MetadataError> {
        Ok(self.lock().tenants.get(id).cloned())
    }

    /// See [`MetadataStore::list_tenants`]: ordered by id, byte-wise. Never fails.
    async fn list_tenants(&self) -> Result<Vec<TenantConfig>, MetadataError> {
        Ok(self.lock().tenants.values().cloned().collect())
    }

    async fn update_tenant(
        &self,
        id: &str,
        default_consistency: Option<pairdb_core::Consistency>,
        rate_limit: Option<crate::RateLimit>,
    ) -> Result<Option<TenantConfig>, MetadataError> {
        let mut inner = self.lock();
        let Some(tenant) = inner.tenants.get_mut(id) else {
            return Ok(None);
        };
        if let Some(level) = default_consistency {
            tenant.default_consistency = level;
        }
        if let Some(limit) = rate_limit {
            tenant.rate_limit = limit;
        }
        Ok(Some(tenant.clone()))
    }

    /// See [`MetadataStore::insert_api_key`]. A taken key id or a missing tenant is reported as
    /// [`MetadataError::Unavailable`], as by the SQLite store, and nothing is written.
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), MetadataError> {
        let mut state = self.lock();
        state.check_new_key(key, None)?;
        state.api_keys.insert(key.key_id.clone(), key.clone());
        Ok(())
    }

    /// See [`MetadataStore::get_api_key`]: looks the id up across all tenants. Never fails.
    async fn get_api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, MetadataError> {
        Ok(self.lock().api_keys.get(key_id).cloned())
    }

    /// See [`MetadataStore::list_api_keys`]: ordered by `created_at`, then by `key_id` among keys
    /// created in the same second (both byte-wise). Never fails.
    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyRecord>, MetadataError> {
        let mut keys: Vec<ApiKeyRecord> = self
            .lock()
            .api_keys
            .values()
            .filter(|k| k.tenant_id == tenant_id)
            .cloned()
            .collect();
        // The map iterates by key id, so a stable sort by creation time keeps ids in order.
        keys.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(keys)
    }

    /// See [`MetadataStore::delete_api_key`]: deletes the key only if `tenant_id` owns it; `false`,
    /// deleting nothing, for an unknown key or another tenant's. Never fails.
    async fn delete_api_key(&self, tenant_id: &str, key_id: &str) -> Result<bool, MetadataError> {
        let mut state = self.lock();
        let owned = state
            .api_keys
            .get(key_id)
            .is_some_and(|k| k.tenant_id == tenant_id);
        if owned {
            state.api_keys.remove(key_id);
        }
        Ok(owned)
    }

    /// See [`MetadataStore::upsert_node`]: the whole record is replaced, `created_at` included.
    /// Never fails.
    async fn upsert_node(&self, node: &NodeRecord) -> Result<(), MetadataError> {
        self.lock().nodes.insert(node.node_id.clone(), node.clone());
        Ok(())
    }

    /// See [`MetadataStore::list_nodes`]: ordered by id, byte-wise. Never fails.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, MetadataError> {
        Ok(self.lock().nodes.values().cloned().collect())
    }

    /// See [`MetadataStore::placement`]: exactly the placement last installed. Never fails.
    async fn placement(&self) -> Result<Option<Placement>, MetadataError> {
        Ok(self.lock().placement.clone())
    }

    /// See [`MetadataStore::swap_placement`]: `false`, writing nothing, unless the stored epoch is
    /// `expected_epoch` and `next.epoch` exceeds it (any `next` goes when nothing is stored and
    /// `expected_epoch` is `None`). A swap that would succeed but whose `next.epoch` exceeds
    /// `i64::MAX` fails with [`MetadataError::Corrupt`], as in the SQLite store.
    async fn swap_placement(
        &self,
        expected_epoch: Option<u64>,
        next: &Placement,
    ) -> Result<bool, MetadataError> {
        let mut state = self.lock();
        let stored = state.epoch();
        let advances = stored.is_none_or(|stored| next.epoch > stored);
        if stored != expected_epoch || !advances {
            return Ok(false);
        }
        check_epoch(next.epoch)?;
        state.placement = Some(next.clone());
        Ok(true)
    }

    async fn heartbeat(
        &self,
        role: &str,
        instance: &str,
        ttl: std::time::Duration,
    ) -> Result<u32, MetadataError> {
        let now = std::time::Instant::now();
        let mut state = self.lock();
        state.instances.retain(|_, expires| *expires > now);
        state
            .instances
            .insert((role.to_owned(), instance.to_owned()), now + ttl);
        let live = state.instances.keys().filter(|(r, _)| r == role).count();
        Ok(u32::try_from(live).unwrap_or(u32::MAX).max(1))
    }

    async fn leave(&self, role: &str, instance: &str) -> Result<(), MetadataError> {
        self.lock()
            .instances
            .remove(&(role.to_owned(), instance.to_owned()));
        Ok(())
    }

    /// See [`MetadataStore::ping`]: always answers.
    async fn ping(&self) -> Result<(), MetadataError> {
        Ok(())
    }

    async fn start_job(
        &self,
        job: &JobRecord,
        placement: Option<(u64, &Placement)>,
    ) -> Result<(), MetadataError> {
        let mut state = self.lock();
        let running = state
            .jobs
            .values()
            .filter(|(j, _, _)| !j.done)
            .map(|(j, _, _)| j)
            .min_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        if let Some(j) = running {
            return Err(MetadataError::JobRunning { id: j.id.clone() });
        }
        if let Some((expected, next)) = placement {
            state.check_swap(expected, next)?;
        }
        if state.jobs.contains_key(&job.id) {
            return Err(MetadataError::Unavailable(format!(
                "job id {} is already taken",
                job.id
            )));
        }
        if let Some((_, next)) = placement {
            state.placement = Some(next.clone());
        }
        let now = std::time::Instant::now();
        state
            .jobs
            .insert(job.id.clone(), (job.clone(), String::new(), now));
        Ok(())
    }

    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, MetadataError> {
        Ok(self.lock().jobs.get(id).map(|(j, _, _)| j.clone()))
    }

    async fn delete_finished_job(&self, id: &str) -> Result<bool, MetadataError> {
        let mut s = self.lock();
        let done = s.jobs.get(id).is_some_and(|(j, _, _)| j.done);
        if done {
            s.jobs.remove(id);
        }
        Ok(done)
    }

    async fn list_jobs(&self, unfinished: bool) -> Result<Vec<JobRecord>, MetadataError> {
        let mut jobs: Vec<JobRecord> = self
            .lock()
            .jobs
            .values()
            .filter(|(j, _, _)| !unfinished || !j.done)
            .map(|(j, _, _)| j.clone())
            .collect();
        jobs.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(jobs)
    }

    async fn save_job(
        &self,
        job: &JobRecord,
        owner: &str,
        ttl: std::time::Duration,
        placement: Option<(u64, &Placement)>,
    ) -> Result<bool, MetadataError> {
        let now = std::time::Instant::now();
        let mut state = self.lock();
        let holds = state
            .jobs
            .get(&job.id)
            .is_some_and(|(j, o, until)| !j.done && (o.is_empty() || o == owner || *until <= now));
        if !holds {
            return Ok(false);
        }
        if let Some((expected, next)) = placement {
            state.check_swap(expected, next)?;
            state.placement = Some(next.clone());
        }
        if let Some(entry) = state.jobs.get_mut(&job.id) {
            entry.0.body = job.body.clone();
            entry.0.done = job.done;
            entry.1 = owner.to_owned();
            entry.2 = now + ttl;
        }
        Ok(true)
    }

    async fn delete_tenant(&self, id: &str) -> Result<bool, MetadataError> {
        let mut state = self.lock();
        state.api_keys.retain(|_, k| k.tenant_id != id);
        Ok(state.tenants.remove(id).is_some())
    }

    async fn ack_epoch(
        &self,
        instance: &str,
        epoch: u64,
        ttl: std::time::Duration,
    ) -> Result<u64, MetadataError> {
        check_epoch(epoch)?;
        let now = std::time::Instant::now();
        let mut state = self.lock();
        state.epoch_acks.retain(|_, (_, expires)| *expires > now);
        state
            .epoch_acks
            .insert(instance.to_owned(), (epoch, now + ttl));
        Ok(state
            .epoch_acks
            .values()
            .map(|(e, _)| *e)
            .min()
            .unwrap_or(epoch))
    }
}

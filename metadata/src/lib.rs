//! The metadata store of pairdb: tenants, API keys, storage nodes and placements.
//!
//! [`MetadataStore`] is the one seam; [`sqlite::SqliteStore`] implements it for the embedded
//! default, [`postgres::PostgresStore`] for production (the same queries on a twin schema), and
//! [`memory::MemoryStore`] is an in-memory store for tests and tools, with the same semantics.
//! [`api_key`] mints and verifies API keys, which the store keeps only as HMAC-SHA256 under the
//! server secret.
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod api_key;
pub mod memory;
pub mod model;
pub mod postgres;
mod rows;
pub mod sqlite;

pub use memory::MemoryStore;
pub use model::{ApiKeyRecord, JobRecord, NodeRecord, NodeState, RateLimit, TenantConfig};

use async_trait::async_trait;
use pairdb_core::Placement;

/// A metadata operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// A tenant with this id already exists.
    #[error("tenant already exists")]
    TenantExists,
    /// The placement changed since the caller read it; re-read and retry.
    #[error("placement epoch moved: expected {expected:?}")]
    PlacementConflict {
        /// The epoch the caller expected to replace.
        expected: Option<u64>,
    },
    /// The store could not be reached or answered with an error.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// Another job is still running; one runs at a time.
    #[error("job {id} is still running")]
    JobRunning {
        /// The running job.
        id: String,
    },
    /// A stored row could not be decoded.
    #[error("corrupt metadata row: {0}")]
    Corrupt(String),
}

/// Durable cluster metadata. Every method is atomic; implementations are shared between tasks.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Creates `tenant` with its first API key and installs `next` as the placement, all in one
    /// transaction, provided the stored placement's epoch is still `expected_epoch`.
    ///
    /// Fails with [`MetadataError::TenantExists`] if the id is taken and with
    /// [`MetadataError::PlacementConflict`] if the placement moved (nothing is written then).
    async fn create_tenant(
        &self,
        tenant: &TenantConfig,
        first_key: &ApiKeyRecord,
        expected_epoch: u64,
        next: &Placement,
    ) -> Result<(), MetadataError>;

    /// The tenant `id`, if it exists.
    async fn get_tenant(&self, id: &str) -> Result<Option<TenantConfig>, MetadataError>;

    /// Every tenant, ordered by id.
    async fn list_tenants(&self) -> Result<Vec<TenantConfig>, MetadataError>;

    /// Changes tenant `id`'s default consistency and rate limit, each only when given; returns
    /// the tenant as it is now, or `None` if it does not exist (nothing is written then).
    async fn update_tenant(
        &self,
        id: &str,
        default_consistency: Option<pairdb_core::Consistency>,
        rate_limit: Option<RateLimit>,
    ) -> Result<Option<TenantConfig>, MetadataError>;

    /// Stores a new API key of an existing tenant.
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), MetadataError>;

    /// The API key with `key_id`, if it exists (revoked keys are deleted, so never returned).
    async fn get_api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, MetadataError>;

    /// The tenant's API keys, oldest first.
    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyRecord>, MetadataError>;

    /// Deletes the tenant's key `key_id`; `false` if it had no such key.
    async fn delete_api_key(&self, tenant_id: &str, key_id: &str) -> Result<bool, MetadataError>;

    /// Inserts or replaces the storage node `node.node_id`.
    async fn upsert_node(&self, node: &NodeRecord) -> Result<(), MetadataError>;

    /// Every storage node, ordered by id.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, MetadataError>;

    /// The current placement, if one was ever installed.
    async fn placement(&self) -> Result<Option<Placement>, MetadataError>;

    /// Installs `next` if the stored placement's epoch is `expected_epoch` (`None`: no placement
    /// stored yet). Returns `false`, writing nothing, if it was not; `next.epoch` must exceed the
    /// stored epoch.
    async fn swap_placement(
        &self,
        expected_epoch: Option<u64>,
        next: &Placement,
    ) -> Result<bool, MetadataError>;

    /// Records that instance `instance` of `role` (`gateway`, `coordinator`) is alive for `ttl`
    /// from now, forgets the instances of `role` whose time ran out, and returns how many are
    /// alive, this one included (so at least 1). The clock is the store's where it has one
    /// (PostgreSQL), so instances on machines with skewed clocks agree.
    async fn heartbeat(
        &self,
        role: &str,
        instance: &str,
        ttl: std::time::Duration,
    ) -> Result<u32, MetadataError>;

    /// Forgets instance `instance` of `role` at once (a clean stop); nothing if it is unknown.
    async fn leave(&self, role: &str, instance: &str) -> Result<(), MetadataError>;

    /// Checks the store answers.
    async fn ping(&self) -> Result<(), MetadataError>;

    /// Creates `job` (unowned, or failing with `Unavailable` if its id exists), provided no
    /// unfinished job exists ([`MetadataError::JobRunning`] otherwise: one runs at a time), and, with
    /// `placement = Some((expected_epoch, next))`, installs `next` in the same transaction,
    /// provided the stored epoch is still `expected_epoch` — else it fails with
    /// [`MetadataError::PlacementConflict`] and writes nothing.
    async fn start_job(
        &self,
        job: &JobRecord,
        placement: Option<(u64, &Placement)>,
    ) -> Result<(), MetadataError>;

    /// The job `id`, if it exists.
    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, MetadataError>;

    /// Every job (only unfinished ones when `unfinished`), oldest first.
    async fn list_jobs(&self, unfinished: bool) -> Result<Vec<JobRecord>, MetadataError>;

    /// Saves `job`'s body and `done` flag as `owner`, who then holds the job's lease for `ttl`
    /// from now. Succeeds when the job is unowned, owned by `owner`, or its lease ran out (the
    /// clock is the store's where it has one); answers `false`, writing nothing, when another
    /// owner's lease holds, the job is done (a finished job never changes), or it does not
    /// exist. With `placement = Some((expected_epoch,
    /// next))` it installs `next` in the same transaction, as [`start_job`](Self::start_job).
    async fn save_job(
        &self,
        job: &JobRecord,
        owner: &str,
        ttl: std::time::Duration,
        placement: Option<(u64, &Placement)>,
    ) -> Result<bool, MetadataError>;

    /// Deletes job `id` if it is finished; `false` if it does not exist or is unfinished.
    async fn delete_finished_job(&self, id: &str) -> Result<bool, MetadataError>;

    /// Deletes tenant `id` with its API keys; `false` if it did not exist.
    async fn delete_tenant(&self, id: &str) -> Result<bool, MetadataError>;

    /// Records that coordinator `instance` routes with placement epoch `epoch`, for `ttl` from
    /// now; forgets coordinators whose time ran out; returns the lowest epoch a live coordinator
    /// reports, this one included.
    async fn ack_epoch(
        &self,
        instance: &str,
        epoch: u64,
        ttl: std::time::Duration,
    ) -> Result<u64, MetadataError>;
}

//! Stores that time every call: [`MeteredMetadataStore`] and [`MeteredIdempotencyStore`] wrap
//! any implementation and count into `pairdb_store_duration_seconds{store,op}` and
//! `pairdb_store_errors_total{store,op}` of a role's [`Metrics`], so an operator sees a slow or
//! failing PostgreSQL or Redis from every role that uses it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pairdb_core::{Consistency, Placement};
use pairdb_metadata::{
    ApiKeyRecord, JobRecord, MetadataError, MetadataStore, NodeRecord, RateLimit, TenantConfig,
};

use crate::idempotency::{Begin, IdempotencyStore, Recorded, StoreError};
use crate::metrics::{Metrics, StoreCalls};

/// Runs `call`, recording its duration and whether it failed under `(store, op)`.
async fn timed<T, E>(
    calls: &StoreCalls,
    op: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let result = call.await;
    calls.observe(op, started.elapsed(), result.is_err());
    result
}

/// A [`MetadataStore`] whose calls are timed under `store="metadata"`.
pub struct MeteredMetadataStore {
    inner: Arc<dyn MetadataStore>,
    calls: StoreCalls,
}

impl MeteredMetadataStore {
    /// Wraps `inner`, counting into `metrics`.
    pub fn wrap(inner: Arc<dyn MetadataStore>, metrics: &Metrics) -> Arc<dyn MetadataStore> {
        Arc::new(MeteredMetadataStore {
            inner,
            calls: metrics.store_calls("metadata"),
        })
    }
}

#[async_trait]
impl MetadataStore for MeteredMetadataStore {
    async fn create_tenant(
        &self,
        tenant: &TenantConfig,
        first_key: &ApiKeyRecord,
        expected_epoch: u64,
        next: &Placement,
    ) -> Result<(), MetadataError> {
        let call = self
            .inner
            .create_tenant(tenant, first_key, expected_epoch, next);
        timed(&self.calls, "create_tenant", call).await
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<TenantConfig>, MetadataError> {
        timed(&self.calls, "get_tenant", self.inner.get_tenant(id)).await
    }

    async fn list_tenants(&self) -> Result<Vec<TenantConfig>, MetadataError> {
        timed(&self.calls, "list_tenants", self.inner.list_tenants()).await
    }

    async fn update_tenant(
        &self,
        id: &str,
        default_consistency: Option<Consistency>,
        rate_limit: Option<RateLimit>,
    ) -> Result<Option<TenantConfig>, MetadataError> {
        let call = self
            .inner
            .update_tenant(id, default_consistency, rate_limit);
        timed(&self.calls, "update_tenant", call).await
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), MetadataError> {
        timed(
            &self.calls,
            "insert_api_key",
            self.inner.insert_api_key(key),
        )
        .await
    }

    async fn get_api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, MetadataError> {
        timed(&self.calls, "get_api_key", self.inner.get_api_key(key_id)).await
    }

    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyRecord>, MetadataError> {
        timed(
            &self.calls,
            "list_api_keys",
            self.inner.list_api_keys(tenant_id),
        )
        .await
    }

    async fn delete_api_key(&self, tenant_id: &str, key_id: &str) -> Result<bool, MetadataError> {
        let call = self.inner.delete_api_key(tenant_id, key_id);
        timed(&self.calls, "delete_api_key", call).await
    }

    async fn upsert_node(&self, node: &NodeRecord) -> Result<(), MetadataError> {
        timed(&self.calls, "upsert_node", self.inner.upsert_node(node)).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, MetadataError> {
        timed(&self.calls, "list_nodes", self.inner.list_nodes()).await
    }

    async fn placement(&self) -> Result<Option<Placement>, MetadataError> {
        timed(&self.calls, "placement", self.inner.placement()).await
    }

    async fn swap_placement(
        &self,
        expected_epoch: Option<u64>,
        next: &Placement,
    ) -> Result<bool, MetadataError> {
        let call = self.inner.swap_placement(expected_epoch, next);
        timed(&self.calls, "swap_placement", call).await
    }

    async fn heartbeat(
        &self,
        role: &str,
        instance: &str,
        ttl: Duration,
    ) -> Result<u32, MetadataError> {
        let call = self.inner.heartbeat(role, instance, ttl);
        timed(&self.calls, "heartbeat", call).await
    }

    async fn leave(&self, role: &str, instance: &str) -> Result<(), MetadataError> {
        timed(&self.calls, "leave", self.inner.leave(role, instance)).await
    }

    async fn ping(&self) -> Result<(), MetadataError> {
        timed(&self.calls, "ping", self.inner.ping()).await
    }

    async fn start_job(
        &self,
        job: &JobRecord,
        placement: Option<(u64, &Placement)>,
    ) -> Result<(), MetadataError> {
        let call = self.inner.start_job(job, placement);
        timed(&self.calls, "start_job", call).await
    }

    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, MetadataError> {
        timed(&self.calls, "get_job", self.inner.get_job(id)).await
    }

    async fn delete_finished_job(&self, id: &str) -> Result<bool, MetadataError> {
        timed(
            &self.calls,
            "delete_finished_job",
            self.inner.delete_finished_job(id),
        )
        .await
    }

    async fn list_jobs(&self, unfinished: bool) -> Result<Vec<JobRecord>, MetadataError> {
        timed(&self.calls, "list_jobs", self.inner.list_jobs(unfinished)).await
    }

    async fn save_job(
        &self,
        job: &JobRecord,
        owner: &str,
        ttl: Duration,
        placement: Option<(u64, &Placement)>,
    ) -> Result<bool, MetadataError> {
        let call = self.inner.save_job(job, owner, ttl, placement);
        timed(&self.calls, "save_job", call).await
    }

    async fn delete_tenant(&self, id: &str) -> Result<bool, MetadataError> {
        timed(&self.calls, "delete_tenant", self.inner.delete_tenant(id)).await
    }

    async fn ack_epoch(
        &self,
        instance: &str,
        epoch: u64,
        ttl: Duration,
    ) -> Result<u64, MetadataError> {
        let call = self.inner.ack_epoch(instance, epoch, ttl);
        timed(&self.calls, "ack_epoch", call).await
    }
}

/// An [`IdempotencyStore`] whose calls are timed under `store="idempotency"`.
pub struct MeteredIdempotencyStore {
    inner: Arc<dyn IdempotencyStore>,
    calls: StoreCalls,
}

impl MeteredIdempotencyStore {
    /// Wraps `inner`, counting into `metrics`.
    pub fn wrap(inner: Arc<dyn IdempotencyStore>, metrics: &Metrics) -> Arc<dyn IdempotencyStore> {
        Arc::new(MeteredIdempotencyStore {
            inner,
            calls: metrics.store_calls("idempotency"),
        })
    }
}

#[async_trait]
impl IdempotencyStore for MeteredIdempotencyStore {
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: [u8; 32],
        owner: u128,
        ttl: Duration,
    ) -> Result<Begin, StoreError> {
        let call = self.inner.begin(scope, key, fingerprint, owner, ttl);
        timed(&self.calls, "begin", call).await
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        owner: u128,
        record: Recorded,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let call = self.inner.complete(scope, key, owner, record, ttl);
        timed(&self.calls, "complete", call).await
    }

    async fn release(&self, scope: &str, key: &str, owner: u128) -> Result<(), StoreError> {
        timed(
            &self.calls,
            "release",
            self.inner.release(scope, key, owner),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::MemoryIdempotencyStore;

    #[tokio::test]
    async fn calls_and_failures_are_counted_by_store_and_op() {
        let metrics = Metrics::new();
        let metadata =
            MeteredMetadataStore::wrap(Arc::new(pairdb_metadata::MemoryStore::default()), &metrics);
        assert!(metadata.get_tenant("nobody").await.expect("get").is_none());
        let records =
            MeteredIdempotencyStore::wrap(Arc::new(MemoryIdempotencyStore::default()), &metrics);
        records
            .release("scope", "key", 7)
            .await
            .expect("release of nothing");
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"pairdb_store_duration_seconds_count{store="metadata",op="get_tenant"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"pairdb_store_duration_seconds_count{store="idempotency",op="release"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains("pairdb_store_errors_total{"), "{text}");

        let broken = MeteredIdempotencyStore::wrap(Arc::new(Unreachable), &metrics);
        assert!(broken.release("scope", "key", 7).await.is_err());
        let text = metrics.encode();
        assert!(
            text.contains(r#"pairdb_store_errors_total{store="idempotency",op="release"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"pairdb_store_duration_seconds_count{store="idempotency",op="release"} 2"#
            ),
            "{text}"
        );
    }

    struct Unreachable;

    #[async_trait]
    impl IdempotencyStore for Unreachable {
        async fn begin(
            &self,
            _: &str,
            _: &str,
            _: [u8; 32],
            _: u128,
            _: Duration,
        ) -> Result<Begin, StoreError> {
            Err(StoreError("down".into()))
        }

        async fn complete(
            &self,
            _: &str,
            _: &str,
            _: u128,
            _: Recorded,
            _: Duration,
        ) -> Result<(), StoreError> {
            Err(StoreError("down".into()))
        }

        async fn release(&self, _: &str, _: &str, _: u128) -> Result<(), StoreError> {
            Err(StoreError("down".into()))
        }
    }
}

//! Tenant, API-key and node administration.
//!
//! Creating a tenant writes the tenant, its first API key and the placement carrying its
//! replication factor in one metadata transaction, then pushes the new placement to every
//! storage node before anyone routes with it.

use std::sync::Arc;

use pairdb_core::tenant::validate_tenant_id;
use pairdb_core::{Consistency, ErrorKind};
use pairdb_metadata::model::now_rfc3339;
use pairdb_metadata::{ApiKeyRecord, MetadataError, RateLimit, TenantConfig, api_key};
use pairdb_proto::storage::HealthRequest;

use crate::cluster::Cluster;
use crate::error::CoordinatorError;
use crate::migration::Migrations;

/// Highest replication factor a tenant may ask for.
pub const MAX_REPLICATION_FACTOR: u32 = 7;
/// Replication factor of a tenant that names none.
pub const DEFAULT_REPLICATION_FACTOR: u32 = 3;

/// A tenant to create.
#[derive(Clone, Debug, Default)]
pub struct NewTenant {
    /// Requested id.
    pub tenant_id: String,
    /// 1–7 and at most the active nodes; `None` for the default (3).
    pub replication_factor: Option<u32>,
    /// `one`, `quorum` or `all`; `None` for quorum.
    pub default_consistency: Option<String>,
    /// `None` for the server default.
    pub rate_limit: Option<RateLimit>,
}

/// A storage node as reported to administrators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node id.
    pub node_id: String,
    /// gRPC address.
    pub address: String,
    /// `joining`, `active`, `leaving` or `down`.
    pub state: String,
    /// Virtual-node tokens it owns.
    pub tokens: u32,
    /// Bytes it stores (0 when it did not answer).
    pub load_bytes: u64,
}

/// Administration over the cluster's metadata.
#[derive(Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
    default_rate_limit: RateLimit,
    tenants: pairdb_middleware::TenantCache,
    migrations: Migrations,
    repairs: crate::repair::Repairs,
}

impl Admin {
    /// Administration of `cluster`; tenants created without a rate limit get `default_rate_limit`.
    /// Every change to a tenant invalidates it in `tenants` (and so in the tier it shares with the
    /// other roles).
    pub fn new(
        cluster: Arc<Cluster>,
        default_rate_limit: RateLimit,
        tenants: pairdb_middleware::TenantCache,
    ) -> Self {
        Admin {
            migrations: Migrations::new(Arc::clone(&cluster)),
            repairs: crate::repair::Repairs::new(Arc::clone(&cluster)),
            cluster,
            default_rate_limit,
            tenants,
        }
    }

    /// Membership and replication changes.
    pub fn migrations(&self) -> &Migrations {
        &self.migrations
    }

    /// Anti-entropy repairs.
    pub fn repairs(&self) -> &crate::repair::Repairs {
        &self.repairs
    }

    /// Starts changing tenant `id`'s replication factor (see
    /// [`Migrations::set_replication_factor`]); other roles see the new factor once it is in
    /// force.
    pub async fn set_replication_factor(
        &self,
        id: &str,
        rf: u32,
    ) -> Result<String, CoordinatorError> {
        self.get_tenant(id).await?;
        self.migrations.set_replication_factor(id, rf).await
    }

    /// Deletes tenant `id` (see [`Migrations::delete_tenant`]): its API keys stop working at
    /// once, on every role within its tenant cache's TTL.
    pub async fn delete_tenant(&self, id: &str) -> Result<String, CoordinatorError> {
        self.get_tenant(id).await?;
        let migration = self.migrations.delete_tenant(id).await?;
        self.cluster.hints().drop_tenant(id);
        self.invalidate(id).await;
        Ok(migration)
    }

    /// The replication factor in force for each tenant (the placement's: a change in progress
    /// shows once it completes).
    fn with_placement_rf(&self, mut tenant: TenantConfig) -> TenantConfig {
        if let Ok(view) = self.cluster.view()
            && let Some(rf) = view.placement.tenants.get(&tenant.tenant_id)
        {
            tenant.replication_factor = *rf;
        }
        tenant
    }

    /// Invalidates tenant `id` everywhere after a change. The change is made: a shared tier that
    /// cannot be reached only delays it on other roles until their entries expire.
    async fn invalidate(&self, id: &str) {
        if let Err(error) = self.tenants.invalidate(id).await {
            tracing::warn!(tenant = id, %error, "cannot invalidate the shared tenant-config cache; other roles see the change when their entries expire");
        }
    }

    /// Creates a tenant and its first API key (returned once, never stored in clear).
    ///
    /// Fails with `BadRequest` for an invalid id, replication factor or rate limit,
    /// `BadConsistency` for an unknown level, and `TenantExists` when the id is taken.
    pub async fn create_tenant(
        &self,
        req: NewTenant,
    ) -> Result<(TenantConfig, String), CoordinatorError> {
        validate_tenant_id(&req.tenant_id)
            .map_err(|e| CoordinatorError::invalid(ErrorKind::BadRequest, e.to_string()))?;
        let rf = req.replication_factor.unwrap_or(DEFAULT_REPLICATION_FACTOR);
        let default_consistency = match req.default_consistency.as_deref() {
            None | Some("") => Consistency::Quorum,
            Some(s) => s
                .parse::<Consistency>()
                .map_err(|e| CoordinatorError::invalid(ErrorKind::BadConsistency, e.to_string()))?,
        };
        let rate_limit = req.rate_limit.unwrap_or(self.default_rate_limit);
        if rate_limit.requests_per_second == 0 || rate_limit.burst == 0 {
            return Err(CoordinatorError::invalid(
                ErrorKind::BadRequest,
                "rate_limit.requests_per_second and rate_limit.burst must be at least 1",
            ));
        }
        let store = self.cluster.store();
        for _ in 0..8 {
            let Some(current) = store.placement().await? else {
                return Err(CoordinatorError::not_ready("no placement yet"));
            };
            // During a node's removal, the ring it leaves counts.
            let active = current
                .transition
                .as_ref()
                .map_or(current.nodes.len(), |t| {
                    t.nodes.len().min(current.nodes.len())
                }) as u32;
            if rf == 0 || rf > MAX_REPLICATION_FACTOR || rf > active {
                return Err(CoordinatorError::invalid(
                    ErrorKind::BadRequest,
                    format!(
                        "replication_factor must be 1–{MAX_REPLICATION_FACTOR} and at most the {active} active storage nodes"
                    ),
                ));
            }
            if store.get_tenant(&req.tenant_id).await?.is_some()
                || current.tenants.contains_key(&req.tenant_id)
            {
                return Err(CoordinatorError::TenantExists);
            }
            if self.migrations.deleting(&req.tenant_id).await? {
                return Err(CoordinatorError::invalid(
                    ErrorKind::ClusterConflict,
                    format!(
                        "tenant {} is still being deleted; its id is free once its data is gone",
                        req.tenant_id
                    ),
                ));
            }
            let tenant = TenantConfig {
                tenant_id: req.tenant_id.clone(),
                replication_factor: rf,
                default_consistency,
                rate_limit,
                created_at: now_rfc3339(),
            };
            let key = api_key::generate(&self.cluster.config().key_secret);
            let record = ApiKeyRecord {
                key_id: key.key_id.clone(),
                tenant_id: tenant.tenant_id.clone(),
                secret_hash: key.secret_hash.clone(),
                created_at: tenant.created_at.clone(),
            };
            let next = current.with_tenant(&tenant.tenant_id, rf);
            match store
                .create_tenant(&tenant, &record, current.epoch, &next)
                .await
            {
                Ok(()) => {
                    self.cluster.install(next).await;
                    // A lookup from before (an answer of "no such tenant") is not served on.
                    self.invalidate(&tenant.tenant_id).await;
                    tracing::info!(tenant = %tenant.tenant_id, rf, "tenant created");
                    return Ok((tenant, key.api_key));
                }
                Err(MetadataError::PlacementConflict { .. }) => continue,
                Err(MetadataError::TenantExists) => return Err(CoordinatorError::TenantExists),
                Err(e) => return Err(e.into()),
            }
        }
        Err(CoordinatorError::not_ready(
            "placement kept changing; retry",
        ))
    }

    /// The tenant `id`, or `TenantNotFound`.
    pub async fn get_tenant(&self, id: &str) -> Result<TenantConfig, CoordinatorError> {
        self.cluster
            .store()
            .get_tenant(id)
            .await?
            .map(|t| self.with_placement_rf(t))
            .ok_or(CoordinatorError::TenantNotFound)
    }

    /// Changes tenant `id`'s default consistency and rate limit, each only when given; returns
    /// the tenant as changed. Every role applies it within its tenant cache's TTL (1 s).
    pub async fn update_tenant(
        &self,
        id: &str,
        default_consistency: Option<&str>,
        rate_limit: Option<RateLimit>,
    ) -> Result<TenantConfig, CoordinatorError> {
        let level = default_consistency
            .map(|s| {
                s.parse::<Consistency>().map_err(|e| {
                    CoordinatorError::invalid(ErrorKind::BadConsistency, e.to_string())
                })
            })
            .transpose()?;
        if rate_limit.is_some_and(|r| r.requests_per_second == 0 || r.burst == 0) {
            return Err(CoordinatorError::invalid(
                ErrorKind::BadRequest,
                "rate_limit.requests_per_second and rate_limit.burst must be at least 1",
            ));
        }
        let updated = self
            .cluster
            .store()
            .update_tenant(id, level, rate_limit)
            .await?
            .ok_or(CoordinatorError::TenantNotFound)?;
        self.invalidate(id).await;
        Ok(updated)
    }

    /// Every tenant, by id.
    pub async fn list_tenants(&self) -> Result<Vec<TenantConfig>, CoordinatorError> {
        let tenants = self.cluster.store().list_tenants().await?;
        Ok(tenants
            .into_iter()
            .map(|t| self.with_placement_rf(t))
            .collect())
    }

    /// Mints another API key for tenant `id`: `(key id, full key)`.
    pub async fn create_api_key(&self, id: &str) -> Result<(String, String), CoordinatorError> {
        self.get_tenant(id).await?;
        let key = api_key::generate(&self.cluster.config().key_secret);
        self.cluster
            .store()
            .insert_api_key(&ApiKeyRecord {
                key_id: key.key_id.clone(),
                tenant_id: id.to_owned(),
                secret_hash: key.secret_hash,
                created_at: now_rfc3339(),
            })
            .await?;
        Ok((key.key_id, key.api_key))
    }

    /// Tenant `id`'s keys (ids and creation times only).
    pub async fn list_api_keys(&self, id: &str) -> Result<Vec<ApiKeyRecord>, CoordinatorError> {
        self.get_tenant(id).await?;
        Ok(self.cluster.store().list_api_keys(id).await?)
    }

    /// Revokes key `key_id` of tenant `id`; `ApiKeyNotFound` if the tenant has no such key.
    pub async fn delete_api_key(&self, id: &str, key_id: &str) -> Result<(), CoordinatorError> {
        self.get_tenant(id).await?;
        if self.cluster.store().delete_api_key(id, key_id).await? {
            Ok(())
        } else {
            Err(CoordinatorError::ApiKeyNotFound)
        }
    }

    /// Every storage node with its observed state and load.
    pub async fn list_nodes(&self) -> Result<Vec<NodeStatus>, CoordinatorError> {
        let view = self.cluster.view()?;
        let nodes = view.placement.all_nodes();
        // Every node is asked at once, each within its own bound.
        let probes = nodes.iter().map(|n| {
            let handle = self.cluster.pool().get(&n.id);
            async move {
                let h = handle.filter(|h| h.is_live())?;
                let mut c = h.client();
                let probe = tokio::time::timeout(
                    std::time::Duration::from_millis(500),
                    c.health(HealthRequest {}),
                );
                match probe.await {
                    Ok(Ok(resp)) => Some(resp.into_inner().load_bytes),
                    _ => None,
                }
            }
        });
        let loads = futures::future::join_all(probes).await;
        let mut out = Vec::with_capacity(nodes.len());
        for (n, load) in nodes.iter().zip(loads) {
            let membership = view
                .placement
                .membership(&n.id)
                .unwrap_or(pairdb_core::Membership::Active);
            out.push(NodeStatus {
                node_id: n.id.clone(),
                address: n.address.clone(),
                state: match load {
                    Some(_) => membership.as_str().to_owned(),
                    None => "down".to_owned(),
                },
                tokens: view.placement.vnodes,
                load_bytes: load.unwrap_or(0),
            });
        }
        Ok(out)
    }
}

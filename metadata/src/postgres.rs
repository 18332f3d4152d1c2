//! The production metadata store: PostgreSQL through sqlx.
//!
//! The schema lives in `migrations/postgres` (the twin of the SQLite schema, column for column)
//! and is applied on open through sqlx's migrator, which serialises concurrent openers with an
//! advisory lock. The queries are the SQLite store's, with `$n` placeholders.
//!
//! Writes that read before they write (`create_tenant`, `swap_placement`) take one
//! transaction-scoped advisory lock first, so they run one at a time across every process sharing
//! the database: the epoch compared is the epoch replaced, and two first placements cannot both
//! win.

use std::time::Duration;

use async_trait::async_trait;
use pairdb_core::{Consistency, Placement};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, SqlStr, Transaction};

use crate::rows::{api_key_from_row, node_from_row, placement_from_row, tenant_from_row};
use crate::sqlite::{
    INSERT_TENANT, SELECT_JOB, SELECT_JOBS, SELECT_TENANT, SELECT_TENANTS, UPDATE_TENANT,
    epoch_from_sql, epoch_to_sql, is_unique_violation, job_from_row, map_err, map_migrate_err,
};
use crate::{
    ApiKeyRecord, JobRecord, MetadataError, MetadataStore, NodeRecord, RateLimit, TenantConfig,
};

/// The advisory lock every placement-changing transaction takes ("pdb-meta").
const WRITE_LOCK: i64 = 0x7064_622d_6d65_7461;

/// How long a connection may take to be established or handed out before a call fails with
/// [`MetadataError::Unavailable`].
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Every session's `statement_timeout` and `lock_timeout`: a metadata call never takes longer
/// (a hung lock or query fails the call instead of holding a request, and its connection, for
/// ever); `idle_in_transaction_session_timeout` is 3 times as long.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "init".into(),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../../migrations/postgres/0001_init.sql")),
            false,
        ),
        Migration::new(
            2,
            "instances".into(),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../../migrations/postgres/0002_instances.sql")),
            false,
        ),
        Migration::new(
            3,
            "jobs".into(),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../../migrations/postgres/0003_jobs.sql")),
            false,
        ),
    ])
}

/// A [`MetadataStore`] kept in a PostgreSQL database. Cloning is cheap and clones share the
/// connection pool.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and brings the schema up to date.
    ///
    /// Fails with [`MetadataError::Unavailable`] if the server cannot be reached or the schema
    /// applied, and with [`MetadataError::Corrupt`] if the database holds a schema this build
    /// does not know.
    pub async fn open(url: &str) -> Result<Self, MetadataError> {
        let millis = STATEMENT_TIMEOUT.as_millis();
        let options = url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .map_err(map_err)?
            .options([
                ("statement_timeout", format!("{millis}ms")),
                ("lock_timeout", format!("{millis}ms")),
                (
                    "idle_in_transaction_session_timeout",
                    format!("{}ms", millis * 3),
                ),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(map_err)?;
        migrator().run(&pool).await.map_err(map_migrate_err)?;
        Ok(PostgresStore { pool })
    }

    /// The connection pool, for what the trait does not cover (inspection, maintenance).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection; later calls fail with [`MetadataError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a transaction holding the store's write lock.
    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, MetadataError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        Ok(tx)
    }
}

async fn stored_epoch(tx: &mut Transaction<'_, Postgres>) -> Result<Option<u64>, MetadataError> {
    let epoch: Option<i64> = sqlx::query_scalar("SELECT epoch FROM placement WHERE id = 1")
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_err)?;
    epoch.map(epoch_from_sql).transpose()
}

async fn write_placement(
    tx: &mut Transaction<'_, Postgres>,
    next: &Placement,
) -> Result<(), MetadataError> {
    let body = serde_json::to_string(next)
        .map_err(|e| MetadataError::Corrupt(format!("placement body: {e}")))?;
    sqlx::query(
        "INSERT INTO placement (id, epoch, body) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch, body = excluded.body",
    )
    .bind(epoch_to_sql(next.epoch)?)
    .bind(body)
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn insert_api_key_in<'e, E>(executor: E, key: &ApiKeyRecord) -> Result<(), MetadataError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    sqlx::query(
        "INSERT INTO api_keys (key_id, tenant_id, secret_hash, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&key.key_id)
    .bind(&key.tenant_id)
    .bind(&key.secret_hash)
    .bind(&key.created_at)
    .execute(executor)
    .await
    .map_err(|e| {
        if matches!(&e, sqlx::Error::Database(db) if db.is_foreign_key_violation()) {
            MetadataError::Unavailable(format!(
                "cannot store API key {}: no tenant {:?}",
                key.key_id, key.tenant_id
            ))
        } else if is_unique_violation(&e) {
            MetadataError::Unavailable(format!("API key id {} is already taken", key.key_id))
        } else {
            map_err(e)
        }
    })?;
    Ok(())
}

#[async_trait]
impl MetadataStore for PostgresStore {
    /// See [`MetadataStore::create_tenant`], with the SQLite store's semantics.
    async fn create_tenant(
        &self,
        tenant: &TenantConfig,
        first_key: &ApiKeyRecord,
        expected_epoch: u64,
        next: &Placement,
    ) -> Result<(), MetadataError> {
        let mut tx = self.begin_write().await?;
        if stored_epoch(&mut tx).await? != Some(expected_epoch) || next.epoch <= expected_epoch {
            tx.rollback().await.map_err(map_err)?;
            return Err(MetadataError::PlacementConflict {
                expected: Some(expected_epoch),
            });
        }
        let inserted = sqlx::query(INSERT_TENANT)
            .bind(&tenant.tenant_id)
            .bind(i64::from(tenant.replication_factor))
            .bind(tenant.default_consistency.as_str())
            .bind(i64::from(tenant.rate_limit.requests_per_second))
            .bind(i64::from(tenant.rate_limit.burst))
            .bind(&tenant.created_at)
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await.map_err(map_err)?;
                return Err(MetadataError::TenantExists);
            }
            Err(e) => return Err(map_err(e)),
        }
        insert_api_key_in(&mut *tx, first_key).await?;
        write_placement(&mut tx, next).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<TenantConfig>, MetadataError> {
        sqlx::query(SELECT_TENANT)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(tenant_from_row)
            .transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<TenantConfig>, MetadataError> {
        sqlx::query(SELECT_TENANTS)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(tenant_from_row)
            .collect()
    }

    async fn update_tenant(
        &self,
        id: &str,
        default_consistency: Option<Consistency>,
        rate_limit: Option<RateLimit>,
    ) -> Result<Option<TenantConfig>, MetadataError> {
        sqlx::query(UPDATE_TENANT)
            .bind(id)
            .bind(default_consistency.map(|c| c.as_str()))
            .bind(rate_limit.map(|r| i64::from(r.requests_per_second)))
            .bind(rate_limit.map(|r| i64::from(r.burst)))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(tenant_from_row)
            .transpose()
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), MetadataError> {
        insert_api_key_in(&self.pool, key).await
    }

    async fn get_api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, MetadataError> {
        sqlx::query(
            "SELECT key_id, tenant_id, secret_hash, created_at FROM api_keys WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(api_key_from_row)
        .transpose()
    }

    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyRecord>, MetadataError> {
        sqlx::query(
            "SELECT key_id, tenant_id, secret_hash, created_at FROM api_keys \
             WHERE tenant_id = $1 ORDER BY created_at, key_id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(api_key_from_row)
        .collect()
    }

    async fn delete_api_key(&self, tenant_id: &str, key_id: &str) -> Result<bool, MetadataError> {
        let done = sqlx::query("DELETE FROM api_keys WHERE tenant_id = $1 AND key_id = $2")
            .bind(tenant_id)
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn upsert_node(&self, node: &NodeRecord) -> Result<(), MetadataError> {
        sqlx::query(
            "INSERT INTO nodes (node_id, address, state, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, \
             state = excluded.state, created_at = excluded.created_at",
        )
        .bind(&node.node_id)
        .bind(&node.address)
        .bind(node.state.as_str())
        .bind(&node.created_at)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, MetadataError> {
        sqlx::query("SELECT node_id, address, state, created_at FROM nodes ORDER BY node_id")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(node_from_row)
            .collect()
    }

    async fn placement(&self) -> Result<Option<Placement>, MetadataError> {
        sqlx::query("SELECT epoch, body FROM placement WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(placement_from_row)
            .transpose()
    }

    async fn swap_placement(
        &self,
        expected_epoch: Option<u64>,
        next: &Placement,
    ) -> Result<bool, MetadataError> {
        let mut tx = self.begin_write().await?;
        let stored = stored_epoch(&mut tx).await?;
        let advances = stored.is_none_or(|stored| next.epoch > stored);
        if stored != expected_epoch || !advances {
            tx.rollback().await.map_err(map_err)?;
            return Ok(false);
        }
        write_placement(&mut tx, next).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn heartbeat(
        &self,
        role: &str,
        instance: &str,
        ttl: std::time::Duration,
    ) -> Result<u32, MetadataError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("DELETE FROM instances WHERE expires_at <= now()")
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO instances (role, instance_id, expires_at) \
             VALUES ($1, $2, now() + $3 * interval '1 millisecond') \
             ON CONFLICT (role, instance_id) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(role)
        .bind(instance)
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        // Counted after the commit: two instances registering at once each see the other once
        // both committed, rather than each missing the other's uncommitted row.
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM instances WHERE role = $1 AND expires_at > now()",
        )
        .bind(role)
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(u32::try_from(live).unwrap_or(u32::MAX).max(1))
    }

    async fn leave(&self, role: &str, instance: &str) -> Result<(), MetadataError> {
        sqlx::query("DELETE FROM instances WHERE role = $1 AND instance_id = $2")
            .bind(role)
            .bind(instance)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), MetadataError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn start_job(
        &self,
        job: &JobRecord,
        placement: Option<(u64, &Placement)>,
    ) -> Result<(), MetadataError> {
        let mut tx = self.begin_write().await?;
        let running: Option<String> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE NOT done ORDER BY created_at, id LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        if let Some(id) = running {
            tx.rollback().await.map_err(map_err)?;
            return Err(MetadataError::JobRunning { id });
        }
        if let Some((expected, next)) = placement {
            swap_in(&mut tx, expected, next).await?;
        }
        sqlx::query(
            "INSERT INTO jobs (id, kind, body, done, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&job.id)
        .bind(&job.kind)
        .bind(&job.body)
        .bind(job.done)
        .bind(&job.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, MetadataError> {
        let row = sqlx::query(SELECT_JOB)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn delete_finished_job(&self, id: &str) -> Result<bool, MetadataError> {
        let deleted = sqlx::query("DELETE FROM jobs WHERE id = $1 AND done")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn list_jobs(&self, unfinished: bool) -> Result<Vec<JobRecord>, MetadataError> {
        let rows = sqlx::query(SELECT_JOBS)
            .bind(unfinished)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(job_from_row).collect()
    }

    async fn save_job(
        &self,
        job: &JobRecord,
        owner: &str,
        ttl: Duration,
        placement: Option<(u64, &Placement)>,
    ) -> Result<bool, MetadataError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.begin_write().await?;
        let saved = sqlx::query(
            "UPDATE jobs SET body = $1, done = $2, owner = $3, \
             lease_until = now() + $4 * interval '1 millisecond' \
             WHERE id = $5 AND NOT done AND (owner = '' OR owner = $3 OR lease_until <= now())",
        )
        .bind(&job.body)
        .bind(job.done)
        .bind(owner)
        .bind(ttl_ms)
        .bind(&job.id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if saved.rows_affected() == 0 {
            tx.rollback().await.map_err(map_err)?;
            return Ok(false);
        }
        if let Some((expected, next)) = placement {
            swap_in(&mut tx, expected, next).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn delete_tenant(&self, id: &str) -> Result<bool, MetadataError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM api_keys WHERE tenant_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let gone = sqlx::query("DELETE FROM tenants WHERE tenant_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(gone.rows_affected() > 0)
    }

    async fn ack_epoch(
        &self,
        instance: &str,
        epoch: u64,
        ttl: Duration,
    ) -> Result<u64, MetadataError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("DELETE FROM epoch_acks WHERE expires_at <= now()")
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO epoch_acks (instance_id, epoch, expires_at) \
             VALUES ($1, $2, now() + $3 * interval '1 millisecond') \
             ON CONFLICT (instance_id) DO UPDATE SET epoch = excluded.epoch, \
             expires_at = excluded.expires_at",
        )
        .bind(instance)
        .bind(epoch_to_sql(epoch)?)
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        // In the transaction: this instance's own row is always counted.
        let lowest: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MIN(epoch), $1) FROM epoch_acks WHERE expires_at > now() OR instance_id = $2",
        )
        .bind(epoch_to_sql(epoch)?)
        .bind(instance)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        epoch_from_sql(lowest)
    }
}

/// Installs `next` inside `tx` if the stored epoch is `expected` and `next` advances it.
async fn swap_in(
    tx: &mut Transaction<'_, Postgres>,
    expected: u64,
    next: &Placement,
) -> Result<(), MetadataError> {
    let stored = stored_epoch(tx).await?;
    if stored != Some(expected) || next.epoch <= expected {
        return Err(MetadataError::PlacementConflict {
            expected: Some(expected),
        });
    }
    write_placement(tx, next).await
}

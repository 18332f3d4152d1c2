//! The embedded metadata store: SQLite through sqlx.
//!
//! The schema lives in `migrations/sqlite` and is applied on open through sqlx's migrator (recorded
//! in `_sqlx_migrations`). Every query is written with `$n` placeholders and portable SQL, so the
//! PostgreSQL store can reuse the text against its twin schema in `migrations/postgres`.
//!
//! Writes that read before they write (`create_tenant`, `swap_placement`) run in a
//! `BEGIN IMMEDIATE` transaction: SQLite takes the write lock at `BEGIN`, so the epoch compared is
//! the epoch replaced, and concurrent writers queue on the busy timeout instead of failing when a
//! deferred transaction tries to upgrade its read lock.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use pairdb_core::{Consistency, Placement};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{SqlStr, Sqlite, Transaction};

use crate::rows::{api_key_from_row, node_from_row, placement_from_row, tenant_from_row};
use crate::{
    ApiKeyRecord, JobRecord, MetadataError, MetadataStore, NodeRecord, RateLimit, TenantConfig,
};

/// How long a statement waits for another connection's write lock before failing with
/// [`MetadataError::Unavailable`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema migrations, embedded at build time from `migrations/sqlite`.
///
/// Built by hand because `sqlx::migrate!` needs sqlx's `macros` feature; version and description
/// follow the file names (`0001_init.sql` → version 1, `init`) and the checksum is that of the
/// file's text, exactly as `migrate!` would record them, so switching to the macro later finds the
/// same rows in `_sqlx_migrations`.
/// Attempts at applying migrations before giving up (see [`SqliteStore::open`]).
const MIGRATION_ATTEMPTS: u64 = 5;

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "init".into(),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../../migrations/sqlite/0001_init.sql")),
            false,
        ),
        Migration::new(
            2,
            "instances".into(),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../../migrations/sqlite/0002_instances.sql")),
            false,
        ),
        Migration::new(
            3,
            "jobs".into(),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../../migrations/sqlite/0003_jobs.sql")),
            false,
        ),
    ])
}

/// A [`MetadataStore`] kept in one SQLite database.
///
/// Cloning is cheap and clones share the connection pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `url`, e.g. `sqlite://data/meta.db`, and
    /// brings its schema up to date.
    ///
    /// The database runs in WAL mode with foreign keys enforced and a [`BUSY_TIMEOUT`]. For an
    /// in-memory database use [`open_in_memory`](Self::open_in_memory): a pool over
    /// `sqlite::memory:` would not keep its data alive between connections reliably.
    ///
    /// Fails with [`MetadataError::Unavailable`] if the URL is malformed or the file cannot be
    /// opened or migrated, and with [`MetadataError::Corrupt`] if the file holds a schema this
    /// build does not know (an applied migration that is missing here or was modified).
    pub async fn open(url: &str) -> Result<Self, MetadataError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(map_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .connect_with(options)
            .await
            .map_err(map_err)?;
        Self::migrate(pool).await
    }

    /// Opens a fresh, empty, private in-memory database (for tests and throwaway nodes).
    ///
    /// The pool holds exactly one connection that never expires, because the database lives only
    /// as long as a connection to it: everything is lost when the store (and its clones) is
    /// dropped. Operations are therefore serialized.
    pub async fn open_in_memory() -> Result<Self, MetadataError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(map_err)?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(map_err)?;
        Self::migrate(pool).await
    }

    /// Brings the schema up to date. Processes opening one file at the same moment (a coordinator
    /// and a gateway sharing it) may race to apply the same migration: the loser's attempt fails
    /// once the winner commits, and its retry then finds the migration applied.
    async fn migrate(pool: SqlitePool) -> Result<Self, MetadataError> {
        let mut attempt = 0;
        loop {
            match migrator().run(&pool).await {
                Ok(()) => return Ok(SqliteStore { pool }),
                Err(e) => {
                    let err = map_migrate_err(e);
                    attempt += 1;
                    if attempt >= MIGRATION_ATTEMPTS || matches!(err, MetadataError::Corrupt(_)) {
                        return Err(err);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
            }
        }
    }

    /// Closes every connection, waiting for those in use to be returned; later calls fail with
    /// [`MetadataError::Unavailable`]. Dropping the store without closing is safe too (committed
    /// data is durable either way); closing just releases the file promptly.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a transaction that holds SQLite's write lock from its first statement.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, MetadataError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }
}

/// Maps a sqlx error: undecodable rows are [`MetadataError::Corrupt`], everything else (I/O, pool,
/// busy database, constraint violations not handled by the caller) [`MetadataError::Unavailable`].
pub(crate) fn map_err(e: sqlx::Error) -> MetadataError {
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => MetadataError::Corrupt(e.to_string()),
        other => MetadataError::Unavailable(other.to_string()),
    }
}

pub(crate) fn map_migrate_err(e: sqlx::migrate::MigrateError) -> MetadataError {
    use sqlx::migrate::MigrateError;
    match e {
        MigrateError::Execute(e) => map_err(e),
        MigrateError::VersionMissing(_)
        | MigrateError::VersionMismatch(_)
        | MigrateError::Dirty(_) => MetadataError::Corrupt(format!("schema: {e}")),
        other => MetadataError::Unavailable(format!("schema migration failed: {other}")),
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// `u64` → SQL integer; epochs beyond `i64::MAX` cannot be stored.
pub(crate) fn epoch_to_sql(epoch: u64) -> Result<i64, MetadataError> {
    i64::try_from(epoch).map_err(|_| {
        MetadataError::Corrupt(format!("epoch {epoch} does not fit a signed 64-bit column"))
    })
}

/// SQL integer → `u64`, rejecting negative stored epochs.
pub(crate) fn epoch_from_sql(epoch: i64) -> Result<u64, MetadataError> {
    u64::try_from(epoch)
        .map_err(|_| MetadataError::Corrupt(format!("negative placement epoch {epoch}")))
}

pub(crate) const INSERT_TENANT: &str = "INSERT INTO tenants \
     (tenant_id, replication_factor, default_consistency, rate_rps, rate_burst, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";

pub(crate) const SELECT_TENANT: &str = "SELECT \
     tenant_id, replication_factor, default_consistency, rate_rps, rate_burst, created_at \
     FROM tenants WHERE tenant_id = $1";

pub(crate) const UPDATE_TENANT: &str = "UPDATE tenants SET \
     default_consistency = COALESCE($2, default_consistency), \
     rate_rps = COALESCE($3, rate_rps), \
     rate_burst = COALESCE($4, rate_burst) \
     WHERE tenant_id = $1 \
     RETURNING tenant_id, replication_factor, default_consistency, rate_rps, rate_burst, created_at";

pub(crate) const SELECT_TENANTS: &str = "SELECT \
     tenant_id, replication_factor, default_consistency, rate_rps, rate_burst, created_at \
     FROM tenants ORDER BY tenant_id";

/// The stored placement epoch, read inside `tx`.
async fn stored_epoch(tx: &mut Transaction<'_, Sqlite>) -> Result<Option<u64>, MetadataError> {
    let epoch: Option<i64> = sqlx::query_scalar("SELECT epoch FROM placement WHERE id = 1")
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_err)?;
    epoch.map(epoch_from_sql).transpose()
}

/// Writes `next` as the one placement row, inside `tx`.
async fn write_placement(
    tx: &mut Transaction<'_, Sqlite>,
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
    E: sqlx::Executor<'e, Database = Sqlite>,
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
impl MetadataStore for SqliteStore {
    /// See [`MetadataStore::create_tenant`]. The placement check comes first: when both the epoch
    /// moved and the id is taken, the error is [`MetadataError::PlacementConflict`]. A `next` whose
    /// epoch does not exceed `expected_epoch` is also refused with `PlacementConflict`, as is the
    /// call when no placement is stored at all. `first_key` is stored as given (its `tenant_id`
    /// should be `tenant.tenant_id`).
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

    /// See [`MetadataStore::insert_api_key`]. A missing tenant or a taken key id is reported as
    /// [`MetadataError::Unavailable`] (the trait has no variant for either; both are caller bugs).
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

    /// See [`MetadataStore::list_api_keys`]: ordered by `created_at`, then by `key_id` among keys
    /// created in the same second.
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

    /// See [`MetadataStore::upsert_node`]: the whole row is replaced, `created_at` included.
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

    /// See [`MetadataStore::placement`]. A body that does not parse, or whose epoch disagrees
    /// with the row's epoch column, is [`MetadataError::Corrupt`].
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
        ttl: Duration,
    ) -> Result<u32, MetadataError> {
        // One machine's clock: SQLite is shared only by processes on one host.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("DELETE FROM instances WHERE expires_at_ms <= ?1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO instances (role, instance_id, expires_at_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (role, instance_id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms",
        )
        .bind(role)
        .bind(instance)
        .bind(expires)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM instances WHERE role = ?1")
            .bind(role)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(u32::try_from(live).unwrap_or(u32::MAX).max(1))
    }

    async fn leave(&self, role: &str, instance: &str) -> Result<(), MetadataError> {
        sqlx::query("DELETE FROM instances WHERE role = ?1 AND instance_id = ?2")
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
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let mut tx = self.begin_write().await?;
        let saved = sqlx::query(
            "UPDATE jobs SET body = $1, done = $2, owner = $3, lease_until_ms = $4 \
             WHERE id = $5 AND NOT done AND (owner = '' OR owner = $3 OR lease_until_ms <= $6)",
        )
        .bind(&job.body)
        .bind(job.done)
        .bind(owner)
        .bind(until)
        .bind(&job.id)
        .bind(now)
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
        let now = now_ms();
        let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM epoch_acks WHERE expires_at_ms <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO epoch_acks (instance_id, epoch, expires_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (instance_id) DO UPDATE SET epoch = excluded.epoch, \
             expires_at_ms = excluded.expires_at_ms",
        )
        .bind(instance)
        .bind(epoch_to_sql(epoch)?)
        .bind(expires)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let lowest: i64 = sqlx::query_scalar("SELECT MIN(epoch) FROM epoch_acks")
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        epoch_from_sql(lowest)
    }
}

/// Installs `next` inside `tx` if the stored epoch is `expected` and `next` advances it.
async fn swap_in(
    tx: &mut Transaction<'_, Sqlite>,
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

/// Milliseconds since the Unix epoch by this machine's clock (SQLite is shared only by
/// processes on one host).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The columns of a job, by id.
pub(crate) const SELECT_JOB: &str =
    "SELECT id, kind, body, done, created_at FROM jobs WHERE id = $1";
/// Every job (or only unfinished ones when `$1`), oldest first.
pub(crate) const SELECT_JOBS: &str = "SELECT id, kind, body, done, created_at FROM jobs \
     WHERE (NOT $1) OR (NOT done) ORDER BY created_at, id";

pub(crate) fn job_from_row<R>(row: &R) -> Result<JobRecord, MetadataError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(JobRecord {
        id: row.try_get("id").map_err(map_err)?,
        kind: row.try_get("kind").map_err(map_err)?,
        body: row.try_get("body").map_err(map_err)?,
        done: row.try_get("done").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
    })
}

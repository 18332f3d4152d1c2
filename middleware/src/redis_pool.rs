//! [`Redis`]: one connection pool to one Redis, shared by the Redis-backed stores of a process
//! (idempotency records, the tenant-config cache); every call bounded by [`CALL_TIMEOUT`], so a
//! hung server fails calls instead of holding requests.

use std::time::Duration;

use deadpool_redis::redis;
use deadpool_redis::{Config, Pool, Runtime};

use crate::idempotency::StoreError;

/// The longest a connection may take to be made or handed out, and a call to be answered.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// A connection pool to one Redis. Cheap to clone (clones share the pool): a process makes one
/// per URL and builds every Redis-backed store on it.
#[derive(Clone)]
pub struct Redis {
    pub(crate) pool: Pool,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").finish_non_exhaustive()
    }
}

impl Redis {
    /// A pool for `url` (`redis://host:port/db`), once the server answered a `PING`.
    pub async fn connect(url: &str) -> Result<Redis, StoreError> {
        let pool = pool(url)?;
        ping(&pool).await?;
        Ok(Redis { pool })
    }

    /// A pool for `url` without waiting for the server: only a malformed URL fails. If the
    /// server does not answer a `PING` now, that is logged — calls fail (bounded) until it
    /// answers — so a role can start before its Redis does.
    pub async fn connect_lazy(url: &str) -> Result<Redis, StoreError> {
        let pool = pool(url)?;
        if let Err(error) = ping(&pool).await {
            tracing::warn!(%error, "Redis does not answer yet; its calls fail until it does");
        }
        Ok(Redis { pool })
    }
}

fn pool(url: &str) -> Result<Pool, StoreError> {
    let mut config = Config::from_url(url);
    config.pool = Some(deadpool_redis::PoolConfig {
        timeouts: deadpool_redis::Timeouts {
            wait: Some(CALL_TIMEOUT),
            create: Some(CALL_TIMEOUT),
            recycle: Some(CALL_TIMEOUT),
        },
        ..deadpool_redis::PoolConfig::default()
    });
    config
        .create_pool(Some(Runtime::Tokio1))
        .map_err(unavailable)
}

async fn ping(pool: &Pool) -> Result<(), StoreError> {
    bounded(async {
        let mut conn = pool.get().await.map_err(unavailable)?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    })
    .await
}

/// `call`, failed with [`StoreError`] if Redis takes longer than [`CALL_TIMEOUT`].
pub(crate) async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| StoreError(format!("Redis did not answer within {CALL_TIMEOUT:?}")))?
}

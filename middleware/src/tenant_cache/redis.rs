//! [`RedisTenantConfigCache`]: the shared tier of the tenant-config cache in Redis.
//!
//! Two keys per tenant (tenant ids hold no `:`):
//!
//! ```text
//! pairdb:tenant-gen:<id>   the generation, an integer INCRed by every invalidation (absent: 0)
//! pairdb:tenant:<id>       generation u64 LE | JSON of the tenant, or `null` (no such tenant),
//!                          expiring after the fill's TTL
//! ```
//!
//! A lookup reads both and the entry's remaining time in one round trip, and serves the entry
//! only if its generation is the current one; a value it cannot decode is a miss (and is
//! overwritten by the next fill).

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::Pool;
use deadpool_redis::redis;
use pairdb_metadata::TenantConfig;

use super::{Lookup, TenantConfigCache};
use crate::idempotency::StoreError;
use crate::redis_pool::{bounded, unavailable};

/// The shared tier in Redis. Cheap to clone (a connection pool).
#[derive(Clone)]
pub struct RedisTenantConfigCache {
    pool: Pool,
}

impl std::fmt::Debug for RedisTenantConfigCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTenantConfigCache")
            .finish_non_exhaustive()
    }
}

fn entry_key(id: &str) -> String {
    format!("pairdb:tenant:{id}")
}

fn generation_key(id: &str) -> String {
    format!("pairdb:tenant-gen:{id}")
}

/// Decodes an entry's value: its generation and the tenant, `None` if malformed.
fn decode(value: &[u8]) -> Option<(u64, Option<TenantConfig>)> {
    let (generation, json) = value.split_first_chunk::<8>()?;
    let tenant = serde_json::from_slice(json).ok()?;
    Some((u64::from_le_bytes(*generation), tenant))
}

fn encode(generation: u64, tenant: &Option<TenantConfig>) -> Result<Vec<u8>, StoreError> {
    let mut value = generation.to_le_bytes().to_vec();
    serde_json::to_writer(&mut value, tenant).map_err(unavailable)?;
    Ok(value)
}

impl RedisTenantConfigCache {
    /// Connects to `url` (`redis://host:port/db`), checking the server answers.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self::new(&crate::Redis::connect(url).await?))
    }

    /// The tenant-config cache on `redis` (sharing its pool).
    pub fn new(redis: &crate::Redis) -> Self {
        RedisTenantConfigCache {
            pool: redis.pool.clone(),
        }
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, StoreError> {
        self.pool.get().await.map_err(unavailable)
    }
}

#[async_trait]
impl TenantConfigCache for RedisTenantConfigCache {
    async fn lookup(&self, id: &str) -> Result<Lookup, StoreError> {
        bounded(async {
            let mut conn = self.conn().await?;
            let ((entry, generation), remaining): ((Option<Vec<u8>>, Option<u64>), i64) =
                redis::pipe()
                    .cmd("MGET")
                    .arg(entry_key(id))
                    .arg(generation_key(id))
                    .cmd("PTTL")
                    .arg(entry_key(id))
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
            let generation = generation.unwrap_or(0);
            Ok(match entry.as_deref().and_then(decode) {
                // An entry always has a TTL; one without (PTTL -1) or already gone is a miss.
                Some((filled, tenant)) if filled == generation && remaining > 0 => Lookup::Hit {
                    tenant,
                    remaining: Duration::from_millis(remaining.unsigned_abs()),
                },
                _ => Lookup::Miss { generation },
            })
        })
        .await
    }

    async fn fill(
        &self,
        id: &str,
        generation: u64,
        tenant: &Option<TenantConfig>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let value = encode(generation, tenant)?;
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        bounded(async {
            let mut conn = self.conn().await?;
            redis::cmd("SET")
                .arg(entry_key(id))
                .arg(value)
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)
        })
        .await
    }

    async fn invalidate(&self, id: &str) -> Result<(), StoreError> {
        bounded(async {
            let mut conn = self.conn().await?;
            redis::pipe()
                .atomic()
                .cmd("INCR")
                .arg(generation_key(id))
                .ignore()
                .cmd("DEL")
                .arg(entry_key(id))
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_entries_are_misses_not_errors() {
        for bad in [&b""[..], b"1234567", b"12345678{", b"12345678\xff"] {
            assert!(decode(bad).is_none(), "{bad:?}");
        }
        let tenant = None;
        let value = encode(7, &tenant).expect("encode");
        assert_eq!(decode(&value), Some((7, None)));
    }
}

//! [`RedisIdempotencyStore`]: idempotency records in Redis, shared by every gateway, so a retry
//! through another gateway is replayed too (DESIGN §3; run Redis with persistence, AOF).
//!
//! One key per `(tenant, idempotency key)`, `pairdb:idem:<tenant>:<key>` (tenant ids hold no
//! `:`), expiring with its marker or record. Its value:
//!
//! ```text
//! marker:  'I' | owner (16 bytes) | fingerprint (32 bytes)
//! record:  'D' | fingerprint (32) | status u16 LE | fields (the headers) | body (the rest)
//!          'T' | fingerprint (32) | status u16 LE | fields (the headers)
//!              | fields (the trailers: a gRPC answer's) | body (the rest)
//! fields:  count u16 LE | per field: name length u16 LE, name, value length u32 LE, value
//! ```
//!
//! The marker is taken with `SET NX PX`; completing and releasing compare the owner and replace
//! or delete in one Lua script, so a request whose marker expired and was taken by another never
//! overwrites that one.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::Pool;
use deadpool_redis::redis::{self, Value};

use super::store::{Begin, IdempotencyStore, Recorded, StoreError};

pub use crate::redis_pool::CALL_TIMEOUT;
use crate::redis_pool::{bounded, unavailable};

const MARKER: u8 = b'I';
const RECORD: u8 = b'D';
const RECORD_WITH_TRAILERS: u8 = b'T';

/// Replaces the value with ARGV[2] (expiring in ARGV[3] ms) if it is still ARGV[1]'s marker.
const COMPLETE: &str = "local v = redis.call('GET', KEYS[1]) \
    if v and string.sub(v, 1, 17) == ARGV[1] then \
      redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end return 0";

/// Deletes the key if it is still ARGV[1]'s marker.
const RELEASE: &str = "local v = redis.call('GET', KEYS[1]) \
    if v and string.sub(v, 1, 17) == ARGV[1] then \
      redis.call('DEL', KEYS[1]) return 1 end return 0";

/// Idempotency records in Redis. Cheap to clone (a connection pool).
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    pool: Pool,
}

impl std::fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisIdempotencyStore")
            .finish_non_exhaustive()
    }
}

impl RedisIdempotencyStore {
    /// Connects to `url` (`redis://host:port/db`), checking the server answers.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self::new(&crate::Redis::connect(url).await?))
    }

    /// The idempotency records on `redis` (sharing its pool).
    pub fn new(redis: &crate::Redis) -> Self {
        RedisIdempotencyStore {
            pool: redis.pool.clone(),
        }
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, StoreError> {
        self.pool.get().await.map_err(unavailable)
    }
}

fn redis_key(scope: &str, key: &str) -> String {
    format!("pairdb:idem:{scope}:{key}")
}

fn owner_prefix(owner: u128) -> Vec<u8> {
    let mut v = Vec::with_capacity(17);
    v.push(MARKER);
    v.extend_from_slice(&owner.to_le_bytes());
    v
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Encodes a record as the module docs say.
pub fn encode_record(r: &Recorded) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + r.body.len());
    out.push(if r.trailers.is_empty() {
        RECORD
    } else {
        RECORD_WITH_TRAILERS
    });
    out.extend_from_slice(&r.fingerprint);
    out.extend_from_slice(&r.status.to_le_bytes());
    encode_fields(&mut out, &r.headers);
    if !r.trailers.is_empty() {
        encode_fields(&mut out, &r.trailers);
    }
    out.extend_from_slice(&r.body);
    out
}

/// A count, then each field's name and value (fields too long to encode are left out).
fn encode_fields(out: &mut Vec<u8>, fields: &[(String, Vec<u8>)]) {
    let fields: Vec<&(String, Vec<u8>)> = fields
        .iter()
        .filter(|(n, v)| n.len() <= usize::from(u16::MAX) && u32::try_from(v.len()).is_ok())
        .take(usize::from(u16::MAX))
        .collect();
    out.extend_from_slice(&(fields.len() as u16).to_le_bytes());
    for (name, value) in fields {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
}

fn decode_fields(rest: &mut &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let count = u16::from_le_bytes(take(rest, 2)?.try_into().ok()?);
    let mut fields = Vec::with_capacity(usize::from(count).min(64));
    for _ in 0..count {
        let len = u16::from_le_bytes(take(rest, 2)?.try_into().ok()?);
        let name = std::str::from_utf8(take(rest, usize::from(len))?).ok()?;
        let len = u32::from_le_bytes(take(rest, 4)?.try_into().ok()?);
        let value = take(rest, usize::try_from(len).ok()?)?;
        fields.push((name.to_owned(), value.to_vec()));
    }
    Some(fields)
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = (bytes.get(..n)?, bytes.get(n..)?);
    *bytes = tail;
    Some(head)
}

/// Decodes a stored value: `None` if it is neither a marker nor a record (never panics).
pub fn decode(value: &[u8]) -> Option<Begin> {
    let mut rest = value;
    match take(&mut rest, 1)? {
        [MARKER] => {
            take(&mut rest, 16)?;
            let fingerprint: [u8; 32] = take(&mut rest, 32)?.try_into().ok()?;
            rest.is_empty().then_some(Begin::InFlight { fingerprint })
        }
        [tag @ (RECORD | RECORD_WITH_TRAILERS)] => {
            let fingerprint: [u8; 32] = take(&mut rest, 32)?.try_into().ok()?;
            let status = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?);
            let headers = decode_fields(&mut rest)?;
            let trailers = if *tag == RECORD_WITH_TRAILERS {
                decode_fields(&mut rest)?
            } else {
                Vec::new()
            };
            Some(Begin::Done(Recorded {
                fingerprint,
                status,
                headers,
                body: Bytes::copy_from_slice(rest),
                trailers,
            }))
        }
        _ => None,
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: [u8; 32],
        owner: u128,
        ttl: Duration,
    ) -> Result<Begin, StoreError> {
        let began = bounded(self.begin_unbounded(scope, key, fingerprint, owner, ttl)).await;
        if began.is_err() {
            // The `SET` may have landed before the answer was lost: the caller refuses the
            // request, so release the marker it may hold (best effort), or retries would see
            // it in flight until its TTL.
            let store = self.clone();
            let (scope, key) = (scope.to_owned(), key.to_owned());
            tokio::spawn(async move {
                let _ = bounded(store.release_unbounded(&scope, &key, owner)).await;
            });
        }
        began
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        owner: u128,
        record: Recorded,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        bounded(self.complete_unbounded(scope, key, owner, record, ttl)).await
    }

    async fn release(&self, scope: &str, key: &str, owner: u128) -> Result<(), StoreError> {
        bounded(self.release_unbounded(scope, key, owner)).await
    }
}

impl RedisIdempotencyStore {
    async fn begin_unbounded(
        &self,
        scope: &str,
        key: &str,
        fingerprint: [u8; 32],
        owner: u128,
        ttl: Duration,
    ) -> Result<Begin, StoreError> {
        let k = redis_key(scope, key);
        let mut marker = owner_prefix(owner);
        marker.extend_from_slice(&fingerprint);
        let mut conn = self.conn().await?;
        // A key that expires between the failed SET and the GET is taken on the next round.
        for _ in 0..3 {
            let set: Value = redis::cmd("SET")
                .arg(&k)
                .arg(&marker)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if !matches!(set, Value::Nil) {
                return Ok(Begin::Started);
            }
            let stored: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&k)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if let Some(stored) = stored {
                return decode(&stored)
                    .ok_or_else(|| StoreError(format!("undecodable idempotency record {k}")));
            }
        }
        Err(StoreError(format!("idempotency key {k} keeps changing")))
    }

    async fn complete_unbounded(
        &self,
        scope: &str,
        key: &str,
        owner: u128,
        record: Recorded,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd("EVAL")
            .arg(COMPLETE)
            .arg(1)
            .arg(redis_key(scope, key))
            .arg(owner_prefix(owner))
            .arg(encode_record(&record))
            .arg(millis(ttl))
            .query_async::<i64>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn release_unbounded(
        &self,
        scope: &str,
        key: &str,
        owner: u128,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(redis_key(scope, key))
            .arg(owner_prefix(owner))
            .query_async::<i64>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_never_panics() {
        let r = Recorded {
            fingerprint: [7; 32],
            status: 201,
            headers: vec![
                ("x-a".into(), vec![0, 255, b'v']),
                ("content-type".into(), b"text/plain".to_vec()),
            ],
            body: Bytes::from_static(b"\x00body\xff"),
            trailers: Vec::new(),
        };
        let with_trailers = Recorded {
            trailers: vec![("grpc-status".into(), b"0".to_vec())],
            ..r.clone()
        };
        for r in [r, with_trailers] {
            let encoded = encode_record(&r);
            assert_eq!(decode(&encoded), Some(Begin::Done(r)));
            for cut in 0..encoded.len() {
                let _ = decode(encoded.get(..cut).unwrap_or_default());
            }
        }
        let mut marker = owner_prefix(9);
        marker.extend_from_slice(&[3; 32]);
        assert_eq!(
            decode(&marker),
            Some(Begin::InFlight {
                fingerprint: [3; 32]
            })
        );
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"Zjunk"), None);
    }
}

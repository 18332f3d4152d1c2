//! Where idempotency records live: the [`IdempotencyStore`] trait, and [`MemoryIdempotencyStore`],
//! the in-process store of the embedded default (Redis implements the same trait in production).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

/// A recorded response: what a replay answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The request's fingerprint (a reuse of the key with another request is refused).
    pub fingerprint: [u8; 32],
    /// HTTP status.
    pub status: u16,
    /// Response headers, in order (names lowercase).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Response body.
    pub body: Bytes,
    /// Response trailers, in order (names lowercase): a gRPC answer's `grpc-status` and the
    /// rest; empty for HTTP answers.
    pub trailers: Vec<(String, Vec<u8>)>,
}

impl Recorded {
    /// Bytes the record holds, roughly.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .chain(&self.trailers)
                .map(|(n, v)| n.len() + v.len() + 16)
                .sum::<usize>()
            + 64
    }
}

/// What [`IdempotencyStore::begin`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// Nothing was there: the caller now holds the in-flight marker and runs the request.
    Started,
    /// Another request with the key holds the marker; it had this fingerprint.
    InFlight {
        /// The fingerprint of the request in flight.
        fingerprint: [u8; 32],
    },
    /// The key's request completed; this is its response.
    Done(Recorded),
}

/// An idempotency store failure: the layer fails closed (503) on it.
#[derive(Debug, thiserror::Error)]
#[error("idempotency store unavailable: {0}")]
pub struct StoreError(pub String);

/// Records per `(scope, key)`: an in-flight marker owned by one request, then the response.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Takes the in-flight marker of `(scope, key)` for `owner` (for `ttl`, after which another
    /// request may take it) unless a marker or record is there, which it returns instead.
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: [u8; 32],
        owner: u128,
        ttl: Duration,
    ) -> Result<Begin, StoreError>;

    /// Replaces `owner`'s marker with `record`, kept for `ttl`. Does nothing if `owner` no
    /// longer holds the marker (it expired and another request took it).
    async fn complete(
        &self,
        scope: &str,
        key: &str,
        owner: u128,
        record: Recorded,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Drops `owner`'s marker, so a retry runs again. Does nothing if `owner` does not hold it.
    async fn release(&self, scope: &str, key: &str, owner: u128) -> Result<(), StoreError>;
}

enum State {
    InFlight { owner: u128, fingerprint: [u8; 32] },
    Done(Recorded),
}

struct Entry {
    state: State,
    expires: Instant,
    /// Bytes counted for it.
    size: usize,
    /// Which push into `order` is this entry's.
    generation: u64,
}

type Id = (String, String);

struct Inner {
    entries: HashMap<Id, Entry>,
    /// Entries, oldest first, for eviction past the byte budget.
    order: VecDeque<(Id, u64)>,
    bytes: usize,
    generation: u64,
}

/// Bytes counted for an in-flight marker.
const MARKER_BYTES: usize = 128;

/// The in-process store: records live in this process only (a restart forgets them; the leader
/// still deduplicates a retried write by its key). Bounded to about `max_bytes` of markers and
/// recorded responses: past that the oldest go first, so under a heavy load the replay window is
/// shorter than the records' TTL.
pub struct MemoryIdempotencyStore {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

impl MemoryIdempotencyStore {
    /// A store holding at most about `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        MemoryIdempotencyStore {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                generation: 0,
            }),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryIdempotencyStore {
    fn default() -> Self {
        MemoryIdempotencyStore::new(64 << 20)
    }
}

impl Inner {
    fn remove(&mut self, id: &Id) {
        if let Some(e) = self.entries.remove(id) {
            self.bytes = self.bytes.saturating_sub(e.size);
        }
    }

    /// Puts `state` under `id` (replacing what was there), then evicts the oldest entries past
    /// `max_bytes`.
    fn put(&mut self, id: Id, state: State, expires: Instant, max_bytes: usize) {
        self.remove(&id);
        let size = match &state {
            State::InFlight { .. } => MARKER_BYTES,
            State::Done(r) => r.size(),
        } + id.0.len()
            + id.1.len();
        self.generation += 1;
        let generation = self.generation;
        self.bytes += size;
        self.order.push_back((id.clone(), generation));
        self.entries.insert(
            id,
            Entry {
                state,
                expires,
                size,
                generation,
            },
        );
        while self.bytes > max_bytes {
            let Some((oldest, generation)) = self.order.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&oldest)
                .is_some_and(|e| e.generation == generation)
            {
                self.remove(&oldest);
            }
        }
        // Names of replaced or removed entries are dropped once they outnumber the live ones.
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order
                .retain(|(id, g)| entries.get(id).is_some_and(|e| e.generation == *g));
        }
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: [u8; 32],
        owner: u128,
        ttl: Duration,
    ) -> Result<Begin, StoreError> {
        let now = Instant::now();
        let id = (scope.to_owned(), key.to_owned());
        let mut inner = self.lock();
        if let Some(e) = inner.entries.get(&id).filter(|e| e.expires > now) {
            return Ok(match &e.state {
                State::InFlight { fingerprint, .. } => Begin::InFlight {
                    fingerprint: *fingerprint,
                },
                State::Done(r) => Begin::Done(r.clone()),
            });
        }
        inner.put(
            id,
            State::InFlight { owner, fingerprint },
            now + ttl,
            self.max_bytes,
        );
        Ok(Begin::Started)
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        owner: u128,
        record: Recorded,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let id = (scope.to_owned(), key.to_owned());
        let mut inner = self.lock();
        if holds(&inner, &id, owner) {
            inner.put(
                id,
                State::Done(record),
                Instant::now() + ttl,
                self.max_bytes,
            );
        }
        Ok(())
    }

    async fn release(&self, scope: &str, key: &str, owner: u128) -> Result<(), StoreError> {
        let id = (scope.to_owned(), key.to_owned());
        let mut inner = self.lock();
        if holds(&inner, &id, owner) {
            inner.remove(&id);
        }
        Ok(())
    }
}

/// Whether `owner` holds the in-flight marker of `id`.
fn holds(inner: &Inner, id: &Id, owner: u128) -> bool {
    matches!(
        inner.entries.get(id),
        Some(Entry { state: State::InFlight { owner: o, .. }, .. }) if *o == owner
    )
}

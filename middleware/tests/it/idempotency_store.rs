//! One suite of `IdempotencyStore` checks, run against the in-process store and against Redis
//! on a throwaway server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pairdb_middleware::idempotency::{
    Begin, IdempotencyStore, MemoryIdempotencyStore, Recorded, RedisIdempotencyStore,
};

use pairdb_testkit::RedisServer;

const LONG: Duration = Duration::from_secs(60);

fn record(fingerprint: u8, body: &'static [u8]) -> Recorded {
    Recorded {
        fingerprint: [fingerprint; 32],
        status: 201,
        headers: vec![
            ("x-pairdb-context".into(), b"ctx".to_vec()),
            ("x-binary".into(), vec![0, 0x80, 0xff]),
        ],
        body: Bytes::from_static(body),
        trailers: vec![("grpc-status".into(), b"0".to_vec())],
    }
}

/// A marker holds the key for its owner; others see it in flight, with its fingerprint.
async fn markers_hold_keys(store: &dyn IdempotencyStore) {
    assert_eq!(
        store.begin("acme", "k", [1; 32], 1, LONG).await.unwrap(),
        Begin::Started
    );
    assert_eq!(
        store.begin("acme", "k", [2; 32], 2, LONG).await.unwrap(),
        Begin::InFlight {
            fingerprint: [1; 32]
        }
    );
    // Another tenant's key of the same name is another key.
    assert_eq!(
        store.begin("other", "k", [2; 32], 2, LONG).await.unwrap(),
        Begin::Started
    );
}

/// Only the owner completes or releases; a completed record comes back whole.
async fn only_the_owner_completes_or_releases(store: &dyn IdempotencyStore) {
    store.begin("acme", "k", [1; 32], 1, LONG).await.unwrap();
    store
        .complete("acme", "k", 2, record(9, b"not mine"), LONG)
        .await
        .unwrap();
    store.release("acme", "k", 2).await.unwrap();
    assert!(matches!(
        store.begin("acme", "k", [1; 32], 3, LONG).await.unwrap(),
        Begin::InFlight { .. }
    ));
    store
        .complete("acme", "k", 1, record(1, b"\x00the body\xff"), LONG)
        .await
        .unwrap();
    assert_eq!(
        store.begin("acme", "k", [1; 32], 3, LONG).await.unwrap(),
        Begin::Done(record(1, b"\x00the body\xff"))
    );
    // A record is not released.
    store.release("acme", "k", 1).await.unwrap();
    assert!(matches!(
        store.begin("acme", "k", [1; 32], 3, LONG).await.unwrap(),
        Begin::Done(_)
    ));

    store.begin("acme", "j", [1; 32], 1, LONG).await.unwrap();
    store.release("acme", "j", 1).await.unwrap();
    assert_eq!(
        store.begin("acme", "j", [5; 32], 4, LONG).await.unwrap(),
        Begin::Started
    );
}

/// Markers and records expire; an expired marker's owner completes nothing.
async fn entries_expire(store: &dyn IdempotencyStore) {
    let short = Duration::from_millis(100);
    store.begin("acme", "m", [1; 32], 1, short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.begin("acme", "m", [2; 32], 2, LONG).await.unwrap(),
        Begin::Started
    );
    store
        .complete("acme", "m", 1, record(1, b"late"), LONG)
        .await
        .unwrap();
    assert_eq!(
        store.begin("acme", "m", [2; 32], 3, LONG).await.unwrap(),
        Begin::InFlight {
            fingerprint: [2; 32]
        }
    );
    store.begin("acme", "r", [1; 32], 1, LONG).await.unwrap();
    store
        .complete("acme", "r", 1, record(1, b"brief"), short)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.begin("acme", "r", [1; 32], 2, LONG).await.unwrap(),
        Begin::Started
    );
}

macro_rules! store_suite {
    ($fresh:path) => {
        #[tokio::test]
        async fn markers_hold_keys() {
            let (store, _guard) = $fresh().await;
            super::markers_hold_keys(&*store).await;
        }
        #[tokio::test]
        async fn only_the_owner_completes_or_releases() {
            let (store, _guard) = $fresh().await;
            super::only_the_owner_completes_or_releases(&*store).await;
        }
        #[tokio::test]
        async fn entries_expire() {
            let (store, _guard) = $fresh().await;
            super::entries_expire(&*store).await;
        }
    };
}

async fn memory() -> (Arc<dyn IdempotencyStore>, ()) {
    (Arc::new(MemoryIdempotencyStore::default()), ())
}

async fn redis() -> (Arc<dyn IdempotencyStore>, RedisServer) {
    let server = RedisServer::start().await;
    let store = RedisIdempotencyStore::connect(&server.url).await.unwrap();
    (Arc::new(store), server)
}

mod in_memory {
    store_suite!(super::memory);
}

mod in_redis {
    store_suite!(super::redis);
}

/// With Redis down, every call fails (the layer then refuses 503).
#[tokio::test]
async fn a_stopped_redis_fails_every_call() {
    let (store, server) = redis().await;
    drop(server);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(store.begin("acme", "k", [1; 32], 1, LONG).await.is_err());
}

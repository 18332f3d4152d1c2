//! The shared tier of the tenant-config cache: one suite, run against the in-process cache and
//! against Redis on a throwaway server; and two roles' `TenantCache`s sharing a tier, where an
//! invalidation by one reaches the other within its in-process TTL.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pairdb_core::Consistency;
use pairdb_metadata::{RateLimit, TenantConfig};
use pairdb_middleware::TenantCache;
use pairdb_middleware::tenant_cache::{
    Lookup, MemoryTenantConfigCache, RedisTenantConfigCache, TenantConfigCache,
};
use pairdb_testkit::RedisServer;

use crate::support::TestStore;

const TTL: Duration = Duration::from_secs(60);

fn config(id: &str, level: Consistency) -> TenantConfig {
    TenantConfig {
        tenant_id: id.into(),
        replication_factor: 3,
        default_consistency: level,
        rate_limit: RateLimit::default(),
        created_at: "2026-11-30T00:00:00Z".into(),
    }
}

/// The tenant of a lookup that must hit, which says how long it has left (within the fill's
/// TTL).
async fn hit(cache: &dyn TenantConfigCache, id: &str) -> Option<TenantConfig> {
    match cache.lookup(id).await.unwrap() {
        Lookup::Hit { tenant, remaining } => {
            assert!(!remaining.is_zero() && remaining <= TTL, "{remaining:?}");
            tenant
        }
        miss => panic!("{id}: expected a hit, got {miss:?}"),
    }
}

async fn fills_are_served_until_invalidated(cache: &dyn TenantConfigCache) {
    let Lookup::Miss { generation } = cache.lookup("acme").await.unwrap() else {
        panic!("an empty cache misses");
    };
    let acme = Some(config("acme", Consistency::One));
    cache.fill("acme", generation, &acme, TTL).await.unwrap();
    assert_eq!(hit(cache, "acme").await, acme);
    // "No such tenant" is an answer too.
    let Lookup::Miss { generation: g } = cache.lookup("nobody").await.unwrap() else {
        panic!("miss");
    };
    cache.fill("nobody", g, &None, TTL).await.unwrap();
    assert_eq!(hit(cache, "nobody").await, None);

    cache.invalidate("acme").await.unwrap();
    let Lookup::Miss { generation: after } = cache.lookup("acme").await.unwrap() else {
        panic!("an invalidated entry misses");
    };
    assert_ne!(after, generation);
    // Invalidating one tenant leaves the others.
    assert_eq!(hit(cache, "nobody").await, None);
}

/// A reader that read the store before a change cannot put the old configuration back after
/// the change's invalidation.
async fn a_fill_from_before_an_invalidation_is_never_served(cache: &dyn TenantConfigCache) {
    let Lookup::Miss { generation: before } = cache.lookup("acme").await.unwrap() else {
        panic!("miss");
    };
    // Meanwhile the tenant changes and the change invalidates.
    cache.invalidate("acme").await.unwrap();
    let stale = Some(config("acme", Consistency::One));
    cache.fill("acme", before, &stale, TTL).await.unwrap();
    let Lookup::Miss { generation: now } = cache.lookup("acme").await.unwrap() else {
        panic!("the stale fill was served");
    };
    let fresh = Some(config("acme", Consistency::All));
    cache.fill("acme", now, &fresh, TTL).await.unwrap();
    assert_eq!(hit(cache, "acme").await, fresh);
}

async fn entries_expire(cache: &dyn TenantConfigCache) {
    let Lookup::Miss { generation } = cache.lookup("acme").await.unwrap() else {
        panic!("miss");
    };
    let acme = Some(config("acme", Consistency::One));
    cache
        .fill("acme", generation, &acme, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(hit(cache, "acme").await, acme);
    let mut expired = false;
    for _ in 0..100 {
        if matches!(cache.lookup("acme").await.unwrap(), Lookup::Miss { .. }) {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(expired, "the entry expired");
}

macro_rules! cache_suite {
    ($fresh:path) => {
        #[tokio::test]
        async fn fills_are_served_until_invalidated() {
            let (cache, _guard) = $fresh().await;
            super::fills_are_served_until_invalidated(&*cache).await;
        }
        #[tokio::test]
        async fn a_fill_from_before_an_invalidation_is_never_served() {
            let (cache, _guard) = $fresh().await;
            super::a_fill_from_before_an_invalidation_is_never_served(&*cache).await;
        }
        #[tokio::test]
        async fn entries_expire() {
            let (cache, _guard) = $fresh().await;
            super::entries_expire(&*cache).await;
        }
    };
}

async fn memory() -> (Arc<dyn TenantConfigCache>, ()) {
    (Arc::new(MemoryTenantConfigCache::default()), ())
}

async fn redis() -> (Arc<dyn TenantConfigCache>, RedisServer) {
    let server = RedisServer::start().await;
    let cache = RedisTenantConfigCache::connect(&server.url).await.unwrap();
    (Arc::new(cache), server)
}

mod in_memory {
    cache_suite!(super::memory);
}

mod in_redis {
    cache_suite!(super::redis);
}

/// Two roles (a gateway and a coordinator) share a Redis tier over one metadata store: the
/// second reads from the tier what the first filled, and a change one role invalidates shows on
/// the other within its in-process TTL; with Redis gone, both still answer from the store.
#[tokio::test]
async fn roles_sharing_redis_see_a_change_within_their_ttl() {
    let (shared, server) = redis().await;
    let store = Arc::new(TestStore::default());
    store.add_tenant("acme", Consistency::One).await;
    let local_ttl = Duration::from_millis(300);
    let gateway = TenantCache::new(store.clone(), local_ttl).with_shared(Arc::clone(&shared));
    let coordinator = TenantCache::new(store.clone(), local_ttl).with_shared(Arc::clone(&shared));
    let level = |t: Option<TenantConfig>| t.expect("tenant").default_consistency;

    assert_eq!(level(gateway.get("acme").await.unwrap()), Consistency::One);
    assert_eq!(
        level(coordinator.get("acme").await.unwrap()),
        Consistency::One
    );
    assert_eq!(
        store.tenant_lookups.load(Ordering::SeqCst),
        1,
        "the second role read the shared tier, not the store"
    );

    // The coordinator changes the tenant and invalidates; the gateway sees it within its TTL.
    store.clear();
    store.add_tenant("acme", Consistency::All).await;
    coordinator.invalidate("acme").await.unwrap();
    assert_eq!(
        level(coordinator.get("acme").await.unwrap()),
        Consistency::All
    );
    let mut seen = Consistency::One;
    for _ in 0..50 {
        seen = level(gateway.get("acme").await.unwrap());
        if seen == Consistency::All {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, Consistency::All);

    // A change nobody invalidates (a coordinator without Redis, or Redis down at the time)
    // still shows within a second: shared entries live a second from their store read.
    store.clear();
    store.add_tenant("acme", Consistency::Quorum).await;
    let mut seen = Consistency::All;
    for _ in 0..60 {
        seen = level(gateway.get("acme").await.unwrap());
        if seen == Consistency::Quorum {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, Consistency::Quorum);

    // An unreachable tier is skipped: the store answers.
    drop(server);
    tokio::time::sleep(local_ttl).await;
    assert_eq!(
        level(gateway.get("acme").await.unwrap()),
        Consistency::Quorum
    );
}

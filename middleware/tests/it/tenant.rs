//! TenantLayer and TenantCache alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Waker};
use std::time::Duration;

use http::StatusCode;
use pairdb_core::Consistency;
use pairdb_middleware::{Principal, TenantCache, TenantLayer};
use tower::{Layer, Service, ServiceExt};

use crate::support::{Seen, TestStore, TextReject, new_seen, recorder, request, tenant};

async fn send(cache: &TenantCache, principal: Option<Principal>) -> (StatusCode, Seen) {
    let seen = new_seen();
    let svc = TenantLayer::new(cache.clone(), TextReject).layer(recorder(seen.clone()));
    let mut req = request("/x", &[]);
    if let Some(p) = principal {
        req.extensions_mut().insert(p);
    }
    let response = svc.oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    if response.status() != StatusCode::OK {
        assert_eq!(seen.calls, 0);
    }
    (response.status(), seen)
}

fn acme() -> Principal {
    Principal::Tenant {
        tenant_id: "acme".into(),
        key_id: "k".into(),
    }
}

async fn setup() -> (Arc<TestStore>, TenantCache) {
    let store = Arc::new(TestStore::default());
    store.add_tenant("acme", Consistency::One).await;
    let cache = TenantCache::new(store.clone(), Duration::from_secs(1));
    (store, cache)
}

#[tokio::test]
async fn tenant_principal_gets_its_config() {
    let (_, cache) = setup().await;
    let (status, seen) = send(&cache, Some(acme())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.tenant, Some(tenant("acme", Consistency::One)));
}

#[tokio::test]
async fn admin_and_anonymous_pass_untouched() {
    let (store, cache) = setup().await;
    for principal in [Some(Principal::Admin), None] {
        let (status, seen) = send(&cache, principal).await;
        assert_eq!(status, StatusCode::OK);
        assert!(seen.tenant.is_none());
    }
    assert_eq!(store.tenant_lookups.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn vanished_tenant_is_401_and_store_failure_503() {
    let (store, cache) = setup().await;
    let ghost = Principal::Tenant {
        tenant_id: "ghost".into(),
        key_id: "k".into(),
    };
    assert_eq!(send(&cache, Some(ghost)).await.0, StatusCode::UNAUTHORIZED);
    store.fail.store(true, Ordering::SeqCst);
    assert_eq!(
        send(&cache, Some(acme())).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(start_paused = true)]
async fn cache_expires_and_can_be_invalidated() {
    let (store, cache) = setup().await;
    assert_eq!(
        cache
            .get("acme")
            .await
            .unwrap()
            .unwrap()
            .default_consistency,
        Consistency::One
    );
    store.clear();
    store.add_tenant("acme", Consistency::All).await;
    tokio::time::advance(Duration::from_millis(900)).await;
    assert_eq!(
        cache
            .get("acme")
            .await
            .unwrap()
            .unwrap()
            .default_consistency,
        Consistency::One
    );
    assert_eq!(store.tenant_lookups.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(
        cache
            .get("acme")
            .await
            .unwrap()
            .unwrap()
            .default_consistency,
        Consistency::All
    );
    assert_eq!(store.tenant_lookups.load(Ordering::SeqCst), 2);

    store.clear();
    store.add_tenant("acme", Consistency::Quorum).await;
    cache.invalidate("acme").await.expect("invalidate");
    assert_eq!(
        cache
            .get("acme")
            .await
            .unwrap()
            .unwrap()
            .default_consistency,
        Consistency::Quorum
    );

    // A missing tenant is cached too, and errors are not.
    assert!(cache.get("later").await.unwrap().is_none());
    store.add_tenant("later", Consistency::One).await;
    assert!(cache.get("later").await.unwrap().is_none());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(cache.get("later").await.unwrap().is_some());
}

#[tokio::test]
async fn poll_ready_passes_backpressure_through() {
    let (_, cache) = setup().await;
    let mut cx = Context::from_waker(Waker::noop());
    let mut svc = TenantLayer::new(cache, TextReject).layer(crate::support::NeverReady);
    assert!(svc.poll_ready(&mut cx).is_pending());
}

//! AuthLayer alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Waker};
use std::time::Duration;

use http::StatusCode;
use pairdb_core::Consistency;
use pairdb_metadata::MetadataStore;
use pairdb_middleware::{AuthConfig, AuthLayer, Authenticator, Principal};
use tower::{Layer, Service, ServiceExt};

use crate::support::{
    ADMIN_KEY, INTERNAL_TOKEN, KEY_SECRET, Seen, TestStore, TextReject, bearer, new_seen, recorder,
    request,
};

fn config(trust_forwarded: bool) -> AuthConfig {
    AuthConfig {
        key_secret: KEY_SECRET.to_vec(),
        admin_key: ADMIN_KEY.into(),
        internal_token: INTERNAL_TOKEN.into(),
        trust_forwarded,
    }
}

/// Sends one request through an auth layer over `auth`; returns the status and what the inner
/// service saw.
async fn send(auth: &Authenticator, headers: &[(&str, &str)]) -> (StatusCode, Seen) {
    let seen = new_seen();
    let svc = AuthLayer::new(auth.clone(), TextReject).layer(recorder(seen.clone()));
    let response = svc.oneshot(request("/x", headers)).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    if response.status() != StatusCode::OK {
        assert_eq!(seen.calls, 0, "inner service must not run on a rejection");
    }
    (response.status(), seen)
}

async fn setup(trust_forwarded: bool) -> (Arc<TestStore>, Authenticator, String) {
    let store = Arc::new(TestStore::default());
    let key = store.add_tenant("acme", Consistency::Quorum).await;
    let auth = Authenticator::new(store.clone(), config(trust_forwarded));
    (store, auth, key)
}

#[tokio::test]
async fn missing_or_malformed_credentials_are_401() {
    let (_, auth, key) = setup(false).await;
    for headers in [
        vec![],
        vec![("authorization", "Basic abc")],
        vec![("authorization", "Bearer")],
        vec![("authorization", key.as_str())],
    ] {
        assert_eq!(
            send(&auth, &headers).await.0,
            StatusCode::UNAUTHORIZED,
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn tenant_key_resolves_to_its_tenant() {
    let (_, auth, key) = setup(false).await;
    let (status, seen) = send(&auth, &[("authorization", &bearer(&key))]).await;
    assert_eq!(status, StatusCode::OK);
    let key_id = pairdb_metadata::api_key::parse(&key)
        .unwrap()
        .key_id
        .to_owned();
    assert_eq!(
        seen.principal,
        Some(Principal::Tenant {
            tenant_id: "acme".into(),
            key_id
        })
    );
    assert!(!seen.forwarded);
}

#[tokio::test]
async fn unknown_or_wrong_keys_are_401() {
    let (_, auth, key) = setup(false).await;
    let parsed = pairdb_metadata::api_key::parse(&key).unwrap();
    let wrong_secret = format!("pdb_{}_{}", parsed.key_id, "0".repeat(32));
    let unknown_id = format!("pdb_{}_{}", "0".repeat(16), parsed.secret);
    for token in [
        wrong_secret.as_str(),
        unknown_id.as_str(),
        "pdb_nothex_x",
        "whatever",
    ] {
        let (status, _) = send(&auth, &[("authorization", &bearer(token))]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token}");
    }
}

#[tokio::test]
async fn admin_key_is_admin_and_empty_admin_key_matches_nothing() {
    let (store, auth, _) = setup(false).await;
    let (status, seen) = send(&auth, &[("authorization", &bearer(ADMIN_KEY))]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.principal, Some(Principal::Admin));

    let no_admin = Authenticator::new(
        store,
        AuthConfig {
            admin_key: String::new(),
            ..config(false)
        },
    );
    let (status, _) = send(&no_admin, &[("authorization", "Bearer  ")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(&no_admin, &[("authorization", &bearer(ADMIN_KEY))]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn internal_token_needs_trust_forwarded() {
    let (_, auth, _) = setup(false).await;
    let (status, _) = send(
        &auth,
        &[
            ("authorization", &bearer(INTERNAL_TOKEN)),
            ("x-pairdb-tenant", "acme"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forwarded_calls_take_the_named_principal() {
    let (_, auth, key) = setup(true).await;
    let internal = bearer(INTERNAL_TOKEN);
    let (status, seen) = send(
        &auth,
        &[("authorization", &internal), ("x-pairdb-tenant", "acme")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        seen.principal,
        Some(Principal::Tenant {
            tenant_id: "acme".into(),
            key_id: "internal".into()
        })
    );
    assert!(seen.forwarded);

    let (status, seen) = send(
        &auth,
        &[
            ("authorization", &internal),
            ("x-pairdb-principal", "admin"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.principal, Some(Principal::Admin));
    assert!(seen.forwarded);

    for headers in [
        vec![("authorization", internal.as_str())],
        vec![
            ("authorization", internal.as_str()),
            ("x-pairdb-tenant", "Bad Id"),
        ],
        vec![
            ("authorization", internal.as_str()),
            ("x-pairdb-principal", "root"),
        ],
    ] {
        assert_eq!(
            send(&auth, &headers).await.0,
            StatusCode::BAD_REQUEST,
            "{headers:?}"
        );
    }

    // Forwarding headers on a non-internal credential are ignored.
    let (status, seen) = send(
        &auth,
        &[
            ("authorization", &bearer(&key)),
            ("x-pairdb-principal", "admin"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(matches!(seen.principal, Some(Principal::Tenant { .. })));
    assert!(!seen.forwarded);
}

#[tokio::test]
async fn store_failure_is_503() {
    let (store, auth, key) = setup(false).await;
    store.fail.store(true, Ordering::SeqCst);
    let (status, _) = send(&auth, &[("authorization", &bearer(&key))]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Errors are not cached: the next request after recovery succeeds.
    store.fail.store(false, Ordering::SeqCst);
    let (status, _) = send(&auth, &[("authorization", &bearer(&key))]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn revoked_key_stops_working_within_a_second() {
    let (store, auth, key) = setup(false).await;
    let header = bearer(&key);
    assert_eq!(
        send(&auth, &[("authorization", &header)]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&auth, &[("authorization", &header)]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        store.key_lookups.load(Ordering::SeqCst),
        1,
        "second request served from cache"
    );

    let key_id = pairdb_metadata::api_key::parse(&key)
        .unwrap()
        .key_id
        .to_owned();
    assert!(store.delete_api_key("acme", &key_id).await.unwrap());
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(
        send(&auth, &[("authorization", &header)]).await.0,
        StatusCode::OK,
        "cached for now"
    );
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(
        send(&auth, &[("authorization", &header)]).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_keys_are_cached_briefly_too() {
    let store = Arc::new(TestStore::default());
    store.add_tenant("acme", Consistency::Quorum).await;
    let auth = Authenticator::new(store.clone(), config(false));
    let key = pairdb_metadata::api_key::generate(KEY_SECRET);
    let header = bearer(&key.api_key);
    assert_eq!(
        send(&auth, &[("authorization", &header)]).await.0,
        StatusCode::UNAUTHORIZED
    );
    store
        .insert_api_key(&pairdb_metadata::ApiKeyRecord {
            key_id: key.key_id.clone(),
            tenant_id: "acme".into(),
            secret_hash: key.secret_hash.clone(),
            created_at: "2026-01-01T00:00:00Z".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        send(&auth, &[("authorization", &header)]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(store.key_lookups.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        send(&auth, &[("authorization", &header)]).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn poll_ready_passes_backpressure_through() {
    let (_, auth, _) = setup(false).await;
    let mut cx = Context::from_waker(Waker::noop());
    let mut svc = AuthLayer::new(auth, TextReject).layer(crate::support::NeverReady);
    assert!(svc.poll_ready(&mut cx).is_pending());
}

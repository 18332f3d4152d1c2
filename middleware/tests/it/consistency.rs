//! ConsistencyLayer alone.

use std::task::{Context, Waker};

use http::StatusCode;
use pairdb_core::Consistency;
use pairdb_middleware::ConsistencyLayer;
use tower::{Layer, Service, ServiceExt};

use crate::support::{TextReject, new_seen, recorder, request, tenant};

async fn level(
    uri: &str,
    headers: &[(&str, &str)],
    default: Option<Consistency>,
) -> Result<Consistency, StatusCode> {
    let seen = new_seen();
    let svc = ConsistencyLayer::new(TextReject).layer(recorder(seen.clone()));
    let mut req = request(uri, headers);
    if let Some(default) = default {
        req.extensions_mut().insert(tenant("acme", default));
    }
    let response = svc.oneshot(req).await.unwrap();
    if response.status() != StatusCode::OK {
        assert_eq!(seen.lock().unwrap().calls, 0, "inner service must not run");
        return Err(response.status());
    }
    Ok(seen
        .lock()
        .unwrap()
        .consistency
        .expect("Consistency extension"))
}

#[tokio::test]
async fn header_then_query_then_tenant_default_then_quorum() {
    assert_eq!(
        level("/x", &[("x-consistency", "one")], Some(Consistency::All)).await,
        Ok(Consistency::One)
    );
    assert_eq!(
        level("/x?consistency=one", &[("x-consistency", "all")], None).await,
        Ok(Consistency::All)
    );
    assert_eq!(
        level("/x?consistency=one", &[], Some(Consistency::All)).await,
        Ok(Consistency::One)
    );
    assert_eq!(
        level("/x", &[], Some(Consistency::All)).await,
        Ok(Consistency::All)
    );
    assert_eq!(level("/x", &[], None).await, Ok(Consistency::Quorum));
    assert_eq!(
        level("/x", &[("x-consistency", "QUORUM")], None).await,
        Ok(Consistency::Quorum)
    );
}

#[tokio::test]
async fn unknown_names_are_400() {
    assert_eq!(
        level("/x", &[("x-consistency", "most")], None).await,
        Err(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        level("/x?consistency=two", &[], Some(Consistency::One)).await,
        Err(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        level("/x?consistency=", &[], None).await,
        Err(StatusCode::BAD_REQUEST)
    );
}

#[test]
fn poll_ready_passes_backpressure_through() {
    let mut cx = Context::from_waker(Waker::noop());
    let mut svc = ConsistencyLayer::new(TextReject).layer(crate::support::NeverReady);
    assert!(svc.poll_ready(&mut cx).is_pending());
}

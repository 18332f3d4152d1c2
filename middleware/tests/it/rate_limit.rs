//! RateLimitLayer alone, over a `tower-test` mock: what reaches the inner service, and the
//! headers every tenant response carries.

use http::{Request, Response, StatusCode};
use pairdb_core::Consistency;
use pairdb_metadata::{RateLimit, TenantConfig};
use pairdb_middleware::rate_limit::{RATELIMIT, RATELIMIT_POLICY};
use pairdb_middleware::{Forwarded, RateLimitLayer, RateLimits};
use tokio_test::{assert_pending, assert_ready_ok};
use tower_test::mock;

use crate::support::{TextReject, request, tenant};

type Mock = mock::Spawn<
    pairdb_middleware::RateLimitService<mock::Mock<Request<String>, Response<String>>, TextReject>,
>;

fn limited(id: &str, requests_per_second: u32, burst: u32) -> TenantConfig {
    TenantConfig {
        rate_limit: RateLimit {
            requests_per_second,
            burst,
        },
        ..tenant(id, Consistency::Quorum)
    }
}

fn tenant_request(config: &TenantConfig) -> Request<String> {
    let mut r = request("/v1/kv/k", &[]);
    r.extensions_mut().insert(config.clone());
    r
}

/// Sends `request` through `svc`; the mock answers 200 if the request reaches it.
async fn send(
    svc: &mut Mock,
    handle: &mut mock::Handle<Request<String>, Response<String>>,
    request: Request<String>,
) -> (Response<String>, bool) {
    assert_ready_ok!(svc.poll_ready());
    let response = svc.call(request);
    tokio::pin!(response);
    // Refused at once, or waiting for the inner service.
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(response.as_mut(), cx))
    })
    .await;
    if let std::task::Poll::Ready(r) = first {
        return (r.unwrap(), false);
    }
    let (_, reply) = handle
        .next_request()
        .await
        .expect("the inner service got it");
    reply.send_response(Response::new("ok".to_owned()));
    (response.await.unwrap(), true)
}

fn header(response: &Response<String>, name: &http::HeaderName) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_tenant_gets_its_burst_then_429s_that_never_reach_the_inner_service() {
    let (mut svc, mut handle) =
        mock::spawn_layer(RateLimitLayer::new(RateLimits::new(), TextReject));
    let acme = limited("acme", 1, 2);
    for left in [1, 0] {
        let (response, reached) = send(&mut svc, &mut handle, tenant_request(&acme)).await;
        assert!(reached);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, &RATELIMIT_POLICY), "\"tenant\";q=2;w=2");
        assert!(header(&response, &RATELIMIT).starts_with(&format!("\"tenant\";r={left};t=")));
    }
    let (response, reached) = send(&mut svc, &mut handle, tenant_request(&acme)).await;
    assert!(
        !reached,
        "a refused request must not reach the inner service"
    );
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.body(), "rate-limited");
    assert_eq!(header(&response, &http::header::RETRY_AFTER), "1");
    assert_eq!(header(&response, &RATELIMIT), "\"tenant\";r=0;t=2");
    assert_eq!(header(&response, &RATELIMIT_POLICY), "\"tenant\";q=2;w=2");
}

#[tokio::test]
async fn the_admin_and_forwarded_calls_pass_untouched() {
    let (mut svc, mut handle) =
        mock::spawn_layer(RateLimitLayer::new(RateLimits::new(), TextReject));
    let tiny = limited("acme", 1, 1);
    for _ in 0..3 {
        // No tenant: the admin.
        let (response, reached) = send(&mut svc, &mut handle, request("/v1/tenants", &[])).await;
        assert!(reached);
        assert!(response.headers().get(&RATELIMIT).is_none());
        // A gateway admitted it already.
        let mut forwarded = tenant_request(&tiny);
        forwarded.extensions_mut().insert(Forwarded);
        let (response, reached) = send(&mut svc, &mut handle, forwarded).await;
        assert!(reached);
        assert!(response.headers().get(&RATELIMIT).is_none());
    }
}

#[tokio::test]
async fn backpressure_passes_through() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<String>, Response<String>, _>(
        RateLimitLayer::new(RateLimits::new(), TextReject),
    );
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
}

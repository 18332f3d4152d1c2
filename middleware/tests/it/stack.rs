//! The whole stack, outermost first trace → auth → tenant → consistency, over a plain `http`
//! service and inside a tonic server (the coordinator's use).

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use pairdb_core::{Consistency, ErrorKind};
use pairdb_middleware::{
    AuthConfig, AuthLayer, Authenticator, ConsistencyLayer, LayerError, Principal, Reject,
    TenantCache, TenantLayer, TraceContext, TraceLayer,
};
use tower::layer::util::{Identity, Stack};
use tower::{ServiceBuilder, ServiceExt};

use crate::support::{KEY_SECRET, TestStore, TextReject, bearer, new_seen, recorder, request};

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The coordinator-style stack: trace → auth → tenant → consistency, outermost first.
type Layers<R> = ServiceBuilder<
    Stack<
        ConsistencyLayer<R>,
        Stack<TenantLayer<R>, Stack<AuthLayer<R>, Stack<TraceLayer, Identity>>>,
    >,
>;

fn layers<R: Reject>(store: Arc<TestStore>, reject: R) -> Layers<R> {
    let auth = Authenticator::new(
        store.clone(),
        AuthConfig {
            key_secret: KEY_SECRET.to_vec(),
            admin_key: "admin".into(),
            internal_token: "internal".into(),
            trust_forwarded: true,
        },
    );
    let tenants = TenantCache::new(store, std::time::Duration::from_secs(1));
    ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(AuthLayer::new(auth, reject.clone()))
        .layer(TenantLayer::new(tenants, reject.clone()))
        .layer(ConsistencyLayer::new(reject))
}

#[tokio::test]
async fn stack_resolves_everything_in_order() {
    let store = Arc::new(TestStore::default());
    let key = store.add_tenant("acme", Consistency::All).await;
    let seen = new_seen();
    let svc = layers(store, TextReject).service(recorder(seen.clone()));
    let response = svc
        .oneshot(request(
            "/x",
            &[("authorization", &bearer(&key)), ("traceparent", INCOMING)],
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = seen.lock().unwrap().clone();
    assert!(
        matches!(seen.principal, Some(Principal::Tenant { ref tenant_id, .. }) if tenant_id == "acme")
    );
    assert_eq!(seen.tenant.map(|t| t.tenant_id), Some("acme".to_owned()));
    assert_eq!(
        seen.consistency,
        Some(Consistency::All),
        "tenant default applies"
    );
    assert_eq!(
        seen.trace.map(|t| t.trace_id_hex()).as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
}

#[tokio::test]
async fn rejections_carry_the_trace() {
    let store = Arc::new(TestStore::default());
    let key = store.add_tenant("acme", Consistency::All).await;
    for headers in [
        vec![("traceparent", INCOMING)],
        vec![("traceparent", INCOMING), ("x-consistency", "most")],
    ] {
        let seen = new_seen();
        let svc = layers(store.clone(), TextReject).service(recorder(seen.clone()));
        let auth = bearer(&key);
        let mut headers = headers;
        if headers.len() > 1 {
            headers.push(("authorization", &auth));
        }
        let response = svc.oneshot(request("/x", &headers)).await.unwrap();
        assert!(response.status().is_client_error());
        assert_eq!(seen.lock().unwrap().calls, 0);
        assert_eq!(
            response.headers().get("x-trace-id").unwrap(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "the Reject impl is handed the trace context"
        );
        assert!(
            response
                .headers()
                .get("traceresponse")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            "rejections from inner layers get traceresponse"
        );
    }
}

/// Renders rejections as gRPC statuses, as the coordinator does.
#[derive(Clone)]
struct GrpcReject;

impl Reject for GrpcReject {
    type Body = tonic::body::Body;

    fn reject(&self, error: LayerError, _: Option<&TraceContext>) -> Response<tonic::body::Body> {
        let code = match error.kind {
            ErrorKind::Unauthorized => tonic::Code::Unauthenticated,
            ErrorKind::NotReady => tonic::Code::Unavailable,
            _ => tonic::Code::InvalidArgument,
        };
        tonic::Status::new(code, error.detail).into_http()
    }
}

#[tokio::test]
async fn stack_serves_tonic_routes() {
    let store = Arc::new(TestStore::default());
    let svc = layers(store.clone(), GrpcReject).service(tonic::service::Routes::default());
    let request = Request::post("/pairdb.coordinator.v1.Coordinator/Get")
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::empty())
        .unwrap();
    let response = svc.oneshot(request).await.unwrap();
    assert_eq!(
        response.headers().get("grpc-status").unwrap(),
        "16",
        "unauthenticated"
    );
    assert!(response.headers().contains_key("traceresponse"));

    // And the same layers plug into a tonic server builder (the coordinator's use).
    let layer = layers(store, GrpcReject).into_inner();
    tonic::transport::Server::builder()
        .layer(layer)
        .add_routes(tonic::service::Routes::default())
        .serve_with_incoming(futures::stream::empty::<
            Result<tokio::net::TcpStream, std::io::Error>,
        >())
        .await
        .unwrap();
}

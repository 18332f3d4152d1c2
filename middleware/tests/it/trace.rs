//! TraceLayer alone.

use std::convert::Infallible;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use pairdb_middleware::TraceLayer;
use tower::{Layer, Service, ServiceExt};

use crate::support::{NeverReady, new_seen, recorder, request};

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn traceresponse(response: &Response<String>) -> String {
    response
        .headers()
        .get("traceresponse")
        .expect("traceresponse on every response")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn honours_incoming_traceparent() {
    let seen = new_seen();
    let svc = TraceLayer::new().layer(recorder(seen.clone()));
    let response = svc
        .oneshot(request("/x", &[("traceparent", INCOMING)]))
        .await
        .unwrap();
    let ctx = seen.lock().unwrap().trace.expect("TraceContext extension");
    assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        ctx.parent_span_id,
        Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
    );
    let tr = traceresponse(&response);
    assert_eq!(tr, ctx.traceparent());
    assert!(
        tr.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tr}"
    );
    assert!(
        !tr.contains("00f067aa0ba902b7"),
        "this hop has its own span id: {tr}"
    );
    assert!(tr.ends_with("-01"));
}

#[tokio::test]
async fn starts_a_trace_when_absent_or_invalid() {
    for headers in [
        vec![],
        vec![(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )],
        vec![("traceparent", "garbage")],
        vec![("traceparent", INCOMING), ("traceparent", INCOMING)],
    ] {
        let seen = new_seen();
        let svc = TraceLayer::new().layer(recorder(seen.clone()));
        let response = svc.oneshot(request("/x", &headers)).await.unwrap();
        let ctx = seen.lock().unwrap().trace.expect("TraceContext extension");
        assert_ne!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ctx.trace_id, [0; 16]);
        assert!(ctx.parent_span_id.is_none());
        assert_eq!(traceresponse(&response), ctx.traceparent());
    }
}

#[tokio::test]
async fn every_response_gets_traceresponse() {
    // An inner service answering an error status still gets the header.
    let svc = TraceLayer::new().layer(tower::service_fn(|_req: Request<String>| async {
        let mut r = Response::new(String::new());
        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        Ok::<_, Infallible>(r)
    }));
    let response = svc
        .oneshot(request("/x", &[("traceparent", INCOMING)]))
        .await
        .unwrap();
    assert!(traceresponse(&response).contains("4bf92f3577b34da6a3ce929d0e0e4736"));
}

#[test]
fn poll_ready_passes_backpressure_through() {
    let mut cx = Context::from_waker(Waker::noop());
    let mut svc = TraceLayer::new().layer(NeverReady);
    assert!(svc.poll_ready(&mut cx).is_pending());
    let mut svc = TraceLayer::new().layer(tower::service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
}

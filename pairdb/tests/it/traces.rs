//! One client request is one trace across the three tiers: each role a separate process
//! exporting over OTLP to a receiver run by this test, the spans linked gateway → coordinator →
//! every replica the write touched, and the ids the gateway answered those of exported spans.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use reqwest::StatusCode;
use tokio_stream::wrappers::TcpListenerStream;

use crate::processes::{Processes, create_tenant, terminate};

/// One exported span, as the receiver got it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("lock");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    any_value::Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(span.trace_id),
                    span_id: hex::encode(span.span_id),
                    parent_span_id: hex::encode(span.parent_span_id),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_across_gateway_coordinator_and_every_replica() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let Processes {
        storage,
        mut coordinator,
        mut gateway,
        base,
        ..
    } = Processes::start(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let key = create_tenant(&http, &base).await;

    // The client's own span: the gateway's must be its child.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let put = http
        .put(format!("{base}/v1/kv/traced"))
        .bearer_auth(&key)
        .header("X-Consistency", "all")
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .body("v")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::OK);
    let answered = put
        .headers()
        .get("traceresponse")
        .and_then(|v| v.to_str().ok())
        .expect("traceresponse")
        .to_owned();
    let parts: Vec<&str> = answered.split('-').collect();
    assert_eq!(parts.len(), 4, "{answered}");
    assert_eq!(parts[1], trace_id, "the gateway joined the client's trace");
    let gateway_span = parts[2].to_owned();

    // Wait (bounded) for the gateway's, the coordinator's and three storage nodes' spans.
    let mut spans = Vec::new();
    for _ in 0..300 {
        spans = receiver
            .spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect::<Vec<_>>();
        let storage_spans = spans
            .iter()
            .filter(|s| s.service == "pairdb-storage")
            .count();
        if spans.iter().any(|s| s.service == "pairdb-gateway")
            && spans.iter().any(|s| s.service == "pairdb-coordinator")
            && storage_spans >= 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let by_service = |service: &str| -> Vec<Received> {
        spans
            .iter()
            .filter(|s| s.service == service)
            .cloned()
            .collect()
    };

    let gateway_spans = by_service("pairdb-gateway");
    assert_eq!(gateway_spans.len(), 1, "{spans:#?}");
    let g = &gateway_spans[0];
    assert_eq!(
        g.span_id, gateway_span,
        "traceresponse names the exported span"
    );
    assert_eq!(
        g.parent_span_id, client_span,
        "the gateway's parent is the client"
    );
    assert_eq!(
        g.name, "gateway PUT /v1/kv/{key}",
        "named by route, never by key"
    );

    // The coordinator's request span, and the replication it started, as its child.
    let coordinator_spans = by_service("pairdb-coordinator");
    assert_eq!(coordinator_spans.len(), 2, "{spans:#?}");
    let c = coordinator_spans
        .iter()
        .find(|s| s.name == "coordinator POST Put")
        .expect("the coordinator's request span");
    assert_eq!(
        c.parent_span_id, g.span_id,
        "the coordinator's parent is the gateway"
    );
    let r = coordinator_spans
        .iter()
        .find(|s| s.name == "coordinator replicate")
        .expect("the replication span");
    assert_eq!(
        r.parent_span_id, c.span_id,
        "replication is the request's child"
    );

    // `all` on RF 3: the leader mints, the two others apply — each under the replication.
    let storage_spans = by_service("pairdb-storage");
    let mut rpcs: HashMap<&str, usize> = HashMap::new();
    for s in &storage_spans {
        assert_eq!(
            s.parent_span_id, r.span_id,
            "{s:?} is the replication's child"
        );
        let rpc = s.name.rsplit(' ').next().unwrap_or_default();
        *rpcs.entry(rpc).or_default() += 1;
    }
    assert_eq!(rpcs.get("Mint"), Some(&1), "{storage_spans:#?}");
    assert_eq!(rpcs.get("Apply"), Some(&2), "{storage_spans:#?}");

    // Every span id is distinct (no hop reused its caller's).
    let mut ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), spans.len(), "{spans:#?}");

    assert!(terminate(&mut gateway).await);
    assert!(terminate(&mut coordinator).await);
    for (_, mut child, _) in storage {
        assert!(terminate(&mut child).await);
    }
}

//! Operations routes, served without auth: liveness, readiness and the OpenAPI document.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use pairdb_core::ErrorKind;
use pairdb_middleware::Principal;
use pairdb_proto::coordinator::ReadyRequest;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::coordinators::CallContext;
use crate::extract::Trace;
use crate::problem::{Problem, ProblemBody};
use crate::state::AppState;

/// Longest time a readiness probe waits for the coordinator.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Body of `/healthz` and `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusBody {
    /// `ok` (alive) or `ready`.
    pub status: String,
}

/// The operations routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics))
}

/// Prometheus metrics of this gateway (OpenMetrics text): requests by route, method and status,
/// their latency, rate-limited requests and idempotent replays.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics in the OpenMetrics text format", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, pairdb_middleware::metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = StatusBody)))]
pub async fn healthz() -> Json<StatusBody> {
    Json(StatusBody {
        status: "ok".into(),
    })
}

/// The gateway can serve: a coordinator answers ready (metadata reachable, placement known) and
/// the metadata store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = StatusBody),
        (status = 503, description = "Not ready", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn readyz(
    State(state): State<AppState>,
    Trace(trace): Trace,
) -> Result<Json<StatusBody>, Problem> {
    let timeout = state.request_timeout.min(READY_TIMEOUT);
    let call = CallContext {
        principal: Principal::Admin,
        consistency: None,
        trace,
        timeout: Some(timeout),
    };
    let coordinator = state
        .coordinators
        .call(&call, ReadyRequest {}, |mut c, r| async move {
            c.ready(r).await
        });
    let metadata = tokio::time::timeout(timeout, state.store.ping());
    let (coordinator, metadata) = tokio::join!(coordinator, metadata);
    let not_ready =
        |detail: String| Problem::new(ErrorKind::NotReady, detail).with_trace(trace.as_ref());
    match coordinator {
        Ok(answer) if answer.ready => {}
        Ok(answer) => {
            return Err(not_ready(format!(
                "coordinator not ready: {}",
                answer.detail
            )));
        }
        Err(status) => {
            tracing::warn!(code = ?status.code(), message = status.message(), "readiness: coordinator");
            return Err(not_ready("no coordinator answered".into()));
        }
    }
    match metadata {
        Ok(Ok(())) => Ok(Json(StatusBody {
            status: "ready".into(),
        })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: metadata store");
            Err(not_ready("metadata store unreachable".into()))
        }
        Err(_) => Err(not_ready("metadata store did not answer in time".into())),
    }
}

/// This API's OpenAPI 3 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        state.openapi.clone(),
    )
        .into_response()
}

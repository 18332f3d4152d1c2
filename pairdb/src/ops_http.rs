//! `--metrics-listen`: `/healthz` and `/readyz` over HTTP for the gRPC roles.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

/// Answers whether the role can serve, with a reason when it cannot.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Serves `/healthz` (always 200 while the process runs) and `/readyz` (200 when `ready` says so,
/// else 503 with the reason) until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    ready: ReadyCheck,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/healthz",
            get(|| async { (StatusCode::OK, "{\"status\":\"ok\"}") }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => (StatusCode::OK, "{\"status\":\"ready\"}".to_owned()),
                        Err(reason) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            serde_json::json!({ "status": "not ready", "detail": reason })
                                .to_string(),
                        ),
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

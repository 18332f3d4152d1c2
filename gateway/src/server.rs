//! Building the router and serving it until shutdown.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use pairdb_metadata::MetadataStore;
use pairdb_middleware::tenant::DEFAULT_TENANT_TTL;
use pairdb_middleware::{AuthConfig, Authenticator, TenantCache};
use tokio::net::TcpListener;

use crate::config::GatewayConfig;
use crate::coordinators::Coordinators;
use crate::error::GatewayError;
use crate::routes::{admin, kv, ops, tenants};
use crate::stack::layers;
use crate::state::AppState;

/// The gateway's whole HTTP application: the routes of API.md behind the middleware stack.
///
/// Coordinator channels connect lazily, so this succeeds with no coordinator running. Fails
/// when `config` does not validate or a coordinator address is not a URI.
pub async fn build_router(
    config: GatewayConfig,
    store: Arc<dyn MetadataStore>,
) -> Result<Router, GatewayError> {
    config.validate()?;
    let coordinators = Coordinators::connect_lazy(&config.coordinators, &config.internal_token)?;
    let authenticator = Authenticator::new(
        store.clone(),
        AuthConfig {
            key_secret: config.key_secret.clone(),
            admin_key: config.admin_key.clone(),
            internal_token: config.internal_token.clone(),
            // The gateway is the public edge: it never accepts a forwarded principal.
            trust_forwarded: false,
        },
    );
    let tenant_cache = TenantCache::new(store.clone(), DEFAULT_TENANT_TTL);
    let state = AppState {
        coordinators,
        store,
        request_timeout: config.request_timeout,
        max_key_bytes: config.max_key_bytes,
        max_value_bytes: config.max_value_bytes,
        openapi: crate::openapi::document_json().into(),
    };
    let v1 = Router::new()
        .merge(kv::routes())
        .merge(tenants::routes())
        .merge(admin::routes())
        .with_state(state.clone());
    let ops = ops::routes().with_state(state);
    Ok(layers(v1, ops, authenticator, tenant_cache))
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish, and returns.
///
/// Tests bind `127.0.0.1:0` and pass a future they control, so servers stop deterministically.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // Small responses go out at once rather than waiting on Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

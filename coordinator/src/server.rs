//! Running a coordinator: the gRPC service behind its middleware stack, on a bound listener,
//! until a shutdown signal.

use std::future::Future;
use std::sync::Arc;

use pairdb_metadata::RateLimit;
use pairdb_middleware::idempotency::MemoryIdempotencyStore;
use pairdb_middleware::metered::MeteredIdempotencyStore;
use pairdb_middleware::{Authenticator, IdempotencyConfig, IdempotencyLayer, TenantCache};
use pairdb_proto::coordinator::coordinator_server::CoordinatorServer;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;

use crate::admin::Admin;
use crate::cluster::Cluster;
use crate::replication::Replicator;
use crate::service::CoordinatorService;
use crate::stack;

/// Serves the coordinator of `cluster` on `listener` until `shutdown` completes.
///
/// Starts the cluster's maintenance task (failure probes, placement refresh) for the server's
/// lifetime. Once `shutdown` resolves, new connections are refused and calls in flight finish.
pub async fn run(
    cluster: Arc<Cluster>,
    listener: TcpListener,
    default_rate_limit: RateLimit,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "coordinator serving gRPC");
    }
    let cfg = cluster.config().clone();
    let authenticator = Authenticator::new(
        cluster.store().clone(),
        stack::auth_config(&cfg.key_secret, &cfg.admin_key, &cfg.internal_token),
    );
    let mut tenants = TenantCache::new(cluster.store().clone(), stack::TENANT_CACHE_TTL);
    if let Some(shared) = &cfg.tenant_cache {
        tenants = tenants.with_shared(shared.clone());
    }
    // Call streams end when the server stops, so the graceful stop never waits on them.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let service = CoordinatorService::new(
        Replicator::new(cluster.clone()),
        Admin::new(cluster.clone(), default_rate_limit, tenants.clone()),
    );
    let max_message = cfg.max_value_bytes + cfg.max_key_bytes + (64 << 10);
    // Half the message limit: one reply alone (at most a whole value) always fits it.
    let service = service
        .stopping_on(stopping)
        .max_reply_bytes(max_message / 2);
    let maintenance = tokio::spawn(cluster.clone().maintain());
    // Callers with keys of their own (gRPC clients) get each coordinator's share of their rate.
    let limits = pairdb_middleware::RateLimits::new();
    let heartbeat = limits.share_among_live(cluster.store().clone(), "coordinator");
    // tonic ignores `tcp_nodelay` for a stream of accepted connections, so set it per
    // connection: gRPC answers are small frames that Nagle's algorithm would hold back.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        })
    });
    let result = tonic::transport::Server::builder()
        .layer(stack::layers(
            authenticator,
            tenants,
            limits,
            cfg.metrics.clone(),
            IdempotencyLayer::new(
                MeteredIdempotencyStore::wrap(
                    cfg.idempotency
                        .clone()
                        .unwrap_or_else(|| Arc::new(MemoryIdempotencyStore::default())),
                    &cfg.metrics,
                ),
                IdempotencyConfig {
                    // A marker outlives any call still running.
                    in_flight_ttl: cfg.request_timeout * 2 + std::time::Duration::from_secs(5),
                    max_request_bytes: max_message,
                    body_timeout: cfg.request_timeout,
                    grpc_writes: Some(stack::IDEMPOTENT_WRITES),
                    ..IdempotencyConfig::default()
                },
                stack::GrpcReject,
            ),
        ))
        .add_service(
            CoordinatorServer::new(service)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    maintenance.abort();
    heartbeat.leave().await;
    result
}

//! Building the router and serving it until shutdown.
//!
//! The gateway is the public edge, so its accept loop defends itself against slow and idle
//! clients rather than trusting them:
//!
//! * **Open connections are capped** ([`ConnectionLimits::max_connections`]). A connection over
//!   the cap is closed at once, so thousands of clients holding half-sent requests cannot exhaust
//!   file descriptors or memory; the ones already served are unaffected.
//! * **Request heads must arrive in time** ([`ConnectionLimits::header_read_timeout`]). The
//!   first bytes (which tell HTTP/1 from HTTP/2) and then every HTTP/1 request head must arrive
//!   within it; an HTTP/1 connection idle between requests for as long is closed too. A client
//!   sending headers a byte a second is cut off.
//! * **Bodies must arrive within the request's deadline**: the handlers read them under it and
//!   answer `408 request-timeout` (see [`crate::extract::read_limited`]).
//! * HTTP/2 connections are bounded in concurrent streams and header size, pinged (a dead peer
//!   is dropped), and asked to close at an age limit (an idle one cannot hold a slot forever).
//!
//! Shutdown is graceful: the listener closes, idle connections close, and requests in flight
//! finish.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use pairdb_metadata::MetadataStore;
use pairdb_middleware::Redis;
use pairdb_middleware::idempotency::{
    IdempotencyStore, MemoryIdempotencyStore, RedisIdempotencyStore,
};
use pairdb_middleware::metered::{MeteredIdempotencyStore, MeteredMetadataStore};
use pairdb_middleware::rate_limit::Registration;
use pairdb_middleware::tenant::DEFAULT_TENANT_TTL;
use pairdb_middleware::tenant_cache::{RedisTenantConfigCache, TenantConfigCache};
use pairdb_middleware::{
    AuthConfig, Authenticator, IdempotencyConfig, Metrics, RateLimits, TenantCache,
};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::config::GatewayConfig;
use crate::coordinators::Coordinators;
use crate::error::GatewayError;
use crate::routes::{admin, kv, ops, tenants};
use crate::stack::layers;
use crate::state::{AppState, Shared};

/// The HTTP/2 connection preface a prior-knowledge (h2c) client opens with.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How the gateway bounds its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Time allowed for a connection's first bytes and for each HTTP/1 request head (also the
    /// idle time after which a keep-alive HTTP/1 connection is closed).
    pub header_read_timeout: Duration,
    /// Age at which an HTTP/2 connection is asked to close (GOAWAY; requests in flight finish),
    /// so an idle one cannot hold a connection slot forever.
    pub max_http2_age: Duration,
    /// Longest wait, on shutdown, for open connections to finish.
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            max_http2_age: Duration::from_secs(600),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The gateway's whole HTTP application: the routes of docs/api.md behind the middleware stack.
///
/// Coordinator channels connect lazily, so this succeeds with no coordinator running. Fails
/// when `config` does not validate or a coordinator address is not a URI.
pub async fn build_router(
    config: GatewayConfig,
    store: Arc<dyn MetadataStore>,
) -> Result<Router, GatewayError> {
    // Detached, the registration ends (and leaves) within a heartbeat of the router's drop.
    Ok(build_router_registered(config, store).await?.0)
}

/// [`build_router`], and this gateway's entry in the registry of live gateways (with admission
/// on): [`Registration::leave`] it on a clean stop, so the others take back its share at once.
pub async fn build_router_registered(
    config: GatewayConfig,
    store: Arc<dyn MetadataStore>,
) -> Result<(Router, Option<Registration>), GatewayError> {
    config.validate()?;
    let metrics = Metrics::new();
    let store = MeteredMetadataStore::wrap(store, &metrics);
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
    // One pool to this gateway's Redis, for its records and its tenant-cache tier.
    let redis = match &config.redis_url {
        Some(url) => Some(
            Redis::connect_lazy(url)
                .await
                .map_err(|e| GatewayError::Config(format!("Redis at {}: {e}", redacted(url))))?,
        ),
        None => None,
    };
    let shared = match (&config.tenant_cache, &redis) {
        (Some(shared), _) => Some(shared.clone()),
        (None, Some(redis)) => {
            Some(Arc::new(RedisTenantConfigCache::new(redis)) as Arc<dyn TenantConfigCache>)
        }
        (None, None) => None,
    };
    let mut tenant_cache = TenantCache::new(store.clone(), DEFAULT_TENANT_TTL);
    if let Some(shared) = shared {
        tenant_cache = tenant_cache.with_shared(shared);
    }
    let registry = store.clone();
    let state = AppState::new(Shared {
        coordinators,
        store,
        authenticator: authenticator.clone(),
        request_timeout: config.request_timeout,
        max_key_bytes: config.max_key_bytes,
        max_value_bytes: config.max_value_bytes,
        openapi: crate::openapi::document_json().into(),
        metrics: metrics.clone(),
    });
    let v1 = Router::new()
        .merge(kv::routes())
        .merge(tenants::routes())
        .merge(admin::routes())
        .with_state(state.clone());
    let ops = ops::routes().with_state(state);
    let records: Arc<dyn IdempotencyStore> = match &redis {
        Some(redis) if config.admission => Arc::new(RedisIdempotencyStore::new(redis)),
        _ => Arc::new(MemoryIdempotencyStore::default()),
    };
    let records = MeteredIdempotencyStore::wrap(records, &metrics);
    let mut registration = None;
    let router = layers(
        v1,
        ops,
        authenticator,
        tenant_cache,
        config.admission.then(|| {
            let limits = RateLimits::new();
            // Each gateway admits its share of a tenant's rate.
            registration = Some(limits.share_among_live(registry, "gateway"));
            (
                limits,
                records,
                IdempotencyConfig {
                    // A marker outlives any request that is still running.
                    in_flight_ttl: config.request_timeout * 2 + Duration::from_secs(5),
                    max_request_bytes: config.max_value_bytes + (64 << 10),
                    body_timeout: config.request_timeout,
                    ..IdempotencyConfig::default()
                },
            )
        }),
        metrics,
        config.request_timeout,
    );
    Ok((router, registration))
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then stops
/// accepting, closes idle connections, lets in-flight requests finish, and returns.
///
/// Tests bind `127.0.0.1:0` and pass a future they control, so servers stop deterministically.
/// Errors accepting or serving one connection are logged and never stop the server.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let http1 = Arc::new(builder.clone().http1_only());
    let http2 = Arc::new(builder.http2_only());
    let max = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max));
    let (stopping, stop) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Per-connection errors (reset before accept) are routine; others (out of
                    // file descriptors) need a pause before the next try, as axum does.
                    if !matches!(e.kind(), io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset)
                    {
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::debug!(max, "connection limit reached; closing a new connection");
            continue;
        };
        // Small responses go out at once rather than waiting on Nagle's algorithm.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let (http1, http2, mut stop) = (Arc::clone(&http1), Arc::clone(&http2), stop.clone());
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let sniffed = tokio::select! {
                sniffed = tokio::time::timeout(limits.header_read_timeout, sniff(tcp)) => sniffed,
                _ = stop.changed() => return,
            };
            // Silent, slow or gone before its first bytes: close.
            let Ok(Ok((is_h2, io))) = sniffed else {
                return;
            };
            let (builder, max_age) = if is_h2 {
                (http2, limits.max_http2_age)
            } else {
                // HTTP/1's header-read timer also closes idle keep-alive connections.
                (http1, Duration::MAX)
            };
            let connection = builder.serve_connection(TokioIo::new(io), service);
            let mut connection = std::pin::pin!(connection);
            let age = tokio::time::sleep(max_age.min(Duration::from_secs(365 * 86_400)));
            let mut age = std::pin::pin!(age);
            let mut draining = false;
            loop {
                tokio::select! {
                    served = connection.as_mut() => {
                        if let Err(error) = served {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                        break;
                    }
                    // Stopping, or an HTTP/2 connection at its age limit: finish the requests in
                    // flight (HTTP/2 GOAWAY, HTTP/1 keep-alive off), take no more.
                    _ = stop.changed(), if !draining => {
                        connection.as_mut().graceful_shutdown();
                        draining = true;
                    }
                    () = &mut age, if !draining => {
                        connection.as_mut().graceful_shutdown();
                        draining = true;
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    // Every connection holds a permit until it has closed: having them all back is the drain.
    // Bounded, so a client that stops reading its answer cannot hold the process up forever.
    let all = permits.acquire_many(u32::try_from(max).unwrap_or(u32::MAX));
    if tokio::time::timeout(limits.drain_timeout, all)
        .await
        .is_err()
    {
        tracing::warn!(
            open = max - permits.available_permits(),
            "connections still open after the drain timeout; closing anyway"
        );
    }
    Ok(())
}

/// Tells HTTP/2 prior knowledge (`true`) from HTTP/1 (`false`) by reading the first bytes, and
/// returns the stream with those bytes put back. Each read waits for data, so a client sending its
/// first bytes slowly costs nothing while it does.
async fn sniff(mut tcp: TcpStream) -> io::Result<(bool, Rewound)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut len = 0;
    let is_h2 = loop {
        let rest = buf.get_mut(len..).unwrap_or_default();
        let n = tcp.read(rest).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
        let seen = buf.get(..len).unwrap_or_default();
        if !H2_PREFACE.starts_with(seen) {
            break false;
        }
        if len == H2_PREFACE.len() {
            break true;
        }
    };
    let prefix = buf.get(..len).unwrap_or_default().to_vec();
    Ok((is_h2, Rewound::new(prefix, tcp)))
}

/// A TCP stream whose first bytes were read ahead: it yields them again before the rest.
#[derive(Debug)]
struct Rewound {
    prefix: Vec<u8>,
    read: usize,
    inner: TcpStream,
}

impl Rewound {
    fn new(prefix: Vec<u8>, inner: TcpStream) -> Self {
        Rewound {
            prefix,
            read: 0,
            inner,
        }
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(left) = this.prefix.get(this.read..)
            && !left.is_empty()
        {
            let n = left.len().min(buf.remaining());
            buf.put_slice(left.get(..n).unwrap_or_default());
            this.read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `url` without the password of its user part, for logs and errors.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme + 3 => {
            let user = url.get(scheme + 3..at).unwrap_or_default();
            let name = user.split(':').next().unwrap_or_default();
            format!(
                "{}{name}:***{}",
                url.get(..scheme + 3).unwrap_or_default(),
                url.get(at..).unwrap_or_default()
            )
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod redaction_tests {
    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            super::redacted("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redacted("redis://h:6379/"), "redis://h:6379/");
        assert_eq!(
            super::redacted("sqlite://data/meta.db"),
            "sqlite://data/meta.db"
        );
    }
}

//! Running the storage-node service.
//!
//! [`run`] takes a listener that is *already bound* and a shutdown future. Binding is the
//! caller's job so that tests can bind `127.0.0.1:0`, read the port the OS picked, and only then
//! start the server — no races, no port guessing. The shutdown future is how the caller stops the
//! server deterministically: a signal handler in the binary, a oneshot channel in tests.

use std::future::Future;

use pairdb_proto::storage::storage_server::StorageServer;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic::transport::Server;

use crate::service::StorageService;

/// Largest gRPC message accepted or sent: 8 MiB, room for a full scan page of large values.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Serves `service` on `listener` until `shutdown` completes, then stops gracefully.
///
/// Once `shutdown` resolves, the listener is closed at once (new connections are refused) and
/// `run` returns after the calls already in flight have finished. Errors accepting a single
/// connection are logged by tonic and skipped; they never stop the server. Returns an error only
/// if the transport itself fails.
pub async fn run(
    service: StorageService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    run_layered(
        service,
        listener,
        tower::layer::util::Identity::new(),
        shutdown,
    )
    .await
}

/// [`run`], with every call passing through `layer` first (the binary's trace layer: the node
/// knows nothing of tracing export itself).
pub async fn run_layered<L, ResBody>(
    service: StorageService,
    listener: TcpListener,
    layer: L,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error>
where
    L: tower::Layer<Routes> + Clone,
    L::Service: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "storage node serving gRPC");
    }

    // The stream of accepted connections. tonic ignores its own `tcp_nodelay` setting when given
    // a stream of connections, so set it here: gRPC sends many small frames, and Nagle's
    // algorithm would hold each one back waiting for an ACK.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        })
    });

    // The generated server wraps our service: it decodes protobuf, dispatches to the method of
    // the `Storage` trait, and encodes the answer. Bound message sizes both ways, so a peer
    // cannot make us buffer an arbitrarily large request.
    // Call streams end when the server stops, so the graceful stop below never waits on them.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let service = service.stopping_on(stopping);
    // Heartbeats and hint replay run while the node serves.
    let handoff = service
        .handoff()
        .map(|h| AbortOnDrop(tokio::spawn(std::sync::Arc::clone(h).run())));
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let storage = StorageServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    // `serve_with_incoming_shutdown` runs the accept loop: each connection gets its own task,
    // serving HTTP/2 streams (one per call) concurrently. When `shutdown` resolves the loop
    // stops accepting and every connection is told to finish its in-flight calls and close
    // (HTTP/2 GOAWAY); the future completes when the last one has.
    Server::builder()
        .layer(layer)
        .add_service(storage)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;

    drop(handoff);
    tracing::info!("storage node stopped");
    Ok(())
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

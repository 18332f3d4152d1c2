//! Test support: storage nodes that can be killed like a crashed process.
//!
//! Compiled only with the `testing` feature, which the crate's own tests enable; nothing here is
//! part of the binary. A [`KillableNode`] runs on a runtime of its own, on its own thread, so
//! [`KillableNode::kill`] drops it abruptly — listener and every open connection at once, no
//! flush, no clean-shutdown record — the way a crashed process would, while
//! [`LocalNode::stop`] shuts it down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use pairdb_storage::engine::StorageEngine;
use pairdb_storage::node::NodeState;
use tokio::sync::oneshot;

use crate::local::{LocalNode, NodeSpec, stop_cleanly};

/// Worker threads of a killable node's runtime: a multi-threaded runtime, as in production.
const WORKERS: usize = 2;

/// A storage node on a runtime and thread of its own.
pub struct KillableNode {
    /// Node id.
    pub id: String,
    /// Bound gRPC address.
    pub addr: SocketAddr,
    /// Its engine (shared with the running service).
    pub engine: Arc<dyn StorageEngine>,
    /// Its identity and newest placement.
    pub state: Arc<NodeState>,
    graceful: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KillableNode {
    /// Starts the node `spec` describes on a runtime of its own.
    pub fn start(spec: NodeSpec) -> anyhow::Result<KillableNode> {
        let id = spec.id.clone();
        let engine = Arc::clone(&spec.engine);
        let (listener, state, service) = spec.open()?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name(format!("storage-{id}"))
            .enable_all()
            .build()
            .context("building a storage node runtime")?;
        let (graceful_tx, graceful_rx) = oneshot::channel::<()>();
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let (task_engine, task_state) = (Arc::clone(&engine), Arc::clone(&state));
        let thread = std::thread::Builder::new()
            .name(format!("storage-{id}-main"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot register storage listener");
                            return;
                        }
                    };
                    let server = pairdb_storage::server::run(service, listener, async {
                        let _ = graceful_rx.await;
                    });
                    tokio::select! {
                        r = server => {
                            match r {
                                Ok(()) => stop_cleanly(task_engine, task_state).await,
                                Err(e) => tracing::error!(error = %e, "storage node stopped with an error"),
                            }
                        }
                        _ = kill_rx => {}
                    }
                });
                // Dropping the runtime drops every connection task: the node is gone at once.
                runtime.shutdown_background();
            })?;
        Ok(KillableNode {
            id,
            addr,
            engine,
            state,
            graceful: Some(graceful_tx),
            kill: Some(kill_tx),
            thread: Some(thread),
        })
    }

    /// Drops the node abruptly, as a crash would: the listener and every connection close now,
    /// and nothing is flushed or recorded.
    pub fn kill(mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl LocalNode for KillableNode {
    fn id(&self) -> &str {
        &self.id
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn stop(mut self) {
        if let Some(g) = self.graceful.take() {
            let _ = g.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for KillableNode {
    fn drop(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
    }
}

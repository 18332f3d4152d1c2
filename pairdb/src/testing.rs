//! Test support: storage nodes that can be killed like a crashed process.
//!
//! Compiled only with the `testing` feature, which the crate's own tests enable; nothing here is
//! part of the binary. A [`KillableNode`] is a [`StorageNode`] — on a runtime and thread of its
//! own — that [`KillableNode::kill`] drops abruptly: listener and every open connection at once,
//! no flush, no clean-shutdown record, the way a crashed process would; while
//! [`LocalNode::stop`] shuts it down gracefully.

use std::net::SocketAddr;

use tokio::sync::oneshot;

use crate::local::{LocalNode, NodeSpec, StorageNode};

/// A storage node that can be killed.
pub struct KillableNode {
    // Dropped first: a node dropped without `stop` is aborted, not stopped gracefully.
    kill: Option<oneshot::Sender<()>>,
    node: StorageNode,
}

impl KillableNode {
    /// Starts the node `spec` describes on a runtime of its own with `workers` worker threads.
    pub fn start(spec: NodeSpec, workers: usize) -> anyhow::Result<KillableNode> {
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        // A kill, or dropping the node without `stop`, aborts it.
        let node = StorageNode::start_until(spec, workers, async {
            let _ = kill_rx.await;
        })?;
        Ok(KillableNode {
            kill: Some(kill_tx),
            node,
        })
    }

    /// Drops the node abruptly, as a crash would: the listener and every connection close now,
    /// and nothing is flushed or recorded.
    pub fn kill(mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        self.node.join_blocking();
    }
}

impl std::ops::Deref for KillableNode {
    type Target = StorageNode;

    fn deref(&self) -> &StorageNode {
        &self.node
    }
}

impl LocalNode for KillableNode {
    fn id(&self) -> &str {
        self.node.id()
    }

    fn addr(&self) -> SocketAddr {
        self.node.addr()
    }

    async fn stop(self) -> anyhow::Result<()> {
        // The kill sender lives until the graceful stop is done.
        let KillableNode { kill, node } = self;
        let stopped = node.stop().await;
        drop(kill);
        stopped
    }
}

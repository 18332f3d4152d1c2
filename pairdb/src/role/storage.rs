//! `pairdb storage`: one storage node.

use std::sync::Arc;

use crate::cli::StorageArgs;
use crate::local::StorageNode;
use crate::ops_http::{self, ReadyCheck};
use crate::shutdown::Shutdown;
use crate::{local, secrets, shutdown};

/// Serves one storage node until SIGINT/SIGTERM, then stops it gracefully.
pub async fn run(args: StorageArgs) -> anyhow::Result<()> {
    let secrets = secrets::from_args(&args.secrets)?;
    let engine = local::open_engine(args.engine, &args.data_dir);
    let node = StorageNode::start(
        &args.node_id,
        args.listen,
        &args.data_dir,
        engine,
        &secrets.internal_token,
    )?;
    tracing::info!(node = %args.node_id, incarnation = node.state.incarnation(), listen = %node.addr,
        data_dir = %args.data_dir.display(), engine = args.engine.as_str(), "storage node started");
    let stop = Shutdown::new();
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
        let state = node.state.clone();
        let ready: ReadyCheck = Arc::new(move || {
            let ready = state.placement().is_some();
            Box::pin(async move {
                if ready {
                    Ok(())
                } else {
                    Err("no placement pushed yet".to_owned())
                }
            })
        });
        tokio::spawn(ops_http::serve(listener, ready, stop.wait()));
    }
    shutdown::signal().await;
    stop.trigger();
    // The node runs on its own thread; stopping it waits for calls in flight.
    tokio::task::spawn_blocking(move || node.stop()).await?;
    Ok(())
}

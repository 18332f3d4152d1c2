//! `pairdb storage`: one storage node.

use std::sync::Arc;

use anyhow::Context as _;
use pairdb_storage::node::NodeState;
use pairdb_storage::service::StorageService;

use crate::cli::StorageArgs;
use crate::ops_http::{self, ReadyCheck};
use crate::shutdown::Shutdown;
use crate::{local, secrets, shutdown};

/// Serves one storage node until SIGINT/SIGTERM.
pub async fn run(args: StorageArgs) -> anyhow::Result<()> {
    let secrets = secrets::from_args(&args.secrets)?;
    let engine = local::open_engine(args.engine, &args.data_dir);
    let state = Arc::new(
        NodeState::open(&args.data_dir, &args.node_id, engine.is_durable())
            .with_context(|| format!("opening node state in {}", args.data_dir.display()))?,
    );
    tracing::info!(node = %args.node_id, incarnation = state.incarnation(), listen = %args.listen,
        data_dir = %args.data_dir.display(), engine = args.engine.as_str(), "starting storage node");
    let service = StorageService::new(&args.node_id, engine, state.clone(), secrets.internal_token);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let stop = Shutdown::new();
    if let Some(addr) = args.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let st = state.clone();
        let ready: ReadyCheck = Arc::new(move || {
            let ready = st.placement().is_some();
            Box::pin(async move {
                if ready {
                    Ok(())
                } else {
                    Err("no placement pushed yet".to_owned())
                }
            })
        });
        tokio::spawn(ops_http::serve(l, ready, stop.wait()));
    }
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown::signal().await;
        signal.trigger();
    });
    pairdb_storage::server::run(service, listener, stop.wait()).await?;
    state.mark_clean_shutdown()?;
    Ok(())
}

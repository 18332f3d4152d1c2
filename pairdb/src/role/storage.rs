//! `pairdb storage`: one storage node.

use std::sync::Arc;

use crate::cli::StorageArgs;
use crate::local::{NodeSpec, StorageNode};
use crate::ops_http::{self, ReadyCheck};
use crate::shutdown::Shutdown;
use crate::{local, secrets, shutdown};

/// Serves one storage node until SIGINT/SIGTERM, then stops it gracefully: in-flight calls
/// finish, the engine is flushed, and the stop is recorded as clean.
pub async fn run(args: StorageArgs) -> anyhow::Result<()> {
    let secrets = secrets::from_args(&args.secrets)?;
    pairdb_core::placement::validate_node_id(&args.node_id)?;
    let listener = local::bind("storage node", args.listen)?;
    // Checked before the node starts: `--join` with what it needs, `(url, advertised address)`.
    let join_as = match &args.join {
        Some(url) => {
            let bound = listener.local_addr()?;
            let address = match &args.advertise {
                Some(a) => a.clone(),
                None if bound.ip().is_unspecified() => anyhow::bail!(
                    "--join needs --advertise (the address coordinators reach this node at) when listening on {bound}"
                ),
                None => bound.to_string(),
            };
            if secrets.admin_key.is_empty() {
                anyhow::bail!("--join needs the admin key (PAIRDB_ADMIN_KEY) to add the node");
            }
            Some((url.clone(), address))
        }
        None => None,
    };
    let metrics = args
        .metrics_listen
        .map(|addr| local::bind("metrics endpoint", addr))
        .transpose()?
        .map(tokio::net::TcpListener::from_std)
        .transpose()?;
    let mut node = StorageNode::start(
        NodeSpec {
            id: args.node_id.clone(),
            listener,
            engine: local::engine_opener(args.engine, args.node_limits.fsync),
            data_dir: args.data_dir.clone(),
            internal_token: secrets.internal_token.clone(),
            max_clock_skew: std::time::Duration::from_millis(args.node_limits.max_clock_skew),
        },
        args.node_limits
            .workers(std::thread::available_parallelism().map_or(2, usize::from)),
    )?;
    tracing::info!(node = %args.node_id, incarnation = node.state.incarnation(), listen = %node.addr,
        data_dir = %args.data_dir.display(), engine = args.engine.as_str(), "storage node started");
    let joining = join_as.map(|(url, address)| {
        tokio::spawn(super::join::join(
            url,
            args.node_id.clone(),
            address,
            secrets.admin_key.clone(),
        ))
    });
    let stop = Shutdown::new();
    if let Some(listener) = metrics {
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
        let metrics = pairdb_middleware::Metrics::without_requests();
        metrics.register_collector(Box::new(ops_http::EngineCollector(node.engine.clone())));
        if let Some(h) = &node.handoff {
            metrics.register_collector(Box::new(ops_http::HandoffCollector(h.clone())));
        }
        tokio::spawn(ops_http::serve(listener, ready, metrics, stop.wait()));
    }
    tokio::select! {
        () = shutdown::signal() => {}
        // It stops by itself only on a failure, which `shutdown` reports.
        () = node.stopped() => {}
    }
    stop.trigger();
    if let Some(join) = joining {
        join.abort();
    }
    node.shutdown().await
}

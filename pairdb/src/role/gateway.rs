//! `pairdb gateway`: one REST gateway.

use std::time::Duration;

use crate::cli::GatewayArgs;
use crate::local::GatewayNode;
use crate::{local, secrets, shutdown};

/// Serves the REST API until SIGINT/SIGTERM.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let secrets = secrets::from_args(&args.secrets)?;
    let listener = local::bind("gateway", args.http)?;
    let store = local::open_metadata(&args.metadata_url).await?;
    tracing::info!(http = %args.http, coordinators = ?args.coordinators, metadata = %pairdb_gateway::server::redacted(&args.metadata_url),
        request_timeout_ms = args.request_timeout, "starting gateway");
    let gateway = GatewayNode::start(
        store,
        listener,
        args.coordinators.clone(),
        &secrets,
        Duration::from_millis(args.request_timeout),
        args.edge.limits(),
        local::Admission {
            enabled: !args.edge.no_admission,
            redis_url: args.edge.redis_url.clone(),
            tenant_cache: None,
        },
    )
    .await?;
    println!("gateway listening on http://{}", gateway.addr);
    shutdown::signal().await;
    gateway.stop().await;
    Ok(())
}

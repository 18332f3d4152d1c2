//! `pairdb coordinator`: one coordinator.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use pairdb_coordinator::CoordinatorConfig;
use pairdb_coordinator::cluster::Cluster;
use pairdb_core::NodeAddr;
use pairdb_metadata::RateLimit;

use crate::cli::CoordinatorArgs;
use crate::ops_http::{self, ReadyCheck};
use crate::shutdown::Shutdown;
use crate::{local, secrets, shutdown};

/// Parses `ID=HOST:PORT` pairs: ids non-empty and distinct, addresses with a host and a port.
pub fn parse_initial_nodes(items: &[String]) -> anyhow::Result<Vec<NodeAddr>> {
    let mut nodes: Vec<NodeAddr> = Vec::new();
    for item in items.iter().filter(|s| !s.trim().is_empty()) {
        let Some((id, addr)) = item.split_once('=').map(|(i, a)| (i.trim(), a.trim())) else {
            bail!("--initial-nodes entry {item:?} is not ID=HOST:PORT");
        };
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if id.is_empty() || !port_ok {
            bail!("--initial-nodes entry {item:?} is not ID=HOST:PORT");
        }
        if nodes.iter().any(|n| n.id == id) {
            bail!("--initial-nodes names node {id:?} twice");
        }
        nodes.push(NodeAddr {
            id: id.to_owned(),
            address: addr.to_owned(),
        });
    }
    Ok(nodes)
}

/// Serves one coordinator until SIGINT/SIGTERM.
pub async fn run(args: CoordinatorArgs) -> anyhow::Result<()> {
    let secrets = secrets::from_args(&args.secrets)?;
    // Ports first: a coordinator that cannot have them writes nothing.
    let listener = local::bind("coordinator", args.listen)?;
    let metrics = args
        .metrics_listen
        .map(|addr| local::bind("metrics endpoint", addr))
        .transpose()?;
    let store = local::open_metadata(&args.metadata_url).await?;
    let mut config = CoordinatorConfig::new(
        secrets.internal_token.clone(),
        secrets.key_secret.clone(),
        secrets.admin_key.clone(),
    );
    config.request_timeout = Duration::from_millis(args.request_timeout);
    if !args.stream_mb_per_sec.is_finite() || args.stream_mb_per_sec < 0.0 {
        anyhow::bail!("--stream-mb-per-sec must be a number at least 0");
    }
    config.stream_bytes_per_sec = (args.stream_mb_per_sec * f64::from(1u32 << 20)) as u64;
    config.repair_interval =
        (args.repair_interval_secs > 0).then(|| Duration::from_secs(args.repair_interval_secs));
    config.repair_keys_per_sec = args.repair_keys_per_sec;
    if let Some(url) = &args.redis_url {
        let redis = local::redis(Some(url)).await?;
        config.tenant_cache = Some(local::shared_tenant_cache(redis.as_ref()));
        config.idempotency = local::coordinator_records(redis.as_ref());
    }
    tracing::info!(listen = %args.listen, metadata = %pairdb_gateway::server::redacted(&args.metadata_url), request_timeout_ms = args.request_timeout,
        admin_key = if secrets.admin_key.is_empty() { "unset" } else { "set" }, "starting coordinator");
    let cluster = Cluster::new(store.clone(), config)?;
    let initial = parse_initial_nodes(&args.initial_nodes)?;
    if !initial.is_empty() {
        cluster
            .bootstrap(initial, pairdb_core::placement::DEFAULT_VNODES)
            .await
            .context("writing the initial placement")?;
    }
    if let Err(e) = cluster.refresh().await {
        tracing::warn!(error = %e, "no placement yet; retrying in the background");
    }
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let stop = Shutdown::new();
    if let Some(l) = metrics {
        let l = tokio::net::TcpListener::from_std(l)?;
        let c = cluster.clone();
        let ready: ReadyCheck = Arc::new(move || {
            let c = c.clone();
            Box::pin(async move { c.readiness().await })
        });
        tokio::spawn(ops_http::serve(
            l,
            ready,
            cluster.config().metrics.clone(),
            stop.wait(),
        ));
    }
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown::signal().await;
        signal.trigger();
    });
    pairdb_coordinator::server::run(cluster, listener, RateLimit::default(), stop.wait()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_nodes_parse_and_reject_garbage() {
        let nodes =
            parse_initial_nodes(&["a=127.0.0.1:1".into(), " b = h:2 ".into(), String::new()])
                .expect("valid");
        assert_eq!(nodes.len(), 2);
        assert_eq!(
            (nodes[1].id.as_str(), nodes[1].address.as_str()),
            ("b", "h:2")
        );
        for bad in ["no-equals", "=h:1", " =h:1", "a=h", "a=:1", "a=h:port"] {
            assert!(parse_initial_nodes(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(parse_initial_nodes(&["a=h:1".into(), "a=h:2".into()]).is_err());
    }
}

//! `pairdb dev`: the whole cluster in one process on loopback.

use std::time::Duration;

use pairdb_storage::dir_lock::DirLock;

use std::sync::Arc;

use crate::cli::DevArgs;
use crate::local::{Admission, LocalCluster, LocalOptions};
use crate::ops_http::{self, ReadyCheck};
use crate::shutdown::Shutdown;
use crate::{secrets, shutdown};

/// Runs the local cluster until SIGINT/SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    // Before anything in the data dir is read or written: a second `pairdb dev` on it stops here.
    let lock = DirLock::acquire(&args.data_dir)?;
    let secrets = secrets::load_or_generate(&args.data_dir, &args.secrets)?;
    let opts = LocalOptions {
        http: args.http,
        nodes: args.nodes,
        data_dir: args.data_dir.clone(),
        engine: args.engine,
        metadata_url: args.metadata_url.clone(),
        request_timeout: Duration::from_millis(args.request_timeout),
        vnodes: pairdb_core::placement::DEFAULT_VNODES,
        max_clock_skew: Duration::from_millis(args.node_limits.max_clock_skew),
        edge: args.edge.limits(),
        admission: Admission {
            enabled: !args.edge.no_admission,
            redis_url: args.edge.redis_url.clone(),
            tenant_cache: None,
        },
        // Like a process of its own, each node schedules its calls on its own runtime.
        // Unless told otherwise, every role shares the process's runtime (one worker per core).
        node_workers: args.node_limits.workers(0),
        durability: args.node_limits.fsync,
    };
    tracing::info!(
        http = %opts.http, nodes = opts.nodes, data_dir = %opts.data_dir.display(),
        engine = opts.engine.as_str(), metadata = opts.metadata_url.as_deref().map_or_else(|| "sqlite (data dir)".to_owned(), pairdb_gateway::server::redacted),
        "starting pairdb dev"
    );
    let metrics = args
        .metrics_listen
        .map(|addr| crate::local::bind("metrics endpoint", addr))
        .transpose()?
        .map(tokio::net::TcpListener::from_std)
        .transpose()?;
    let cluster = LocalCluster::start(&opts, lock, secrets).await?;
    let stop = Shutdown::new();
    if let Some(listener) = metrics {
        let mut registries = vec![(
            "/metrics".to_owned(),
            cluster.coordinator.cluster.config().metrics.clone(),
        )];
        for node in &cluster.nodes {
            let engine = pairdb_middleware::Metrics::without_requests();
            engine.register_collector(Box::new(ops_http::EngineCollector(node.engine.clone())));
            if let Some(h) = &node.handoff {
                engine.register_collector(Box::new(ops_http::HandoffCollector(h.clone())));
            }
            registries.push((format!("/metrics/storage/{}", node.id), engine));
        }
        let coordinator = cluster.coordinator.cluster.clone();
        let ready: ReadyCheck = Arc::new(move || {
            let ready = coordinator.view().is_ok();
            Box::pin(async move {
                if ready {
                    Ok(())
                } else {
                    Err("no placement loaded yet".to_owned())
                }
            })
        });
        tokio::spawn(ops_http::serve_many(
            listener,
            ready,
            registries,
            stop.wait(),
        ));
    }
    print_banner(&cluster, &args);
    shutdown::signal().await;
    stop.trigger();
    cluster.stop().await
}

fn print_banner(cluster: &LocalCluster, args: &DevArgs) {
    let url = format!("http://{}", cluster.gateway.addr);
    let generated = cluster.secrets.admin_key_generated;
    let admin_line = if generated {
        format!(
            "admin key:  {}   (generated; kept in {}/secrets.json)",
            cluster.secrets.admin_key,
            args.data_dir.display()
        )
    } else {
        "admin key:  from PAIRDB_ADMIN_KEY".to_owned()
    };
    // A key that came from the environment is never printed.
    let export = if generated {
        format!(
            "export PAIRDB_URL={url} PAIRDB_ADMIN_KEY={}",
            cluster.secrets.admin_key
        )
    } else {
        format!("export PAIRDB_URL={url}   # PAIRDB_ADMIN_KEY is already set")
    };
    println!(
        "\npairdb dev is running: {} storage nodes ({} engine), coordinator on {}\n\
         gateway:    {url}\n{admin_line}\n\n\
         Try it:\n\
         \x20 {export}\n\
         \x20 export API_KEY=$(curl -s -X POST $PAIRDB_URL/v1/tenants -H \"Authorization: Bearer $PAIRDB_ADMIN_KEY\" \\\n\
         \x20      -H 'Content-Type: application/json' -d '{{\"tenant_id\":\"acme\"}}' | sed -n 's/.*\"api_key\":\"\\([^\"]*\\)\".*/\\1/p')\n\
         \x20 curl -s -X PUT $PAIRDB_URL/v1/kv/hello -H \"Authorization: Bearer $API_KEY\" \\\n\
         \x20      -H 'Content-Type: text/plain' --data-binary world\n",
        cluster.nodes.len(),
        args.engine.as_str(),
        cluster.coordinator.addr,
    );
}

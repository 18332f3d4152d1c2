//! `pairdb dev`: the whole cluster in one process on loopback.

use std::time::Duration;

use crate::cli::DevArgs;
use crate::local::{LocalCluster, LocalOptions};
use crate::{secrets, shutdown};

/// Runs the local cluster until SIGINT/SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)?;
    let secrets = secrets::load_or_generate(&args.data_dir, &args.secrets)?;
    let opts = LocalOptions {
        http: args.http,
        nodes: args.nodes,
        data_dir: args.data_dir.clone(),
        engine: args.engine,
        metadata_url: args.metadata_url.clone(),
        request_timeout: Duration::from_millis(args.request_timeout),
        vnodes: pairdb_core::placement::DEFAULT_VNODES,
    };
    tracing::info!(
        http = %opts.http, nodes = opts.nodes, data_dir = %opts.data_dir.display(),
        engine = opts.engine.as_str(), metadata = opts.metadata_url.as_deref().unwrap_or("sqlite (data dir)"),
        "starting pairdb dev"
    );
    let cluster = LocalCluster::start(&opts, secrets).await?;
    print_banner(&cluster, &args);
    shutdown::signal().await;
    cluster.stop().await;
    Ok(())
}

fn print_banner(cluster: &LocalCluster, args: &DevArgs) {
    let url = format!("http://{}", cluster.gateway.addr);
    let admin = &cluster.secrets.admin_key;
    let admin_line = if cluster.secrets.admin_key_generated {
        format!(
            "admin key:  {admin}   (generated; kept in {}/secrets.json)",
            args.data_dir.display()
        )
    } else {
        "admin key:  from PAIRDB_ADMIN_KEY".to_owned()
    };
    println!(
        "\npairdb dev is running: {} storage nodes ({} engine), coordinator on {}\n\
         gateway:    {url}\n{admin_line}\n\n\
         Try it:\n\
         \x20 export PAIRDB_URL={url} PAIRDB_ADMIN_KEY={admin}\n\
         \x20 curl -s -X POST $PAIRDB_URL/v1/tenants -H \"Authorization: Bearer $PAIRDB_ADMIN_KEY\" \\\n\
         \x20      -H 'Content-Type: application/json' -d '{{\"tenant_id\":\"acme\"}}'\n\
         \x20 # then, with the returned api_key:\n\
         \x20 curl -s -X PUT $PAIRDB_URL/v1/kv/hello -H \"Authorization: Bearer $API_KEY\" --data-binary world\n",
        cluster.nodes.len(),
        args.engine.as_str(),
        cluster.coordinator.addr,
    );
}

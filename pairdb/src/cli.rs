//! Command-line flags. Every flag also reads `PAIRDB_<FLAG>` from the environment and, through
//! `--config FILE`, from a TOML file (flags win over the environment, which wins over the file).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// pairdb: a distributed, multi-tenant key-value store.
#[derive(Debug, Parser)]
#[command(name = "pairdb", version, about)]
pub struct Cli {
    /// TOML file of flag values (keys are flag names, e.g. `metadata-url = "sqlite://m.db"`).
    #[arg(long, global = true, env = "PAIRDB_CONFIG")]
    pub config: Option<PathBuf>,
    /// The role to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The roles.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole cluster in one process on loopback: gateway, coordinator, storage nodes.
    Dev(DevArgs),
    /// Run one storage node.
    Storage(StorageArgs),
    /// Run one coordinator.
    Coordinator(CoordinatorArgs),
    /// Run one REST gateway.
    Gateway(GatewayArgs),
}

/// Storage engines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// In-memory engine: fast, loses data on restart.
    Memory,
    /// The log-structured merge tree: keeps every acknowledged write across restarts.
    Lsm,
}

impl EngineKind {
    /// The flag value naming this engine.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Memory => "memory",
            EngineKind::Lsm => "lsm",
        }
    }
}

/// Secrets shared by every role.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// Credential of internal calls (gateway → coordinator → storage).
    #[arg(long, env = "PAIRDB_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Server secret under which API keys are HMAC'd and context tokens sealed.
    #[arg(long, env = "PAIRDB_KEY_SECRET", hide_env_values = true)]
    pub key_secret: Option<String>,
    /// The admin API key.
    #[arg(long, env = "PAIRDB_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
}

/// `pairdb dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address of the REST gateway.
    #[arg(long, env = "PAIRDB_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Number of storage nodes.
    #[arg(long, env = "PAIRDB_NODES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub nodes: u32,
    /// Directory holding metadata, secrets and node data.
    #[arg(long, env = "PAIRDB_DATA_DIR", default_value = "./pairdb-data")]
    pub data_dir: PathBuf,
    /// Storage engine: `lsm` (keeps every acknowledged write across restarts) or `memory`
    /// (forgets everything on restart; for experiments).
    #[arg(long, env = "PAIRDB_ENGINE", value_enum, default_value = "lsm")]
    pub engine: EngineKind,
    /// Metadata store URL, `sqlite://PATH` or `postgres://USER@HOST:PORT/DB` (default: SQLite in
    /// the data dir).
    #[arg(long, env = "PAIRDB_METADATA_URL")]
    pub metadata_url: Option<String>,
    /// Default (and maximum) request deadline in milliseconds.
    #[arg(long, env = "PAIRDB_REQUEST_TIMEOUT", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub request_timeout: u64,
    /// Serve the coordinator's metrics at `/metrics` and each storage node's at
    /// `/metrics/storage/<node>` here, with `/healthz` and `/readyz` (the gateway's are on its
    /// own port).
    #[arg(long, env = "PAIRDB_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Bounds of the storage nodes.
    #[command(flatten)]
    pub node_limits: NodeLimitArgs,
    /// Bounds of the gateway's connections.
    #[command(flatten)]
    pub edge: EdgeArgs,
    /// Secrets shared by every role.
    #[command(flatten)]
    pub secrets: SecretArgs,
}

/// Bounds of a storage node.
#[derive(Debug, Args)]
pub struct NodeLimitArgs {
    /// How far ahead of its wall clock a storage node accepts a version's timestamp, in ms;
    /// a version from further in the future is refused and logged.
    #[arg(long, env = "PAIRDB_MAX_CLOCK_SKEW", default_value_t = pairdb_core::hlc::DEFAULT_MAX_AHEAD_MS, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub max_clock_skew: u64,
    /// Worker threads of each storage node's runtime (default: under `dev`, none — the nodes run
    /// on the process's runtime with the other roles, one worker per core; one per core for
    /// `pairdb storage`).
    #[arg(long, env = "PAIRDB_NODE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub node_workers: Option<u16>,
    /// When the `lsm` engine's acknowledged writes are on stable storage: `always` (fsynced
    /// before the acknowledgement; concurrent writes share fsyncs), `interval:<ms>` or `never`.
    #[arg(long, env = "PAIRDB_FSYNC", default_value = "always")]
    pub fsync: pairdb_storage::durability::Durability,
}

impl NodeLimitArgs {
    /// Worker threads for each storage node's runtime, `default` unless set.
    pub fn workers(&self, default: usize) -> usize {
        self.node_workers.map_or(default, usize::from)
    }
}

/// Bounds of the gateway's connections.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Connections the gateway serves at once; more are closed as they arrive.
    #[arg(long, env = "PAIRDB_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Time allowed for each request head to arrive (and for an idle keep-alive connection), in
    /// milliseconds.
    #[arg(long, env = "PAIRDB_HEADER_READ_TIMEOUT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub header_read_timeout: u64,
    /// Turn off rate limiting and the gateway's idempotency records, to measure what they cost
    /// (`make bench-layers`); never in production.
    #[arg(long, env = "PAIRDB_NO_ADMISSION")]
    pub no_admission: bool,
    /// Redis for the gateway's idempotency records, shared by every gateway
    /// (`redis://HOST:PORT/DB`); default: kept in the gateway's memory.
    #[arg(long, env = "PAIRDB_REDIS_URL")]
    pub redis_url: Option<String>,
}

impl EdgeArgs {
    /// The gateway's connection limits these flags describe.
    pub fn limits(&self) -> pairdb_gateway::server::ConnectionLimits {
        pairdb_gateway::server::ConnectionLimits {
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            header_read_timeout: std::time::Duration::from_millis(self.header_read_timeout),
            ..pairdb_gateway::server::ConnectionLimits::default()
        }
    }
}

/// `pairdb storage`.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Stable node id.
    #[arg(long, env = "PAIRDB_NODE_ID")]
    pub node_id: String,
    /// gRPC listen address.
    #[arg(long, env = "PAIRDB_LISTEN")]
    pub listen: SocketAddr,
    /// Data directory of this node.
    #[arg(long, env = "PAIRDB_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Storage engine: `lsm` (keeps every acknowledged write across restarts) or `memory`.
    #[arg(long, env = "PAIRDB_ENGINE", value_enum, default_value = "lsm")]
    pub engine: EngineKind,
    /// Serve `/healthz` and `/readyz` over HTTP here.
    #[arg(long, env = "PAIRDB_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Join the cluster by itself: the gRPC URL of a coordinator (`http://HOST:PORT`), asked
    /// with the admin key to add this node unless it is a member already.
    #[arg(long, env = "PAIRDB_JOIN")]
    pub join: Option<String>,
    /// The `host:port` coordinators reach this node at (default: `--listen`, which must then
    /// not be a wildcard address).
    #[arg(long, env = "PAIRDB_ADVERTISE")]
    pub advertise: Option<String>,
    /// Bounds of the node.
    #[command(flatten)]
    pub node_limits: NodeLimitArgs,
    /// Secrets shared by every role.
    #[command(flatten)]
    pub secrets: SecretArgs,
}

/// `pairdb coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// gRPC listen address.
    #[arg(long, env = "PAIRDB_LISTEN")]
    pub listen: SocketAddr,
    /// Metadata store URL: `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "PAIRDB_METADATA_URL")]
    pub metadata_url: String,
    /// First placement, written only when the metadata store has none: `ID=ADDR,ID=ADDR,…`.
    #[arg(long, env = "PAIRDB_INITIAL_NODES", value_delimiter = ',')]
    pub initial_nodes: Vec<String>,
    /// Serve `/healthz` and `/readyz` over HTTP here.
    #[arg(long, env = "PAIRDB_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Default (and maximum) request deadline in milliseconds.
    #[arg(long, env = "PAIRDB_REQUEST_TIMEOUT", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub request_timeout: u64,
    /// Redis holding the tenant-config cache shared with the gateways, and gRPC clients'
    /// idempotency records shared by every coordinator (`redis://HOST:PORT/DB`). Default: this
    /// coordinator's memory only.
    #[arg(long, env = "PAIRDB_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Most MB (MiB) per second a migration streams to new replicas (0: unpaced).
    #[arg(long, env = "PAIRDB_STREAM_MB_PER_SEC", default_value_t = 32.0)]
    pub stream_mb_per_sec: f64,
    /// A repair of every tenant starts by itself this often, in seconds (0: only on demand).
    #[arg(long, env = "PAIRDB_REPAIR_INTERVAL_SECS", default_value_t = 86_400)]
    pub repair_interval_secs: u64,
    /// Keys a repair digests or reads per second, on all replicas together (0: unpaced).
    #[arg(long, env = "PAIRDB_REPAIR_KEYS_PER_SEC", default_value_t = 50_000)]
    pub repair_keys_per_sec: u64,
    /// Secrets shared by every role.
    #[command(flatten)]
    pub secrets: SecretArgs,
}

/// `pairdb gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// REST listen address.
    #[arg(long, env = "PAIRDB_HTTP")]
    pub http: SocketAddr,
    /// Coordinator gRPC addresses.
    #[arg(
        long,
        env = "PAIRDB_COORDINATORS",
        value_delimiter = ',',
        required = true
    )]
    pub coordinators: Vec<String>,
    /// Metadata store URL: `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "PAIRDB_METADATA_URL")]
    pub metadata_url: String,
    /// Default (and maximum) request deadline in milliseconds.
    #[arg(long, env = "PAIRDB_REQUEST_TIMEOUT", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub request_timeout: u64,
    /// Bounds of the gateway's connections.
    #[command(flatten)]
    pub edge: EdgeArgs,
    /// Secrets shared by every role.
    #[command(flatten)]
    pub secrets: SecretArgs,
}

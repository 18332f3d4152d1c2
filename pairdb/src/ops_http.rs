//! `--metrics-listen`: `/healthz`, `/readyz` and `/metrics` over HTTP for the gRPC roles, and
//! the storage engine's figures as Prometheus metrics ([`EngineCollector`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use pairdb_middleware::{Metrics, metrics};
use pairdb_storage::engine::StorageEngine;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::net::TcpListener;

/// Answers whether the role can serve, with a reason when it cannot.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Serves `/healthz` (always 200 while the process runs), `/readyz` (200 when `ready` says so,
/// else 503 with the reason) and `/metrics` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    ready: ReadyCheck,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_many(
        listener,
        ready,
        vec![("/metrics".to_owned(), metrics)],
        shutdown,
    )
    .await
}

/// [`serve`], with a registry per path (`pairdb dev` serves its coordinator's at `/metrics` and
/// each storage node's at `/metrics/storage/<node>`).
pub async fn serve_many(
    listener: TcpListener,
    ready: ReadyCheck,
    registries: Vec<(String, Metrics)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut app = Router::new();
    for (path, metrics) in registries {
        app = app.route(
            &path,
            get(move || {
                let metrics = metrics.clone();
                async move {
                    // An engine's figures may wait on its locks: off the async workers.
                    let text = tokio::task::spawn_blocking(move || metrics.encode())
                        .await
                        .unwrap_or_default();
                    (
                        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                        text,
                    )
                }
            }),
        );
    }
    let app = app
        .route(
            "/healthz",
            get(|| async { (StatusCode::OK, "{\"status\":\"ok\"}") }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => (StatusCode::OK, "{\"status\":\"ready\"}".to_owned()),
                        Err(reason) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            serde_json::json!({ "status": "not ready", "detail": reason })
                                .to_string(),
                        ),
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A storage engine's figures ([`StorageEngine::stats`]), read on every scrape: keys, bytes,
/// applied-keys entries, flushes, compactions, write-stall time, tables and bytes per level,
/// purged tombstones, cache hits, misses and bytes.
pub struct EngineCollector(pub Arc<dyn StorageEngine>);

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCollector").finish_non_exhaustive()
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let value = i64::try_from(v).unwrap_or(i64::MAX);
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// A storage node's hinted handoff and failure detection as Prometheus metrics: hints held,
/// recorded, replayed (their rate is the replay rate) and dropped, and peers judged down.
pub struct HandoffCollector(pub Arc<pairdb_storage::handoff::Handoff>);

impl std::fmt::Debug for HandoffCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffCollector").finish_non_exhaustive()
    }
}

impl Collector for HandoffCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let c = self.0.hints.counts();
        let e = &mut encoder;
        gauge(
            e,
            "hints_pending",
            "Hints held for replicas that missed writes",
            c.pending,
        )?;
        counter(e, "hints_recorded", "Hints recorded", c.recorded)?;
        counter(
            e,
            "hints_replayed",
            "Hints delivered to their replica",
            c.replayed,
        )?;
        counter(
            e,
            "hints_dropped",
            "Hints dropped unreplayed (expired, node removed, key moved, or over the bound)",
            c.dropped,
        )?;
        let down = self.0.peers.views().iter().filter(|v| !v.up).count() as u64;
        gauge(
            e,
            "peers_down",
            "Peers this node's failure detector judges down",
            down,
        )
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.stats();
        let e = &mut encoder;
        gauge(
            e,
            "engine_keys",
            "Keys stored (tombstones included)",
            s.keys,
        )?;
        gauge(
            e,
            "engine_bytes",
            "Approximate bytes of keys and values stored",
            s.bytes,
        )?;
        gauge(
            e,
            "engine_applied_keys",
            "Entries in the applied-keys index",
            s.applied_keys,
        )?;
        counter(
            e,
            "engine_flushes",
            "Memtables flushed into tables",
            s.flushes,
        )?;
        counter(e, "engine_compactions", "Compactions run", s.compactions)?;
        counter(
            e,
            "engine_write_stall_microseconds",
            "Time writers waited for flushes or compactions",
            s.write_stall_micros,
        )?;
        counter(
            e,
            "engine_tombstones_purged",
            "Tombstones dropped by compaction",
            s.tombstones_purged,
        )?;
        gauge(
            e,
            "engine_cache_bytes",
            "Bytes held by the block and row caches",
            s.cache_bytes,
        )?;
        for (name, help, by_level) in [
            ("engine_level_tables", "Tables per level", &s.level_tables),
            ("engine_level_bytes", "Bytes per level", &s.level_bytes),
        ] {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (level, v) in by_level.iter().enumerate() {
                let level = level.to_string();
                let value = i64::try_from(*v).unwrap_or(i64::MAX);
                ConstGauge::new(value)
                    .encode(family.encode_family(&[("level", level.as_str())])?)?;
            }
        }
        for (name, help, block, row) in [
            (
                "engine_cache_hits",
                "Cache hits",
                s.block_cache_hits,
                s.row_cache_hits,
            ),
            (
                "engine_cache_misses",
                "Cache misses",
                s.block_cache_misses,
                s.row_cache_misses,
            ),
        ] {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(block).encode(family.encode_family(&[("cache", "block")])?)?;
            ConstCounter::new(row).encode(family.encode_family(&[("cache", "row")])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_figures_are_metrics() {
        let engine: Arc<dyn StorageEngine> = Arc::new(pairdb_storage::memory::MemoryEngine::new(
            std::time::Duration::from_secs(60),
        ));
        let metrics = Metrics::without_requests();
        metrics.register_collector(Box::new(EngineCollector(engine)));
        let text = metrics.encode();
        assert!(!text.contains("pairdb_requests"), "{text}");
        for line in [
            "pairdb_engine_keys 0",
            "pairdb_engine_flushes_total 0",
            "pairdb_engine_cache_hits_total{cache=\"block\"} 0",
            "# TYPE pairdb_engine_level_bytes gauge",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}

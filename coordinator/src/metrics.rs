//! The coordinator's view of the cluster as Prometheus metrics, read on every scrape: the
//! placement epoch it routes by, whether it believes each storage node up, the hints it holds
//! and the bytes of writes in flight.

use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::cluster::Cluster;

/// Collects [`Cluster`] figures. Holds the cluster weakly: the metrics registry lives in the
/// cluster's own configuration, and must not keep it alive.
#[derive(Debug)]
pub struct ClusterCollector(pub Weak<Cluster>);

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let value = i64::try_from(v).unwrap_or(i64::MAX);
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(cluster) = self.0.upgrade() else {
            return Ok(());
        };
        let e = &mut encoder;
        // 0 until a placement is loaded.
        let epoch = cluster.view().map_or(0, |v| v.placement.epoch);
        gauge(
            e,
            "placement_epoch",
            "Epoch of the placement this coordinator routes by (0: none loaded)",
            epoch,
        )?;
        let mut nodes = cluster.pool().all();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut up = e.encode_descriptor(
            "node_up",
            "Whether this coordinator believes the storage node up (1) or down (0)",
            None,
            MetricType::Gauge,
        )?;
        for node in &nodes {
            ConstGauge::new(i64::from(node.is_live()))
                .encode(up.encode_family(&[("node", node.id.as_str())])?)?;
        }
        let hints = cluster.hints();
        gauge(
            e,
            "hints_pending",
            "Hints held for replicas that missed writes",
            hints.pending() as u64,
        )?;
        ConstCounter::new(hints.recorded()).encode(e.encode_descriptor(
            "hints_recorded",
            "Hints recorded since start",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(hints.dropped()).encode(e.encode_descriptor(
            "hints_dropped",
            "Hints dropped (over the bounds, or expired) since start",
            None,
            MetricType::Counter,
        )?)?;
        gauge(
            e,
            "writes_in_flight_bytes",
            "Bytes held by write pipelines still replicating",
            cluster.writes_in_flight_bytes() as u64,
        )?;
        Ok(())
    }
}

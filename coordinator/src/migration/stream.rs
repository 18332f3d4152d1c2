//! Moving a range's data between storage nodes, and dropping ranges a node lost.
//!
//! The coordinator pages through a source replica with `Scan` and hands each page to the target
//! with `Ingest`, which stores each version as its resolution against what the target holds:
//! streaming never overwrites a newer write, so it runs while writes go on (they reach the
//! target too, as a pending replica). Pages are paced to the configured byte rate.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pairdb_core::movement::RangeMove;
use pairdb_proto::storage::{
    DropRangesRequest, IngestRequest, RefusalReason, ScanCursor, ScanRequest, TokenRange,
};
use tokio::time::Instant;
use tonic::Status;

use crate::cluster::Cluster;
use crate::pool::{Failure, StorageRpc, classify};

/// Entries asked for per scan page.
const PAGE_ENTRIES: u32 = 500;
/// How long one streaming or drop call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Ranges per drop request.
const DROP_BATCH: usize = 256;

/// What streaming one range did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Streamed {
    /// Versions sent.
    pub keys: u64,
    /// Bytes of keys and values sent.
    pub bytes: u64,
}

/// Paces streaming to a byte rate (0: unpaced), over the life of one migration run.
pub struct Pacer {
    rate: u64,
    started: Instant,
    sent: u64,
}

impl Pacer {
    /// A pacer for `bytes_per_sec` (0: no pacing).
    pub fn new(bytes_per_sec: u64) -> Self {
        Pacer {
            rate: bytes_per_sec,
            started: Instant::now(),
            sent: 0,
        }
    }

    /// Accounts `bytes` sent and sleeps until the average rate is back under the limit.
    pub async fn sent(&mut self, bytes: u64) {
        self.sent += bytes;
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
        tokio::time::sleep_until(self.started + due).await;
    }
}

/// Streams range `mv` to each of its new replicas, from the sources its plan names — or, when
/// a named source is down, from every live old replica (their union holds at least what it
/// did). `Err` names what is missing; the caller retries the range.
pub async fn stream_range(
    cluster: &Arc<Cluster>,
    mv: &RangeMove,
    pacer: &mut Pacer,
    progress: &mut (dyn FnMut(Streamed) -> bool + Send),
) -> Result<(), String> {
    for stream in mv.streams() {
        if !cluster.pool().is_live(&stream.target) {
            return Err(format!("{} (receiving) is down", stream.target));
        }
        let mut sources: Vec<String> = stream
            .sources
            .iter()
            .filter(|s| cluster.pool().is_live(s))
            .cloned()
            .collect();
        if sources.len() < stream.sources.len() {
            sources = mv
                .from
                .iter()
                .filter(|s| **s != stream.target && cluster.pool().is_live(s))
                .cloned()
                .collect();
        }
        if sources.is_empty() {
            return Err(format!(
                "no replica of {} [{}, {}] is up to stream from",
                mv.tenant, mv.start, mv.end
            ));
        }
        for source in &sources {
            copy(cluster, mv, source, &stream.target, pacer, progress).await?;
        }
    }
    Ok(())
}

/// Copies every version of `mv`'s range from `source` to `target`, page by page.
async fn copy(
    cluster: &Arc<Cluster>,
    mv: &RangeMove,
    source: &str,
    target: &str,
    pacer: &mut Pacer,
    progress: &mut (dyn FnMut(Streamed) -> bool + Send),
) -> Result<(), String> {
    let range = TokenRange {
        namespace: mv.tenant.clone(),
        start: mv.start,
        end: mv.end,
    };
    let mut after: Option<ScanCursor> = None;
    loop {
        let page = unary(cluster, source, true, |mut c, epoch| {
            let request = ScanRequest {
                epoch,
                range: Some(range.clone()),
                after: after.clone(),
                limit: PAGE_ENTRIES,
            };
            async move { c.scan(request).await }
        })
        .await
        .map_err(|e| format!("scan of {source}: {e}"))?;
        if let Some(last) = page.entries.last() {
            after = Some(ScanCursor {
                token: last.token,
                key: last.key.clone(),
            });
        }
        let keys = page.entries.len() as u64;
        let bytes: u64 = page
            .entries
            .iter()
            .map(|e| (e.key.len() + e.version.as_ref().map_or(0, |v| v.value.len())) as u64)
            .sum();
        if !page.entries.is_empty() {
            let entries = page.entries;
            unary(cluster, target, true, |mut c, epoch| {
                let request = IngestRequest {
                    epoch,
                    namespace: mv.tenant.clone(),
                    entries: entries.clone(),
                };
                async move { c.ingest(request).await }
            })
            .await
            .map_err(|e| format!("ingest into {target}: {e}"))?;
            if !progress(Streamed { keys, bytes }) {
                return Err(
                    "stopped: the migration's lease was lost, or it was cancelled".to_owned(),
                );
            }
            pacer.sent(bytes).await;
        }
        if !page.more {
            return Ok(());
        }
    }
}

/// Tells `node` to drop `ranges`, in batches. `Err` when it could not be told.
pub async fn drop_ranges(
    cluster: &Arc<Cluster>,
    node: &str,
    ranges: Vec<TokenRange>,
) -> Result<u64, String> {
    let mut dropped = 0;
    for batch in ranges.chunks(DROP_BATCH) {
        // Never re-sent at a newer epoch than the one it was planned under: the run checks
        // again and retries.
        let answer = unary(cluster, node, false, |mut c, epoch| {
            let request = DropRangesRequest {
                epoch,
                ranges: batch.to_vec(),
            };
            async move { c.drop_ranges(request).await }
        })
        .await?;
        dropped += answer.dropped;
    }
    Ok(dropped)
}

/// Calls `node` with the current epoch; one that lacks ours is pushed it and called again, and
/// with `catch_up` a node on a newer placement makes the coordinator catch up and call again.
pub(crate) async fn unary<T, F, Fut>(
    cluster: &Arc<Cluster>,
    node: &str,
    catch_up: bool,
    f: F,
) -> Result<T, String>
where
    F: Fn(StorageRpc, u64) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let mut last = String::new();
    for _ in 0..3 {
        let view = cluster.view().map_err(|e| e.to_string())?;
        let epoch = view.placement.epoch;
        let Some(handle) = cluster.pool().get(node) else {
            return Err(format!("{node} is not in the placement"));
        };
        let status = match tokio::time::timeout(CALL_TIMEOUT, f(handle.client(), epoch)).await {
            Ok(Ok(answer)) => return Ok(answer.into_inner()),
            Ok(Err(status)) => status,
            Err(_) => return Err(format!("{node} gave no answer in {CALL_TIMEOUT:?}")),
        };
        last = status.message().to_owned();
        match classify(&status) {
            Failure::Refused(r) if catch_up && r.reason() == RefusalReason::StaleEpoch => {
                cluster
                    .refresh_past(epoch)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Failure::Refused(r) if r.reason() == RefusalReason::EpochNotInstalled => {
                cluster.push_to(node).await;
            }
            _ => return Err(last),
        }
    }
    Err(last)
}

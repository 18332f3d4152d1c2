//! A replica reached over the storage RPC, for [`merkle`](super::merkle).

use std::future::Future;
use std::sync::Arc;

use pairdb_core::Version;
use pairdb_proto::convert::{version_from_pb, version_to_pb};
use pairdb_proto::storage::{
    DigestRequest, IngestRequest, ScanCursor, ScanEntry, ScanRequest, TokenRange,
};
use tonic::Status;

use super::merkle::{Digest, Replica};
use crate::cluster::Cluster;
use crate::migration::stream::unary;
use crate::pool::StorageRpc;

/// Entries asked for per scan page.
const PAGE: u32 = 500;

/// Node `node`'s copy of tenant `namespace`.
pub struct RpcReplica {
    cluster: Arc<Cluster>,
    node: String,
    namespace: String,
}

impl RpcReplica {
    /// `node`'s copy of `namespace`, reached through `cluster`'s clients.
    pub fn new(cluster: Arc<Cluster>, node: &str, namespace: &str) -> Self {
        RpcReplica {
            cluster,
            node: node.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    /// Calls the node with the current epoch (catching up with a newer one).
    pub(super) async fn call<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        F: Fn(StorageRpc, u64) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        unary(&self.cluster, &self.node, true, f).await
    }

    fn range(&self, start: u64, end: u64) -> TokenRange {
        TokenRange {
            namespace: self.namespace.clone(),
            start,
            end,
        }
    }
}

impl Replica for RpcReplica {
    fn name(&self) -> &str {
        &self.node
    }

    async fn digest(&self, start: u64, end: u64) -> Result<Digest, String> {
        let range = self.range(start, end);
        let d = self
            .call(|mut c, epoch| {
                let request = DigestRequest {
                    epoch,
                    range: Some(range.clone()),
                };
                async move { c.digest(request).await }
            })
            .await?;
        Ok(Digest {
            digest: d.digest,
            keys: d.keys,
            clock: d.clock,
        })
    }

    async fn scan(
        &self,
        start: u64,
        end: u64,
        after: Option<(u64, Vec<u8>)>,
    ) -> Result<(Vec<(u64, Vec<u8>, Version)>, bool), String> {
        let range = self.range(start, end);
        let after = after.map(|(token, key)| ScanCursor { token, key });
        let page = self
            .call(|mut c, epoch| {
                let request = ScanRequest {
                    epoch,
                    range: Some(range.clone()),
                    after: after.clone(),
                    limit: PAGE,
                };
                async move { c.scan(request).await }
            })
            .await?;
        let mut out = Vec::with_capacity(page.entries.len());
        for e in page.entries {
            let version = e
                .version
                .ok_or_else(|| format!("{}: a scanned entry without a version", self.node))
                .and_then(|v| {
                    version_from_pb(v).map_err(|err| format!("{}: bad version: {err}", self.node))
                })?;
            out.push((e.token, e.key, version));
        }
        Ok((out, page.more))
    }

    async fn ingest(&self, entries: Vec<(u64, Vec<u8>, Version)>) -> Result<(), String> {
        let entries: Vec<ScanEntry> = entries
            .into_iter()
            .map(|(token, key, v)| ScanEntry {
                token,
                key,
                version: Some(version_to_pb(&v)),
            })
            .collect();
        self.call(|mut c, epoch| {
            let request = IngestRequest {
                epoch,
                namespace: self.namespace.clone(),
                entries: entries.clone(),
            };
            async move { c.ingest(request).await }
        })
        .await
        .map(|_| ())
    }
}

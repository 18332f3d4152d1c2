//! Long-running cluster jobs (migrations, repairs) held under a lease in the metadata store.
//!
//! A run holds its job's lease: a keeper task renews it every few seconds however long a step
//! takes, and the run stops at its next step once a renewal finds another coordinator holding
//! it. Every save — the run's and the keeper's — goes through one lock, so the stored record
//! never steps back.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pairdb_core::Placement;
use pairdb_metadata::{JobRecord, MetadataError};

use crate::cluster::Cluster;
use crate::error::CoordinatorError;

/// How long a coordinator's claim on a job lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often the keeper renews the lease.
const RENEW_EVERY: Duration = Duration::from_secs(3);

/// A run's hold on its job.
pub(crate) struct Lease {
    cluster: Arc<Cluster>,
    /// The record as last saved (the keeper renews it as is).
    snapshot: Mutex<JobRecord>,
    /// Held during every save.
    saving: tokio::sync::Mutex<()>,
    /// A renewal found another owner: the run must stop.
    lost: AtomicBool,
}

impl Lease {
    /// Saves `record` (and installs `placement`, when given, in the same transaction) as this
    /// coordinator; false when another holds the lease.
    pub(crate) async fn save(
        &self,
        record: JobRecord,
        placement: Option<(u64, &Placement)>,
    ) -> Result<bool, MetadataError> {
        let _saving = self.saving.lock().await;
        self.save_holding(record, placement).await
    }

    /// Saves the record as last saved again, renewing the lease. The record is read under the
    /// save lock: a renewal never writes back a record older than a save that went before it.
    async fn renew(&self) -> Result<bool, MetadataError> {
        let _saving = self.saving.lock().await;
        let record = self
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.save_holding(record, None).await
    }

    /// [`save`](Self::save), with the save lock held by the caller.
    async fn save_holding(
        &self,
        record: JobRecord,
        placement: Option<(u64, &Placement)>,
    ) -> Result<bool, MetadataError> {
        if self.lost.load(Ordering::Acquire) {
            return Ok(false);
        }
        let saved = self
            .cluster
            .store()
            .save_job(&record, self.cluster.instance(), LEASE, placement)
            .await?;
        if saved {
            *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = record;
        } else {
            self.lost.store(true, Ordering::Release);
        }
        Ok(saved)
    }

    /// Renews the lease until the run ends (the task is aborted) or it is lost.
    async fn keep(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match self.renew().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => tracing::debug!(%error, "cannot renew the migration's lease"),
            }
        }
    }

    pub(crate) fn held(&self) -> bool {
        !self.lost.load(Ordering::Acquire)
    }
}

impl Lease {
    /// A lease on `record` (not yet claimed: the first [`save`](Self::save) claims it).
    pub(crate) fn new(cluster: Arc<Cluster>, record: JobRecord) -> Arc<Lease> {
        Arc::new(Lease {
            cluster,
            snapshot: Mutex::new(record),
            saving: tokio::sync::Mutex::new(()),
            lost: AtomicBool::new(false),
        })
    }

    /// Runs `work` with this lease renewed every few seconds until `work` ends, however long
    /// that takes.
    pub(crate) async fn holding<T>(self: &Arc<Self>, work: impl Future<Output = T>) -> T {
        let keeper = tokio::spawn(Arc::clone(self).keep());
        let out = work.await;
        keeper.abort();
        out
    }

    /// The coordinator the lease belongs to.
    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }
}

/// Hands each unfinished job of `kind` to `run`, one after the other, read again right before
/// (the list may be older than a lease: a job finished meanwhile is skipped).
pub(crate) async fn each_unfinished<F, Fut>(
    cluster: &Arc<Cluster>,
    kind: &str,
    mut run: F,
) -> Result<(), CoordinatorError>
where
    F: FnMut(JobRecord) -> Fut,
    Fut: Future<Output = Result<(), CoordinatorError>>,
{
    for listed in cluster.store().list_jobs(true).await? {
        if listed.kind != kind {
            continue;
        }
        let Some(record) = cluster.store().get_job(&listed.id).await? else {
            continue;
        };
        if !record.done {
            run(record).await?;
        }
    }
    Ok(())
}

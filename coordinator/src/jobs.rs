//! Long-running cluster jobs (migrations, repairs) held under a lease in the metadata store.
//!
//! A run holds its job's lease: a keeper task renews it every few seconds however long a step
//! takes, and the run stops at its next step once a renewal finds another coordinator holding
//! it. Every save — the run's and the keeper's — goes through one lock, so the stored record
//! never steps back.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pairdb_core::Placement;
use pairdb_metadata::{JobRecord, MetadataError, MetadataStore};

use crate::cluster::Cluster;
use crate::error::CoordinatorError;

/// How long a coordinator's claim on a job lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often the keeper renews the lease.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// Finished jobs kept per kind (and their progress readable); older ones are deleted.
pub const KEEP_FINISHED: usize = 100;

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

/// Deletes the finished jobs of each kind but the newest [`KEEP_FINISHED`] — except migrations
/// that flagged or cleared a node with a cancel's leftovers (their records are what flags it,
/// and they are rare). Answers how many went. Safe to run on several coordinators at once.
pub(crate) async fn prune(store: &dyn MetadataStore) -> Result<u64, CoordinatorError> {
    let mut finished: HashMap<String, Vec<JobRecord>> = HashMap::new();
    // Oldest first.
    for job in store.list_jobs(false).await? {
        if job.done {
            finished.entry(job.kind.clone()).or_default().push(job);
        }
    }
    let mut deleted = 0;
    for jobs in finished.values() {
        let excess = jobs.len().saturating_sub(KEEP_FINISHED);
        for job in jobs.iter().take(excess) {
            if job.kind == crate::migration::JOB_KIND {
                let flags = crate::migration::Migration::from_record(job)
                    .map_or(true, |m| !m.undropped.is_empty() || !m.cleared.is_empty());
                if flags {
                    continue;
                }
            }
            match store.delete_finished_job(&job.id).await {
                Ok(gone) => deleted += u64::from(gone),
                Err(error) => tracing::warn!(job = %job.id, %error, "cannot delete a finished job"),
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pairdb_metadata::MemoryStore;

    use super::*;
    use crate::migration::{Change, Migration, Phase};

    fn finished(n: usize, undropped: &[&str]) -> JobRecord {
        Migration {
            id: format!("mig-{n:04}"),
            change: Change::DeleteTenant { tenant: "t".into() },
            phase: Phase::Cancelled,
            tenants: Vec::new(),
            ranges_total: 0,
            ranges_done: 0,
            keys_streamed: 0,
            bytes_streamed: 0,
            from: None,
            completed_epoch: None,
            undropped: undropped.iter().map(|s| s.to_string()).collect(),
            cleared: Vec::new(),
            error: None,
            created_at: format!("2026-01-01T00:{:02}:{:02}Z", n / 60, n % 60),
        }
        .record()
        .expect("record")
    }

    #[tokio::test]
    async fn old_finished_jobs_go_but_flagging_migrations_stay() {
        let store = MemoryStore::new();
        let total = KEEP_FINISHED + 5;
        for n in 0..total {
            let job = finished(n, if n == 1 { &["node-3"] } else { &[] });
            let unfinished = JobRecord {
                done: false,
                ..job.clone()
            };
            store.start_job(&unfinished, None).await.expect("start");
            let saved = store
                .save_job(&job, "me", Duration::from_secs(5), None)
                .await
                .expect("finish");
            assert!(saved);
        }
        // Unfinished jobs are never touched.
        let running = JobRecord {
            done: false,
            ..finished(total, &[])
        };
        store.start_job(&running, None).await.expect("start");
        assert_eq!(prune(&store).await.expect("prune"), 4);
        let left: Vec<String> = store
            .list_jobs(false)
            .await
            .expect("list")
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(left.len(), KEEP_FINISHED + 2);
        assert_eq!(&left[..2], ["mig-0001", "mig-0005"]);
        assert_eq!(left.last().map(String::as_str), Some("mig-0105"));
        // Nothing more to do.
        assert_eq!(prune(&store).await.expect("prune"), 0);
    }
}

//! One iteration of a scenario's workload against pairdb through the Rust SDK, each request
//! recorded with its status, latency and what pairdb reported (conflicts, read repairs).
//!
//! YCSB operations map to the REST API as YCSB's key-value bindings do: read = `GET`, update and
//! insert = `PUT` of `field_length` bytes, read-modify-write = `GET` then a `PUT` carrying the
//! read's context. The REST API has no range scan, so workload E's scan of `n` records is `n`
//! `GET`s of consecutive records (recorded as `GET`s; the scan's iteration time is the sum).
//! The SDK is built without retries: every failure is counted, none is hidden.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pairdb_client::{Client, ClientError, Consistency, ReadOptions, WriteOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::metrics::{Recorder, RequestSample, Tags};
use crate::scenario::{Request, Scenario, Workload};
use crate::ycsb::{self, KeyChooser, Operation, ZIPFIAN_CONSTANT, Zipfian};

/// How late a timer may wake an iteration before the lateness counts as the system's.
pub const TIMER_SLACK: Duration = Duration::from_millis(2);

/// What a scenario's iterations share: the client, the workload's choosers and the count of
/// records inserted so far.
pub struct Driver {
    client: Client,
    recorder: Arc<Recorder>,
    tags: Tags,
    level: Option<Consistency>,
    field_length: usize,
    workload: Kind,
    /// Records that exist: the loaded ones, then inserts up to the first still in flight.
    records: ycsb::AcknowledgedCounter,
}

enum Kind {
    Ycsb(ycsb::Workload),
    Requests {
        requests: Vec<(Request, Option<Consistency>)>,
        total_weight: u64,
        zipfian: KeyChooser,
        latest: KeyChooser,
    },
}

fn level_of(text: Option<&String>) -> Option<Consistency> {
    text.and_then(|l| l.parse().ok())
}

impl Driver {
    /// A driver of `scenario` through `client`, recording into `recorder`.
    pub fn new(scenario: &Scenario, client: Client, recorder: Arc<Recorder>) -> Driver {
        let mut tags: Tags = scenario
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        tags.push(("scenario".into(), scenario.name.clone()));
        tags.sort();
        let records = scenario.record_count.max(1);
        let workload = match &scenario.workload {
            Workload::Ycsb(letter) => Kind::Ycsb(
                // The scenario parser admits only a–f.
                ycsb::Workload::core(*letter, records).unwrap_or_else(ycsb::Workload::a),
            ),
            Workload::Requests(requests) => Kind::Requests {
                total_weight: requests.iter().map(|r| u64::from(r.weight)).sum(),
                requests: requests
                    .iter()
                    .map(|r| (r.clone(), level_of(r.consistency.as_ref())))
                    .collect(),
                zipfian: KeyChooser::ScrambledZipfian(Zipfian::scrambled()),
                latest: KeyChooser::Latest(Zipfian::new(records, ZIPFIAN_CONSTANT)),
            },
        };
        Driver {
            client,
            recorder,
            tags,
            level: level_of(scenario.consistency.as_ref()),
            field_length: scenario.field_length,
            workload,
            records: ycsb::AcknowledgedCounter::new(records),
        }
    }

    /// The scenario's tags (with `scenario`).
    pub fn tags(&self) -> &Tags {
        &self.tags
    }

    /// Writes records `0..count` (the load phase), `concurrency` at a time. Returns how many
    /// failed.
    pub async fn load(self: &Arc<Self>, count: u64, concurrency: usize) -> u64 {
        let next = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..concurrency.max(1) {
            let (driver, next, failed) = (Arc::clone(self), Arc::clone(&next), Arc::clone(&failed));
            tasks.push(tokio::spawn(async move {
                let mut rng = SmallRng::from_rng(&mut rand::rng());
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        break;
                    }
                    let value = driver.value(&mut rng);
                    let options = WriteOptions {
                        consistency: driver.level,
                        ..WriteOptions::default()
                    };
                    if driver
                        .client
                        .put_with(ycsb::key_of(n), value, &options)
                        .await
                        .is_err()
                    {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        failed.load(Ordering::Relaxed)
    }

    fn value(&self, rng: &mut impl Rng) -> Bytes {
        let mut value = vec![0u8; self.field_length];
        for b in &mut value {
            *b = rng.random_range(b'a'..=b'z');
        }
        Bytes::from(value)
    }

    /// Runs one iteration that was due at `due`: the first request's latency counts from then
    /// (a late start is the system's delay, not the client's), later ones from their own start.
    /// A start later than `due` by no more than [`TIMER_SLACK`] counts from the start: that
    /// much is the timer's own granularity (a millisecond), not a delay of the system.
    /// Returns the moment the iteration is measured from.
    pub async fn iteration(&self, due: Instant, rng: &mut SmallRng) -> Instant {
        let now = Instant::now();
        let measured_from = if now.saturating_duration_since(due) <= TIMER_SLACK {
            now
        } else {
            due
        };
        let mut start = measured_from;
        match &self.workload {
            Kind::Ycsb(workload) => {
                let records = self.records.limit();
                match workload.operation(rng) {
                    Operation::Read => {
                        let n = workload.chooser.next(records, rng);
                        self.get(&ycsb::key_of(n), self.level, start, &[]).await;
                    }
                    Operation::Update => {
                        let n = workload.chooser.next(records, rng);
                        let value = self.value(rng);
                        self.put(&ycsb::key_of(n), value, None, self.level, start, &[])
                            .await;
                    }
                    Operation::Insert => {
                        let n = self.records.take();
                        let value = self.value(rng);
                        self.put(&ycsb::key_of(n), value, None, self.level, start, &[])
                            .await;
                        self.records.acknowledge(n);
                    }
                    Operation::Scan => {
                        let first = workload.chooser.next(records, rng);
                        let len = rng.random_range(1..=workload.max_scan);
                        for n in first..(first + len).min(records) {
                            self.get(&ycsb::key_of(n), self.level, start, &[]).await;
                            start = Instant::now();
                        }
                    }
                    Operation::ReadModifyWrite => {
                        let n = workload.chooser.next(records, rng);
                        let key = ycsb::key_of(n);
                        let context = self.get(&key, self.level, start, &[]).await;
                        let value = self.value(rng);
                        self.put(&key, value, context, self.level, Instant::now(), &[])
                            .await;
                    }
                }
            }
            Kind::Requests {
                requests,
                total_weight,
                zipfian,
                latest,
            } => {
                let mut pick = rng.random_range(0..(*total_weight).max(1));
                let Some((request, level)) = requests.iter().find(|(r, _)| {
                    let w = u64::from(r.weight);
                    if pick < w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                }) else {
                    return measured_from;
                };
                let records = self.records.limit();
                let n = match request.distribution.as_str() {
                    "zipfian" => zipfian.next(records, rng),
                    "latest" => latest.next(records, rng),
                    _ => rng.random_range(0..records.max(1)),
                };
                let key = request.key.replace("{n}", &n.to_string());
                let level = level.or(self.level);
                let checks = &request.checks;
                match request.method.as_str() {
                    "GET" => {
                        self.get(&key, level, start, checks).await;
                    }
                    "PUT" => {
                        let value = {
                            let mut v = vec![0u8; request.value_size];
                            for b in &mut v {
                                *b = rng.random_range(b'a'..=b'z');
                            }
                            Bytes::from(v)
                        };
                        self.put(&key, value, None, level, start, checks).await;
                    }
                    _ => self.delete(&key, level, start, checks).await,
                }
            }
        }
        measured_from
    }

    fn record(
        &self,
        method: &str,
        started: Instant,
        status: u16,
        (sent, received): (u64, u64),
        (conflict, read_repairs): (bool, u64),
        checks: &[crate::scenario::Check],
    ) {
        let mut tags = self.tags.clone();
        tags.push(("method".into(), method.into()));
        tags.push(("status".into(), status.to_string()));
        tags.sort();
        let expected = if checks.is_empty() {
            (200..400).contains(&status) || (method == "GET" && status == 404)
        } else {
            checks.iter().all(|c| c.statuses.contains(&status))
        };
        for check in checks {
            let mut tags = self.tags.clone();
            tags.push(("check".into(), check.name.clone()));
            tags.sort();
            self.recorder.check(tags, check.statuses.contains(&status));
        }
        self.recorder.request(RequestSample {
            tags,
            duration: started.elapsed(),
            failed: !expected,
            sent,
            received,
            conflict,
            read_repairs,
            status,
        });
    }

    async fn get(
        &self,
        key: &str,
        level: Option<Consistency>,
        started: Instant,
        checks: &[crate::scenario::Check],
    ) -> Option<pairdb_client::Context> {
        let options = ReadOptions { consistency: level };
        let sent = key.len() as u64;
        match self.client.get_with(key, &options).await {
            Ok(Some(item)) => {
                let received = item.value.len() as u64;
                self.record(
                    "GET",
                    started,
                    200,
                    (sent, received),
                    (item.conflict, u64::from(item.read_repairs)),
                    checks,
                );
                Some(item.context)
            }
            Ok(None) => {
                self.record("GET", started, 404, (sent, 0), (false, 0), checks);
                None
            }
            Err(e) => {
                self.record("GET", started, status_of(&e), (sent, 0), (false, 0), checks);
                None
            }
        }
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        context: Option<pairdb_client::Context>,
        level: Option<Consistency>,
        started: Instant,
        checks: &[crate::scenario::Check],
    ) -> bool {
        let sent = (key.len() + value.len()) as u64;
        let options = WriteOptions {
            consistency: level,
            context,
            ..WriteOptions::default()
        };
        // A successful write is 200 by the API's contract (the SDK does not surface it).
        match self.client.put_with(key, value, &options).await {
            Ok(written) => {
                self.record(
                    "PUT",
                    started,
                    200,
                    (sent, 0),
                    (written.conflict.is_some(), 0),
                    checks,
                );
                true
            }
            Err(e) => {
                self.record("PUT", started, status_of(&e), (sent, 0), (false, 0), checks);
                false
            }
        }
    }

    async fn delete(
        &self,
        key: &str,
        level: Option<Consistency>,
        started: Instant,
        checks: &[crate::scenario::Check],
    ) {
        let options = pairdb_client::DeleteOptions {
            consistency: level,
            ..pairdb_client::DeleteOptions::default()
        };
        let sent = key.len() as u64;
        match self.client.delete_with(key, &options).await {
            Ok(written) => self.record(
                "DELETE",
                started,
                204,
                (sent, 0),
                (written.conflict.is_some(), 0),
                checks,
            ),
            Err(e) => self.record(
                "DELETE",
                started,
                status_of(&e),
                (sent, 0),
                (false, 0),
                checks,
            ),
        }
    }
}

/// The HTTP status a failed call got (0: no answer at all).
fn status_of(error: &ClientError) -> u16 {
    error.problem().map_or(0, |p| p.status)
}

/// How long a scenario's iteration took, for `iteration_duration`.
pub fn since(due: Instant) -> Duration {
    due.elapsed()
}

//! A write-load generator that records every acknowledged write and delete, and verifies at the
//! end that the cluster returns exactly what was acknowledged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::TestCluster;

/// What the cluster must answer for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The last acknowledged write stored this value.
    Value(String),
    /// The last acknowledged operation deleted it.
    Deleted,
    /// An operation's outcome is unknown (503/504): either answer is right.
    Unknown,
}

/// The acknowledged history of a load run.
#[derive(Default)]
pub struct Ledger {
    pub keys: BTreeMap<String, Expect>,
    pub acked: u64,
    pub failed: u64,
}

/// A running load at `quorum`: PUTs of fresh keys, every seventh operation an overwrite of a
/// recent key, and every fifth a DELETE of an older one. Stop it with [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    pub ledger: Arc<Mutex<Ledger>>,
}

impl Load {
    /// Starts writing through `t`'s gateway with `api_key`; keys are `{prefix}{n}`.
    pub fn start(t: &TestCluster, api_key: &str, prefix: &str) -> Load {
        Load::start_at(&t.http, &t.base, api_key, prefix)
    }

    /// Starts writing through the gateway at `base` with `api_key`; keys are `{prefix}{n}`.
    pub fn start_at(http: &reqwest::Client, base: &str, api_key: &str, prefix: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let http = http.clone();
        let base = base.to_owned();
        let (stop2, ledger2) = (Arc::clone(&stop), Arc::clone(&ledger));
        let api_key = api_key.to_owned();
        let prefix = prefix.to_owned();
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                n += 1;
                // New keys, overwrites of recent ones, and deletes of older ones.
                let (method, key, value) = if n.is_multiple_of(5) && n > 10 {
                    (Method::DELETE, format!("{prefix}{}", n - 7), None)
                } else if n.is_multiple_of(7) && n > 10 {
                    let key = format!("{prefix}{}", n - 3);
                    (Method::PUT, key, Some(format!("again-{n}")))
                } else {
                    let key = format!("{prefix}{n}");
                    (Method::PUT, key, Some(format!("value-{n}")))
                };
                let mut req = http
                    .request(method, format!("{base}/v1/kv/{key}"))
                    .bearer_auth(&api_key)
                    .header("x-consistency", "quorum");
                if let Some(v) = &value {
                    req = req.body(v.clone());
                }
                let outcome = req.send().await.map(|r| r.status());
                {
                    let mut l = ledger2.lock().expect("ledger");
                    match outcome {
                        Ok(s) if s.is_success() => {
                            l.acked += 1;
                            let e = value.map_or(Expect::Deleted, Expect::Value);
                            l.keys.insert(key, e);
                        }
                        _ => {
                            l.failed += 1;
                            l.keys.insert(key, Expect::Unknown);
                        }
                    }
                }
                // A steady, moderate rate: the test is about correctness, not throughput.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Load { stop, task, ledger }
    }

    /// Stops the load and answers its ledger.
    pub async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load task");
        std::mem::take(&mut *self.ledger.lock().expect("ledger"))
    }
}

/// Reads every key of `ledger` at `level` and checks the answer is what was acknowledged;
/// answers how many reads repaired replicas (the `X-Pairdb-Read-Repair` header).
pub async fn verify(t: &TestCluster, api_key: &str, ledger: &Ledger, level: &str) -> u64 {
    verify_at(&t.http, &t.base, api_key, ledger, level).await
}

/// [`verify`] through the gateway at `base`.
pub async fn verify_at(
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    ledger: &Ledger,
    level: &str,
) -> u64 {
    let mut repaired = 0;
    for (key, expect) in &ledger.keys {
        let resp = http
            .get(format!("{base}/v1/kv/{key}"))
            .bearer_auth(api_key)
            .header("x-consistency", level)
            .send()
            .await
            .expect("read");
        let status = resp.status();
        repaired += crate::harness::header(&resp, "x-pairdb-read-repair")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let body = resp.text().await.expect("body");
        match expect {
            Expect::Value(v) => {
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "{key}: acknowledged {v:?}, got {body}"
                );
                assert_eq!(&body, v, "{key}");
            }
            Expect::Deleted => {
                assert_eq!(status, StatusCode::NOT_FOUND, "{key} was deleted: {body}");
            }
            Expect::Unknown => {
                assert!(
                    status == StatusCode::OK || status == StatusCode::NOT_FOUND,
                    "{key}: {status} {body}"
                );
            }
        }
    }
    repaired
}

//! The other storage nodes, and whether each is up: every node heartbeats every peer of its
//! placement and judges each with a phi-accrual failure detector (Hayashibara et al.; as in
//! Cassandra), over the arrival times of successful heartbeats.
//!
//! `phi` grows with the silence since the last heartbeat, measured against the mean interval
//! seen so far (an exponential model: `phi = silence / mean / ln 10`), so a node that stops
//! answering — crashed, partitioned, or frozen with SIGSTOP, which a TCP connect does not reveal
//! — is judged down after a few seconds, and up again on its first answer. Coordinators read
//! every node's view in its health answer (`HealthResponse.peers`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pairdb_core::Placement;
use pairdb_proto::storage::HealthRequest;
use pairdb_proto::storage::storage_client::StorageClient;
use tokio::time::Instant;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// How often each peer is heartbeaten.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// Phi above which a peer is down: at one heartbeat per 500 ms, about 4.6 s of silence.
pub const PHI_DOWN: f64 = 4.0;
/// Intervals remembered per peer.
const WINDOW: usize = 100;

/// One peer's heartbeat history.
#[derive(Debug, Default)]
pub struct Detector {
    last: Option<Instant>,
    intervals: VecDeque<f64>,
}

impl Detector {
    /// Records a heartbeat answered at `now`.
    pub fn heartbeat(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last);
            // An outage is not an interval: learning from it would blunt the detector for the
            // next failure (as Cassandra's MAX_INTERVAL).
            if gap <= HEARTBEAT * 4 {
                if self.intervals.len() == WINDOW {
                    self.intervals.pop_front();
                }
                self.intervals.push_back(gap.as_secs_f64());
            }
        }
        self.last = Some(now);
    }

    /// The suspicion at `now`: 0 right after a heartbeat, growing with silence; infinite for a
    /// peer never heard from.
    pub fn phi(&self, now: Instant) -> f64 {
        let Some(last) = self.last else {
            return f64::INFINITY;
        };
        let mean = if self.intervals.is_empty() {
            HEARTBEAT.as_secs_f64()
        } else {
            self.intervals.iter().sum::<f64>() / self.intervals.len() as f64
        }
        // An interval no shorter than the heartbeat's: a burst of quick answers must not make
        // an ordinary pause look like a failure.
        .max(HEARTBEAT.as_secs_f64());
        now.saturating_duration_since(last).as_secs_f64() / mean / std::f64::consts::LN_10
    }
}

/// A client to one peer.
type PeerClient = StorageClient<InterceptedService<Channel, Bearer>>;

/// Adds the internal credential to every call.
#[derive(Clone)]
pub struct Bearer(AsciiMetadataValue);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert(pairdb_proto::AUTHORIZATION, self.0.clone());
        Ok(req)
    }
}

/// One peer's view, as reported.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerView {
    /// Its id.
    pub node_id: String,
    /// Judged up.
    pub up: bool,
    /// Its suspicion now.
    pub phi: f64,
}

struct Peer {
    address: String,
    client: PeerClient,
    detector: Detector,
}

/// The node's peers and their detectors. Cheap to share.
pub struct Peers {
    me: String,
    auth: Option<Bearer>,
    peers: Mutex<HashMap<String, Peer>>,
}

impl Peers {
    /// Peers of node `me`, called with `internal_token` (an invalid token makes no calls).
    pub fn new(me: &str, internal_token: &str) -> Arc<Peers> {
        Arc::new(Peers {
            me: me.to_owned(),
            auth: pairdb_proto::internal_credential(internal_token).map(Bearer),
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// Makes the peers those `placement` names (joining nodes included), keeping the history of
    /// those whose address did not change.
    pub fn sync(&self, placement: &Placement) {
        let Some(auth) = &self.auth else {
            return;
        };
        let nodes = placement.all_nodes();
        let mut peers = self.lock();
        peers.retain(|id, p| nodes.iter().any(|n| &n.id == id && n.address == p.address));
        for n in nodes {
            if n.id == self.me || peers.contains_key(&n.id) {
                continue;
            }
            let Ok(endpoint) = Endpoint::from_shared(format!("http://{}", n.address)) else {
                continue;
            };
            let channel = endpoint
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .connect_lazy();
            peers.insert(
                n.id.clone(),
                Peer {
                    address: n.address.clone(),
                    client: StorageClient::with_interceptor(channel, auth.clone())
                        .max_decoding_message_size(crate::server::MAX_MESSAGE_BYTES),
                    detector: Detector::default(),
                },
            );
        }
    }

    /// A client to peer `id`, if it is one.
    pub fn client(&self, id: &str) -> Option<PeerClient> {
        self.lock().get(id).map(|p| p.client.clone())
    }

    /// Whether peer `id` is judged up now (never heard from: down).
    pub fn is_up(&self, id: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .get(id)
            .is_some_and(|p| p.detector.phi(now) < PHI_DOWN)
    }

    /// Every peer's view now, by id — of those heard from at least once (a peer never heard
    /// from is unknown, not down: a node just added is not yet heartbeaten by all).
    pub fn views(&self) -> Vec<PeerView> {
        let now = Instant::now();
        let mut out: Vec<PeerView> = self
            .lock()
            .iter()
            .filter(|(_, p)| p.detector.last.is_some())
            .map(|(id, p)| {
                let phi = p.detector.phi(now);
                PeerView {
                    node_id: id.clone(),
                    up: phi < PHI_DOWN,
                    phi: if phi.is_finite() { phi } else { f64::MAX },
                }
            })
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// Heartbeats every peer once, side by side, each within one heartbeat period.
    pub async fn heartbeat_all(&self) {
        let clients: Vec<(String, PeerClient)> = self
            .lock()
            .iter()
            .map(|(id, p)| (id.clone(), p.client.clone()))
            .collect();
        let mut beats = tokio::task::JoinSet::new();
        for (id, mut c) in clients {
            beats.spawn(async move {
                let answered = tokio::time::timeout(HEARTBEAT * 2, c.health(HealthRequest {}))
                    .await
                    .is_ok_and(|r| r.is_ok());
                (id, answered.then(Instant::now))
            });
        }
        while let Some(beat) = beats.join_next().await {
            if let Ok((id, Some(at))) = beat
                && let Some(p) = self.lock().get_mut(&id)
            {
                p.detector.heartbeat(at);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Peer>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_raises_suspicion_and_an_answer_clears_it() {
        let start = Instant::now();
        let mut d = Detector::default();
        assert!(d.phi(start).is_infinite());
        for i in 0..10 {
            d.heartbeat(start + HEARTBEAT * i);
        }
        let last = start + HEARTBEAT * 9;
        assert!(d.phi(last) < 0.01);
        assert!(d.phi(last + Duration::from_secs(2)) < PHI_DOWN);
        assert!(d.phi(last + Duration::from_secs(5)) > PHI_DOWN);
        d.heartbeat(last + Duration::from_secs(6));
        assert!(d.phi(last + Duration::from_secs(6)) < 0.01);
    }
}

//! gRPC contracts of pairdb.
//!
//! * [`storage`] — the storage-node service. Every call carries the placement epoch in its message
//!   and the internal credential as `authorization: Bearer <token>` metadata; a storage node refuses
//!   anything else.
//! * [`coordinator`] — the public coordinator service: tenant-aware get/put/delete with tunable
//!   consistency, plus tenant and node administration.
//! * [`convert`] — validated conversions between wire messages and the core model.
#![deny(clippy::unwrap_used)]

pub mod convert;

/// The storage-node service (`pairdb.storage.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod storage {
    tonic::include_proto!("pairdb.storage.v1");
}

/// The coordinator service (`pairdb.coordinator.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod coordinator {
    tonic::include_proto!("pairdb.coordinator.v1");
}

/// The [`coordinator::ErrorDetail`] a coordinator attached to `status`, if any: the stable error
/// kind and, for quorum failures, the counts.
pub fn error_detail(status: &tonic::Status) -> Option<coordinator::ErrorDetail> {
    use prost::Message as _;
    coordinator::ErrorDetail::decode(status.details())
        .ok()
        .filter(|d| !d.kind.is_empty())
}

/// The [`storage::Refusal`] a storage node attached to `status`: present exactly when the node
/// refused the call before changing anything, so the call may be retried elsewhere. `None` for
/// every other error — a broken stream, a timeout, a proxy's answer — which may have been applied.
pub fn refusal(status: &tonic::Status) -> Option<storage::Refusal> {
    use prost::Message as _;
    storage::Refusal::decode(status.details())
        .ok()
        .filter(|r| r.magic == REFUSAL_MAGIC && r.reason() != storage::RefusalReason::Unspecified)
}

/// The tag every [`storage::Refusal`] carries (`"pdbr"`), so that no other status details are
/// mistaken for one.
pub const REFUSAL_MAGIC: u32 = 0x7064_6272;

/// A status with `code` and `message` carrying a [`storage::Refusal`]: what a storage node answers
/// when it refuses a call before changing anything.
pub fn refused(
    code: tonic::Code,
    reason: storage::RefusalReason,
    message: impl Into<String>,
    node_epoch: u64,
) -> tonic::Status {
    use prost::Message as _;
    let refusal = storage::Refusal {
        reason: reason as i32,
        node_epoch,
        magic: REFUSAL_MAGIC,
    };
    tonic::Status::with_details(code, message, refusal.encode_to_vec().into())
}

/// Ties a service's call-stream messages (`Call`, `CallBatch`, `Reply`, `ReplyBatch`) to
/// [`pairdb_mux`]: a reply's failure carries its status's code, message and details unchanged.
macro_rules! call_stream {
    ($service:ident) => {
        impl pairdb_mux::CallMessage for $service::Call {
            fn id(&self) -> u64 {
                self.id
            }
            fn set_id(&mut self, id: u64) {
                self.id = id;
            }
            fn timeout_ms(&self) -> u32 {
                self.timeout_ms
            }
            fn set_timeout_ms(&mut self, ms: u32) {
                self.timeout_ms = ms;
            }
        }

        impl pairdb_mux::BatchMessage for $service::CallBatch {
            type Call = $service::Call;
            fn new(calls: Vec<$service::Call>, cancel: Vec<u64>) -> Self {
                $service::CallBatch { calls, cancel }
            }
            fn into_parts(self) -> (Vec<$service::Call>, Vec<u64>) {
                (self.calls, self.cancel)
            }
        }

        impl pairdb_mux::ReplyMessage for $service::Reply {
            type Output = $service::reply::Result;
            fn id(&self) -> u64 {
                self.id
            }
            fn ok(id: u64, output: $service::reply::Result) -> Self {
                $service::Reply {
                    id,
                    result: Some(output),
                }
            }
            fn failed(id: u64, status: &tonic::Status) -> Self {
                $service::Reply {
                    id,
                    result: Some($service::reply::Result::Error($service::CallError {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                        details: status.details().to_vec(),
                    })),
                }
            }
            fn outcome(self) -> Result<$service::reply::Result, tonic::Status> {
                match self.result {
                    Some($service::reply::Result::Error(e)) => Err(tonic::Status::with_details(
                        tonic::Code::from_i32(e.code),
                        e.message,
                        e.details.into(),
                    )),
                    Some(result) => Ok(result),
                    None => Err(tonic::Status::internal("a reply without a result")),
                }
            }
        }

        impl pairdb_mux::RepliesMessage for $service::ReplyBatch {
            type Reply = $service::Reply;
            fn new(replies: Vec<$service::Reply>) -> Self {
                $service::ReplyBatch { replies }
            }
            fn into_replies(self) -> Vec<$service::Reply> {
                self.replies
            }
        }
    };
}

call_stream!(storage);
call_stream!(coordinator);

/// The `authorization` value of internal calls, `Bearer <internal token>`; `None` if the token
/// cannot travel in a header.
pub fn internal_credential(internal_token: &str) -> Option<tonic::metadata::AsciiMetadataValue> {
    format!("Bearer {internal_token}").try_into().ok()
}

/// Metadata header carrying the internal service credential (`Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";
/// Metadata header naming the tenant a gateway resolved (internal calls only).
pub const TENANT_HEADER: &str = pairdb_core::headers::TENANT;
/// Metadata header marking a gateway-forwarded call as made by the admin key (internal calls only).
pub const PRINCIPAL_HEADER: &str = pairdb_core::headers::PRINCIPAL;
/// Metadata / HTTP header carrying the consistency level.
pub const CONSISTENCY_HEADER: &str = pairdb_core::headers::CONSISTENCY;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_round_trip_and_bare_statuses_carry_none() {
        let s = refused(
            tonic::Code::Aborted,
            storage::RefusalReason::StaleEpoch,
            "stale",
            7,
        );
        let r = refusal(&s).expect("a refusal");
        assert_eq!(r.reason(), storage::RefusalReason::StaleEpoch);
        assert_eq!(r.node_epoch, 7);
        // Details of another kind, even ones that decode as a Refusal, are not refusals.
        let untagged = storage::Refusal {
            reason: storage::RefusalReason::Engine as i32,
            node_epoch: 0,
            magic: 0,
        };
        let foreign = tonic::Status::with_details(
            tonic::Code::Internal,
            "proxy",
            prost::Message::encode_to_vec(&untagged).into(),
        );
        assert!(refusal(&foreign).is_none());
        for bare in [
            tonic::Status::internal("h2 protocol error"),
            tonic::Status::unavailable("connection reset"),
            tonic::Status::with_details(tonic::Code::Internal, "junk", vec![0xff, 0x01].into()),
        ] {
            assert!(refusal(&bare).is_none(), "{bare:?}");
        }
    }
}

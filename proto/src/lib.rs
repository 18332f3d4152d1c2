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

/// The wire form of a call's failure on a call stream: its code, message and details (a
/// [`storage::Refusal`] travels unchanged).
pub fn call_error(status: &tonic::Status) -> storage::CallError {
    storage::CallError {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: status.details().to_vec(),
    }
}

/// The status a call's failure on a call stream stands for: exactly what its unary RPC would have
/// answered (an unknown code reads as `UNKNOWN`).
pub fn call_status(error: storage::CallError) -> tonic::Status {
    tonic::Status::with_details(
        tonic::Code::from_i32(error.code),
        error.message,
        error.details.into(),
    )
}

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

//! Storage RPC messages off the wire: protobuf decoding and conversion to the model never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pairdb_proto::convert::{
    context_from_pb, placement_from_pb, version_from_pb, write_record_from_pb,
};
use pairdb_proto::storage::{ApplyRequest, MintRequest, PushPlacementRequest};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ApplyRequest::decode(data) {
        if let Some(v) = m.version {
            let _ = version_from_pb(v);
        }
        if let Some(r) = m.record {
            let _ = write_record_from_pb(r);
        }
    }
    // A refusal is decoded from any status details a peer sends.
    let status = tonic::Status::with_details(tonic::Code::Internal, "", data.to_vec().into());
    let _ = pairdb_proto::refusal(&status);
    if let Ok(m) = MintRequest::decode(data) {
        if let Some(c) = m.context {
            let _ = context_from_pb(c);
        }
    }
    if let Ok(m) = PushPlacementRequest::decode(data) {
        if let Some(p) = m.placement {
            let _ = placement_from_pb(p);
        }
    }
});

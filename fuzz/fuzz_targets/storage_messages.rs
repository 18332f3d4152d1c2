//! Storage RPC messages off the wire: protobuf decoding and conversion to the model never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pairdb_proto::convert::{context_from_pb, placement_from_pb, version_from_pb};
use pairdb_proto::storage::{ApplyRequest, MintRequest, PushPlacementRequest};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ApplyRequest::decode(data) {
        if let Some(v) = m.version {
            let _ = version_from_pb(v);
        }
    }
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

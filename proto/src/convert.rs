//! Conversions between wire messages and the core model.
//!
//! Decoding validates: a clock that is not canonical or a missing field is an error, never a
//! silently different value.

use pairdb_core::vclock::{Actor, Dot, VectorClock};
use pairdb_core::version::WriteRecord;
use pairdb_core::{Context, NodeAddr, Placement, Version};

use crate::storage as pb;

/// A wire message did not describe a valid model value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConvertError {
    /// The clock's entries are unsorted, duplicated or zero.
    #[error("vector clock is not canonical")]
    Clock,
    /// A required field was absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A write fingerprint was not 32 bytes.
    #[error("write fingerprint must be 32 bytes")]
    Fingerprint,
}

/// Wire write record → model write record.
pub fn write_record_from_pb(r: pb::WriteRecord) -> Result<WriteRecord, ConvertError> {
    Ok(WriteRecord {
        fingerprint: r
            .fingerprint
            .as_slice()
            .try_into()
            .map_err(|_| ConvertError::Fingerprint)?,
        conflict: r.conflict,
    })
}

/// Model write record → wire write record.
pub fn write_record_to_pb(r: &WriteRecord) -> pb::WriteRecord {
    pb::WriteRecord {
        fingerprint: r.fingerprint.to_vec(),
        conflict: r.conflict,
    }
}

/// Wire clock entries → canonical clock.
pub fn clock_from_pb(entries: Vec<pb::ClockEntry>) -> Result<VectorClock, ConvertError> {
    VectorClock::try_from_canonical(entries.into_iter().map(|e| {
        (
            Actor::new(e.node, e.incarnation),
            Dot {
                last: e.last,
                counter: e.counter,
            },
        )
    }))
    .map_err(|_| ConvertError::Clock)
}

/// Clock → wire entries in canonical order.
pub fn clock_to_pb(clock: &VectorClock) -> Vec<pb::ClockEntry> {
    clock
        .dots()
        .map(|(a, d)| pb::ClockEntry {
            node: a.node.clone(),
            incarnation: a.incarnation,
            counter: d.counter,
            last: d.last,
        })
        .collect()
}

/// Wire version → model version.
pub fn version_from_pb(v: pb::Version) -> Result<Version, ConvertError> {
    Ok(Version {
        tombstone: v.tombstone,
        value: v.value,
        content_type: v.content_type,
        clock: clock_from_pb(v.clock)?,
        timestamp: v.timestamp,
        minted_by: v.minted_by,
        idempotency_key: v.idempotency_key,
    })
}

/// Model version → wire version.
pub fn version_to_pb(v: &Version) -> pb::Version {
    pb::Version {
        tombstone: v.tombstone,
        value: v.value.clone(),
        content_type: v.content_type.clone(),
        clock: clock_to_pb(&v.clock),
        timestamp: v.timestamp,
        minted_by: v.minted_by.clone(),
        idempotency_key: v.idempotency_key.clone(),
    }
}

/// Model version → wire version, moving its bytes rather than copying them.
pub fn version_into_pb(v: Version) -> pb::Version {
    pb::Version {
        tombstone: v.tombstone,
        clock: clock_to_pb(&v.clock),
        value: v.value,
        content_type: v.content_type,
        timestamp: v.timestamp,
        minted_by: v.minted_by,
        idempotency_key: v.idempotency_key,
    }
}

/// Wire context → model context.
pub fn context_from_pb(c: pb::Context) -> Result<Context, ConvertError> {
    Ok(Context {
        clock: clock_from_pb(c.clock)?,
        timestamp: c.timestamp,
    })
}

/// Model context → wire context.
pub fn context_to_pb(c: &Context) -> pb::Context {
    pb::Context {
        clock: clock_to_pb(&c.clock),
        timestamp: c.timestamp,
    }
}

/// Model placement → wire placement.
pub fn placement_to_pb(p: &Placement) -> pb::Placement {
    pb::Placement {
        epoch: p.epoch,
        vnodes: p.vnodes,
        nodes: nodes_to_pb(&p.nodes),
        tenants: tenants_to_pb(&p.tenants),
        tokens: p
            .tokens
            .iter()
            .map(|(id, t)| pb::NodeTokens {
                node_id: id.clone(),
                tokens: t.clone(),
            })
            .collect(),
        transition: p.transition.as_ref().map(|t| pb::Transition {
            migration_id: t.migration_id.clone(),
            nodes: nodes_to_pb(&t.nodes),
            tenants: tenants_to_pb(&t.tenants),
        }),
    }
}

fn nodes_to_pb(nodes: &[NodeAddr]) -> Vec<pb::NodeInfo> {
    nodes
        .iter()
        .map(|n| pb::NodeInfo {
            id: n.id.clone(),
            address: n.address.clone(),
        })
        .collect()
}

fn tenants_to_pb(tenants: &std::collections::BTreeMap<String, u32>) -> Vec<pb::TenantReplication> {
    tenants
        .iter()
        .map(|(t, rf)| pb::TenantReplication {
            tenant: t.clone(),
            replication_factor: *rf,
        })
        .collect()
}

fn nodes_from_pb(nodes: Vec<pb::NodeInfo>) -> Vec<NodeAddr> {
    nodes
        .into_iter()
        .map(|n| NodeAddr {
            id: n.id,
            address: n.address,
        })
        .collect()
}

fn tenants_from_pb(tenants: Vec<pb::TenantReplication>) -> std::collections::BTreeMap<String, u32> {
    tenants
        .into_iter()
        .map(|t| (t.tenant, t.replication_factor))
        .collect()
}

/// Wire placement → model placement.
pub fn placement_from_pb(p: pb::Placement) -> Placement {
    Placement {
        epoch: p.epoch,
        vnodes: p.vnodes,
        nodes: nodes_from_pb(p.nodes),
        tenants: tenants_from_pb(p.tenants),
        tokens: p
            .tokens
            .into_iter()
            .map(|t| (t.node_id, t.tokens))
            .collect(),
        transition: p.transition.map(|t| pairdb_core::Transition {
            migration_id: t.migration_id,
            nodes: nodes_from_pb(t.nodes),
            tenants: tenants_from_pb(t.tenants),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_round_trips_and_rejects_bad_clocks() {
        let v = Version {
            value: b"x".to_vec(),
            clock: VectorClock::from_entries([(Actor::new("a", 1), 2), (Actor::new("b", 1), 1)]),
            timestamp: 9,
            minted_by: "a".into(),
            ..Version::default()
        };
        assert_eq!(version_from_pb(version_to_pb(&v)), Ok(v.clone()));
        let mut bad = version_to_pb(&v);
        bad.clock.reverse();
        assert_eq!(version_from_pb(bad), Err(ConvertError::Clock));
    }

    #[test]
    fn placements_round_trip_with_their_transition_and_tokens() {
        let node = |id: &str| NodeAddr {
            id: id.into(),
            address: format!("{id}:7000"),
        };
        let mut p = Placement::initial(vec![node("a"), node("b")], 8)
            .with_tenant("t", 2)
            .begin(pairdb_core::Transition {
                migration_id: "mig-1".into(),
                nodes: vec![node("a"), node("b"), node("c")],
                tenants: [("t".to_string(), 3)].into(),
            });
        p.tokens.insert("c".into(), vec![5, 1 << 40, u64::MAX]);
        assert_eq!(placement_from_pb(placement_to_pb(&p)), p);
        let plain = Placement::initial(vec![node("a")], 8);
        assert_eq!(placement_from_pb(placement_to_pb(&plain)), plain);
    }
}

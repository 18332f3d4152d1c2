//! The metadata store test suite, run unchanged against every [`MetadataStore`] implementation
//! (in the manner of Garage's `src/db/test.rs`).
//!
//! Every check is a `pub async fn(&dyn MetadataStore)` that needs a fresh, empty store and uses only
//! the trait, so a backend joins the suite with one line:
//! `metadata_store_suite!(fresh_store);`, where `fresh_store` is an async fn returning
//! `(store, guard)`, the guard keeping the backend's resources (a temp dir, a server process)
//! alive until the check ends.

use std::collections::BTreeMap;

use pairdb_core::Consistency;
use pairdb_core::placement::{NodeAddr, Placement};
use pairdb_metadata::{
    ApiKeyRecord, JobRecord, MetadataError, MetadataStore, NodeRecord, NodeState, RateLimit,
    TenantConfig,
};

/// Expands to one `#[tokio::test]` per suite check, each on its own store from `$fresh`.
macro_rules! metadata_store_suite {
    ($fresh:path) => {
        $crate::suite::metadata_store_suite!(@each $fresh;
            empty_store,
            placement_round_trip,
            swap_placement_compares_and_swaps,
            swap_placement_races_have_one_winner,
            create_tenant_writes_tenant_key_and_placement,
            create_tenant_refuses_a_moved_placement,
            create_tenant_refuses_a_taken_id,
            create_tenant_races_have_one_winner,
            tenants_round_trip_and_list_by_id,
            update_tenant_changes_only_what_it_is_given,
            api_keys_list_oldest_first_per_tenant,
            delete_api_key_only_deletes_the_tenants_own_key,
            nodes_upsert_and_list_by_id,
            instances_heartbeat_are_counted_per_role_and_expire,
            jobs_start_with_their_placement_and_lease_to_one_owner,
            delete_tenant_removes_it_with_its_keys,
            epoch_acks_report_the_lowest_live_epoch,
        );
    };
    (@each $fresh:path; $($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            let (store, _guard) = $fresh().await;
            $crate::suite::$check(&store).await;
        }
    )*};
}
pub(crate) use metadata_store_suite;

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn tenant(id: &str, replication_factor: u32) -> TenantConfig {
    TenantConfig {
        tenant_id: id.to_owned(),
        replication_factor,
        default_consistency: Consistency::Quorum,
        rate_limit: RateLimit::default(),
        created_at: "2026-01-01T00:00:00Z".to_owned(),
    }
}

fn key(tenant_id: &str, key_id: &str, created_at: &str) -> ApiKeyRecord {
    // A hash with zero bytes and high bytes, to catch lossy blob handling.
    let mut secret_hash: Vec<u8> = key_id.bytes().collect();
    secret_hash.extend_from_slice(&[0, 0xff, 0x80, 0]);
    ApiKeyRecord {
        key_id: key_id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        secret_hash,
        created_at: created_at.to_owned(),
    }
}

fn placement(epoch: u64) -> Placement {
    Placement {
        epoch,
        vnodes: 16,
        nodes: vec![
            NodeAddr {
                id: "node-a".to_owned(),
                address: "10.0.0.1:7000".to_owned(),
            },
            NodeAddr {
                id: "node-b".to_owned(),
                address: "10.0.0.2:7000".to_owned(),
            },
        ],
        tenants: BTreeMap::new(),
        transition: None,
        tokens: BTreeMap::new(),
    }
}

fn node(id: &str, address: &str, state: NodeState) -> NodeRecord {
    NodeRecord {
        node_id: id.to_owned(),
        address: address.to_owned(),
        state,
        created_at: "2026-02-03T04:05:06Z".to_owned(),
    }
}

/// Installs `placement(epoch)` into an empty store.
async fn install(store: &dyn MetadataStore, epoch: u64) -> Placement {
    let p = placement(epoch);
    assert!(
        store
            .swap_placement(None, &p)
            .await
            .expect("swap_placement"),
        "installing the first placement failed"
    );
    p
}

/// Creates `t` with first key `k` on top of the current placement; returns the new placement.
async fn create(store: &dyn MetadataStore, t: &TenantConfig, k: &ApiKeyRecord) -> Placement {
    let current = store
        .placement()
        .await
        .expect("placement")
        .expect("a placement is installed");
    let next = current.with_tenant(&t.tenant_id, t.replication_factor);
    store
        .create_tenant(t, k, current.epoch, &next)
        .await
        .expect("create_tenant");
    next
}

async fn assert_placement(store: &dyn MetadataStore, expected: Option<&Placement>) {
    let stored = store.placement().await.expect("placement");
    assert_eq!(stored.as_ref(), expected);
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// A fresh store answers and holds nothing.
pub async fn empty_store(store: &dyn MetadataStore) {
    store.ping().await.expect("ping");
    assert_placement(store, None).await;
    assert!(store.list_tenants().await.expect("list_tenants").is_empty());
    assert!(store.list_nodes().await.expect("list_nodes").is_empty());
    assert_eq!(store.get_tenant("t").await.expect("get_tenant"), None);
    assert_eq!(store.get_api_key("k").await.expect("get_api_key"), None);
    assert!(
        store
            .list_api_keys("t")
            .await
            .expect("list_api_keys")
            .is_empty()
    );
    assert!(
        !store
            .delete_api_key("t", "k")
            .await
            .expect("delete_api_key")
    );
}

/// A placement reads back exactly as written, tenants and nodes included.
pub async fn placement_round_trip(store: &dyn MetadataStore) {
    let p1 = install(store, 1).await;
    assert_placement(store, Some(&p1)).await;

    let mut p2 = p1.with_tenant("alpha", 3).with_tenant("beta", 1);
    p2.epoch = 7;
    p2.vnodes = u32::MAX;
    p2.nodes.push(NodeAddr {
        id: "node-ü".to_owned(),
        address: "[::1]:65535".to_owned(),
    });
    assert!(store.swap_placement(Some(1), &p2).await.expect("swap"));
    assert_placement(store, Some(&p2)).await;
}

/// `swap_placement` writes only when the stored epoch is the expected one and `next` advances it.
pub async fn swap_placement_compares_and_swaps(store: &dyn MetadataStore) {
    // Nothing stored: only `None` matches.
    assert!(
        !store
            .swap_placement(Some(0), &placement(1))
            .await
            .expect("swap")
    );
    assert!(
        !store
            .swap_placement(Some(1), &placement(2))
            .await
            .expect("swap")
    );
    assert_placement(store, None).await;

    let p1 = install(store, 1).await;
    assert_placement(store, Some(&p1)).await;

    // A row exists now: `None` no longer matches.
    assert!(
        !store
            .swap_placement(None, &placement(2))
            .await
            .expect("swap")
    );
    // Wrong expected epoch.
    assert!(
        !store
            .swap_placement(Some(2), &placement(3))
            .await
            .expect("swap")
    );
    assert!(
        !store
            .swap_placement(Some(0), &placement(3))
            .await
            .expect("swap")
    );
    // Right expected epoch, but `next` does not advance it.
    assert!(
        !store
            .swap_placement(Some(1), &placement(1))
            .await
            .expect("swap")
    );
    assert!(
        !store
            .swap_placement(Some(1), &placement(0))
            .await
            .expect("swap")
    );
    assert_placement(store, Some(&p1)).await;

    // Epochs may jump.
    let p5 = placement(5);
    assert!(store.swap_placement(Some(1), &p5).await.expect("swap"));
    assert_placement(store, Some(&p5)).await;
    // The old expectation is stale now.
    assert!(
        !store
            .swap_placement(Some(1), &placement(6))
            .await
            .expect("swap")
    );
    let p6 = placement(6);
    assert!(store.swap_placement(Some(5), &p6).await.expect("swap"));
    assert_placement(store, Some(&p6)).await;
}

/// Two concurrent swaps from the same epoch: exactly one wins, and its placement is stored.
pub async fn swap_placement_races_have_one_winner(store: &dyn MetadataStore) {
    install(store, 1).await;
    for epoch in 1..=20u64 {
        let mut a = placement(epoch + 1);
        a.tenants.insert("a".to_owned(), 1);
        let mut b = placement(epoch + 1);
        b.tenants.insert("b".to_owned(), 2);
        let (a_won, b_won) = tokio::join!(
            store.swap_placement(Some(epoch), &a),
            store.swap_placement(Some(epoch), &b),
        );
        let (a_won, b_won) = (a_won.expect("swap a"), b_won.expect("swap b"));
        assert!(
            a_won != b_won,
            "epoch {epoch}: a won {a_won}, b won {b_won}"
        );
        assert_placement(store, Some(if a_won { &a } else { &b })).await;
    }
}

/// `create_tenant` stores the tenant, its first key and the next placement together.
pub async fn create_tenant_writes_tenant_key_and_placement(store: &dyn MetadataStore) {
    let p1 = install(store, 1).await;
    let t = tenant("acme", 3);
    let k = key("acme", "00000000000000a1", "2026-01-01T00:00:00Z");
    let next = p1.with_tenant("acme", 3);
    store
        .create_tenant(&t, &k, 1, &next)
        .await
        .expect("create_tenant");

    assert_eq!(
        store.get_tenant("acme").await.expect("get_tenant"),
        Some(t.clone())
    );
    assert_eq!(store.list_tenants().await.expect("list_tenants"), vec![t]);
    assert_eq!(
        store.get_api_key(&k.key_id).await.expect("get_api_key"),
        Some(k.clone())
    );
    assert_eq!(
        store.list_api_keys("acme").await.expect("list_api_keys"),
        vec![k]
    );
    assert_placement(store, Some(&next)).await;
}

/// `create_tenant` fails with `PlacementConflict`, writing nothing, when the stored epoch is not
/// the expected one (or nothing is stored), or when `next` does not advance it.
pub async fn create_tenant_refuses_a_moved_placement(store: &dyn MetadataStore) {
    let t = tenant("acme", 3);
    let k = key("acme", "00000000000000a1", "2026-01-01T00:00:00Z");

    // No placement stored at all.
    let err = store
        .create_tenant(&t, &k, 1, &placement(2))
        .await
        .expect_err("no placement stored");
    assert!(
        matches!(err, MetadataError::PlacementConflict { expected: Some(1) }),
        "{err:?}"
    );
    assert_placement(store, None).await;

    let p1 = install(store, 1).await;
    // Stale or future expectations.
    for expected in [0, 2, 5] {
        let err = store
            .create_tenant(&t, &k, expected, &placement(expected + 1))
            .await
            .expect_err("wrong epoch");
        assert!(
            matches!(err, MetadataError::PlacementConflict { expected: Some(e) } if e == expected),
            "expected {expected}: {err:?}"
        );
    }
    // Right expectation, but `next` does not advance the epoch.
    let err = store
        .create_tenant(&t, &k, 1, &placement(1))
        .await
        .expect_err("next does not advance");
    assert!(
        matches!(err, MetadataError::PlacementConflict { expected: Some(1) }),
        "{err:?}"
    );

    // Nothing was written.
    assert_eq!(store.get_tenant("acme").await.expect("get_tenant"), None);
    assert!(store.list_tenants().await.expect("list_tenants").is_empty());
    assert_eq!(
        store.get_api_key(&k.key_id).await.expect("get_api_key"),
        None
    );
    assert!(
        store
            .list_api_keys("acme")
            .await
            .expect("list_api_keys")
            .is_empty()
    );
    assert_placement(store, Some(&p1)).await;
}

/// `create_tenant` fails with `TenantExists`, writing nothing, when the id is taken.
pub async fn create_tenant_refuses_a_taken_id(store: &dyn MetadataStore) {
    install(store, 1).await;
    let original = tenant("acme", 3);
    let first = key("acme", "00000000000000a1", "2026-01-01T00:00:00Z");
    let p2 = create(store, &original, &first).await;

    let mut again = tenant("acme", 5);
    again.default_consistency = Consistency::All;
    let second = key("acme", "00000000000000a2", "2026-01-02T00:00:00Z");
    let err = store
        .create_tenant(&again, &second, p2.epoch, &p2.with_tenant("acme", 5))
        .await
        .expect_err("duplicate tenant");
    assert!(matches!(err, MetadataError::TenantExists), "{err:?}");

    assert_eq!(
        store.get_tenant("acme").await.expect("get_tenant"),
        Some(original)
    );
    assert_eq!(
        store
            .get_api_key(&second.key_id)
            .await
            .expect("get_api_key"),
        None
    );
    assert_eq!(
        store.list_api_keys("acme").await.expect("list_api_keys"),
        vec![first]
    );
    assert_placement(store, Some(&p2)).await;
}

/// Two tenants created concurrently from the same placement: one succeeds, the other gets
/// `PlacementConflict` and leaves no trace; retrying on the new placement then succeeds.
pub async fn create_tenant_races_have_one_winner(store: &dyn MetadataStore) {
    let p1 = install(store, 1).await;
    let (ta, ka) = (
        tenant("a", 1),
        key("a", "000000000000000a", "2026-01-01T00:00:00Z"),
    );
    let (tb, kb) = (
        tenant("b", 2),
        key("b", "000000000000000b", "2026-01-01T00:00:00Z"),
    );
    let (na, nb) = (p1.with_tenant("a", 1), p1.with_tenant("b", 2));
    let (ra, rb) = tokio::join!(
        store.create_tenant(&ta, &ka, 1, &na),
        store.create_tenant(&tb, &kb, 1, &nb),
    );
    let (winner, loser_tenant, loser_key, loser_result) = match (&ra, &rb) {
        (Ok(()), Err(_)) => (&na, &tb, &kb, rb),
        (Err(_), Ok(())) => (&nb, &ta, &ka, ra),
        _ => panic!("expected exactly one winner: {ra:?}, {rb:?}"),
    };
    assert!(
        matches!(
            loser_result,
            Err(MetadataError::PlacementConflict { expected: Some(1) })
        ),
        "{loser_result:?}"
    );
    assert_placement(store, Some(winner)).await;
    assert_eq!(
        store
            .get_tenant(&loser_tenant.tenant_id)
            .await
            .expect("get_tenant"),
        None
    );
    assert_eq!(
        store
            .get_api_key(&loser_key.key_id)
            .await
            .expect("get_api_key"),
        None
    );

    // The loser re-reads and retries.
    let last = create(store, loser_tenant, loser_key).await;
    assert_eq!(last.tenants.len(), 2);
    assert_placement(store, Some(&last)).await;
    assert_eq!(
        store.list_tenants().await.expect("list_tenants"),
        vec![ta, tb]
    );
}

/// Every tenant field round-trips (extreme values included) and tenants list by id.
pub async fn tenants_round_trip_and_list_by_id(store: &dyn MetadataStore) {
    install(store, 1).await;
    let mut tenants = Vec::new();
    for (i, (id, consistency)) in [
        ("charlie", Consistency::One),
        ("alpha", Consistency::All),
        ("bravo-2_x", Consistency::Quorum),
    ]
    .into_iter()
    .enumerate()
    {
        let t = TenantConfig {
            tenant_id: id.to_owned(),
            replication_factor: 7,
            default_consistency: consistency,
            rate_limit: RateLimit {
                requests_per_second: u32::MAX,
                burst: i as u32,
            },
            created_at: format!("2026-03-0{}T10:00:00Z", i + 1),
        };
        create(
            store,
            &t,
            &key(id, &format!("00000000000000c{i}"), &t.created_at),
        )
        .await;
        assert_eq!(
            store.get_tenant(id).await.expect("get_tenant"),
            Some(t.clone())
        );
        tenants.push(t);
    }
    tenants.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    assert_eq!(store.list_tenants().await.expect("list_tenants"), tenants);
    assert_eq!(store.get_tenant("delta").await.expect("get_tenant"), None);

    let p = store
        .placement()
        .await
        .expect("placement")
        .expect("placement");
    assert_eq!(p.epoch, 4);
    assert_eq!(
        p.tenants.keys().collect::<Vec<_>>(),
        ["alpha", "bravo-2_x", "charlie"]
    );
}

/// Keys read back exactly, and a tenant's keys list oldest first, never another tenant's.
pub async fn api_keys_list_oldest_first_per_tenant(store: &dyn MetadataStore) {
    install(store, 1).await;
    let a0 = key("a", "a000000000000000", "2026-01-01T00:00:00Z");
    let b0 = key("b", "b000000000000000", "2026-01-01T00:00:00Z");
    create(store, &tenant("a", 1), &a0).await;
    create(store, &tenant("b", 1), &b0).await;

    // Inserted out of creation order; ids sort opposite to creation order.
    let a3 = key("a", "a100000000000000", "2026-01-04T00:00:00Z");
    let a1 = key("a", "a300000000000000", "2026-01-02T00:00:00Z");
    let a2 = key("a", "a200000000000000", "2026-01-03T00:00:00Z");
    let b1 = key("b", "b100000000000000", "2026-01-02T00:00:00Z");
    for k in [&a3, &a1, &b1, &a2] {
        store.insert_api_key(k).await.expect("insert_api_key");
    }

    assert_eq!(
        store.list_api_keys("a").await.expect("list_api_keys"),
        vec![a0.clone(), a1.clone(), a2.clone(), a3.clone()]
    );
    assert_eq!(
        store.list_api_keys("b").await.expect("list_api_keys"),
        vec![b0, b1.clone()]
    );
    assert!(
        store
            .list_api_keys("c")
            .await
            .expect("list_api_keys")
            .is_empty()
    );
    for k in [&a0, &a1, &a2, &a3, &b1] {
        assert_eq!(
            store
                .get_api_key(&k.key_id)
                .await
                .expect("get_api_key")
                .as_ref(),
            Some(k)
        );
    }
    assert_eq!(
        store
            .get_api_key("ffffffffffffffff")
            .await
            .expect("get_api_key"),
        None
    );
}

/// `delete_api_key` deletes only a key of the named tenant and reports whether it did.
pub async fn delete_api_key_only_deletes_the_tenants_own_key(store: &dyn MetadataStore) {
    install(store, 1).await;
    let a0 = key("a", "a000000000000000", "2026-01-01T00:00:00Z");
    let a1 = key("a", "a100000000000000", "2026-01-02T00:00:00Z");
    let b0 = key("b", "b000000000000000", "2026-01-01T00:00:00Z");
    create(store, &tenant("a", 1), &a0).await;
    create(store, &tenant("b", 1), &b0).await;
    store.insert_api_key(&a1).await.expect("insert_api_key");

    // Another tenant's key: refused, and the key survives.
    assert!(!store.delete_api_key("b", &a1.key_id).await.expect("delete"));
    assert!(
        !store
            .delete_api_key("nobody", &a1.key_id)
            .await
            .expect("delete")
    );
    assert_eq!(
        store.get_api_key(&a1.key_id).await.expect("get_api_key"),
        Some(a1.clone())
    );

    // Its own key: deleted once.
    assert!(store.delete_api_key("a", &a1.key_id).await.expect("delete"));
    assert!(!store.delete_api_key("a", &a1.key_id).await.expect("delete"));
    assert_eq!(
        store.get_api_key(&a1.key_id).await.expect("get_api_key"),
        None
    );
    assert_eq!(
        store.list_api_keys("a").await.expect("list_api_keys"),
        vec![a0]
    );
    assert_eq!(
        store.list_api_keys("b").await.expect("list_api_keys"),
        vec![b0]
    );

    // An unknown key.
    assert!(
        !store
            .delete_api_key("a", "ffffffffffffffff")
            .await
            .expect("delete")
    );
}

/// `upsert_node` inserts or replaces the whole row; nodes list by id.
pub async fn nodes_upsert_and_list_by_id(store: &dyn MetadataStore) {
    let n2 = node("node-2", "10.0.0.2:7000", NodeState::Joining);
    let n1 = node("node-1", "10.0.0.1:7000", NodeState::Active);
    let n3 = node("node-3", "10.0.0.3:7000", NodeState::Leaving);
    for n in [&n2, &n1, &n3] {
        store.upsert_node(n).await.expect("upsert_node");
    }
    assert_eq!(
        store.list_nodes().await.expect("list_nodes"),
        vec![n1.clone(), n2.clone(), n3.clone()]
    );

    let mut n2b = n2.clone();
    n2b.address = "10.0.9.2:7001".to_owned();
    n2b.state = NodeState::Active;
    n2b.created_at = "2026-02-04T00:00:00Z".to_owned();
    store.upsert_node(&n2b).await.expect("upsert_node");
    assert_eq!(
        store.list_nodes().await.expect("list_nodes"),
        vec![n1, n2b, n3]
    );
}

/// `update_tenant` changes the default consistency and the rate limit, each only when given,
/// and nothing of a tenant that does not exist.
pub async fn update_tenant_changes_only_what_it_is_given(store: &dyn MetadataStore) {
    install(store, 1).await;
    let t = tenant("acme", 3);
    create(store, &t, &key("acme", "0000000000000001", &t.created_at)).await;
    let limit = RateLimit {
        requests_per_second: 7,
        burst: u32::MAX,
    };
    let changed = store
        .update_tenant("acme", None, Some(limit))
        .await
        .expect("update_tenant");
    let mut want = TenantConfig {
        rate_limit: limit,
        ..t.clone()
    };
    assert_eq!(changed.as_ref(), Some(&want));
    let changed = store
        .update_tenant("acme", Some(Consistency::One), None)
        .await
        .expect("update_tenant");
    want.default_consistency = Consistency::One;
    assert_eq!(changed.as_ref(), Some(&want));
    assert_eq!(
        store.get_tenant("acme").await.expect("get"),
        Some(want.clone())
    );
    assert_eq!(
        store
            .update_tenant("acme", None, None)
            .await
            .expect("update_tenant"),
        Some(want)
    );
    assert_eq!(
        store
            .update_tenant("nobody", Some(Consistency::All), None)
            .await
            .expect("update_tenant"),
        None
    );
    assert_eq!(store.get_tenant("nobody").await.expect("get"), None);
}

pub async fn instances_heartbeat_are_counted_per_role_and_expire(store: &dyn MetadataStore) {
    let long = std::time::Duration::from_secs(30);
    let beat = |role: &'static str, id: &'static str, ttl| async move {
        store.heartbeat(role, id, ttl).await.expect("heartbeat")
    };
    assert_eq!(beat("gateway", "a", long).await, 1);
    assert_eq!(beat("gateway", "b", long).await, 2);
    // Roles are counted apart; a repeated heartbeat is the same instance.
    assert_eq!(beat("coordinator", "c", long).await, 1);
    assert_eq!(beat("gateway", "a", long).await, 2);
    // A clean stop leaves at once.
    store.leave("gateway", "b").await.expect("leave");
    store.leave("gateway", "never-there").await.expect("leave");
    assert_eq!(beat("gateway", "a", long).await, 1);
    // An instance that stops heartbeating is forgotten once its time runs out.
    assert_eq!(
        beat("gateway", "short", std::time::Duration::from_millis(200)).await,
        2
    );
    let mut live = 2;
    for _ in 0..100 {
        live = beat("gateway", "a", long).await;
        if live == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(live, 1, "the silent instance expired");
    assert_eq!(beat("coordinator", "c", long).await, 1);
}

fn job(id: &str, created_at: &str) -> JobRecord {
    JobRecord {
        id: id.to_owned(),
        kind: "migration".to_owned(),
        body: format!("{{\"id\":\"{id}\"}}"),
        done: false,
        created_at: created_at.to_owned(),
    }
}

pub async fn jobs_start_with_their_placement_and_lease_to_one_owner(store: &dyn MetadataStore) {
    use std::time::Duration;
    install(store, 1).await;
    // A job whose placement moved is refused whole.
    let refused = store
        .start_job(&job("j0", "2026-01-01T00:00:00Z"), Some((7, &placement(8))))
        .await;
    assert!(
        matches!(refused, Err(MetadataError::PlacementConflict { .. })),
        "{refused:?}"
    );
    assert_eq!(store.get_job("j0").await.expect("get"), None);
    store
        .start_job(&job("j1", "2026-01-01T00:00:01Z"), Some((1, &placement(2))))
        .await
        .expect("start");
    assert_eq!(
        store.placement().await.expect("placement").map(|p| p.epoch),
        Some(2)
    );
    // One job at a time: another is refused while j1 is unfinished.
    let busy = store
        .start_job(&job("j2", "2026-01-01T00:00:02Z"), None)
        .await;
    assert!(
        matches!(&busy, Err(MetadataError::JobRunning { id }) if id == "j1"),
        "{busy:?}"
    );
    assert_eq!(
        store.get_job("j1").await.expect("get"),
        Some(job("j1", "2026-01-01T00:00:01Z"))
    );
    let ids = |jobs: Vec<JobRecord>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list_jobs(false).await.expect("list")), ["j1"]);

    // One owner at a time: another's save fails while the lease holds, and succeeds after.
    let mut j1 = job("j1", "2026-01-01T00:00:01Z");
    j1.body = "{\"step\":1}".to_owned();
    assert!(
        store
            .save_job(&j1, "a", Duration::from_millis(300), None)
            .await
            .expect("save")
    );
    j1.body = "{\"step\":2}".to_owned();
    assert!(
        !store
            .save_job(&j1, "b", Duration::from_secs(60), None)
            .await
            .expect("save")
    );
    let stored = store.get_job("j1").await.expect("get").map(|j| j.body);
    assert_eq!(stored.as_deref(), Some("{\"step\":1}"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store
            .save_job(&j1, "b", Duration::from_secs(60), None)
            .await
            .expect("take over")
    );
    assert!(
        !store
            .save_job(&j1, "a", Duration::from_secs(60), None)
            .await
            .expect("save")
    );
    // A save with a placement that moved writes neither.
    j1.done = true;
    let moved = store
        .save_job(&j1, "b", Duration::from_secs(60), Some((1, &placement(3))))
        .await;
    assert!(
        matches!(moved, Err(MetadataError::PlacementConflict { .. })),
        "{moved:?}"
    );
    assert_eq!(
        store.get_job("j1").await.expect("get").map(|j| j.done),
        Some(false)
    );
    assert!(
        store
            .save_job(&j1, "b", Duration::from_secs(60), Some((2, &placement(3))))
            .await
            .expect("save")
    );
    assert_eq!(
        store.placement().await.expect("placement").map(|p| p.epoch),
        Some(3)
    );
    assert!(ids(store.list_jobs(true).await.expect("list")).is_empty());
    // With j1 done, the next starts; its id cannot be taken twice.
    store
        .start_job(&job("j2", "2026-01-01T00:00:02Z"), None)
        .await
        .expect("start without a placement");
    assert_eq!(ids(store.list_jobs(true).await.expect("list")), ["j2"]);
    assert_eq!(
        ids(store.list_jobs(false).await.expect("list")),
        ["j1", "j2"]
    );
    let mut j2 = job("j2", "2026-01-01T00:00:02Z");
    j2.done = true;
    assert!(
        store
            .save_job(&j2, "c", Duration::from_secs(1), None)
            .await
            .expect("finish j2")
    );
    assert!(
        store
            .start_job(&job("j2", "2026-01-01T00:00:03Z"), None)
            .await
            .is_err()
    );
    // A finished job never changes, even for its owner.
    j1.done = false;
    assert!(
        !store
            .save_job(&j1, "b", Duration::from_secs(60), None)
            .await
            .expect("save")
    );
    assert_eq!(
        store.get_job("j1").await.expect("get").map(|j| j.done),
        Some(true)
    );
    // A job that does not exist is not saved.
    assert!(
        !store
            .save_job(&job("nope", "x"), "b", Duration::from_secs(1), None)
            .await
            .expect("save")
    );
    // Finished jobs may be deleted; an unfinished one may not.
    store
        .start_job(&job("j3", "2026-01-01T00:00:04Z"), None)
        .await
        .expect("start j3");
    assert!(!store.delete_finished_job("j3").await.expect("delete"));
    assert!(store.delete_finished_job("j1").await.expect("delete"));
    assert!(!store.delete_finished_job("j1").await.expect("delete again"));
    assert_eq!(store.get_job("j1").await.expect("get"), None);
    assert_eq!(
        ids(store.list_jobs(false).await.expect("list")),
        ["j2", "j3"]
    );
}

pub async fn delete_tenant_removes_it_with_its_keys(store: &dyn MetadataStore) {
    install(store, 1).await;
    store
        .create_tenant(
            &tenant("t", 1),
            &key("t", "k1", "2026-01-01T00:00:00Z"),
            1,
            &placement(2),
        )
        .await
        .expect("create");
    store
        .insert_api_key(&key("t", "k2", "2026-01-01T00:00:01Z"))
        .await
        .expect("key");
    assert!(store.delete_tenant("t").await.expect("delete"));
    assert_eq!(store.get_tenant("t").await.expect("get"), None);
    assert_eq!(store.get_api_key("k1").await.expect("get"), None);
    assert!(store.list_api_keys("t").await.expect("list").is_empty());
    assert!(!store.delete_tenant("t").await.expect("delete again"));
    // The id can be taken again.
    store
        .create_tenant(
            &tenant("t", 1),
            &key("t", "k3", "2026-01-01T00:00:02Z"),
            2,
            &placement(3),
        )
        .await
        .expect("create again");
}

pub async fn epoch_acks_report_the_lowest_live_epoch(store: &dyn MetadataStore) {
    use std::time::Duration;
    assert_eq!(
        store
            .ack_epoch("a", 5, Duration::from_millis(300))
            .await
            .expect("ack"),
        5
    );
    assert_eq!(
        store
            .ack_epoch("b", 7, Duration::from_secs(60))
            .await
            .expect("ack"),
        5
    );
    assert_eq!(
        store
            .ack_epoch("a", 6, Duration::from_millis(300))
            .await
            .expect("ack"),
        6
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    // "a" is gone: only "b" (and the caller) count.
    assert_eq!(
        store
            .ack_epoch("b", 8, Duration::from_secs(60))
            .await
            .expect("ack"),
        8
    );
}

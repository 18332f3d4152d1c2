//! The suite against [`MemoryStore`], plus a parity check: the refusals the suite leaves to each
//! backend (constraint violations, column limits) and the text ordering of lists, replayed on a
//! `MemoryStore` and on an in-memory [`SqliteStore`], must give the same outcomes.

use pairdb_core::Consistency;
use pairdb_core::placement::Placement;
use pairdb_metadata::memory::MemoryStore;
use pairdb_metadata::sqlite::SqliteStore;
use pairdb_metadata::{
    ApiKeyRecord, MetadataError, MetadataStore, NodeRecord, NodeState, RateLimit, TenantConfig,
};

async fn fresh() -> (MemoryStore, ()) {
    (MemoryStore::new(), ())
}

crate::suite::metadata_store_suite!(fresh);

fn tenant(id: &str) -> TenantConfig {
    TenantConfig {
        tenant_id: id.to_owned(),
        replication_factor: 1,
        default_consistency: Consistency::One,
        rate_limit: RateLimit::default(),
        created_at: "2026-01-01T00:00:00Z".to_owned(),
    }
}

fn key(tenant_id: &str, key_id: &str, created_at: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id: key_id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        secret_hash: vec![0, 0xff],
        created_at: created_at.to_owned(),
    }
}

fn placement(epoch: u64) -> Placement {
    Placement {
        epoch,
        ..Placement::initial(Vec::new(), 8)
    }
}

/// An outcome with the error's message dropped (backends word `Unavailable` and `Corrupt`
/// differently).
fn outcome<T: std::fmt::Debug>(result: Result<T, MetadataError>) -> String {
    match result {
        Ok(v) => format!("Ok({v:?})"),
        Err(MetadataError::TenantExists) => "TenantExists".to_owned(),
        Err(MetadataError::PlacementConflict { expected }) => {
            format!("PlacementConflict({expected:?})")
        }
        Err(MetadataError::Unavailable(_)) => "Unavailable".to_owned(),
        Err(MetadataError::Corrupt(_)) => "Corrupt".to_owned(),
        Err(e) => format!("{e:?}"),
    }
}

/// Runs the edge cases on `store` (fresh and empty) and returns what every step answered and
/// what the store held afterwards.
async fn edge_cases(store: &dyn MetadataStore) -> Vec<String> {
    let mut log = Vec::new();
    let mut step = |what: &str, outcome: String| log.push(format!("{what}: {outcome}"));

    // Epochs the SQL column cannot hold: refused only once the swap would otherwise go through.
    let huge = placement(u64::MAX);
    step(
        "swap huge",
        outcome(store.swap_placement(None, &huge).await),
    );
    step(
        "swap huge, stale",
        outcome(store.swap_placement(Some(3), &huge).await),
    );
    step("placement", outcome(store.placement().await));
    let max = placement(i64::MAX as u64);
    let mut p = placement(1);
    step("swap 1", outcome(store.swap_placement(None, &p).await));

    // An API key of a missing tenant.
    let orphan = key("nobody", "0000000000000000", "2026-01-01T00:00:00Z");
    step("orphan key", outcome(store.insert_api_key(&orphan).await));
    step(
        "orphan get",
        outcome(store.get_api_key(&orphan.key_id).await),
    );

    // A first key owned by a tenant that exists neither before nor in this call.
    let a0 = key("nobody", "a000000000000000", "2026-01-01T00:00:00Z");
    step(
        "create a, orphan first key",
        outcome(
            store
                .create_tenant(&tenant("a"), &a0, 1, &p.with_tenant("a", 1))
                .await,
        ),
    );
    step("get a", outcome(store.get_tenant("a").await));
    step("placement", outcome(store.placement().await));

    let a0 = key("a", "a000000000000000", "2026-01-01T00:00:00Z");
    step(
        "create a",
        outcome(
            store
                .create_tenant(&tenant("a"), &a0, 1, &p.with_tenant("a", 1))
                .await,
        ),
    );
    p = p.with_tenant("a", 1);

    // A first key whose id is taken.
    let b0 = key("b", "a000000000000000", "2026-01-02T00:00:00Z");
    step(
        "create b, taken key id",
        outcome(
            store
                .create_tenant(&tenant("b"), &b0, 2, &p.with_tenant("b", 1))
                .await,
        ),
    );
    step("get b", outcome(store.get_tenant("b").await));
    // A first key owned by another, existing tenant: the foreign key holds.
    let b0 = key("a", "b000000000000000", "2026-01-02T00:00:00Z");
    step(
        "create b, a's key",
        outcome(
            store
                .create_tenant(&tenant("b"), &b0, 2, &p.with_tenant("b", 1))
                .await,
        ),
    );
    p = p.with_tenant("b", 1);
    step("keys of a", outcome(store.list_api_keys("a").await));
    step("keys of b", outcome(store.list_api_keys("b").await));

    // Several refusals at once: the first check wins.
    let taken_key = key("a", "a000000000000000", "2026-01-03T00:00:00Z");
    step(
        "create a again, stale epoch",
        outcome(
            store
                .create_tenant(&tenant("a"), &taken_key, 1, &p.with_tenant("a", 1))
                .await,
        ),
    );
    step(
        "create a again, taken key id",
        outcome(
            store
                .create_tenant(&tenant("a"), &taken_key, 3, &p.with_tenant("a", 1))
                .await,
        ),
    );
    let fresh_key = key("c", "c000000000000000", "2026-01-03T00:00:00Z");
    step(
        "create a again, huge epoch",
        outcome(
            store
                .create_tenant(&tenant("a"), &fresh_key, 3, &huge)
                .await,
        ),
    );
    step(
        "create c, huge epoch",
        outcome(
            store
                .create_tenant(&tenant("c"), &fresh_key, 3, &huge)
                .await,
        ),
    );
    step("get c", outcome(store.get_tenant("c").await));
    step(
        "get c's key",
        outcome(store.get_api_key(&fresh_key.key_id).await),
    );
    step(
        "create c, epoch i64::MAX",
        outcome(store.create_tenant(&tenant("c"), &fresh_key, 3, &max).await),
    );
    step(
        "swap past i64::MAX",
        outcome(store.swap_placement(Some(max.epoch), &huge).await),
    );
    step("placement", outcome(store.placement().await));

    // A taken key id, of the same or another tenant.
    for k in [
        key("a", "a000000000000000", "2026-01-04T00:00:00Z"),
        key("c", "a000000000000000", "2026-01-04T00:00:00Z"),
    ] {
        step("taken key id", outcome(store.insert_api_key(&k).await));
    }
    step(
        "a's first key",
        outcome(store.get_api_key("a000000000000000").await),
    );

    // Text ordering: byte-wise, upper case before lower case, non-ASCII last.
    for (i, id) in ["é", "b", "B", "a", "Z", "ä"].into_iter().enumerate() {
        step(
            "insert key",
            outcome(
                store
                    .insert_api_key(&key("c", &format!("{id}-key"), &format!("T{}", i % 2)))
                    .await,
            ),
        );
        let node = NodeRecord {
            node_id: id.to_owned(),
            address: format!("10.0.0.{i}:7000"),
            state: NodeState::Active,
            created_at: "2026-01-01T00:00:00Z".to_owned(),
        };
        step("upsert node", outcome(store.upsert_node(&node).await));
    }
    step("keys of c", outcome(store.list_api_keys("c").await));
    step("nodes", outcome(store.list_nodes().await));
    step("tenants", outcome(store.list_tenants().await));
    step(
        "delete another's key",
        outcome(store.delete_api_key("a", "é-key").await),
    );
    step(
        "delete own key",
        outcome(store.delete_api_key("c", "é-key").await),
    );
    step("ping", outcome(store.ping().await));
    log
}

#[tokio::test]
async fn edge_cases_match_the_sqlite_store() {
    let sqlite = SqliteStore::open_in_memory().await.expect("open_in_memory");
    let expected = edge_cases(&sqlite).await;
    let actual = edge_cases(&MemoryStore::new()).await;
    for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
        assert_eq!(a, e, "step {i}");
    }
    assert_eq!(actual.len(), expected.len());

    // The SQLite store's answers, spelled out for the steps that matter most.
    for (prefix, answer) in [
        ("swap huge: ", "Corrupt"),
        ("swap huge, stale: ", "Ok(false)"),
        ("orphan key: ", "Unavailable"),
        ("create a, orphan first key: ", "Unavailable"),
        ("create b, taken key id: ", "Unavailable"),
        ("create b, a's key: ", "Ok(())"),
        (
            "create a again, stale epoch: ",
            "PlacementConflict(Some(1))",
        ),
        ("create a again, taken key id: ", "TenantExists"),
        ("create a again, huge epoch: ", "TenantExists"),
        ("create c, huge epoch: ", "Corrupt"),
        ("create c, epoch i64::MAX: ", "Ok(())"),
        ("swap past i64::MAX: ", "Corrupt"),
        ("taken key id: ", "Unavailable"),
        ("delete another's key: ", "Ok(false)"),
        ("delete own key: ", "Ok(true)"),
    ] {
        let line = actual
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no step {prefix:?}"));
        assert_eq!(&line[prefix.len()..], answer, "{line}");
    }
}

#[tokio::test]
async fn clones_share_the_data() {
    let a = MemoryStore::new();
    let b = a.clone();
    assert!(a.swap_placement(None, &placement(1)).await.expect("swap"));
    assert_eq!(b.placement().await.expect("placement"), Some(placement(1)));
    assert!(!b.swap_placement(None, &placement(2)).await.expect("swap"));
}

#[tokio::test]
async fn an_api_key_of_a_missing_tenant_is_refused() {
    let store = MemoryStore::default();
    let k = key("nobody", "0123456789abcdef", "2026-01-01T00:00:00Z");
    let err = store.insert_api_key(&k).await.expect_err("no such tenant");
    assert!(matches!(err, MetadataError::Unavailable(_)), "{err:?}");
    assert_eq!(
        store.get_api_key(&k.key_id).await.expect("get_api_key"),
        None
    );
}

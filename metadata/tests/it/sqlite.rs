//! The suite against [`SqliteStore`], file-backed and in memory, plus SQLite-only checks:
//! durability across reopen, and typed errors for rows and schemas that were tampered with.

use std::path::Path;

use pairdb_core::placement::{NodeAddr, Placement};
use pairdb_metadata::sqlite::SqliteStore;
use pairdb_metadata::{
    ApiKeyRecord, MetadataError, MetadataStore, NodeRecord, NodeState, TenantConfig,
};
use sqlx::Connection;
use tempfile::TempDir;

fn url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("meta.db").display())
}

/// A store in a fresh file; the temp dir is deleted when the guard drops.
async fn fresh_file() -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&url(dir.path())).await.expect("open");
    (store, dir)
}

async fn fresh_memory() -> (SqliteStore, ()) {
    (
        SqliteStore::open_in_memory().await.expect("open_in_memory"),
        (),
    )
}

mod file {
    crate::suite::metadata_store_suite!(super::fresh_file);
}

mod memory {
    crate::suite::metadata_store_suite!(super::fresh_memory);
}

/// Runs `sql` on the database file directly, behind the store's back.
async fn tamper(dir: &Path, sql: &'static str) {
    let mut conn = sqlx::SqliteConnection::connect(&url(dir))
        .await
        .expect("connect");
    sqlx::raw_sql(sql).execute(&mut conn).await.expect("tamper");
    conn.close().await.expect("close");
}

#[tokio::test]
async fn open_creates_the_file_and_reopen_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("meta.db");
    assert!(!path.exists());

    let store = SqliteStore::open(&url(dir.path())).await.expect("open");
    assert!(path.exists());
    let p1 = Placement::initial(
        vec![NodeAddr {
            id: "n1".to_owned(),
            address: "127.0.0.1:7000".to_owned(),
        }],
        8,
    );
    assert!(store.swap_placement(None, &p1).await.expect("swap"));
    let t = TenantConfig {
        tenant_id: "acme".to_owned(),
        replication_factor: 3,
        default_consistency: pairdb_core::Consistency::One,
        rate_limit: Default::default(),
        created_at: "2026-01-01T00:00:00Z".to_owned(),
    };
    let k = ApiKeyRecord {
        key_id: "0123456789abcdef".to_owned(),
        tenant_id: "acme".to_owned(),
        secret_hash: vec![0, 1, 2, 255],
        created_at: "2026-01-01T00:00:00Z".to_owned(),
    };
    let p2 = p1.with_tenant("acme", 3);
    store
        .create_tenant(&t, &k, 1, &p2)
        .await
        .expect("create_tenant");
    let n = NodeRecord {
        node_id: "n1".to_owned(),
        address: "127.0.0.1:7000".to_owned(),
        state: NodeState::Active,
        created_at: "2026-01-01T00:00:00Z".to_owned(),
    };
    store.upsert_node(&n).await.expect("upsert_node");
    store.close().await;
    assert!(matches!(
        store.ping().await,
        Err(MetadataError::Unavailable(_))
    ));

    // Reopening runs the (already applied) migrations again without harm.
    for _ in 0..2 {
        let store = SqliteStore::open(&url(dir.path())).await.expect("reopen");
        assert_eq!(
            store.placement().await.expect("placement"),
            Some(p2.clone())
        );
        assert_eq!(
            store.list_tenants().await.expect("list_tenants"),
            vec![t.clone()]
        );
        assert_eq!(
            store.list_api_keys("acme").await.expect("list_api_keys"),
            vec![k.clone()]
        );
        assert_eq!(
            store.list_nodes().await.expect("list_nodes"),
            vec![n.clone()]
        );
        store.close().await;
    }
}

#[tokio::test]
async fn two_stores_on_one_file_see_each_others_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = SqliteStore::open(&url(dir.path())).await.expect("open a");
    let b = SqliteStore::open(&url(dir.path())).await.expect("open b");
    let p1 = Placement::initial(Vec::new(), 8);
    let mut p2 = p1.clone();
    p2.epoch = 2;
    let mut p2b = p2.clone();
    p2b.vnodes = 9;
    assert!(a.swap_placement(None, &p1).await.expect("swap"));
    assert!(!b.swap_placement(None, &p1).await.expect("swap"));
    let (ra, rb) = tokio::join!(
        a.swap_placement(Some(1), &p2),
        b.swap_placement(Some(1), &p2b)
    );
    let (ra, rb) = (ra.expect("swap a"), rb.expect("swap b"));
    assert!(ra != rb, "exactly one writer wins: {ra} {rb}");
    let winner = if ra { p2 } else { p2b };
    assert_eq!(
        a.placement().await.expect("placement"),
        Some(winner.clone())
    );
    assert_eq!(b.placement().await.expect("placement"), Some(winner));
}

#[tokio::test]
async fn a_malformed_url_is_unavailable() {
    let err = SqliteStore::open("postgres://localhost/x")
        .await
        .expect_err("not a sqlite url");
    assert!(matches!(err, MetadataError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn tampered_rows_are_corrupt() {
    let (store, dir) = fresh_file().await;
    assert!(
        store
            .swap_placement(None, &Placement::initial(Vec::new(), 8))
            .await
            .expect("swap")
    );

    tamper(dir.path(), "UPDATE placement SET epoch = 2").await;
    let err = store.placement().await.expect_err("epoch mismatch");
    assert!(matches!(err, MetadataError::Corrupt(_)), "{err:?}");

    tamper(dir.path(), "UPDATE placement SET body = '{not json'").await;
    let err = store.placement().await.expect_err("bad json");
    assert!(matches!(err, MetadataError::Corrupt(_)), "{err:?}");

    tamper(dir.path(), "UPDATE placement SET epoch = -1").await;
    let err = store.placement().await.expect_err("negative epoch");
    assert!(matches!(err, MetadataError::Corrupt(_)), "{err:?}");

    tamper(
        dir.path(),
        "INSERT INTO tenants VALUES ('t', 3, 'sometimes', 1, 1, '2026-01-01T00:00:00Z');
         INSERT INTO tenants VALUES ('u', -1, 'one', 1, 1, '2026-01-01T00:00:00Z');",
    )
    .await;
    for id in ["t", "u"] {
        let err = store.get_tenant(id).await.expect_err("bad tenant row");
        assert!(matches!(err, MetadataError::Corrupt(_)), "{id}: {err:?}");
    }
    let err = store.list_tenants().await.expect_err("bad tenant rows");
    assert!(matches!(err, MetadataError::Corrupt(_)), "{err:?}");

    tamper(
        dir.path(),
        "PRAGMA ignore_check_constraints = ON;
         INSERT INTO nodes VALUES ('n', 'h:1', 'gone', '2026-01-01T00:00:00Z');",
    )
    .await;
    let err = store.list_nodes().await.expect_err("bad node state");
    assert!(matches!(err, MetadataError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn a_modified_schema_is_corrupt() {
    let (store, dir) = fresh_file().await;
    store.close().await;
    tamper(dir.path(), "UPDATE _sqlx_migrations SET checksum = x'00'").await;
    let err = SqliteStore::open(&url(dir.path()))
        .await
        .expect_err("checksum mismatch");
    assert!(matches!(err, MetadataError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn an_api_key_of_a_missing_tenant_is_refused() {
    let (store, _dir) = fresh_memory().await;
    let k = ApiKeyRecord {
        key_id: "0123456789abcdef".to_owned(),
        tenant_id: "nobody".to_owned(),
        secret_hash: vec![1],
        created_at: "2026-01-01T00:00:00Z".to_owned(),
    };
    let err = store.insert_api_key(&k).await.expect_err("no such tenant");
    assert!(matches!(err, MetadataError::Unavailable(_)), "{err:?}");
    assert_eq!(
        store.get_api_key(&k.key_id).await.expect("get_api_key"),
        None
    );
}

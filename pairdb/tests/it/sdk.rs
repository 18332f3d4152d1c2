//! The Rust SDK against a real local cluster.

use pairdb_client::{Client, ConflictOutcome, Consistency, NewTenant, ReadOptions, WriteOptions};

use crate::harness::{ADMIN_KEY, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_round_trips_through_the_gateway() {
    let t = start(3).await;
    let admin = Client::builder(&t.base, ADMIN_KEY)
        .build()
        .expect("admin client");
    let created = admin
        .create_tenant(&NewTenant {
            tenant_id: "sdk".into(),
            replication_factor: Some(3),
            default_consistency: Some(Consistency::Quorum),
            rate_limit: None,
        })
        .await
        .expect("create tenant");
    assert_eq!(created.tenant.replication_factor, 3);

    let client = Client::builder(&t.base, &created.api_key)
        .consistency(Consistency::All)
        .build()
        .expect("client");
    let w = client.put("users/42", "alice").await.expect("put");
    assert_eq!((w.acks, w.replicas), (3, 3));
    let item = client.get("users/42").await.expect("get").expect("present");
    assert_eq!(item.value.as_ref(), b"alice");
    assert_eq!(item.answered, 3);

    // Carry the read's context: no conflict. Reuse the stale one: a reported conflict.
    let stale = item.context.clone();
    let ok = client
        .put_with(
            "users/42",
            "bob",
            &WriteOptions {
                context: Some(item.context),
                ..WriteOptions::default()
            },
        )
        .await
        .expect("put with context");
    assert_eq!(ok.conflict, None);
    let lost_update = client
        .put_with(
            "users/42",
            "carol",
            &WriteOptions {
                context: Some(stale),
                ..WriteOptions::default()
            },
        )
        .await
        .expect("put with stale context");
    assert_eq!(lost_update.conflict, Some(ConflictOutcome::Won));

    let one = client
        .get_with(
            "users/42",
            &ReadOptions {
                consistency: Some(Consistency::One),
            },
        )
        .await
        .expect("get at one")
        .expect("present");
    assert_eq!(one.value.as_ref(), b"carol");

    client.delete("users/42").await.expect("delete");
    assert!(client.get("users/42").await.expect("get").is_none());
    assert!(
        admin
            .list_tenants()
            .await
            .expect("list")
            .iter()
            .any(|t| t.tenant_id == "sdk")
    );
    t.cluster.stop().await.expect("every node stops cleanly");
}

//! Storage RPCs without the internal credential, or with a stale epoch, are refused.

use pairdb_proto::storage::{HealthRequest, KeyRef, ReadRequest};
use tonic::Code;

use crate::harness::{INTERNAL_TOKEN, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_refuses_strangers_and_stale_epochs() {
    let t = start(3).await;
    t.create_tenant("acme", 3).await;
    let read = |epoch| ReadRequest {
        epoch,
        key: Some(KeyRef {
            namespace: "acme".into(),
            key: b"k".to_vec(),
        }),
    };
    let epoch = t.epoch();
    assert!(epoch > 1, "creating a tenant advanced the epoch");

    let no_token = t
        .storage("node-1", None)
        .read(read(epoch))
        .await
        .expect_err("refused");
    assert_eq!(no_token.code(), Code::Unauthenticated);
    let wrong = t
        .storage("node-1", Some("not-the-token"))
        .health(HealthRequest {})
        .await
        .expect_err("refused");
    assert_eq!(wrong.code(), Code::Unauthenticated);

    let stale = t
        .storage("node-1", Some(INTERNAL_TOKEN))
        .read(read(epoch - 1))
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Code::Aborted);
    let ok = t
        .storage("node-1", Some(INTERNAL_TOKEN))
        .read(read(epoch))
        .await;
    assert!(ok.is_ok());
    t.cluster.stop().await.expect("every node stops cleanly");
}

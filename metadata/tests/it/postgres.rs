//! The suite against [`PostgresStore`], each check on its own throwaway server.

use pairdb_metadata::postgres::PostgresStore;

use pairdb_testkit::PgServer;

async fn fresh() -> (PostgresStore, PgServer) {
    let server = PgServer::start().await;
    let store = PostgresStore::open(&server.url).await.expect("open");
    (store, server)
}

crate::suite::metadata_store_suite!(fresh);

/// A second store opening the same database finds the schema applied and the data there.
#[tokio::test]
async fn reopening_keeps_the_schema_and_the_data() {
    use pairdb_metadata::MetadataStore;
    let server = PgServer::start().await;
    let first = PostgresStore::open(&server.url).await.expect("open");
    crate::suite::tenants_round_trip_and_list_by_id(&first).await;
    let tenants = first.list_tenants().await.expect("list");
    first.close().await;
    let again = PostgresStore::open(&server.url).await.expect("reopen");
    assert_eq!(again.list_tenants().await.expect("list"), tenants);
}

/// Sessions run with the store's statement and lock timeouts.
#[tokio::test]
async fn sessions_carry_the_statement_and_lock_timeouts() {
    let server = PgServer::start().await;
    let store = PostgresStore::open(&server.url).await.expect("open");
    let (statement, lock): (String, String) = sqlx::query_as(
        "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')",
    )
    .fetch_one(store.pool())
    .await
    .expect("settings");
    assert_eq!((statement.as_str(), lock.as_str()), ("10s", "10s"));
}

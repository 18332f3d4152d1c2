//! Tenant administration routes.

use pairdb_client::{ClientError, Consistency, NewTenant, RateLimit};

use crate::fake::{Fake, Scripted};

fn tenant_json(id: &str) -> serde_json::Value {
    serde_json::json!({
        "tenant_id": id,
        "replication_factor": 3,
        "default_consistency": "quorum",
        "rate_limit": {"requests_per_second": 100, "burst": 200},
        "created_at": "2026-01-02T03:04:05Z",
    })
}

#[tokio::test]
async fn creates_a_tenant() {
    let fake = Fake::start().await;
    let mut created = tenant_json("acme");
    created["api_key"] = "pdb_k1_secret".into();
    fake.script([Scripted::status(201).json(created)]);

    let new = NewTenant {
        replication_factor: Some(3),
        default_consistency: Some(Consistency::Quorum),
        rate_limit: Some(RateLimit {
            requests_per_second: 100,
            burst: 200,
        }),
        ..NewTenant::new("acme")
    };
    let created = fake.client().create_tenant(&new).await.expect("create");
    assert_eq!(created.api_key, "pdb_k1_secret");
    assert_eq!(created.tenant.tenant_id, "acme");
    assert_eq!(created.tenant.replication_factor, 3);
    assert_eq!(created.tenant.default_consistency, Consistency::Quorum);
    assert_eq!(created.tenant.rate_limit.burst, 200);

    let seen = fake.seen();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/tenants");
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(seen[0].header("authorization"), Some("Bearer k"));
    let sent: serde_json::Value = serde_json::from_slice(&seen[0].body).expect("json");
    assert_eq!(
        sent,
        serde_json::json!({
            "tenant_id": "acme",
            "replication_factor": 3,
            "default_consistency": "quorum",
            "rate_limit": {"requests_per_second": 100, "burst": 200},
        })
    );
}

#[tokio::test]
async fn omits_defaults_from_a_new_tenant() {
    let fake = Fake::start().await;
    let mut created = tenant_json("acme");
    created["api_key"] = "pdb_k1_secret".into();
    fake.script([Scripted::status(201).json(created)]);
    fake.client()
        .create_tenant(&NewTenant::new("acme"))
        .await
        .expect("create");
    let sent: serde_json::Value = serde_json::from_slice(&fake.seen()[0].body).expect("json");
    assert_eq!(sent, serde_json::json!({"tenant_id": "acme"}));
}

#[tokio::test]
async fn reads_and_lists_tenants() {
    let fake = Fake::start().await;
    fake.script([
        Scripted::status(200).json(tenant_json("acme")),
        Scripted::status(200).json(serde_json::json!([tenant_json("a"), tenant_json("b")])),
    ]);
    let client = fake.client();
    let tenant = client.get_tenant("acme").await.expect("get");
    assert_eq!(tenant.created_at.as_deref(), Some("2026-01-02T03:04:05Z"));
    let all = client.list_tenants().await.expect("list");
    let ids: Vec<_> = all.iter().map(|t| t.tenant_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    let paths: Vec<_> = fake.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/v1/tenants/acme", "/v1/tenants"]);
}

#[tokio::test]
async fn manages_api_keys() {
    let fake = Fake::start().await;
    fake.script([
        Scripted::status(201).json(serde_json::json!({"key_id": "k2", "api_key": "pdb_k2_s"})),
        Scripted::status(200).json(serde_json::json!([
            {"key_id": "k1", "created_at": "2026-01-02T03:04:05Z"},
            {"key_id": "k2", "created_at": "2026-01-02T03:04:06Z"},
        ])),
        Scripted::status(204),
    ]);
    let client = fake.client();
    let key = client.create_api_key("acme").await.expect("create key");
    assert_eq!(
        (key.key_id.as_str(), key.api_key.as_str()),
        ("k2", "pdb_k2_s")
    );
    let keys = client.list_api_keys("acme").await.expect("list keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].key_id, "k1");
    client
        .delete_api_key("acme", "k1")
        .await
        .expect("delete key");

    let seen: Vec<_> = fake
        .seen()
        .into_iter()
        .map(|s| (s.method.to_string(), s.path))
        .collect();
    assert_eq!(
        seen,
        [
            ("POST".to_owned(), "/v1/tenants/acme/api-keys".to_owned()),
            ("GET".to_owned(), "/v1/tenants/acme/api-keys".to_owned()),
            (
                "DELETE".to_owned(),
                "/v1/tenants/acme/api-keys/k1".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn refuses_invalid_tenant_ids_without_sending() {
    let fake = Fake::start().await;
    let client = fake.client();
    assert!(matches!(
        client.get_tenant("Acme/x").await,
        Err(ClientError::InvalidTenantId(_))
    ));
    assert!(matches!(
        client.create_tenant(&NewTenant::new("")).await,
        Err(ClientError::InvalidTenantId(_))
    ));
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn missing_tenant_is_an_error() {
    let fake = Fake::start().await;
    fake.script([Scripted::problem(
        404,
        "tenant-not-found",
        serde_json::json!({}),
    )]);
    let err = fake.client().get_tenant("ghost").await.expect_err("absent");
    assert_eq!(
        err.problem().map(|p| p.kind.as_str()),
        Some("tenant-not-found")
    );
}

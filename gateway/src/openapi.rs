//! The OpenAPI 3 document, generated from the handlers' annotations so it cannot drift from
//! the routes. It lists every problem `type` URI (schema `ProblemType` and the info description)
//! and declares the bearer API-key scheme.

use pairdb_core::ErrorKind;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, RefOr, Schema};
use utoipa::{Modify, OpenApi};

use crate::problem::ProblemBody;
use crate::routes::admin::{
    AddNodeBody, MigrationBody, NodeBody, RepairBody, RepairStartedBody, StartRepairBody,
};
use crate::routes::kv::WriteResult;
use crate::routes::ops::StatusBody;
use crate::routes::tenants::{
    ApiKeyInfoBody, CreateTenantBody, CreatedApiKeyBody, CreatedTenantBody, MigrationStartedBody,
    RateLimitBody, ReplicationFactorBody, TenantBody, UpdateTenantBody,
};
use crate::routes::{admin, kv, ops, tenants};

/// The gateway's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pairdb",
        description = "pairdb REST API v1: a distributed multi-tenant key-value store with tunable consistency."
    ),
    paths(
        kv::put_value,
        kv::get_value,
        kv::delete_value,
        tenants::create_tenant,
        tenants::list_tenants,
        tenants::get_tenant,
        tenants::update_tenant,
        tenants::set_replication_factor,
        tenants::delete_tenant,
        tenants::create_api_key,
        tenants::list_api_keys,
        tenants::delete_api_key,
        admin::list_nodes,
        admin::add_node,
        admin::remove_node,
        admin::get_migration,
        admin::cancel_migration,
        admin::start_repair,
        admin::get_repair,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi_json,
    ),
    components(schemas(
        ProblemBody,
        WriteResult,
        CreateTenantBody,
        UpdateTenantBody,
        RateLimitBody,
        TenantBody,
        CreatedTenantBody,
        CreatedApiKeyBody,
        ApiKeyInfoBody,
        NodeBody,
        AddNodeBody,
        MigrationBody,
        MigrationStartedBody,
        ReplicationFactorBody,
        StartRepairBody,
        RepairStartedBody,
        RepairBody,
        StatusBody,
    )),
    modifiers(&ProblemTypes, &ApiKeyAuth),
    tags(
        (name = "kv", description = "Values by key"),
        (name = "tenants", description = "Tenants and their API keys"),
        (name = "admin", description = "Cluster administration"),
        (name = "operations", description = "Liveness, readiness, this document"),
    )
)]
pub struct ApiDoc;

/// Adds the `ProblemType` schema (every problem `type` URI) and lists the types in the info
/// description.
struct ProblemTypes;

impl Modify for ProblemTypes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The `type` member of a problem+json body: one stable URI per error kind.",
            ))
            .enum_values(Some(ErrorKind::ALL.iter().map(|k| k.type_uri())))
            .build();
        openapi
            .components
            .get_or_insert_with(|| ComponentsBuilder::new().build())
            .schemas
            .insert("ProblemType".to_owned(), RefOr::T(Schema::Object(schema)));
        let mut list =
            String::from("\n\nProblem types (`type` of an application/problem+json body):\n");
        for kind in ErrorKind::ALL {
            list.push_str(&format!(
                "\n- `{}` — {} {}",
                kind.type_uri(),
                kind.http_status(),
                kind.title()
            ));
        }
        let description = openapi.info.description.get_or_insert_with(String::new);
        description.push_str(&list);
    }
}

/// Declares `Authorization: Bearer <api key>`.
struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(|| ComponentsBuilder::new().build())
            .add_security_scheme(
                "api_key",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

/// The document as JSON.
pub fn document_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"openapi rendering failed: {e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_problem_type_and_route() {
        let json = document_json();
        for kind in ErrorKind::ALL {
            assert!(json.contains(&kind.type_uri()), "{}", kind.slug());
        }
        for path in ["/v1/kv/{key}", "/v1/tenants", "/v1/admin/nodes", "/readyz"] {
            assert!(json.contains(path), "{path}");
        }
    }
}

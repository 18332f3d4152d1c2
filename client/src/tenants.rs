//! Tenant administration: `/v1/tenants` and its API keys. Needs the admin key (a tenant key may
//! only [`get_tenant`](Client::get_tenant) its own tenant).
//!
//! These calls carry no idempotency key, so `POST` and `DELETE` are retried only when an
//! attempt was certainly not applied (503, 429, connection refused); a timeout surfaces as
//! [`ClientError::Transport`] with the outcome unknown. `GET`s are retried like key-value reads.

use pairdb_core::Consistency;
use pairdb_core::tenant::validate_tenant_id;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::client::{Client, Reply, Request};
use crate::error::ClientError;
use crate::key::encode_text_segment;
use crate::retry::Repeatable;

/// A tenant's request-rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub requests_per_second: u32,
    /// Bucket size: requests allowed in a burst.
    pub burst: u32,
}

/// A tenant to create. Fields left `None` take the server's defaults (RF 3, `quorum`, the
/// server's default rate limit).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NewTenant {
    /// Must match `[a-z0-9][a-z0-9_-]{0,62}` (checked before sending).
    pub tenant_id: String,
    /// Replicas per key, 1–7, at most the number of active storage nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<u32>,
    /// Level used when a request names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_consistency: Option<Consistency>,
    /// Request-rate limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

impl NewTenant {
    /// A tenant with this id and the server's defaults.
    pub fn new(tenant_id: impl Into<String>) -> Self {
        NewTenant {
            tenant_id: tenant_id.into(),
            ..NewTenant::default()
        }
    }
}

/// A tenant as the server describes it. Members the client does not know are ignored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct Tenant {
    /// The tenant's id.
    pub tenant_id: String,
    /// Replicas per key.
    pub replication_factor: u32,
    /// Level used when a request names none.
    pub default_consistency: Consistency,
    /// Request-rate limit.
    pub rate_limit: RateLimit,
    /// Creation time, RFC 3339 UTC, if the server sent it.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A created tenant and its first API key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct CreatedTenant {
    /// The tenant.
    #[serde(flatten)]
    pub tenant: Tenant,
    /// The tenant's first API key, `pdb_<key id>_<secret>`. Shown once: the server keeps only
    /// a hash, so a lost key is replaced with [`Client::create_api_key`].
    pub api_key: String,
}

/// A newly created API key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct CreatedApiKey {
    /// Public id, the middle part of the key.
    pub key_id: String,
    /// The whole key. Shown once.
    pub api_key: String,
}

/// An API key as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct ApiKeyInfo {
    /// Public id, the middle part of the key.
    pub key_id: String,
    /// Creation time, RFC 3339 UTC, if the server sent it.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// `GET /v1/tenants` answers a JSON array; an object wrapping it is also read.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum TenantList {
    Bare(Vec<Tenant>),
    Wrapped { tenants: Vec<Tenant> },
}

impl Client {
    /// Creates a tenant (`POST /v1/tenants`, 201).
    ///
    /// Fails before sending with [`ClientError::InvalidTenantId`]; an existing tenant is a 409
    /// `tenant-exists` [`ClientError::Api`], an unsatisfiable replication factor a 400.
    pub async fn create_tenant(&self, tenant: &NewTenant) -> Result<CreatedTenant, ClientError> {
        validate_tenant_id(&tenant.tenant_id)?;
        let body = serde_json::to_vec(tenant).map_err(ClientError::Encode)?;
        let reply = self
            .admin(Method::POST, "/v1/tenants".to_owned(), Some(body))
            .await?;
        decode(&reply, "created tenant")
    }

    /// Describes one tenant (`GET /v1/tenants/{id}`); a 404 `tenant-not-found` is an error.
    pub async fn get_tenant(&self, tenant_id: &str) -> Result<Tenant, ClientError> {
        let reply = self
            .admin(Method::GET, tenant_path(tenant_id, "")?, None)
            .await?;
        decode(&reply, "tenant")
    }

    /// Lists every tenant (`GET /v1/tenants`).
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, ClientError> {
        let reply = self
            .admin(Method::GET, "/v1/tenants".to_owned(), None)
            .await?;
        Ok(match decode(&reply, "tenant list")? {
            TenantList::Bare(tenants) | TenantList::Wrapped { tenants } => tenants,
        })
    }

    /// Adds an API key to a tenant (`POST /v1/tenants/{id}/api-keys`, 201). The key's secret is
    /// in the answer only.
    pub async fn create_api_key(&self, tenant_id: &str) -> Result<CreatedApiKey, ClientError> {
        let reply = self
            .admin(Method::POST, tenant_path(tenant_id, "/api-keys")?, None)
            .await?;
        decode(&reply, "created API key")
    }

    /// Lists a tenant's API keys, without secrets (`GET /v1/tenants/{id}/api-keys`).
    pub async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, ClientError> {
        let reply = self
            .admin(Method::GET, tenant_path(tenant_id, "/api-keys")?, None)
            .await?;
        decode(&reply, "API key list")
    }

    /// Revokes an API key (`DELETE /v1/tenants/{id}/api-keys/{key_id}`, 204); the key stops
    /// working within a second. An unknown key id is a 404 `api-key-not-found`.
    pub async fn delete_api_key(&self, tenant_id: &str, key_id: &str) -> Result<(), ClientError> {
        let suffix = format!("/api-keys/{}", encode_text_segment(key_id));
        self.admin(Method::DELETE, tenant_path(tenant_id, &suffix)?, None)
            .await?;
        Ok(())
    }

    async fn admin(
        &self,
        method: Method,
        path: String,
        json: Option<Vec<u8>>,
    ) -> Result<Reply, ClientError> {
        let mut headers = HeaderMap::new();
        if json.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let repeatable = if method == Method::GET {
            Repeatable::Yes
        } else {
            Repeatable::No
        };
        let request = Request {
            method,
            path,
            headers,
            body: json.map(Into::into),
            repeatable,
            send_deadline: false,
        };
        self.send(request, |_: StatusCode| false).await
    }
}

/// `/v1/tenants/{id}{suffix}` for a valid tenant id.
fn tenant_path(tenant_id: &str, suffix: &str) -> Result<String, ClientError> {
    validate_tenant_id(tenant_id)?;
    Ok(format!(
        "/v1/tenants/{}{suffix}",
        encode_text_segment(tenant_id)
    ))
}

fn decode<T: DeserializeOwned>(reply: &Reply, what: &str) -> Result<T, ClientError> {
    serde_json::from_slice(&reply.body)
        .map_err(|e| ClientError::UnexpectedResponse(format!("malformed {what}: {e}")))
}

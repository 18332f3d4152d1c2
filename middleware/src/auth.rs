//! Bearer credential → [`Principal`].
//!
//! Three credentials are accepted, checked in this order, every comparison in constant time:
//!
//! 1. the internal service token, only when `trust_forwarded` is set (the coordinator trusting a
//!    gateway): the principal is then taken from `x-pairdb-principal: admin` or
//!    `x-pairdb-tenant: <id>`, and the request is marked [`Forwarded`];
//! 2. the admin key (an empty admin key matches nothing);
//! 3. a tenant API key `pdb_<key id>_<secret>`, looked up by key id and verified against the
//!    stored HMAC.
//!
//! Key lookups, found or not, are cached for at most [`KEY_CACHE_TTL`], so a revoked key stops
//! working within a second; the cache holds at most [`KEY_CACHE_MAX_ENTRIES`] key ids.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response, header};
use pairdb_core::ErrorKind;
use pairdb_core::tenant::validate_tenant_id;
use pairdb_metadata::{ApiKeyRecord, MetadataStore, api_key};
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::cache::TtlCache;
use crate::principal::{Forwarded, Principal};
use crate::reject::{LayerError, Reject};
use crate::trace::TraceContext;

/// Longest time a key lookup (positive or negative) is served from the cache.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
/// Most key ids the cache holds before it is emptied.
pub const KEY_CACHE_MAX_ENTRIES: usize = 10_000;
/// The `key_id` of a tenant principal forwarded by a gateway.
pub const INTERNAL_KEY_ID: &str = "internal";

use pairdb_core::headers::{PRINCIPAL as PRINCIPAL_HEADER, TENANT as TENANT_HEADER};

/// The secrets the auth layer checks credentials against. `Debug` redacts them.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// Server secret API-key secrets are HMAC'd with.
    pub key_secret: Vec<u8>,
    /// The admin key; empty disables admin access by key.
    pub admin_key: String,
    /// The internal service token gateways present; empty disables forwarding.
    pub internal_token: String,
    /// Accept the internal token and take the principal from the forwarding headers
    /// (the coordinator: true; the public gateway: false).
    pub trust_forwarded: bool,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("key_secret", &"<redacted>")
            .field("admin_key", &"<redacted>")
            .field("internal_token", &"<redacted>")
            .field("trust_forwarded", &self.trust_forwarded)
            .finish()
    }
}

/// Resolves request headers to a [`Principal`]. Cheap to clone (shared cache).
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<AuthInner>,
}

struct AuthInner {
    store: Arc<dyn MetadataStore>,
    config: AuthConfig,
    keys: TtlCache<Option<ApiKeyRecord>>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Equal in constant time for equal lengths; an empty `expected` never matches.
fn secret_eq(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

fn unauthorized(detail: &str) -> LayerError {
    LayerError::new(ErrorKind::Unauthorized, detail)
}

/// The token of the single `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, LayerError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (Some(v), None) => v,
        (None, _) => return Err(unauthorized("missing Authorization: Bearer <api key>")),
        (Some(_), Some(_)) => return Err(unauthorized("more than one Authorization header")),
    };
    let value = value
        .to_str()
        .map_err(|_| unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| unauthorized("expected Authorization: Bearer <api key>"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(unauthorized("expected Authorization: Bearer <api key>"));
    }
    Ok(token)
}

fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, LayerError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| {
            LayerError::new(ErrorKind::BadRequest, format!("malformed {name} header"))
        }),
        (Some(_), Some(_)) => Err(LayerError::new(
            ErrorKind::BadRequest,
            format!("more than one {name} header"),
        )),
    }
}

/// The principal a gateway named when forwarding with the internal token.
fn forwarded_principal(headers: &HeaderMap) -> Result<Principal, LayerError> {
    if let Some(principal) = single_header(headers, PRINCIPAL_HEADER)? {
        return if principal == "admin" {
            Ok(Principal::Admin)
        } else {
            Err(LayerError::new(
                ErrorKind::BadRequest,
                format!("{PRINCIPAL_HEADER} must be admin"),
            ))
        };
    }
    match single_header(headers, TENANT_HEADER)? {
        Some(tenant_id) => {
            validate_tenant_id(tenant_id)
                .map_err(|e| LayerError::new(ErrorKind::BadRequest, e.to_string()))?;
            Ok(Principal::Tenant {
                tenant_id: tenant_id.to_owned(),
                key_id: INTERNAL_KEY_ID.to_owned(),
            })
        }
        None => Err(LayerError::new(
            ErrorKind::BadRequest,
            format!("a forwarded call names {PRINCIPAL_HEADER} or {TENANT_HEADER}"),
        )),
    }
}

impl Authenticator {
    /// An authenticator looking API keys up in `store`, checking against `config`'s secrets.
    pub fn new(store: Arc<dyn MetadataStore>, config: AuthConfig) -> Self {
        Authenticator {
            inner: Arc::new(AuthInner {
                store,
                config,
                keys: TtlCache::new(KEY_CACHE_TTL, KEY_CACHE_MAX_ENTRIES),
            }),
        }
    }

    /// The principal of a request with `headers`, and whether a gateway forwarded it.
    ///
    /// Fails with `Unauthorized` for a missing, malformed, unknown, revoked or wrong credential,
    /// `BadRequest` for a forwarded call naming no valid principal, and `NotReady` when the
    /// metadata store cannot be read.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<(Principal, bool), LayerError> {
        let config = &self.inner.config;
        let token = bearer_token(headers)?;
        if config.trust_forwarded && secret_eq(token, &config.internal_token) {
            return Ok((forwarded_principal(headers)?, true));
        }
        if secret_eq(token, &config.admin_key) {
            return Ok((Principal::Admin, false));
        }
        let parsed = api_key::parse(token).ok_or_else(|| unauthorized("unknown API key"))?;
        let record = self
            .lookup(parsed.key_id)
            .await?
            .ok_or_else(|| unauthorized("unknown API key"))?;
        if !api_key::verify(&config.key_secret, parsed.secret, &record.secret_hash) {
            return Err(unauthorized("unknown API key"));
        }
        Ok((
            Principal::Tenant {
                tenant_id: record.tenant_id,
                key_id: record.key_id,
            },
            false,
        ))
    }

    /// Forgets what this process cached about the key `key_id`: call it once the key is revoked,
    /// so the key stops working here at once (in every other process, within the cache TTL).
    pub fn forget(&self, key_id: &str) {
        self.inner.keys.remove(key_id);
    }

    /// The stored key `key_id`, through the cache.
    async fn lookup(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, LayerError> {
        if let Some(hit) = self.inner.keys.get(key_id) {
            return Ok(hit);
        }
        let read_at = Instant::now();
        let record = self.inner.store.get_api_key(key_id).await.map_err(|e| {
            tracing::warn!(error = %e, "API key lookup failed");
            LayerError::new(ErrorKind::NotReady, "metadata store unavailable")
        })?;
        self.inner.keys.insert(key_id, record.clone(), read_at);
        Ok(record)
    }
}

/// Builds [`AuthService`]: refuses requests without a valid credential, stores the
/// [`Principal`] (and [`Forwarded`]) of the others.
#[derive(Clone, Debug)]
pub struct AuthLayer<R> {
    authenticator: Authenticator,
    reject: R,
}

impl<R: Reject> AuthLayer<R> {
    /// An auth layer using `authenticator`, refusing through `reject`.
    pub fn new(authenticator: Authenticator, reject: R) -> Self {
        AuthLayer {
            authenticator,
            reject,
        }
    }
}

impl<S, R: Clone> Layer<S> for AuthLayer<R> {
    type Service = AuthService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
            reject: self.reject.clone(),
        }
    }
}

/// Service of [`AuthLayer`]. The inner service runs only for authenticated requests, which carry
/// a [`Principal`] extension.
#[derive(Clone, Debug)]
pub struct AuthService<S, R> {
    inner: S,
    authenticator: Authenticator,
    reject: R,
}

impl<S, B, R> Service<Request<B>> for AuthService<S, R>
where
    S: Service<Request<B>, Response = Response<R::Body>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    R: Reject,
{
    type Response = Response<R::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone may not be ready; call the instance that was polled ready and keep the clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.authenticator.clone();
        let reject = self.reject.clone();
        Box::pin(async move {
            match authenticator.authenticate(request.headers()).await {
                Ok((principal, forwarded)) => {
                    request.extensions_mut().insert(principal);
                    if forwarded {
                        request.extensions_mut().insert(Forwarded);
                    }
                    inner.call(request).await
                }
                Err(error) => Ok(reject.reject(error, request.extensions().get::<TraceContext>())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bearer_parsing() {
        let h = headers(&[("authorization", "Bearer abc")]);
        assert_eq!(bearer_token(&h), Ok("abc"));
        let h = headers(&[("authorization", "bearer  abc ")]);
        assert_eq!(bearer_token(&h), Ok("abc"));
        for bad in ["", "Bearer", "Bearer ", "Basic abc", "abc"] {
            let h = headers(&[("authorization", bad)]);
            assert_eq!(
                bearer_token(&h).map_err(|e| e.kind),
                Err(ErrorKind::Unauthorized),
                "{bad}"
            );
        }
        assert!(bearer_token(&HeaderMap::new()).is_err());
        assert!(
            bearer_token(&headers(&[
                ("authorization", "Bearer a"),
                ("authorization", "Bearer a")
            ]))
            .is_err()
        );
    }

    #[test]
    fn empty_secret_never_matches() {
        assert!(!secret_eq("", ""));
        assert!(secret_eq("x", "x"));
        assert!(!secret_eq("x", "y"));
        assert!(!secret_eq("x", "xx"));
    }

    #[test]
    fn forwarded_principals() {
        assert_eq!(
            forwarded_principal(&headers(&[("x-pairdb-principal", "admin")])),
            Ok(Principal::Admin)
        );
        assert_eq!(
            forwarded_principal(&headers(&[("x-pairdb-tenant", "acme")])),
            Ok(Principal::Tenant {
                tenant_id: "acme".into(),
                key_id: INTERNAL_KEY_ID.into()
            })
        );
        for bad in [
            headers(&[]),
            headers(&[("x-pairdb-tenant", "Not Valid")]),
            headers(&[("x-pairdb-principal", "root")]),
        ] {
            assert_eq!(
                forwarded_principal(&bad).map_err(|e| e.kind),
                Err(ErrorKind::BadRequest)
            );
        }
    }

    #[test]
    fn config_debug_redacts() {
        let config = AuthConfig {
            key_secret: b"s3cret".to_vec(),
            admin_key: "admin-s3cret".into(),
            internal_token: "internal-s3cret".into(),
            trust_forwarded: true,
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}

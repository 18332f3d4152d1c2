//! The request's consistency level.
//!
//! Resolution order: the `x-consistency` header, else the `consistency=` query parameter, else
//! the tenant's default (a [`TenantConfig`] extension), else `quorum`. A name that is not `one`,
//! `quorum` or `all` (case-insensitive) is refused `BadConsistency`; it never falls back.

use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use http::{HeaderMap, Request, Response, Uri};
use pairdb_core::{Consistency, ErrorKind};
use pairdb_metadata::TenantConfig;
use percent_encoding::percent_decode_str;
use tower::{Layer, Service};

use crate::reject::{LayerError, Reject};
use crate::trace::TraceContext;

/// The header naming the level (HTTP header and gRPC metadata alike).
pub const CONSISTENCY_HEADER: &str = pairdb_core::headers::CONSISTENCY;
/// The query parameter naming the level (HTTP only).
pub const CONSISTENCY_PARAM: &str = pairdb_core::headers::CONSISTENCY_PARAM;

fn bad(name: &str) -> LayerError {
    let shown: String = name.chars().take(64).collect();
    LayerError::new(
        ErrorKind::BadConsistency,
        format!("unknown consistency level {shown:?}: expected one, quorum or all"),
    )
}

fn parse(name: &str) -> Result<Consistency, LayerError> {
    name.trim().parse().map_err(|_| bad(name))
}

/// The `consistency=` value of the query, percent-decoded (`+` is a space); refused when the
/// parameter is repeated.
fn query_param(uri: &Uri) -> Result<Option<String>, LayerError> {
    let Some(query) = uri.query() else {
        return Ok(None);
    };
    let mut values = query.split('&').filter_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name == CONSISTENCY_PARAM).then(|| {
            let value = value.replace('+', " ");
            percent_decode_str(&value).decode_utf8_lossy().into_owned()
        })
    });
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Err(LayerError::new(
            ErrorKind::BadConsistency,
            "more than one consistency parameter",
        )),
        (value, _) => Ok(value),
    }
}

/// The level of a request with `headers` and `uri` by a tenant whose config is `tenant`.
///
/// Fails with `BadConsistency` when the header or parameter names no known level, or either is
/// repeated, or the header is not text.
pub fn resolve(
    headers: &HeaderMap,
    uri: &Uri,
    tenant: Option<&TenantConfig>,
) -> Result<Consistency, LayerError> {
    let mut values = headers.get_all(CONSISTENCY_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => return parse(v.to_str().map_err(|_| bad("<not text>"))?),
        (Some(_), Some(_)) => {
            return Err(LayerError::new(
                ErrorKind::BadConsistency,
                "more than one x-consistency header",
            ));
        }
        (None, _) => {}
    }
    if let Some(name) = query_param(uri)? {
        return parse(&name);
    }
    Ok(tenant.map_or(Consistency::Quorum, |t| t.default_consistency))
}

/// Builds [`ConsistencyService`]: inserts the request's [`Consistency`].
#[derive(Clone, Debug)]
pub struct ConsistencyLayer<R> {
    reject: R,
}

impl<R: Reject> ConsistencyLayer<R> {
    /// A consistency layer refusing unknown level names through `reject`.
    pub fn new(reject: R) -> Self {
        ConsistencyLayer { reject }
    }
}

impl<S, R: Clone> Layer<S> for ConsistencyLayer<R> {
    type Service = ConsistencyService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ConsistencyService {
            inner,
            reject: self.reject.clone(),
        }
    }
}

/// Service of [`ConsistencyLayer`]. The inner service only sees requests with a [`Consistency`]
/// extension. Put it inside the tenant layer so the tenant default applies.
#[derive(Clone, Debug)]
pub struct ConsistencyService<S, R> {
    inner: S,
    reject: R,
}

/// Future of [`ConsistencyService`]: an immediate rejection or the inner service's future.
pub type ResponseFuture<F, T, E> = Either<Ready<Result<T, E>>, F>;

impl<S, B, R> Service<Request<B>> for ConsistencyService<S, R>
where
    S: Service<Request<B>, Response = Response<R::Body>>,
    R: Reject,
{
    type Response = Response<R::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let resolved = resolve(
            request.headers(),
            request.uri(),
            request.extensions().get::<TenantConfig>(),
        );
        match resolved {
            Ok(level) => {
                request.extensions_mut().insert(level);
                Either::Right(self.inner.call(request))
            }
            Err(error) => Either::Left(ready(Ok(self
                .reject
                .reject(error, request.extensions().get::<TraceContext>())))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &'static str) -> Uri {
        Uri::from_static(s)
    }

    #[test]
    fn query_parsing() {
        let param = |s| query_param(&uri(s)).ok().flatten();
        assert_eq!(param("/x?consistency=one").as_deref(), Some("one"));
        assert_eq!(param("/x?a=1&consistency=ALL").as_deref(), Some("ALL"));
        assert_eq!(param("/x?consistency=qu%6Frum").as_deref(), Some("quorum"));
        assert_eq!(param("/x?consistency").as_deref(), Some(""));
        assert_eq!(param("/x?consistencyx=one"), None);
        assert_eq!(param("/x"), None);
        // A repeated parameter is refused, never resolved to the first one.
        let repeated = query_param(&uri("/x?a=1&consistency=ALL&consistency=one"));
        assert_eq!(repeated.map_err(|e| e.kind), Err(ErrorKind::BadConsistency));
        assert!(
            resolve(
                &HeaderMap::new(),
                &uri("/x?consistency=one&consistency=one"),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn header_beats_query_beats_default() {
        let mut h = HeaderMap::new();
        assert_eq!(resolve(&h, &uri("/x"), None), Ok(Consistency::Quorum));
        assert_eq!(
            resolve(&h, &uri("/x?consistency=all"), None),
            Ok(Consistency::All)
        );
        h.insert(CONSISTENCY_HEADER, http::HeaderValue::from_static("One"));
        assert_eq!(
            resolve(&h, &uri("/x?consistency=all"), None),
            Ok(Consistency::One)
        );
        h.insert(CONSISTENCY_HEADER, http::HeaderValue::from_static("most"));
        assert_eq!(
            resolve(&h, &uri("/x"), None).map_err(|e| e.kind),
            Err(ErrorKind::BadConsistency)
        );
        let h = HeaderMap::new();
        assert_eq!(
            resolve(&h, &uri("/x?consistency="), None).map_err(|e| e.kind),
            Err(ErrorKind::BadConsistency)
        );
    }
}

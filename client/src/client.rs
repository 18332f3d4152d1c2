//! The client handle and the attempt loop every call goes through.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use pairdb_core::Consistency;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};

use crate::builder::ClientBuilder;
use crate::error::ClientError;
use crate::problem::Problem;
use crate::retry::{self, Repeatable, RetryPolicy};
use crate::wire;

/// A handle on one pairdb gateway, authenticated with one API key.
///
/// Cheap to clone (clones share one connection pool) and safe to use from many tasks at once.
/// A tenant key gives the key-value calls ([`get`](Client::get), [`put`](Client::put),
/// [`delete`](Client::delete) and their `_with` forms); the admin key gives the tenant calls
/// ([`create_tenant`](Client::create_tenant) and the others in [`crate::tenants`]).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL without a trailing `/`.
    base: String,
    consistency: Option<Consistency>,
    timeout: Option<Duration>,
    retry: RetryPolicy,
}

/// One logical request, sent once per attempt.
pub(crate) struct Request {
    pub method: Method,
    /// Starts with `/`; segments already percent-encoded.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    pub repeatable: Repeatable,
    /// Whether to send `X-Pairdb-Timeout` (key-value routes).
    pub send_deadline: bool,
}

/// A successful (or accepted) answer, fully read.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Client {
    /// Added to [`ClientBuilder::timeout`] to form the HTTP timeout of an attempt, so that the
    /// server's own deadline (and its 504) fires first.
    pub const TIMEOUT_MARGIN: Duration = Duration::from_millis(500);

    /// HTTP timeout of an attempt when no [`ClientBuilder::timeout`] is set.
    pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

    /// Starts configuring a client for the gateway at `base_url` (e.g. `http://127.0.0.1:8080`,
    /// optionally with a path prefix) that authenticates every request with
    /// `Authorization: Bearer <api_key>`.
    pub fn builder(base_url: impl Into<String>, api_key: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url, api_key)
    }

    pub(crate) fn from_parts(
        http: reqwest::Client,
        base: String,
        consistency: Option<Consistency>,
        timeout: Option<Duration>,
        retry: RetryPolicy,
    ) -> Self {
        Client {
            http,
            base,
            consistency,
            timeout,
            retry,
        }
    }

    /// The level sent when a request names none (`None`: the tenant's default applies).
    pub fn default_consistency(&self) -> Option<Consistency> {
        self.consistency
    }

    /// Inserts `X-Consistency` for `requested`, else for the client default, else nothing.
    pub(crate) fn insert_consistency(
        &self,
        headers: &mut HeaderMap,
        requested: Option<Consistency>,
    ) {
        if let Some(level) = requested.or(self.consistency) {
            headers.insert(wire::CONSISTENCY, HeaderValue::from_static(level.as_str()));
        }
    }

    /// Sends `request` until it succeeds, fails for good, or runs out of attempts.
    ///
    /// Returns the reply for a 2xx status and for statuses `accept` lets through (read in full
    /// either way); any other status becomes [`ClientError::Api`] once it is not retried.
    pub(crate) async fn send(
        &self,
        request: Request,
        accept: impl Fn(StatusCode) -> bool,
    ) -> Result<Reply, ClientError> {
        let url = reqwest::Url::parse(&format!("{}{}", self.base, request.path))
            .map_err(|e| ClientError::InvalidConfig(format!("request URL: {e}")))?;
        let mut headers = request.headers;
        if request.send_deadline
            && let Some(timeout) = self.timeout
        {
            let ms = u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            headers.insert(wire::TIMEOUT, HeaderValue::from(ms));
        }
        let http_timeout = self
            .timeout
            .map_or(Self::DEFAULT_HTTP_TIMEOUT, |t| t + Self::TIMEOUT_MARGIN);

        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let mut builder = self
                .http
                .request(request.method.clone(), url.clone())
                .headers(headers.clone())
                .timeout(http_timeout);
            if let Some(body) = &request.body {
                builder = builder.body(body.clone());
            }
            let last = attempt >= max_attempts;
            let retry_after = match read(builder).await {
                Ok(reply) if reply.status.is_success() || accept(reply.status) => return Ok(reply),
                Ok(reply) => {
                    let problem = Problem::from_response(reply.status, &reply.headers, &reply.body);
                    if last
                        || !retry::retry_status(reply.status, &reply.headers, request.repeatable)
                    {
                        return Err(ClientError::Api(Box::new(problem)));
                    }
                    problem.retry_after
                }
                Err(source) => {
                    if last || !retry::retry_transport(&source, request.repeatable) {
                        return Err(ClientError::Transport {
                            attempts: attempt,
                            source,
                        });
                    }
                    None
                }
            };
            tokio::time::sleep(self.retry.delay(attempt, retry_after)).await;
            attempt += 1;
        }
    }
}

/// Sends one attempt and reads its whole body.
async fn read(builder: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let response = builder.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base)
            .field("consistency", &self.consistency)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

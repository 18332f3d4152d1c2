//! Configuring a [`Client`].

use std::fmt;
use std::time::Duration;

use pairdb_core::Consistency;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use crate::client::Client;
use crate::error::ClientError;
use crate::retry::RetryPolicy;

/// Configures a [`Client`]; obtained from [`Client::builder`].
///
/// Nothing is checked or connected until [`build`](ClientBuilder::build).
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: String,
    api_key: String,
    consistency: Option<Consistency>,
    timeout: Option<Duration>,
    retry: RetryPolicy,
}

impl ClientBuilder {
    pub(crate) fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        ClientBuilder {
            base_url: base_url.into(),
            api_key: api_key.into(),
            consistency: None,
            timeout: None,
            retry: RetryPolicy::default(),
        }
    }

    /// The level sent as `X-Consistency` on every key-value request that names none itself.
    /// Unset: no header is sent, and the server applies the tenant's default level.
    pub fn consistency(mut self, level: Consistency) -> Self {
        self.consistency = Some(level);
        self
    }

    /// The deadline of each attempt. Sent as `X-Pairdb-Timeout: <ms>` on key-value requests
    /// (the server caps it by its own `--request-timeout` and answers 504 when replicas miss it),
    /// and used as the HTTP timeout of every attempt plus [`Client::TIMEOUT_MARGIN`], so the
    /// server's 504 normally arrives before the client gives up.
    ///
    /// Unset: no header is sent (server default, 5 s) and the HTTP timeout is
    /// [`Client::DEFAULT_HTTP_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How failed attempts are retried; see [`crate::retry`]. Default: [`RetryPolicy::default`].
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Builds the client.
    ///
    /// Returns [`ClientError::InvalidConfig`] when the base URL is not an absolute `http://`
    /// URL without query or fragment (no TLS is compiled in), when the API key is empty or not
    /// a valid header value, when the timeout is zero, or when `max_attempts` is 0.
    pub fn build(self) -> Result<Client, ClientError> {
        let invalid = |why: &str| ClientError::InvalidConfig(why.to_owned());
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| ClientError::InvalidConfig(format!("base URL: {e}")))?;
        if url.scheme() != "http" {
            return Err(invalid(
                "base URL must use http:// (this client is built without TLS)",
            ));
        }
        if url.cannot_be_a_base() || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "base URL must be like http://host:port[/prefix], without query or fragment",
            ));
        }
        if self.api_key.is_empty() {
            return Err(invalid("API key is empty"));
        }
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", self.api_key))
            .map_err(|_| invalid("API key is not a valid header value"))?;
        bearer.set_sensitive(true);
        if self.timeout == Some(Duration::ZERO) {
            return Err(invalid("timeout must be positive"));
        }
        if self.retry.max_attempts == 0 {
            return Err(invalid("retry policy needs max_attempts >= 1"));
        }

        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, bearer);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("pairdb-client/", env!("CARGO_PKG_VERSION")))
            // The gateway never redirects; a 3xx (say, from a proxy) is reported, not followed
            // with the API key and the write's body.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::InvalidConfig(format!("HTTP client: {e}")))?;
        Ok(Client::from_parts(
            http,
            url.as_str().trim_end_matches('/').to_owned(),
            self.consistency,
            self.timeout,
            self.retry,
        ))
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("consistency", &self.consistency)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

//! Key-value reads and writes: `GET`, `PUT` and `DELETE /v1/kv/{key}`.

use bytes::Bytes;
use pairdb_core::Consistency;
use pairdb_core::problem::ErrorKind;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};

use crate::client::{Client, Reply, Request};
use crate::context::Context;
use crate::error::ClientError;
use crate::idempotency;
use crate::key::encode_segment;
use crate::problem::Problem;
use crate::retry::Repeatable;
use crate::wire;

/// Content type stored when a write names none.
pub const DEFAULT_CONTENT_TYPE: &str = pairdb_core::limits::DEFAULT_CONTENT_TYPE;

/// Options of one read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Level of this read; `None` falls back to the client's, then to the tenant's default.
    pub consistency: Option<Consistency>,
}

/// Options of one `PUT`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Level of this write; `None` falls back to the client's, then to the tenant's default.
    pub consistency: Option<Consistency>,
    /// The context of an earlier read or write of this key: the new version descends it, and a
    /// change since then is resolved and reported in [`WriteResult::conflict`]. `None`: blind
    /// overwrite, never reported as a conflict.
    pub context: Option<Context>,
    /// Stored with the value and returned by reads; `None`: [`DEFAULT_CONTENT_TYPE`].
    pub content_type: Option<String>,
    /// The write's idempotency key (1–255 visible ASCII); `None`: a fresh random one. Reusing a
    /// key with a different key, value, content type or context is refused with a 422.
    pub idempotency_key: Option<String>,
}

/// Options of one `DELETE`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Level of this delete; `None` falls back to the client's, then to the tenant's default.
    pub consistency: Option<Consistency>,
    /// As [`WriteOptions::context`]: the tombstone descends it.
    pub context: Option<Context>,
    /// As [`WriteOptions::idempotency_key`].
    pub idempotency_key: Option<String>,
}

/// A value read, with what the read learned about it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Item {
    /// The value bytes, exactly as written.
    pub value: Bytes,
    /// The content type stored with the value.
    pub content_type: String,
    /// The context of this version: pass it to a later write to descend it.
    pub context: Context,
    /// The read found concurrent versions and resolved them (last writer wins).
    pub conflict: bool,
    /// Replicas this read repaired before answering (0 when none, or not a blocking repair).
    pub read_repairs: u32,
    /// Replicas that answered.
    pub answered: u32,
    /// Replicas of the key.
    pub replicas: u32,
    /// The level the server applied, if it said.
    pub consistency: Option<Consistency>,
}

/// How a write with a context fared against a concurrent version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConflictOutcome {
    /// The write overwrote a version its context did not cover.
    Won,
    /// A concurrent version with a greater key won; this write is not the current value.
    Lost,
}

/// An acknowledged `PUT` or `DELETE`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteResult {
    /// The context of the version written (of the tombstone, for a delete).
    pub context: Context,
    /// Replicas that acknowledged; at least what the level requires.
    pub acks: u32,
    /// Replicas of the key.
    pub replicas: u32,
    /// `Some` when the write met a version its context did not cover.
    pub conflict: Option<ConflictOutcome>,
    /// The idempotency key the write was sent (and possibly retried) with.
    pub idempotency_key: String,
    /// The server replayed an earlier completed write with this idempotency key instead of
    /// applying it again.
    pub replayed: bool,
    /// The level the server applied, if it said.
    pub consistency: Option<Consistency>,
}

impl Client {
    /// Reads `key` with the default options; see [`get_with`](Client::get_with).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Item>, ClientError> {
        self.get_with(key, &ReadOptions::default()).await
    }

    /// Reads `key`: `Ok(None)` when it is absent or deleted (a 404 `key-not-found`).
    ///
    /// Retried on 503, 504, 429, timeouts and connection failures ([`crate::retry`]).
    /// A 404 of any other problem type (e.g. `route-not-found` from a wrong base URL) is an
    /// error, not `None`. Returns [`ClientError::UnexpectedResponse`] when the answer lacks
    /// `X-Pairdb-Context` or `X-Pairdb-Replicas: answered=<a>/<n>`.
    pub async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        options: &ReadOptions,
    ) -> Result<Option<Item>, ClientError> {
        let mut headers = HeaderMap::new();
        self.insert_consistency(&mut headers, options.consistency);
        let request = Request {
            method: Method::GET,
            path: kv_path(key.as_ref())?,
            headers,
            body: None,
            repeatable: Repeatable::Yes,
            send_deadline: true,
        };
        let reply = self.send(request, |s| s == StatusCode::NOT_FOUND).await?;
        if reply.status == StatusCode::NOT_FOUND {
            let problem = Problem::from_response(reply.status, &reply.headers, &reply.body);
            let key_absent =
                problem.type_uri == "about:blank" || problem.kind == ErrorKind::KeyNotFound.slug();
            return if key_absent {
                Ok(None)
            } else {
                Err(ClientError::Api(Box::new(problem)))
            };
        }
        item_of(reply).map(Some)
    }

    /// Writes `value` under `key` with the default options; see [`put_with`](Client::put_with).
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
    ) -> Result<WriteResult, ClientError> {
        self.put_with(key, value, &WriteOptions::default()).await
    }

    /// Writes `value` under `key`. `value` is anything that converts into [`Bytes`] without
    /// copying: `Vec<u8>`, `String`, `&'static str`, `&'static [u8]`, `Bytes`.
    ///
    /// The write carries an idempotency key (the given one, else a fresh one) that every retry
    /// reuses, so it is applied at most once however often it is retried (on 503, 504, 429,
    /// 409 in flight, timeouts and connection failures, [`crate::retry`]). After a
    /// [`ClientError::Transport`] or a 504 [`ClientError::Api`], the outcome is unknown.
    ///
    /// Fails before sending with [`ClientError::InvalidKey`], [`ClientError::InvalidContext`],
    /// [`ClientError::InvalidIdempotencyKey`] or [`ClientError::InvalidContentType`]. Returns
    /// [`ClientError::UnexpectedResponse`] when the answer lacks the context or replica counts.
    pub async fn put_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        options: &WriteOptions,
    ) -> Result<WriteResult, ClientError> {
        let path = kv_path(key.as_ref())?;
        let (mut headers, idempotency_key) = self.write_headers(
            options.consistency,
            options.context.as_ref(),
            options.idempotency_key.as_deref(),
        )?;
        let content_type = options
            .content_type
            .as_deref()
            .unwrap_or(DEFAULT_CONTENT_TYPE);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(content_type).map_err(|_| ClientError::InvalidContentType)?,
        );
        let request = Request {
            method: Method::PUT,
            path,
            headers,
            body: Some(value.into()),
            repeatable: Repeatable::Yes,
            send_deadline: true,
        };
        let reply = self.send(request, |_| false).await?;
        write_result_of(reply, &idempotency_key)
    }

    /// Deletes `key` with the default options; see [`delete_with`](Client::delete_with).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<WriteResult, ClientError> {
        self.delete_with(key, &DeleteOptions::default()).await
    }

    /// Deletes `key` by writing a tombstone; succeeds also when the key is absent.
    ///
    /// Idempotency, retries and failures as for [`put_with`](Client::put_with).
    pub async fn delete_with(
        &self,
        key: impl AsRef<[u8]>,
        options: &DeleteOptions,
    ) -> Result<WriteResult, ClientError> {
        let path = kv_path(key.as_ref())?;
        let (headers, idempotency_key) = self.write_headers(
            options.consistency,
            options.context.as_ref(),
            options.idempotency_key.as_deref(),
        )?;
        let request = Request {
            method: Method::DELETE,
            path,
            headers,
            body: None,
            repeatable: Repeatable::Yes,
            send_deadline: true,
        };
        let reply = self.send(request, |_| false).await?;
        write_result_of(reply, &idempotency_key)
    }

    /// Headers shared by `PUT` and `DELETE`, and the idempotency key they carry.
    fn write_headers(
        &self,
        consistency: Option<Consistency>,
        context: Option<&Context>,
        idempotency_key: Option<&str>,
    ) -> Result<(HeaderMap, String), ClientError> {
        let mut headers = HeaderMap::new();
        self.insert_consistency(&mut headers, consistency);
        if let Some(context) = context {
            let value = HeaderValue::from_str(context.as_str())
                .ok()
                .filter(|_| context.as_str().bytes().all(|b| b.is_ascii_graphic()))
                .ok_or(ClientError::InvalidContext)?;
            headers.insert(wire::CONTEXT, value);
        }
        let key = match idempotency_key {
            Some(key) => {
                idempotency::validate(key)?;
                key.to_owned()
            }
            None => idempotency::generate(),
        };
        let value = HeaderValue::from_str(&key).map_err(|_| ClientError::InvalidIdempotencyKey)?;
        headers.insert(wire::IDEMPOTENCY_KEY, value);
        Ok((headers, key))
    }
}

/// `/v1/kv/{key}` with the key as one encoded segment.
fn kv_path(key: &[u8]) -> Result<String, ClientError> {
    Ok(format!("/v1/kv/{}", encode_segment(key)?))
}

fn unexpected(what: &str) -> ClientError {
    ClientError::UnexpectedResponse(what.to_owned())
}

fn applied_consistency(headers: &HeaderMap) -> Option<Consistency> {
    wire::text(headers, &wire::CONSISTENCY).and_then(|s| s.parse().ok())
}

fn item_of(reply: Reply) -> Result<Item, ClientError> {
    let headers = &reply.headers;
    let context = wire::text(headers, &wire::CONTEXT)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| unexpected("read without X-Pairdb-Context"))?;
    let (answered, replicas) = wire::text(headers, &wire::REPLICAS)
        .and_then(|v| wire::parse_replicas(&v, "answered"))
        .ok_or_else(|| unexpected("read without X-Pairdb-Replicas: answered=<a>/<n>"))?;
    let read_repairs = match wire::text(headers, &wire::READ_REPAIR) {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| unexpected("malformed X-Pairdb-Read-Repair"))?,
    };
    Ok(Item {
        content_type: wire::text(headers, &CONTENT_TYPE)
            .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
        context: Context::from_token(context),
        conflict: headers.contains_key(wire::CONFLICT),
        read_repairs,
        answered,
        replicas,
        consistency: applied_consistency(headers),
        value: reply.body,
    })
}

/// The optional JSON body of a `PUT` answer.
#[derive(serde::Deserialize)]
struct WriteBody {
    context: Option<String>,
    acks: Option<u32>,
    replicas: Option<u32>,
}

/// Reads a write's answer: headers first, the JSON body (`PUT`) where a header is missing.
fn write_result_of(reply: Reply, sent_key: &str) -> Result<WriteResult, ClientError> {
    let headers = &reply.headers;
    let body = serde_json::from_slice::<WriteBody>(&reply.body).ok();
    let context = wire::text(headers, &wire::CONTEXT)
        .or_else(|| body.as_ref().and_then(|b| b.context.clone()))
        .filter(|c| !c.is_empty())
        .ok_or_else(|| unexpected("write without X-Pairdb-Context"))?;
    let (acks, replicas) = wire::text(headers, &wire::REPLICAS)
        .and_then(|v| wire::parse_replicas(&v, "acked"))
        .or_else(|| body.as_ref().and_then(|b| Some((b.acks?, b.replicas?))))
        .ok_or_else(|| unexpected("write without X-Pairdb-Replicas: acked=<a>/<n>"))?;
    let conflict = match wire::text(headers, &wire::CONFLICT) {
        None => None,
        Some(v) => match wire::parse_conflict_outcome(&v) {
            Some(Some(true)) => Some(ConflictOutcome::Won),
            Some(Some(false)) => Some(ConflictOutcome::Lost),
            _ => return Err(unexpected("malformed X-Pairdb-Conflict on a write")),
        },
    };
    let idempotency_key = wire::text(headers, &wire::IDEMPOTENCY_KEY)
        .map(|k| wire::unquote(&k).to_owned())
        .unwrap_or_else(|| wire::unquote(sent_key).to_owned());
    let replayed = wire::text(headers, &wire::IDEMPOTENT_REPLAYED)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Ok(WriteResult {
        context: Context::from_token(context),
        acks,
        replicas,
        conflict,
        idempotency_key,
        replayed,
        consistency: applied_consistency(headers),
    })
}

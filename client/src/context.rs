//! The opaque causal context a read or write hands back.

use std::fmt;

/// An opaque context token, as returned in `X-Pairdb-Context` by every GET, PUT and DELETE.
///
/// Pass it to a later write of the same key ([`WriteOptions::context`](crate::WriteOptions) or
/// [`DeleteOptions::context`](crate::DeleteOptions)): the new version then causally descends the
/// version the token was read from, and if the key changed since, the server resolves the
/// conflict and reports it ([`WriteResult::conflict`](crate::WriteResult)). A write without a
/// context is a blind overwrite and is never reported as a conflict.
///
/// The token is authenticated by the server and bound to one tenant and key: the client never
/// looks inside it, and a token moved to another key is refused with a 400 `bad-context`.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Context(String);

impl Context {
    /// Wraps a token obtained earlier (for example persisted by the application). The client
    /// does not validate it; a token that is not a valid header value fails the write with
    /// [`ClientError::InvalidContext`](crate::ClientError::InvalidContext) before anything is sent.
    pub fn from_token(token: impl Into<String>) -> Self {
        Context(token.into())
    }

    /// The token exactly as the server sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The token exactly as the server sent it.
    pub fn into_token(self) -> String {
        self.0
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Context").field(&self.0).finish()
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

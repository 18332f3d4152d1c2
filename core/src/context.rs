//! Context tokens: the causal context handed to clients, authenticated and bound to one key.
//!
//! ```text
//! token = base64url-nopad( format:u8 (=2) | timestamp:u64 BE | clock (vclock encoding) | tag:16 )
//! tag   = HMAC-SHA256(secret, "pairdb-context-v1" | ns_len:u8 | namespace | key_len:u64 BE | key
//!                     | format | timestamp | clock)[..16]
//! ```
//!
//! The tag binds the token to `(tenant, key)`, so a token cannot be moved to another key or
//! tenant, and a client cannot forge a clock. Opening also rejects tokens whose timestamp lies
//! further in the future than the allowed skew.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::hlc;
use crate::vclock::VectorClock;

/// Token format 2: clocks carry each entry's last-event time.
const FORMAT: u8 = 2;
const TAG_LEN: usize = 16;
/// Longest token accepted, in characters.
pub const MAX_TOKEN_LEN: usize = 8192;
/// Default allowed clock skew for token timestamps, in milliseconds.
pub const DEFAULT_MAX_SKEW_MS: u64 = 5_000;

/// The causal context of a read or write: the clock seen and the highest timestamp it covers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Context {
    /// The clock seen.
    pub clock: VectorClock,
    /// The highest HLC timestamp covered by `clock`.
    pub timestamp: u64,
}

/// A context token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextError {
    /// Not a token at all: bad base64, wrong length or format.
    #[error("malformed context token")]
    Malformed,
    /// The tag did not verify: forged, corrupted, or issued for another tenant or key.
    #[error("context token is not valid for this key")]
    BadTag,
    /// The token's timestamp lies beyond now plus the allowed skew.
    #[error("context token timestamp is in the future")]
    FromTheFuture,
}

/// Seals and opens context tokens under the server secret.
#[derive(Clone)]
pub struct ContextSigner {
    secret: Vec<u8>,
    max_skew_ms: u64,
}

impl std::fmt::Debug for ContextSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextSigner")
            .field("max_skew_ms", &self.max_skew_ms)
            .finish_non_exhaustive()
    }
}

impl ContextSigner {
    /// A signer under `secret`, accepting timestamps up to `max_skew_ms` ahead of wall time.
    pub fn new(secret: &[u8], max_skew_ms: u64) -> Self {
        ContextSigner {
            secret: secret.to_vec(),
            max_skew_ms,
        }
    }

    fn tag(&self, namespace: &str, key: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
        #[expect(
            clippy::expect_used,
            reason = "HMAC takes keys of any length: new_from_slice never fails"
        )]
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(b"pairdb-context-v1");
        mac.update(&[namespace.len() as u8]);
        mac.update(namespace.as_bytes());
        mac.update(&(key.len() as u64).to_be_bytes());
        mac.update(key);
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// The token for `context` on `(namespace, key)`.
    pub fn seal(&self, namespace: &str, key: &[u8], context: &Context) -> String {
        let mut body = Vec::with_capacity(16 + context.clock.len() * 16);
        body.push(FORMAT);
        body.extend_from_slice(&context.timestamp.to_be_bytes());
        context.clock.encode_into(&mut body);
        let tag = self.tag(namespace, key, &body);
        body.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// Opens a token for `(namespace, key)`, checking format, tag and skew against wall time.
    pub fn open(&self, namespace: &str, key: &[u8], token: &str) -> Result<Context, ContextError> {
        self.open_at(namespace, key, token, hlc::wall_ms())
    }

    /// [`open`](Self::open) with an explicit wall time, for tests.
    pub fn open_at(
        &self,
        namespace: &str,
        key: &[u8],
        token: &str,
        now_ms: u64,
    ) -> Result<Context, ContextError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(ContextError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| ContextError::Malformed)?;
        if raw.len() < 1 + 8 + 1 + TAG_LEN {
            return Err(ContextError::Malformed);
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        let expected = self.tag(namespace, key, body);
        if !bool::from(expected.ct_eq(tag)) {
            return Err(ContextError::BadTag);
        }
        let (&format, rest) = body.split_first().ok_or(ContextError::Malformed)?;
        if format != FORMAT {
            return Err(ContextError::Malformed);
        }
        let (ts, clock) = rest.split_at(8);
        let mut ts_bytes = [0u8; 8];
        ts_bytes.copy_from_slice(ts);
        let timestamp = u64::from_be_bytes(ts_bytes);
        let clock = VectorClock::decode(clock).map_err(|_| ContextError::Malformed)?;
        if hlc::physical_ms(timestamp) > now_ms.saturating_add(self.max_skew_ms) {
            return Err(ContextError::FromTheFuture);
        }
        Ok(Context { clock, timestamp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vclock::Actor;
    use proptest::prelude::*;

    fn signer() -> ContextSigner {
        ContextSigner::new(b"secret", DEFAULT_MAX_SKEW_MS)
    }

    fn ctx(ts_ms: u64) -> Context {
        Context {
            clock: VectorClock::from_entries([(Actor::new("n1", 3), 7), (Actor::new("n2", 1), 2)]),
            timestamp: ts_ms << hlc::LOGICAL_BITS | 5,
        }
    }

    #[test]
    fn round_trips() {
        let now = hlc::wall_ms();
        let c = ctx(now);
        let t = signer().seal("acme", b"k", &c);
        assert_eq!(signer().open("acme", b"k", &t), Ok(c));
    }

    #[test]
    fn rejects_other_key_tenant_secret_and_garbage() {
        let now = hlc::wall_ms();
        let t = signer().seal("acme", b"k", &ctx(now));
        assert_eq!(signer().open("acme", b"k2", &t), Err(ContextError::BadTag));
        assert_eq!(signer().open("acme2", b"k", &t), Err(ContextError::BadTag));
        let other = ContextSigner::new(b"other", DEFAULT_MAX_SKEW_MS);
        assert_eq!(other.open("acme", b"k", &t), Err(ContextError::BadTag));
        assert_eq!(
            signer().open("acme", b"k", "!!!"),
            Err(ContextError::Malformed)
        );
        assert_eq!(
            signer().open("acme", b"k", ""),
            Err(ContextError::Malformed)
        );
        let mut flipped = t.into_bytes();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap_or_default();
        assert!(signer().open("acme", b"k", &flipped).is_err());
    }

    #[test]
    fn rejects_tokens_from_the_future() {
        let now = hlc::wall_ms();
        let t = signer().seal("acme", b"k", &ctx(now + 60_000));
        assert_eq!(
            signer().open_at("acme", b"k", &t, now),
            Err(ContextError::FromTheFuture)
        );
        let near = signer().seal("acme", b"k", &ctx(now + 1_000));
        assert!(signer().open_at("acme", b"k", &near, now).is_ok());
    }

    proptest! {
        #[test]
        fn open_never_panics(s in "\\PC{0,200}") {
            let _ = signer().open("acme", b"k", &s);
        }

        #[test]
        fn open_rejects_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let token = URL_SAFE_NO_PAD.encode(bytes);
            prop_assert!(signer().open("acme", b"k", &token).is_err());
        }
    }
}

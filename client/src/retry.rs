//! When a request is retried, and how long the client waits in between.
//!
//! A request is retried only where repeating it cannot apply it twice:
//!
//! | outcome of an attempt | retried for |
//! |---|---|
//! | 503 (level cannot be met, not ready) | every request; waits `Retry-After` (capped by `max_backoff`) |
//! | 429 (rate limited: nothing was done) | every request; waits `Retry-After` (capped) |
//! | 409 with `Retry-After` (same idempotency key still in flight) | every request; waits `Retry-After` (capped) |
//! | connection refused / connect error or timeout (nothing was sent) | every request |
//! | 504, request timeout, connection lost mid-request (outcome unknown) | reads, and writes carrying an idempotency key (every key-value write) |
//! | any other status | never |
//!
//! Every key-value write carries an idempotency key that all its attempts share, so the server
//! applies it at most once however often it is retried. Tenant-administration `POST`s and
//! `DELETE`s carry none and are retried only when they were certainly not applied.

use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// How often and how patiently a request is retried.
///
/// The wait before retry *n* (1-based) is drawn uniformly from `[b/2, b]` where
/// `b = min(initial_backoff × 2^(n-1), max_backoff)` ("equal jitter": clients that failed
/// together do not retry together, and no wait collapses to zero). When the server sends
/// `Retry-After`, the wait is `min(Retry-After, max_backoff)` instead.
///
/// Each attempt has its own deadline ([`ClientBuilder::timeout`](crate::ClientBuilder::timeout)),
/// so a call takes at most about `max_attempts × (timeout + margin) + (max_attempts − 1) ×
/// max_backoff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; at least 1 (1 = never retry).
    pub max_attempts: u32,
    /// Upper bound of the wait before the first retry.
    pub initial_backoff: Duration,
    /// Upper bound of any wait, `Retry-After` included.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, waits growing from at most 50 ms to at most 1 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry `retry` (1-based), given the server's `Retry-After`.
    pub(crate) fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(after) => after.min(self.max_backoff),
            None => {
                let ceiling = self.ceiling(retry);
                let floor = ceiling / 2;
                rand::rng().random_range(floor..=ceiling)
            }
        }
    }

    /// `min(initial_backoff × 2^(retry-1), max_backoff)`, without overflow.
    fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// Whether repeating a request could apply it twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repeatable {
    /// A read, or a write carrying an idempotency key: retried even when the outcome of an
    /// attempt is unknown.
    Yes,
    /// Retried only when an attempt was certainly not applied.
    No,
}

/// Whether an attempt answered with `status` is retried.
pub(crate) fn retry_status(
    status: StatusCode,
    headers: &HeaderMap,
    repeatable: Repeatable,
) -> bool {
    match status {
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => true,
        StatusCode::CONFLICT => headers.contains_key(reqwest::header::RETRY_AFTER),
        StatusCode::GATEWAY_TIMEOUT => repeatable == Repeatable::Yes,
        _ => false,
    }
}

/// Whether an attempt that failed without an answer is retried.
pub(crate) fn retry_transport(error: &reqwest::Error, repeatable: Repeatable) -> bool {
    if error.is_connect() {
        // Nothing reached the server.
        true
    } else if error.is_builder() {
        false
    } else {
        // Timed out or lost mid-request: the server may have applied it.
        repeatable == Repeatable::Yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_and_stay_in_bounds() {
        let policy = RetryPolicy::default();
        for retry in 1..=40 {
            let ceiling = policy.ceiling(retry);
            assert!(ceiling <= policy.max_backoff);
            let d = policy.delay(retry, None);
            assert!(d >= ceiling / 2 && d <= ceiling, "retry {retry}: {d:?}");
        }
        assert_eq!(policy.ceiling(1), Duration::from_millis(50));
        assert_eq!(policy.ceiling(2), Duration::from_millis(100));
        assert_eq!(policy.ceiling(6), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(30))),
            Duration::from_secs(1)
        );
        assert_eq!(policy.delay(1, Some(Duration::ZERO)), Duration::ZERO);
    }

    #[test]
    fn statuses() {
        let none = HeaderMap::new();
        let mut after = HeaderMap::new();
        after.insert(reqwest::header::RETRY_AFTER, "1".parse().expect("header"));
        let yes = Repeatable::Yes;
        let no = Repeatable::No;
        assert!(retry_status(StatusCode::SERVICE_UNAVAILABLE, &none, no));
        assert!(retry_status(StatusCode::TOO_MANY_REQUESTS, &none, no));
        assert!(retry_status(StatusCode::CONFLICT, &after, yes));
        assert!(!retry_status(StatusCode::CONFLICT, &none, yes));
        assert!(retry_status(StatusCode::GATEWAY_TIMEOUT, &none, yes));
        assert!(!retry_status(StatusCode::GATEWAY_TIMEOUT, &none, no));
        for s in [400, 401, 403, 404, 413, 422, 500] {
            let s = StatusCode::from_u16(s).expect("status");
            assert!(!retry_status(s, &after, yes), "{s}");
        }
    }
}

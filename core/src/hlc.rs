//! The hybrid logical clock that timestamps minted versions.
//!
//! A timestamp is `physical milliseconds since the Unix epoch << 16 | logical counter`. Each
//! timestamp a clock issues is strictly greater than every timestamp it issued or was advanced
//! past before, and it tracks wall time whenever wall time moves forward.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How far ahead of its wall clock a node lets a received version drag its HLC, by default.
pub const DEFAULT_MAX_AHEAD_MS: u64 = 60_000;

/// A timestamp lies further ahead of this node's wall clock than it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "timestamp is {ahead_ms} ms ahead of the wall clock; at most {max_ahead_ms} ms is accepted"
)]
pub struct TooFarAhead {
    /// How far ahead it was, in milliseconds.
    pub ahead_ms: u64,
    /// The most accepted, in milliseconds.
    pub max_ahead_ms: u64,
}

/// Bits of a timestamp holding the logical counter.
pub const LOGICAL_BITS: u32 = 16;

/// The physical milliseconds of a timestamp.
pub fn physical_ms(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// Wall-clock milliseconds since the Unix epoch (0 if the system clock is before 1970).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A hybrid logical clock, safe to share between threads.
#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

impl Hlc {
    /// A clock that has issued nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last timestamp issued or observed (0 before any), without issuing one.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    /// A fresh timestamp, greater than every one issued before.
    pub fn now(&self) -> u64 {
        self.advance_past(0)
    }

    /// Advances this clock past `seen`, a timestamp received from another node, unless `seen`
    /// lies more than `max_ahead_ms` ahead of wall time: then the clock is left unchanged and
    /// the timestamp refused, so one node's bad clock cannot drag every clock into the future.
    pub fn observe(&self, seen: u64, max_ahead_ms: u64) -> Result<(), TooFarAhead> {
        let wall = wall_ms();
        let ahead_ms = physical_ms(seen).saturating_sub(wall);
        if ahead_ms > max_ahead_ms {
            return Err(TooFarAhead {
                ahead_ms,
                max_ahead_ms,
            });
        }
        self.advance_past(seen);
        Ok(())
    }

    /// A fresh timestamp greater than `seen` and than every one issued before.
    pub fn advance_past(&self, seen: u64) -> u64 {
        let wall = wall_ms() << LOGICAL_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = wall.max(last.saturating_add(1)).max(seen.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_and_past_seen() {
        let hlc = Hlc::new();
        let a = hlc.now();
        let b = hlc.now();
        assert!(b > a);
        let far = b + (10_000 << LOGICAL_BITS);
        let c = hlc.advance_past(far);
        assert!(c > far);
        assert!(hlc.now() > c);
        assert!(physical_ms(a) >= 1_600_000_000_000);
    }

    #[test]
    fn observe_refuses_timestamps_too_far_ahead() {
        let hlc = Hlc::new();
        let before = hlc.now();
        let near = (wall_ms() + 1_000) << LOGICAL_BITS;
        assert_eq!(hlc.observe(near, DEFAULT_MAX_AHEAD_MS), Ok(()));
        assert!(hlc.now() > near);
        let far = (wall_ms() + 3_600_000) << LOGICAL_BITS;
        let refused = hlc.observe(far, DEFAULT_MAX_AHEAD_MS);
        assert!(
            matches!(refused, Err(TooFarAhead { ahead_ms, max_ahead_ms })
                if max_ahead_ms == DEFAULT_MAX_AHEAD_MS && ahead_ms > 3_500_000),
            "{refused:?}"
        );
        assert!(hlc.now() < far, "the clock did not move");
        assert!(hlc.now() > before);
    }
}

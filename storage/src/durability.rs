//! When an engine's acknowledged writes reach stable storage.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// When an acknowledged write is on stable storage — the engine's promise to its caller.
///
/// The default is [`Always`](Durability::Always). A node that stops uncleanly under a weaker mode
/// may have lost acknowledged writes, so it must rejoin with a new incarnation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// A write is acknowledged only after it is fsynced. Concurrent writers share one fsync.
    #[default]
    Always,
    /// Writes reach the operating system at once (they survive the process being killed) and are
    /// fsynced at least every interval; a power loss may lose the last interval's writes.
    Interval(Duration),
    /// Writes reach the operating system at once and are fsynced only on a clean close; a power
    /// loss may lose any write since the last clean close.
    Never,
}

impl Durability {
    /// Whether every acknowledged write survives a power loss.
    pub fn survives_power_loss(self) -> bool {
        matches!(self, Durability::Always)
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Always => f.write_str("always"),
            Durability::Interval(every) => write!(f, "interval:{}", every.as_millis()),
            Durability::Never => f.write_str("never"),
        }
    }
}

/// A durability spelled `always`, `interval:<ms>` (1 ms to 1 hour) or `never` could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid durability {0:?}: expected always, interval:<ms> (1..=3600000) or never")]
pub struct ParseDurabilityError(String);

impl FromStr for Durability {
    type Err = ParseDurabilityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseDurabilityError(s.to_owned());
        match s {
            "always" => Ok(Durability::Always),
            "never" => Ok(Durability::Never),
            _ => {
                let ms: u64 = s
                    .strip_prefix("interval:")
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?;
                if (1..=3_600_000).contains(&ms) {
                    Ok(Durability::Interval(Duration::from_millis(ms)))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints() {
        for d in [
            Durability::Always,
            Durability::Never,
            Durability::Interval(Duration::from_millis(250)),
        ] {
            assert_eq!(d.to_string().parse::<Durability>(), Ok(d));
        }
    }

    #[test]
    fn refuses_the_rest() {
        for s in [
            "",
            "Always",
            "interval",
            "interval:",
            "interval:0",
            "interval:-5",
            "interval:3600001",
            "interval:1.5",
            "sometimes",
        ] {
            assert!(s.parse::<Durability>().is_err(), "{s:?}");
        }
    }
}

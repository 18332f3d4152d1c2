//! Consistency levels: how many replicas must answer a read or acknowledge a write.

use std::fmt;
use std::str::FromStr;

/// A per-request consistency level.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// One replica.
    One,
    /// A strict majority: ⌊N/2⌋+1.
    #[default]
    Quorum,
    /// Every replica.
    All,
}

impl Consistency {
    /// Replicas required out of `n`: 1, ⌊n/2⌋+1 or n (never more than `n`, never 0 for `n > 0`).
    pub fn required(self, n: usize) -> usize {
        match self {
            Consistency::One => 1.min(n),
            Consistency::Quorum => n / 2 + 1,
            Consistency::All => n,
        }
        .min(n)
    }

    /// The wire name: `one`, `quorum` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::One => "one",
            Consistency::Quorum => "quorum",
            Consistency::All => "all",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name was not `one`, `quorum` or `all`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown consistency level {0:?}: expected one, quorum or all")]
pub struct UnknownConsistency(pub String);

impl FromStr for Consistency {
    type Err = UnknownConsistency;

    /// Parses exactly `one`, `quorum` or `all` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            _ => Err(UnknownConsistency(s.chars().take(64).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_counts() {
        assert_eq!(Consistency::One.required(3), 1);
        assert_eq!(Consistency::Quorum.required(3), 2);
        assert_eq!(Consistency::Quorum.required(4), 3);
        assert_eq!(Consistency::Quorum.required(1), 1);
        assert_eq!(Consistency::All.required(5), 5);
    }

    #[test]
    fn parses_names() {
        assert_eq!("QUORUM".parse::<Consistency>(), Ok(Consistency::Quorum));
        assert!("most".parse::<Consistency>().is_err());
    }
}

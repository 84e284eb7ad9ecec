//! Where a grant stands, as stored in `grants.status`.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Where a grant stands. Deadlines are tracked separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    /// Working.
    Active,
    /// Transient failures in a row; still retrying, never given up on.
    Degraded,
    /// Terminal until the user consents again.
    NeedsReauth,
    /// Switched off by an operator.
    Disabled,
}

impl GrantStatus {
    /// Every status, in the order operators read them.
    pub const ALL: [Self; 4] = [
        Self::Active,
        Self::Degraded,
        Self::NeedsReauth,
        Self::Disabled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Degraded => "degraded",
            Self::NeedsReauth => "needs_reauth",
            Self::Disabled => "disabled",
        }
    }
}

/// A `grants.status` value this build does not know (written by a newer release, or by hand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown grant status `{0}`")]
pub struct UnknownGrantStatus(pub String);

impl FromStr for GrantStatus {
    type Err = UnknownGrantStatus;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "active" => Ok(Self::Active),
            "degraded" => Ok(Self::Degraded),
            "needs_reauth" => Ok(Self::NeedsReauth),
            "disabled" => Ok(Self::Disabled),
            other => Err(UnknownGrantStatus(other.to_owned())),
        }
    }
}

impl fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_and_unknown_ones_are_refused() {
        for status in [
            GrantStatus::Active,
            GrantStatus::Degraded,
            GrantStatus::NeedsReauth,
            GrantStatus::Disabled,
        ] {
            assert_eq!(status.as_str().parse(), Ok(status));
        }
        assert_eq!(
            "revoked".parse::<GrantStatus>(),
            Err(UnknownGrantStatus("revoked".into()))
        );
    }
}

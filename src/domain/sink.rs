//! Where alert messages are delivered.

use std::fmt;
use std::str::FromStr;

/// A delivery sink (`alert_deliveries.sink`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sink {
    /// The structured log: always configured, never fails.
    Log,
    /// The generic signed webhook (`alerts.webhook_url`).
    Webhook,
    /// Jira Service Management Operations alerts (`alerts.jsm_cloud_id`).
    Jsm,
}

impl Sink {
    /// Every sink, in delivery order.
    pub const ALL: [Sink; 3] = [Self::Log, Self::Webhook, Self::Jsm];

    /// The stored name, also the `sink` label of metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Webhook => "webhook",
            Self::Jsm => "jsm",
        }
    }
}

impl fmt::Display for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored sink name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown delivery sink `{0}`")]
pub struct UnknownSink(pub String);

impl FromStr for Sink {
    type Err = UnknownSink;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|sink| sink.as_str() == name)
            .ok_or_else(|| UnknownSink(name.to_owned()))
    }
}

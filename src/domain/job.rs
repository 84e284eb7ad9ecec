//! The kinds of scheduled work. The daemon's schedules, triggers and runs are driven from
//! [`JobKind::ALL`], so adding a job is one variant, not five parallel lists.

use std::fmt;

use super::Product;

/// A job the daemon schedules (`schedule.<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    /// Keep-warm, keep-alive and family-deadline checks over every grant.
    TokenSweep,
    /// accessible-resources for every grant, to learn its sites and scopes.
    Revalidate,
    /// Jira issues changed since each site's watermark.
    JiraSync,
    /// Every Jira issue id of each site, to find what the incremental sync cannot see.
    JiraReconcile,
    /// Every Confluence space of each site.
    ConfluenceSync,
    /// Conditions that come from time passing (a stale site, a failing sink), then delivery
    /// of the alert outbox.
    Alerts,
}

impl JobKind {
    /// Every job, in the order they are scheduled.
    pub const ALL: [JobKind; 6] = [
        Self::TokenSweep,
        Self::Revalidate,
        Self::JiraSync,
        Self::JiraReconcile,
        Self::ConfluenceSync,
        Self::Alerts,
    ];

    /// The name in configuration (`schedule.<name>`) and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenSweep => "token_sweep",
            Self::Revalidate => "revalidate",
            Self::JiraSync => "jira_sync",
            Self::JiraReconcile => "jira_reconcile",
            Self::ConfluenceSync => "confluence_sync",
            Self::Alerts => "alerts",
        }
    }

    /// The kind of sync run this job performs, if it is a sync.
    pub fn sync_kind(self) -> Option<SyncKind> {
        match self {
            Self::TokenSweep | Self::Revalidate | Self::Alerts => None,
            Self::JiraSync => Some(SyncKind::JiraIncremental),
            Self::JiraReconcile => Some(SyncKind::JiraReconcile),
            Self::ConfluenceSync => Some(SyncKind::ConfluenceSpaces),
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind of sync run (`sync_runs.kind`); each claims sites by its own tick column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncKind {
    /// Jira issues updated since the watermark.
    JiraIncremental,
    /// Jira issue ids, compared with the table.
    JiraReconcile,
    /// Confluence spaces, listed in full.
    ConfluenceSpaces,
}

impl SyncKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JiraIncremental => "jira_incremental",
            Self::JiraReconcile => "jira_reconcile",
            Self::ConfluenceSpaces => "confluence_spaces",
        }
    }

    /// The product it syncs.
    pub fn product(self) -> Product {
        match self {
            Self::JiraIncremental | Self::JiraReconcile => Product::Jira,
            Self::ConfluenceSpaces => Product::Confluence,
        }
    }
}

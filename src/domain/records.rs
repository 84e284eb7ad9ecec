//! The mirrored rows: what the product clients extract from Atlassian's JSON and the store
//! writes, shared so that neither has to know the other.

use chrono::{DateTime, Utc};

/// One Jira issue's columns, extracted from its JSON.
#[derive(Debug, Clone)]
pub struct IssueRow {
    /// Jira's numeric id, as text; unlike the key, it never changes.
    pub issue_id: String,
    /// E.g. `ENG-12`; changes when the issue moves to another project.
    pub issue_key: String,
    /// `fields.project.key`.
    pub project_key: Option<String>,
    /// `fields.summary`.
    pub summary: Option<String>,
    /// The status name (`fields.status.name`).
    pub status: Option<String>,
    /// The issue type name (`fields.issuetype.name`).
    pub issue_type: Option<String>,
    /// `fields.assignee.accountId`; `None` when unassigned.
    pub assignee_account_id: Option<String>,
    /// `fields.status.statusCategory.key`: `new`, `indeterminate` or `done`.
    pub status_category: Option<String>,
    /// The priority name (`fields.priority.name`).
    pub priority: Option<String>,
    /// The resolution name (`fields.resolution.name`); `None` while unresolved.
    pub resolution: Option<String>,
    /// `fields.resolutiondate`, in UTC.
    pub resolved_at: Option<DateTime<Utc>>,
    /// `fields.reporter.accountId`.
    pub reporter_account_id: Option<String>,
    /// `fields.parent.key` (the epic or parent issue).
    pub parent_key: Option<String>,
    /// `fields.labels`.
    pub labels: Vec<String>,
    /// `fields.created`, in UTC; `None` when absent or unreadable.
    pub created_at: Option<DateTime<Utc>>,
    /// `fields.updated`, in UTC: what the watermark and the newer-copy-wins upsert go by.
    pub updated_at: Option<DateTime<Utc>>,
    /// The issue's JSON as Atlassian sent it (NUL characters, which Postgres cannot store,
    /// removed).
    pub raw: Box<serde_json::value::RawValue>,
}

/// One Confluence space's columns.
#[derive(Debug, Clone)]
pub struct SpaceRow {
    /// Confluence's space id, as text.
    pub space_id: String,
    /// The space key, e.g. `ENG`.
    pub space_key: String,
    /// The space's name, if listed.
    pub name: Option<String>,
    /// `type` (e.g. `global`, `personal`); stored in the `type` column.
    pub space_type: Option<String>,
    /// `status` (e.g. `current`, `archived`).
    pub status: Option<String>,
    /// The space's JSON as listed.
    pub raw: serde_json::Value,
}

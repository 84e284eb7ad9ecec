//! The mirrored rows: what the product clients extract from Atlassian's JSON and the store
//! writes, shared so that neither has to know the other.

use chrono::{DateTime, Utc};

/// One Jira issue's columns, extracted from its JSON.
#[derive(Debug, Clone)]
pub struct IssueRow {
    pub issue_id: String,
    pub issue_key: String,
    pub project_key: Option<String>,
    pub summary: Option<String>,
    pub status: Option<String>,
    pub issue_type: Option<String>,
    pub assignee_account_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The issue's JSON exactly as Atlassian sent it.
    pub raw: Box<serde_json::value::RawValue>,
}

/// One Confluence space's columns.
#[derive(Debug, Clone)]
pub struct SpaceRow {
    pub space_id: String,
    pub space_key: String,
    pub name: Option<String>,
    pub space_type: Option<String>,
    pub status: Option<String>,
    pub raw: serde_json::Value,
}
